"""Typed errors: each one says what went wrong, where, and what was expected.

Callers (CLI, batch jobs, dashboards) catch ``TrilliumError`` to show a clear message rather
than a traceback; subclasses let programs react to one kind of failure.
"""

from __future__ import annotations


class TrilliumError(Exception):
    """Base class of every error Trillium raises on purpose."""


class ConfigError(TrilliumError):
    """A setting (environment variable, path, URL) is missing or malformed."""


class DatabaseError(TrilliumError):
    """The database cannot be reached or its schema is not what this version expects."""


class RegistryError(TrilliumError):
    """A model version is missing, ambiguous or cannot be loaded."""


class IntegrityError(RegistryError):
    """A stored artifact's sha256 differs from the one recorded when it was saved."""


class RuntimeBackendError(TrilliumError):
    """An inference backend cannot be built or run for this model."""


class OverloadedError(TrilliumError):
    """The dynamic batcher's queue is full: the caller should back off and retry."""


class BatcherClosedError(TrilliumError):
    """A request reached a batcher that is shut down (or was pending when it shut down)."""


class JobError(TrilliumError):
    """A batch job cannot start or continue (bad input path, mismatched resume, ...)."""


class EngineUnavailableError(JobError):
    """A batch engine's optional package is not installed; the message names the extra to install."""


class InputValidationError(TrilliumError):
    """An input record or file is invalid; the message names the file, row or field."""
