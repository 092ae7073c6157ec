"""Trillium's shared inference core.

One measured runtime, a dynamic batcher, a model registry, the database and the batch-job
engine: every vertical (finance, medical, manufacturing) is built on these pieces.

The main types are importable from here (``from trillium.core import ModelRegistry, run_job``);
each is imported on first use (``trillium.core.exports``), so ``import trillium.core`` stays
light. The rest lives in the submodules: ``trillium.core.metrics``, ``.uncertainty``,
``.untrusted``, ``.config`` and the others.
"""

from __future__ import annotations

from trillium.core.exports import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (trillium.core.exports)
if TYPE_CHECKING:
    from trillium.core.batching import BatcherMetrics, DynamicBatcher
    from trillium.core.contract import Predictor, PredictorFactory, Result
    from trillium.core.db import Database, connect, migrate
    from trillium.core.errors import (
        BatcherClosedError,
        ConfigError,
        DatabaseError,
        EngineUnavailableError,
        InputValidationError,
        IntegrityError,
        JobError,
        OverloadedError,
        RegistryError,
        RuntimeBackendError,
        TrilliumError,
    )
    from trillium.core.explain import Attribution
    from trillium.core.jobs import (
        CsvSink,
        CsvSource,
        FailedChunksError,
        FolderSource,
        JobResult,
        ParquetSink,
        ParquetSource,
        ProcessResult,
        SqlSink,
        SqlSource,
        run_batch,
        run_job,
    )
    from trillium.core.registry import ModelRecord, ModelRef, ModelRegistry
    from trillium.core.runtime import InferenceRuntime, TuneSettings
    from trillium.core.verticals import Vertical

__version__ = "0.1.0"

__all__ = [
    "Attribution",
    "BatcherClosedError",
    "BatcherMetrics",
    "ConfigError",
    "CsvSink",
    "CsvSource",
    "Database",
    "DatabaseError",
    "DynamicBatcher",
    "EngineUnavailableError",
    "FailedChunksError",
    "FolderSource",
    "InferenceRuntime",
    "InputValidationError",
    "IntegrityError",
    "JobError",
    "JobResult",
    "ModelRecord",
    "ModelRef",
    "ModelRegistry",
    "OverloadedError",
    "ParquetSink",
    "ParquetSource",
    "Predictor",
    "PredictorFactory",
    "ProcessResult",
    "RegistryError",
    "Result",
    "RuntimeBackendError",
    "SqlSink",
    "SqlSource",
    "TrilliumError",
    "TuneSettings",
    "Vertical",
    "connect",
    "migrate",
    "run_batch",
    "run_job",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "trillium.core.batching": ("BatcherMetrics", "DynamicBatcher"),
    "trillium.core.contract": ("Predictor", "PredictorFactory", "Result"),
    "trillium.core.db": ("Database", "connect", "migrate"),
    "trillium.core.errors": (
        "BatcherClosedError", "ConfigError", "DatabaseError", "EngineUnavailableError", "InputValidationError",
        "IntegrityError", "JobError", "OverloadedError", "RegistryError", "RuntimeBackendError", "TrilliumError",
    ),
    "trillium.core.explain": ("Attribution",),
    "trillium.core.jobs": (
        "CsvSink", "CsvSource", "FailedChunksError", "FolderSource", "JobResult", "ParquetSink", "ParquetSource",
        "ProcessResult", "SqlSink", "SqlSource", "run_batch", "run_job",
    ),
    "trillium.core.registry": ("ModelRecord", "ModelRef", "ModelRegistry"),
    "trillium.core.runtime": ("InferenceRuntime", "TuneSettings"),
    "trillium.core.verticals": ("Vertical",),
})
