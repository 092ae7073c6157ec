"""A model that follows its registry alias: load once, then switch when the alias moves.

A background thread looks up the alias every ``reload_seconds``. When it points at another
version, the thread loads and warms the new predictor while requests keep using the old one,
then swaps one reference. A request reads the reference once, so it is answered whole by one
version and says which; no request waits for a load or fails during a switch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from trillium.core.errors import RegistryError, TrilliumError
from trillium.core.registry import ModelRecord, ModelRegistry
from trillium.core.service.metrics import MODEL_VERSION

__all__ = ["LiveModel", "ModelNotReadyError", "runtime_routes"]

log = logging.getLogger(__name__)


class ModelNotReadyError(TrilliumError):
    """The model a route needs is not loaded (not registered yet, or its load failed): HTTP 503."""


def runtime_routes(predictor: Any) -> dict[str, dict[str, str]]:
    """``{model: {batch size: backend}}`` of a predictor's core runtimes (``Predictor.runtimes``);
    a backend's name ends with its device when that is not the CPU ("eager/fp32/cuda")."""
    runtimes = getattr(predictor, "runtimes", None)
    if not callable(runtimes):
        return {}
    return {name: {str(size): backend for size, backend in rt.routes.items()} for name, rt in runtimes().items()}


class LiveModel:
    """``current`` is the predictor of ``name``'s ``alias`` version, kept up to date.

    Args:
        name / alias: the registry model and the alias to follow ("production").
        load: ``(record, previous) -> predictor``; ``previous`` is the predictor being replaced
            (None at first), so state that must survive a switch (online features) can be carried.
        reload_seconds: how often to look up the alias; 0 never looks again after the first load.
        on_switch: called with the new predictor after each swap (to re-point batchers, metrics).
    """

    def __init__(self, name: str, alias: str, load: Callable[[ModelRecord, Any], Any], *,
                 registry: ModelRegistry | None = None, reload_seconds: float = 2.0,
                 on_switch: Callable[[Any, ModelRecord], None] | None = None) -> None:
        self.name, self.alias = name, alias
        self._load = load
        self.registry = registry or ModelRegistry()
        self.reload_seconds = float(reload_seconds)
        self.on_switch = on_switch
        self.record: ModelRecord | None = None
        self.backends: dict[str, dict[str, str]] = {}
        self._current: Any = None
        self._pair: tuple[Any, ModelRecord] | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.alias}"

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> Any:
        """The predictor now in service; ``ModelNotReadyError`` when none is loaded."""
        cur = self._current
        if cur is None:
            raise ModelNotReadyError(
                f"model {self.label} is not loaded: {self.error or 'not loaded yet'}. Train and promote it "
                f"(trillium <field> train), then the service picks it up within {self.reload_seconds:g} s")
        return cur

    @property
    def version(self) -> int | None:
        return self.record.version if self.record else None

    def current_with_record(self) -> tuple[Any, ModelRecord]:
        """The predictor in service and its registry record, read together: during a switch
        ``current`` and ``record`` read one after the other could belong to two versions."""
        pair = self._pair
        if pair is None:
            self.current  # noqa: B018 - raises ModelNotReadyError with the reason
        return pair

    def start(self) -> None:
        """Load now (errors are kept in ``error`` and retried), then follow the alias."""
        self.refresh()
        if self.reload_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name=f"LiveModel[{self.label}]", daemon=True)
            self._thread.start()

    def refresh(self) -> bool:
        """Look up the alias and switch if it moved; True when a new version went live."""
        with self._lock:
            try:
                record = self.registry.get(self.name, self.alias)
            except RegistryError as exc:
                self.error = str(exc)
                return False
            except Exception as exc:  # noqa: BLE001 - a database blip must not kill the watcher
                self.error = f"registry unreachable ({type(exc).__name__})"
                log.warning("model %s: cannot look up the alias: %s", self.label, exc)
                return False
            if self.record is not None and record.id == self.record.id and self._current is not None:
                return False
            try:
                predictor = self._load(record, self._current)
            except Exception as exc:  # noqa: BLE001 - keep serving the old version
                self.error = f"version {record.version} failed to load ({type(exc).__name__}: {exc})"
                log.error("model %s: %s; still serving %s", self.label, self.error, self.version)
                return False
            previous = self.record
            self._pair = (predictor, record)  # one assignment: readers see both or neither
            self._current, self.record, self.error = predictor, record, None
            self.backends = runtime_routes(predictor)
            MODEL_VERSION.labels(self.name, self.alias).set(record.version)
            if self.on_switch:
                self.on_switch(predictor, record)
            log.warning("model %s: now serving version %d (was %s)%s", self.label, record.version,
                        previous.version if previous else "none",
                        f"; backends {self.backends}" if self.backends else "")
            return True

    def _watch(self) -> None:
        while not self._stop.wait(self.reload_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
