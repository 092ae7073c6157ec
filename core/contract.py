"""The vertical contract: what every vertical's predictor, result and batch job share.

Every flow has one shape, source -> predictor -> decision -> sink -> store, with the job id and
the model version recorded, whether it runs in a batch job, in the service or in the dashboard.
This module is the part of that shape the core owns:

- :class:`Predictor`: built from a registry reference by ``from_registry`` (a wrong or missing
  model is a ``RegistryError``, whatever the vertical); its decision settings (a threshold, a
  budget) are kept apart from the model and travel with a batch job, so a worker that loads the
  same version decides exactly as the caller would;
- :class:`Result`: one typed result per input with ``to_rows()``, the rows a sink writes;
- :class:`PredictorFactory`: the one processor factory of every vertical's batch job. Locally
  it binds the caller's predictor; on a cluster each worker rebuilds the predictor from the
  registry reference (sha256 checked) and applies the caller's decision settings;
- :func:`expect_model`: the one check of a loaded model's type.

The verticals implement it (``FraudScorer``, ``Inspector``, ``StudyAnalyzer``,
``RecordStructurer``); the core never imports them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from trillium.core.errors import InputValidationError, JobError, RegistryError
from trillium.core.jobs import Processor, ProcessResult, Sink, check_engine, output_sink
from trillium.core.registry import ModelRecord, ModelRef, ModelRegistry

__all__ = ["Predictor", "PredictorFactory", "Result", "check_shippable", "expect_model", "job_output"]


@runtime_checkable
class Result(Protocol):
    """A vertical's typed result for one input (a transaction, an image, a study, a note)."""

    def to_rows(self) -> list[dict[str, Any]]:
        """The flat rows a sink writes for this result (one or more)."""
        ...


def expect_model(obj: Any, expected: type | tuple[type, ...], record: ModelRecord, what: str) -> None:
    """Refuse a registry entry that holds another kind of model, with one error type for all."""
    if not isinstance(obj, expected):
        raise RegistryError(f"{record.name} v{record.version} is a {type(obj).__name__}, not {what}")


class Predictor(ABC):
    """What every vertical's predictor implements.

    ``registry_ref`` says where the model came from (``None`` for an unregistered one, which
    cannot be shipped to cluster workers). ``decision_fields`` name the attributes that make
    the decision step (a threshold, a budget): they are set by the caller, kept apart from the
    model, and re-applied on every worker.
    """

    registry_ref: ModelRef | None = None
    decision_fields: ClassVar[tuple[str, ...]] = ("threshold",)
    #: True for predictors with no registered model (rules, lexicons): workers build them from settings.
    registry_free: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_registry(cls, name: str, ref: int | str = "production", *,
                      registry: ModelRegistry | None = None) -> Predictor:
        """Load a registered version (sha256 checked); a wrong or missing one raises ``RegistryError``."""

    def runtimes(self) -> dict[str, Any]:
        """The core ``InferenceRuntime`` of each of its torch models, by name (none by default):
        what ``/readyz`` reports as the backends, and so the device, a served model runs on."""
        return {}

    def decision_settings(self) -> dict[str, Any]:
        """The decision step's settings, as the caller set them."""
        return {name: getattr(self, name) for name in self.decision_fields}

    def apply_decision_settings(self, settings: dict[str, Any]) -> None:
        """Set the decision step as another process's predictor had it."""
        for name, value in settings.items():
            setattr(self, name, value)

    @classmethod
    def rebuild(cls, model: ModelRef | None, settings: dict[str, Any]) -> Predictor:
        """The same predictor in another process: the same registered version, the same decisions."""
        if model is None:
            raise JobError(f"a worker cannot load an unregistered {cls.__name__}: use {cls.__name__}.from_registry")
        predictor = cls.from_registry(model.name, model.version, registry=model.registry())
        predictor.apply_decision_settings(settings)
        return predictor


def check_shippable(predictor: Predictor, engine: str) -> None:
    """Refuse, before any work, a cluster job whose workers could not rebuild ``predictor``."""
    if engine != "local" and predictor.registry_ref is None and not predictor.registry_free:
        name = type(predictor).__name__
        raise InputValidationError(f"the {engine} engine's workers load the model from the registry: use a "
                                   f"registered one ({name}.from_registry)")


def job_output(predictor: Predictor, output: str | os.PathLike[str], engine: str) -> tuple[Path, Sink]:
    """The checks every vertical's batch job makes before it reads anything: the engine's extra is
    installed, a cluster's workers could rebuild ``predictor``; then the output's sink."""
    check_engine(engine)
    sink = output_sink(output, engine)
    check_shippable(predictor, engine)
    return Path(output), sink


@dataclass
class PredictorFactory:
    """The processor factory of every vertical's batch job (``trillium.core.jobs.ProcessorFactory``).

    ``chunk`` is a module-level function ``chunk(predictor, *args, frame, index) ->
    ProcessResult`` (picklable for cluster workers); ``args`` are its picklable settings.
    Build it with :meth:`of`.
    """

    predictor_type: type[Predictor]
    chunk: Callable[..., ProcessResult]
    args: tuple[Any, ...]
    model: ModelRef | None
    settings: dict[str, Any]
    local: Predictor | None = field(default=None, repr=False)  # the local engine's; never shipped

    @classmethod
    def of(cls, predictor: Predictor, chunk: Callable[..., ProcessResult], *args: Any,
           engine: str = "local") -> PredictorFactory:
        """For the local engine (bind ``predictor``) or a cluster (workers rebuild it)."""
        check_shippable(predictor, engine)
        local = engine == "local"
        return cls(type(predictor), chunk, tuple(args), predictor.registry_ref, predictor.decision_settings(),
                   predictor if local else None)

    def predictor(self) -> Predictor:
        """The caller's predictor locally; on a worker, the same version with the same decisions."""
        return self.local if self.local is not None else self.predictor_type.rebuild(self.model, self.settings)

    def __call__(self) -> Processor:
        return partial(self.chunk, self.predictor(), *self.args)
