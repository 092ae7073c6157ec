"""Drift of **online** predictions, day by day: what the service answered, checked like a batch day.

Why a sample and files: the service answers thousands of requests a second in several worker
processes; storing every input would cost more than the prediction. Each worker keeps, per model
and version and per day (the inputs' own timestamps where they carry one, else the server's UTC
clock), a uniform reservoir sample (Li's algorithm L: skips drawn ahead, so a full reservoir costs
a comparison per wave) of the model inputs' profiled columns with their scores and decisions, and
writes it to ``$TRILLIUM_HOME/monitoring/online/<model>/v<version>/<day>/<host>-<pid>.npz`` every
``flush_seconds`` and at shutdown (plain arrays and the column names, read back with
``allow_pickle=False``). A day is checked at a worker's flush once that worker has seen a later
day (and again after a flush that wrote late rows of it; every worker checks all workers' files,
so the last one to close the day makes the final run), or on demand (``check_days``): the
workers' samples are merged in proportion to the rows each saw, compared as one day with the
version's reference profile (on the columns sampled: a route may sample a subset, e.g. no
embedding it would have to compute again), and stored as the day's run with label ``online``
(replacing an earlier check of the same day), with the precision the scores expect of the
decisions when they are calibrated probabilities.

A vertical wires it to its route (``finance.online_monitoring``, ``manufacturing.service``); the
core knows no column's meaning. 20,000 rows a day keep the tests' power for what a day shows (a
few percent of rows moving) while a worker's cost stays a few MB and microseconds per request.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trillium.core.config import home_dir
from trillium.core.db import Database
from trillium.core.errors import InputValidationError
from trillium.core.monitoring.drift import Thresholds, compare
from trillium.core.monitoring.performance import estimate_alert_precision
from trillium.core.monitoring.store import load_profile, record_run
from trillium.core.registry import ModelRegistry

log = logging.getLogger(__name__)

LABEL = "online"
SAMPLE_ROWS = 20_000
KEEP_DAYS = 3


def online_dir(model: str, root: str | os.PathLike[str] | None = None) -> Path:
    return Path(root) if root is not None else home_dir() / "monitoring" / "online" / model


@functools.lru_cache(maxsize=64)
def _day_name(day_number: int) -> str:
    return str(np.datetime64(day_number, "D"))


class _Reservoir:
    """A uniform sample of at most ``size`` rows of a stream: Li's algorithm L, which draws how
    many rows to skip before the next one kept, so a full reservoir costs a comparison per wave
    rather than random numbers per row (this runs in the request path; ``benchmarks/
    online_sampling.py``: a whole ``observe`` of a one-row wave 11.6 us p50 against 22.9 us for a
    bare NumPy algorithm R reservoir, which NumPy's per-call overhead dominates)."""

    def __init__(self, size: int, width: int, rng: np.random.Generator) -> None:
        self.size, self.rng = size, rng
        self.x = np.empty((size, width), np.float32)
        self.p = np.empty(size, np.float64)
        self.alerted = np.empty(size, bool)
        self.filled = 0
        self.seen = 0
        self.dirty = False
        self._w = 1.0
        self._next = size  # stream index (0-based) of the next row to keep once full

    def _advance(self) -> None:
        self._w *= math.exp(math.log(self.rng.random()) / self.size)
        self._next += int(math.log(self.rng.random()) / math.log1p(-self._w)) + 1

    def add(self, x: np.ndarray, p: np.ndarray, alerted: np.ndarray) -> None:
        m = len(p)
        take = min(self.size - self.filled, m)
        if take:
            sl = slice(self.filled, self.filled + take)
            self.x[sl], self.p[sl], self.alerted[sl] = x[:take], p[:take], alerted[:take]
            self.filled += take
            if self.filled == self.size:
                self._w, self._next = 1.0, self.size
                self._advance()
        end = self.seen + m  # rows [seen, end) of the stream are in this wave
        while self._next < end:  # kept rows replace a random slot
            j = self._next - self.seen
            if j >= take:
                slot = int(self.rng.integers(self.size))
                self.x[slot], self.p[slot], self.alerted[slot] = x[j], p[j], alerted[j]
            self._advance()
        self.seen = end
        self.dirty = True

    def load(self, x: np.ndarray, p: np.ndarray, alerted: np.ndarray, seen: int) -> None:
        """Continue a sample written earlier (``seen`` rows of the stream behind it)."""
        n = len(p)
        self.x[:n], self.p[:n], self.alerted[:n] = x, p, alerted
        self.filled, self.seen = n, int(seen)
        if n == self.size:  # algorithm L's weight after n rows is about size / n (its expected value)
            self._w = self.size / max(self.seen, self.size)
            self._next = self.seen
            self._advance()


class OnlineDayCollector:
    """Per (version, day) reservoirs of one worker, written to its own files; ``observe`` is the
    ``OnlineBatchScorer`` hook. Thread-safe (the batcher may call it from several threads)."""

    def __init__(self, model: str, names: Sequence[str] | None = None, *, root: str | os.PathLike[str] | None = None,
                 sample_rows: int = SAMPLE_ROWS, flush_seconds: float = 60.0, seed: int | None = None,
                 on_flush: Any = None) -> None:
        self.model = model
        self.names = [str(n) for n in (names or [])]  # the sampled columns, as the profile names them
        self.root = online_dir(model, root)
        self.sample_rows = int(sample_rows)
        self.flush_seconds = float(flush_seconds)
        self.on_flush = on_flush  # called with the closed (version, day) pairs after a flush
        self.worker = f"{socket.gethostname()}-{os.getpid()}"
        self._rng = np.random.default_rng(seed)
        self._res: dict[tuple[int, str], _Reservoir] = {}
        self._latest: dict[int, str] = {}
        self._lock = threading.Lock()
        self._flushed = time.monotonic()
        self._reported: set[tuple[int, str]] = set()

    def observe(self, version: int | None, x: np.ndarray, p: np.ndarray, alerted: np.ndarray,
                secs: np.ndarray) -> None:
        if version is None or len(p) == 0:
            return  # an unregistered scorer has no profile to compare with
        first, last = int(secs.min()) // 86_400, int(secs.max()) // 86_400
        # one day in the wave is the usual case: no grouping (this runs in the request path)
        groups: list[tuple[int, Any]] = [(first, slice(None))]
        if first != last:
            day_no = np.asarray(secs, np.int64) // 86_400
            groups = [(int(d), day_no == d) for d in np.unique(day_no)]
        with self._lock:
            for d, rows in groups:
                key = (int(version), _day_name(d))
                res = self._res.get(key)
                if res is None:
                    res = self._res[key] = self._open(key, x.shape[1])
                res.add(x[rows], p[rows], alerted[rows])
                if key[1] > self._latest.get(key[0], ""):
                    self._latest[key[0]] = key[1]
            due = time.monotonic() - self._flushed >= self.flush_seconds
        if due:
            try:
                self.flush()
            except OSError:  # a full or unwritable disk must never fail the request being answered
                log.exception("online sample of %s could not be written; kept in memory, written at the next "
                              "flush", self.model)

    def _file(self, key: tuple[int, str]) -> Path:
        return self.root / f"v{key[0]}" / key[1] / f"{self.worker}.npz"

    def _open(self, key: tuple[int, str], width: int) -> _Reservoir:
        """A day's reservoir, continuing this worker's file when it wrote one (a late transaction
        of a day already let go from memory)."""
        res = _Reservoir(self.sample_rows, width, self._rng)
        f = self._file(key)
        if f.exists():
            with np.load(f, allow_pickle=False) as z:
                res.load(z["x"], z["p"], z["alerted"], int(z["seen"]))
        return res

    def flush(self) -> list[tuple[int, str]]:
        """Write every changed reservoir; returns the closed (version, day) pairs (a later day
        has been seen), whose files are final for this worker, and hands them to ``on_flush``."""
        with self._lock:
            self._flushed = time.monotonic()
            written = set()
            for (version, day), res in self._res.items():
                if not res.dirty:
                    continue
                written.add((version, day))
                folder = self.root / f"v{version}" / day
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{self.worker}.tmp.npz"  # written whole, then renamed: readers see no half file
                np.savez(tmp, x=res.x[:res.filled], p=res.p[:res.filled], alerted=res.alerted[:res.filled],
                         seen=np.int64(res.seen), columns=np.asarray(self.names, dtype=str))
                tmp.replace(self._file((version, day)))
                res.dirty = False
            # a closed day is checked once it closes, and again when this worker wrote late rows of it
            closed = [(v, d) for (v, d) in self._res if d < self._latest.get(v, d)
                      and ((v, d) in written or (v, d) not in self._reported)]
            self._reported.update(closed)
            for v in {v for v, _ in self._res}:  # keep the last KEEP_DAYS days of a version in memory
                for key in sorted(k for k in self._res if k[0] == v)[:-KEEP_DAYS]:
                    del self._res[key]  # written above; a late row reopens it from its file
        if closed and self.on_flush is not None:
            try:
                self.on_flush(closed)
            except Exception:  # a failed check must never fail scoring
                log.exception("online drift check failed")
        return closed


def read_day(folder: Path, sample_rows: int = SAMPLE_ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray, int]:
    """The workers' samples of one day merged into one uniform sample of the day's rows: each
    worker contributes in proportion to the rows it scored. Returns (x, p, alerted, rows scored)."""
    parts = []
    for f in sorted(f for f in folder.glob("*.npz") if not f.name.startswith(".")):
        try:
            with np.load(f, allow_pickle=False) as z:
                parts.append((z["x"], z["p"], z["alerted"], int(z["seen"])))
        except (OSError, ValueError, KeyError) as exc:
            raise InputValidationError(f"{f}: not an online monitoring sample: {exc}") from exc
    if not parts:
        raise InputValidationError(f"{folder}: no online monitoring samples")
    total = sum(seen for *_, seen in parts)
    target = min(sample_rows, sum(len(p) for _, p, _, _ in parts))
    rng = np.random.default_rng(seed)
    xs, ps, als = [], [], []
    for x, p, al, seen in parts:
        k = min(len(p), round(target * seen / total))
        idx = rng.choice(len(p), k, replace=False) if k < len(p) else np.arange(len(p))
        xs.append(x[idx]), ps.append(p[idx]), als.append(al[idx])
    return np.concatenate(xs), np.concatenate(ps), np.concatenate(als), total


def sampled_columns(folder: Path) -> list[str]:
    """The column names the workers' samples of a day were written with (empty: unnamed, the
    profile's whole column order)."""
    files = sorted(f for f in folder.glob("*.npz") if not f.name.startswith("."))
    if not files:
        return []
    with np.load(files[0], allow_pickle=False) as z:
        return [str(c) for c in z["columns"]] if "columns" in z.files else []


def check_days(model: str, *, registry: ModelRegistry, db: Database | None = None,
               days: Sequence[tuple[int, str]] | None = None, root: str | os.PathLike[str] | None = None,
               thresholds: Thresholds | None = None, performance: bool = True) -> list[int]:
    """Check online days of ``model`` (every (version, day) with samples when ``days`` is None);
    returns the stored run ids. A version without a profile is skipped. ``thresholds``: the
    vertical's own (default: the core's); ``performance``: the scores are calibrated
    probabilities, so the decisions' expected precision is stored with the run."""
    base = online_dir(model, root)
    if days is None:
        days = sorted((int(v.name[1:]), d.name) for v in base.glob("v*") if v.name[1:].isdigit()
                      for d in v.iterdir() if d.is_dir())
    ids: list[int] = []
    db = db or registry.db
    loaded: dict[int, Any] = {}
    for version, day in days:
        folder = base / f"v{version}" / day
        if not folder.is_dir():
            raise InputValidationError(f"no online samples of {model} v{version} on {day} under {base}")
        if version not in loaded:
            record = registry.get(model, version)
            loaded[version] = (record, load_profile(registry, record))
        record, profile = loaded[version]
        if profile is None:
            log.warning("%s v%d has no reference profile: online day %s not checked", model, version, day)
            continue
        x, p, alerted, scored = read_day(folder)
        # named columns: compared on those (a route may sample a subset of the profile's);
        # unnamed: the profile's own column order
        names = sampled_columns(folder) or list(profile["features"])
        unknown = [c for c in names if c not in profile["features"]]
        if x.shape[1] != len(names) or unknown:
            raise InputValidationError(f"{folder}: samples have {x.shape[1]} columns {names[:5]}..., not columns of "
                                       f"{model} v{version}'s profile ({unknown[:5] or len(profile['features'])})")
        subset = {**profile, "features": {c: profile["features"][c] for c in names}}
        report = compare(subset, pd.DataFrame(x, columns=names), p, thresholds, one_day=True)
        perf = {**(estimate_alert_precision(p[alerted]) if performance else {}),
                "rows_scored": scored, "rows_sampled": len(p)}
        ids.append(record_run(report, model_name=model, model_version=version, model_version_id=record.id,
                              scope="day", day=day, label=LABEL, db=db, performance=perf))
    return ids


def service_collector(ctx: Any, model: str, *, names: Sequence[str] | None = None,
                      thresholds: Thresholds | None = None, performance: bool = True) -> OnlineDayCollector | None:
    """One service worker's per-day sample of ``model``'s inputs, with its checks wired: a closed
    day is checked on a thread of its own (never in a request's path), and at shutdown the sample
    is written and checked before the process ends (``ctx``: the service context, whose
    ``on_shutdown`` takes the last flush). None when ``TRILLIUM_MONITOR_ONLINE=0``;
    ``TRILLIUM_MONITOR_FLUSH_SECONDS`` (default 60) sets how often it is written."""
    if os.environ.get("TRILLIUM_MONITOR_ONLINE", "1") == "0":
        return None

    def run(closed: list[tuple[int, str]]) -> None:
        try:
            check_days(model, registry=ctx.registry, db=ctx.db, days=closed, thresholds=thresholds,
                       performance=performance)
        except Exception:  # a failed check is logged; the service goes on
            log.exception("online drift check of %s %s failed", model, closed)

    def check(closed: list[tuple[int, str]]) -> None:
        threading.Thread(target=run, args=(closed,), name="online-drift-check", daemon=True).start()

    collector = OnlineDayCollector(model, names, on_flush=check,
                                   flush_seconds=float(os.environ.get("TRILLIUM_MONITOR_FLUSH_SECONDS", "60")))

    def final_flush() -> None:
        collector.on_flush = run
        collector.flush()

    ctx.on_shutdown(final_flush)
    return collector


def days_frame(model: str, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The (version, day) folders with samples (what ``trillium finance monitor-online`` lists)."""
    base = online_dir(model, root)
    rows = [{"version": int(v.name[1:]), "day": d.name, "workers": sum(not f.name.startswith(".") for f in d.glob("*.npz"))}
            for v in sorted(base.glob("v*")) if v.name[1:].isdigit() for d in sorted(v.iterdir()) if d.is_dir()]
    return pd.DataFrame(rows, columns=["version", "day", "workers"])


__all__ = ["LABEL", "OnlineDayCollector", "check_days", "days_frame", "online_dir", "read_day", "sampled_columns",
           "service_collector"]
