"""The service's settings, read once per worker from the environment (``TRILLIUM_SERVE_*``).

``trillium serve`` writes its options into these variables before uvicorn starts the workers, so
each worker process (a fresh interpreter) reads the same settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from trillium.core.errors import ConfigError

__all__ = ["ServiceSettings"]

PREFIX = "TRILLIUM_SERVE_"


@dataclass(frozen=True)
class ServiceSettings:
    """How one worker serves.

    - ``fields``: the verticals served (comma-separated names; empty: every installed one);
    - ``workers``: how many worker processes share the port (finance then needs Redis state);
    - ``redis_url``: the shared online state; required when ``workers`` > 1;
    - ``max_inflight``: requests one worker holds at once; past it, 503 with Retry-After;
    - ``reload_seconds``: how often a worker looks whether a model alias moved;
    - ``batch_delay_ms`` / ``max_batch``: the dynamic batcher in front of each model;
    - ``batcher``: ``async`` (the batch runs in the event loop's thread) or ``thread`` (in a
      thread of its own), for routes that do not choose. ``async`` by default: on the finance
      route with Redis state (benchmarks/serve.py's interleaved comparison, 2 cores, 2 workers,
      the same transactions to both servers in turn, medians of 3 rounds) it served 2,525 tx/s at
      32 connections (p99 30 ms) against 2,235 (p99 39 ms) for ``thread``, and about the same at
      64 (2,965 against 3,087, p99 64 and 66 ms). Sequential parts of one run had suggested the
      opposite: later parts send later transactions, and those cost Redis a third as much. The
      inspector keeps ``thread`` (torch releases the interpreter lock while it computes, so
      requests are read meanwhile);
    - ``key_cache_seconds``: how long a verified API key is trusted without a database read.
    """

    fields: str = ""
    workers: int = 1
    redis_url: str = ""
    max_inflight: int = 256
    reload_seconds: float = 2.0
    batch_delay_ms: float = 1.0
    max_batch: int = 64
    batcher: str = "async"
    key_cache_seconds: float = 5.0

    @classmethod
    def from_env(cls) -> ServiceSettings:
        values: dict[str, object] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = os.environ.get(name)
            if raw is None or raw.strip() == "":
                continue
            kind = type(getattr(cls, f.name))
            try:
                value = kind(raw.strip())
            except ValueError:
                raise ConfigError(f"{name}={raw!r}: expected a {kind.__name__}") from None
            if kind in (int, float) and value < 0:
                raise ConfigError(f"{name}={raw!r}: expected a number >= 0")
            values[f.name] = value
        if values.get("batcher", "async") not in ("thread", "async"):
            raise ConfigError(f"{PREFIX}BATCHER={values['batcher']!r}: expected thread or async")
        if not values.get("redis_url") and os.environ.get("TRILLIUM_REDIS_URL"):
            values["redis_url"] = os.environ["TRILLIUM_REDIS_URL"]
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    def served(self, available: list[str]) -> list[str]:
        if not self.fields.strip():
            return available
        wanted = [f.strip() for f in self.fields.split(",") if f.strip()]
        unknown = [f for f in wanted if f not in available]
        if unknown:
            raise ConfigError(f"{PREFIX}FIELDS names {', '.join(unknown)}; the installed fields are "
                              f"{', '.join(available)}")
        return wanted
