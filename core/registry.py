"""Versioned model artifacts: files on disk, metadata in the database, sha256 on every load.

A version is immutable: its files are written once under ``$TRILLIUM_HOME/registry/<name>/
v<version>/`` and their sha256 recorded in ``model_versions``; loading recomputes and compares,
so a tampered or truncated file is refused with a clear error. Aliases (``production``,
``staging``) are movable names for a version.

Nothing here unpickles: torch weights go through safetensors, the network is rebuilt from its
class (only classes inside the ``trillium`` package may be named) and JSON keyword arguments,
and tree models are expected as ONNX or JSON files.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.orm import selectinload
from torch import nn

from trillium.core.config import registry_dir
from trillium.core.db import Database, DatabaseRef, ModelAlias, ModelVersion, connect
from trillium.core.errors import IntegrityError, RegistryError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
WEIGHTS_FILE = "weights.safetensors"
EXAMPLE_FILE = "example.safetensors"
TRUSTED_PREFIX = "trillium."


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_fingerprint(data: Any) -> str:
    """A stable sha256 of training data: a DataFrame, an array, a tensor, bytes or a file path."""
    h = hashlib.sha256()
    if isinstance(data, (str, Path)):
        return sha256_file(Path(data))
    if isinstance(data, bytes):
        h.update(data)
    elif isinstance(data, torch.Tensor):
        h.update(data.detach().cpu().contiguous().numpy().tobytes())
        h.update(str(tuple(data.shape)).encode())
    elif isinstance(data, np.ndarray):
        h.update(np.ascontiguousarray(data).tobytes())
        h.update(str(data.shape).encode())
    else:  # pandas objects
        import pandas as pd

        if isinstance(data, (pd.DataFrame, pd.Series)):
            h.update(pd.util.hash_pandas_object(data, index=True).values.tobytes())
            cols = data.columns if isinstance(data, pd.DataFrame) else [data.name]
            h.update(json.dumps([str(c) for c in cols]).encode())
        else:
            raise RegistryError(f"cannot fingerprint data of type {type(data).__name__}")
    return h.hexdigest()


def input_signature(example: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, Any]:
    xs = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    return {"inputs": [{"shape": [-1, *x.shape[1:]], "dtype": str(x.dtype).replace("torch.", "")} for x in xs]}


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise RegistryError(f"invalid {kind} {value!r}: use letters, digits, '_', '.', '-' (max 200)")
    return value


def _class_path(model: nn.Module) -> str:
    cls = type(model)
    path = f"{cls.__module__}:{cls.__qualname__}"
    if not path.startswith(TRUSTED_PREFIX):
        raise RegistryError(
            f"{path} is outside the trillium package: the registry only rebuilds trusted classes "
            "(no code is ever loaded from an artifact)"
        )
    return path


def _import_class(path: str) -> type[nn.Module]:
    if not path.startswith(TRUSTED_PREFIX) or ":" not in path:
        raise RegistryError(f"refusing to import {path!r}: only classes inside the trillium package load")
    module, qual = path.split(":", 1)
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise RegistryError(f"{path} is not a torch module class")
    return obj


@dataclass(frozen=True)
class ModelRecord:
    """A read-only view of one registered version."""

    id: int
    name: str
    version: int
    kind: str
    architecture: str | None
    init_kwargs: dict[str, Any]
    files: dict[str, str]
    metrics: dict[str, Any]
    input_signature: dict[str, Any]
    data_fingerprint: str | None
    autotune: dict[str, Any]
    extra: dict[str, Any]
    description: str
    aliases: tuple[str, ...]
    directory: Path

    @classmethod
    def _from_row(cls, row: ModelVersion, root: Path) -> ModelRecord:
        return cls(
            id=row.id, name=row.name, version=row.version, kind=row.kind, architecture=row.architecture,
            init_kwargs=dict(row.init_kwargs or {}), files=dict(row.files or {}), metrics=dict(row.metrics or {}),
            input_signature=dict(row.input_signature or {}), data_fingerprint=row.data_fingerprint,
            autotune=dict(row.autotune or {}), extra=dict(row.extra or {}), description=row.description,
            aliases=tuple(sorted(a.alias for a in row.aliases)), directory=root / row.name / f"v{row.version}",
        )


@dataclass(frozen=True)
class RegistryLocation:
    """Where a registry lives: its database and its artifact folder.

    Why: a Ray worker does not share the driver's environment (``TRILLIUM_HOME``,
    ``TRILLIUM_DB_URL``), so what it needs to open the same registry travels with the job.
    """

    db: DatabaseRef
    root: str

    @classmethod
    def of(cls, registry: ModelRegistry) -> RegistryLocation:
        return cls(DatabaseRef.of(registry.db), str(Path(registry.root).resolve()))

    def open(self) -> ModelRegistry:
        return ModelRegistry(self.db.connect(), self.root)


@dataclass(frozen=True)
class ModelRef:
    """One exact registered version and the registry holding it.

    Workers load the model by number, not by alias: an alias moved during a job would
    otherwise give parts of one output scored by two models.
    """

    location: RegistryLocation
    name: str
    version: int

    @classmethod
    def of(cls, registry: ModelRegistry, record: ModelRecord) -> ModelRef:
        return cls(RegistryLocation.of(registry), record.name, record.version)

    def registry(self) -> ModelRegistry:
        return self.location.open()

    def __str__(self) -> str:
        return f"{self.name}:v{self.version}"


class ModelRegistry:
    """Register, look up and load model versions.

    Args:
        db: the database holding the metadata (default: ``trillium.core.db.connect()``).
        root: where artifact files live (default: ``$TRILLIUM_HOME/registry``).
    """

    def __init__(self, db: Database | None = None, root: Path | str | None = None) -> None:
        self.db = db or connect()
        self.root = Path(root) if root else registry_dir()

    # ------------------------------------------------------------- writing
    def register(
        self,
        name: str,
        files: Mapping[str, bytes | Path],
        *,
        kind: str = "files",
        architecture: str | None = None,
        init_kwargs: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        input_signature: dict[str, Any] | None = None,
        data_fingerprint: str | None = None,
        autotune: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        description: str = "",
        aliases: Sequence[str] = (),
        profile: Mapping[str, Any] | None = None,
    ) -> ModelRecord:
        """Store ``files`` as the next version of ``name``; returns its record.

        ``profile``: the version's reference profile for monitoring
        (``trillium.core.monitoring.build_profile``), stored as one more sha256-checked file.
        """
        _check_name("model name", name)
        if profile is not None:
            from trillium.core.monitoring.profile import PROFILE_FILE, profile_bytes

            files = {**files, PROFILE_FILE: profile_bytes(profile)}
        for fname in files:
            _check_name("file name", fname)
        for alias in aliases:
            _check_name("alias", alias)
        payload = {f: (Path(v).read_bytes() if isinstance(v, (str, Path)) else bytes(v)) for f, v in files.items()}
        digests = {f: sha256_bytes(b) for f, b in payload.items()}
        for attempt in range(3):
            try:
                with self.db.session() as s:
                    latest = s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name)) or 0
                    version = latest + 1
                    row = ModelVersion(
                        name=name, version=version, kind=kind, architecture=architecture,
                        init_kwargs=init_kwargs or {}, files=digests, metrics=_jsonable(metrics or {}),
                        input_signature=input_signature or {}, data_fingerprint=data_fingerprint,
                        autotune=_jsonable(autotune or {}), extra=_jsonable(extra or {}), description=description,
                    )
                    s.add(row)
                    # Claim the version number first: a concurrent writer fails here, before it
                    # could touch this version's files.
                    s.flush()
                    target = self.root / name / f"v{version}"
                    target.mkdir(parents=True, exist_ok=True)
                    for fname, data in payload.items():
                        tmp = target / f".{fname}.tmp"
                        tmp.write_bytes(data)
                        tmp.replace(target / fname)
                    for alias in aliases:
                        self._set_alias(s, name, alias, row)
                break
            except SAIntegrityError as exc:
                if attempt == 2:
                    raise RegistryError(f"could not allocate a version for {name!r} (concurrent writers)") from exc
        self.db.audit("model.register", target=f"{name}:v{version}", files=sorted(digests))
        return self.get(name, version)

    def register_torch(
        self,
        name: str,
        model: nn.Module,
        example_input: torch.Tensor | Sequence[torch.Tensor],
        *,
        init_kwargs: dict[str, Any],
        onnx: bytes | None = None,
        extra_files: Mapping[str, bytes | Path] | None = None,
        **meta: Any,
    ) -> ModelRecord:
        """Store a torch module: safetensors weights, a few example rows, optionally its ONNX graph.

        ``init_kwargs`` must rebuild the module with ``type(model)(**init_kwargs)``.
        """
        architecture = _class_path(model)
        json.dumps(init_kwargs)  # fail now, not at load time, if the kwargs are not JSON
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        xs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
        files: dict[str, bytes | Path] = {
            WEIGHTS_FILE: st_save(state),
            EXAMPLE_FILE: st_save({f"input_{i}": x[:8].detach().cpu().contiguous() for i, x in enumerate(xs)}),
        }
        if onnx is not None:
            files["model.onnx"] = onnx
        files.update(extra_files or {})
        meta.setdefault("input_signature", input_signature(xs))
        return self.register(name, files, kind="torch", architecture=architecture, init_kwargs=init_kwargs, **meta)

    def set_alias(self, name: str, alias: str, version: int) -> ModelRecord:
        _check_name("alias", alias)
        with self.db.session() as s:
            row = self._row(s, name, version)
            self._set_alias(s, name, alias, row)
        self.db.audit("model.alias", target=f"{name}:{alias}", version=version)
        return self.get(name, version)

    @staticmethod
    def _set_alias(s: Any, name: str, alias: str, row: ModelVersion) -> None:
        existing = s.scalar(select(ModelAlias).where(ModelAlias.name == name, ModelAlias.alias == alias))
        if existing is None:
            s.add(ModelAlias(name=name, alias=alias, model_version_id=row.id))
        else:
            existing.model_version_id = row.id

    # ------------------------------------------------------------- reading
    def _row(self, s: Any, name: str, ref: int | str) -> ModelVersion:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            row = s.scalar(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == int(ref)))
        elif ref == "latest":
            row = s.scalar(
                select(ModelVersion).where(ModelVersion.name == name).order_by(ModelVersion.version.desc()).limit(1)
            )
        else:
            alias = s.scalar(select(ModelAlias).where(ModelAlias.name == name, ModelAlias.alias == ref))
            row = alias.model_version if alias else None
        if row is None:
            known = sorted(s.scalars(select(ModelVersion.name).distinct()).all())
            raise RegistryError(f"no model {name!r} at {ref!r} in the registry (known models: {known or 'none'})")
        return row

    def get(self, name: str, ref: int | str = "latest") -> ModelRecord:
        """The record of ``name`` at a version number, an alias, or ``"latest"``."""
        with self.db.session() as s:
            return ModelRecord._from_row(self._row(s, name, ref), self.root)

    def list(self, name: str | None = None) -> list[ModelRecord]:
        with self.db.session() as s:
            q = (
                select(ModelVersion)
                .options(selectinload(ModelVersion.aliases))
                .order_by(ModelVersion.name, ModelVersion.version)
            )
            if name:
                q = q.where(ModelVersion.name == name)
            return [ModelRecord._from_row(r, self.root) for r in s.scalars(q).all()]

    def read_file(self, record: ModelRecord, filename: str) -> bytes:
        """The bytes of one artifact file, after checking its sha256 against the record."""
        if filename not in record.files:
            raise RegistryError(f"{record.name} v{record.version} has no file {filename!r} (has {sorted(record.files)})")
        path = record.directory / filename
        if not path.exists():
            raise IntegrityError(f"{path} is missing: {record.name} v{record.version} is incomplete")
        data = path.read_bytes()
        actual = sha256_bytes(data)
        if actual != record.files[filename]:
            raise IntegrityError(
                f"{path} was modified after registration: sha256 {actual[:12]}... != recorded "
                f"{record.files[filename][:12]}...; refusing to load {record.name} v{record.version}"
            )
        return data

    def verify(self, record: ModelRecord) -> None:
        for fname in record.files:
            self.read_file(record, fname)

    def load_torch(self, name: str, ref: int | str = "latest") -> tuple[nn.Module, ModelRecord]:
        """Rebuild the module from its trusted class and verified safetensors weights (eval mode)."""
        record = self.get(name, ref)
        if record.kind != "torch" or not record.architecture:
            raise RegistryError(f"{name} v{record.version} is a {record.kind!r} artifact, not a torch model")
        cls = _import_class(record.architecture)
        model = cls(**record.init_kwargs)
        state = st_load(self.read_file(record, WEIGHTS_FILE))
        model.load_state_dict(state)
        return model.eval(), record

    def example_input(self, record: ModelRecord) -> tuple[torch.Tensor, ...]:
        data = st_load(self.read_file(record, EXAMPLE_FILE))
        return tuple(data[f"input_{i}"] for i in range(len(data)))

    def load_runtime(self, name: str, ref: int | str = "latest", device: str = "auto") -> Any:
        """An ``InferenceRuntime`` with the backends the stored autotune chose (no re-measuring)."""
        from trillium.core.runtime import InferenceRuntime

        model, record = self.load_torch(name, ref)
        example = self.example_input(record)
        if record.autotune:
            return InferenceRuntime.from_report(model, example, record.autotune, device=device)
        return InferenceRuntime(model, example, device=device)


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so NumPy scalars and tuples are stored as plain values."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
