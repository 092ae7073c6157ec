"""The Ray Data engine for batch jobs: the local engine's chunks, scored on a Ray cluster.

Batch scoring outgrows one machine; rather than a distributed system of our own, a job runs
on Ray Data, the conventional engine for torch batch inference. ``run_batch(...,
engine="ray")`` (``trillium.core.jobs``) lands here; Ray is imported only then, and a missing
Ray is an ``EngineUnavailableError`` naming ``pip install 'trillium[ray]'``.

How a job runs:

* **Parts.** The input is cut into the local engine's chunks of ``chunk_rows`` rows: part k
  is chunk k, with the same rows and the same global row numbers, so for the same input and
  ``chunk_rows`` both engines write the same output parts and the same quarantine rows.
* **Dataset and actors.** The job's dataset is ``ray.data.from_items`` of the parts not yet
  done, one part per block, mapped with ``map_batches`` (one part per batch) on an actor
  pool. Each actor calls the job's processor factory once, which loads the model from the
  registry (sha256 checked) onto the core runtime, then for each part it is given: reads the
  part, runs the processor (bad records quarantined with their reasons exactly as the local
  engine does, through the same code), writes the output part, the part's quarantine rows
  and a done-marker.
* **Where the data is read.** A Parquet input is read by the worker that scores the part
  (only the row groups that hold it), so the rows never pass through the driver: the file
  must be on storage that every node mounts at the same path, as must the output directory.
  Inputs that cannot be split without reading them (CSV, whose records may span lines;
  folders, whose rows are paths; SQL) are read once by the driver, through the same
  ``Source`` as the local engine, into Ray's object store, from which workers fetch them.
* **Exactly once.** Part k's files have fixed names (``part-0000k.parquet`` as
  ``ParquetSink`` writes them, and ``_ray/quarantine/``, ``_ray/done/`` beside them; Parquet
  readers skip names that begin with ``_``), each written to a temporary file and renamed;
  the done-marker comes last and carries the job key. A rerun skips the parts that have a
  marker; a part done again replaces its files. So an actor killed mid-part (Ray restarts
  it and retries the task) or a driver killed mid-job (run it again: it resumes) never
  writes a row twice.
* **Poison parts.** A part whose worker dies on it ``max_attempts`` times (a decoder that
  segfaults, memory exhausted) is quarantined whole with that reason on the next attempt,
  so one part cannot keep the job in Ray's retries for ever.
* **A failing processor.** As in the local engine, a part on which the processor raises is
  quarantined whole; once ``max_failed_chunks`` parts of a run have (a broken model, not bad
  records), the driver stops taking results, the job fails with ``FailedChunksError`` and
  leaves a redo flag: the run after the fix redoes every part whose processor raised.
* **The end.** The driver concatenates the parts' quarantine rows, in part order, into the
  job's quarantine file (the local engine's format and default path) and records the job's
  counters in the database.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import update

from trillium.core.db import Database, Job, connect
from trillium.core.db.models import utcnow
from trillium.core.errors import EngineUnavailableError, JobError, TrilliumError
from trillium.core.jobs.checkpoints import DONE, FAILED, finished_job, job_key, job_lock, open_job, set_status
from trillium.core.jobs.engine import (
    DEFAULT_MAX_FAILED_CHUNKS,
    FailedChunksError,
    JobResult,
    Processor,
    ProcessorFactory,
    check_failed_limit,
    failed_chunks_message,
    job_result,
    process_chunk,
    progress_bar,
)
from trillium.core.jobs.quarantine import QUARANTINE_COLUMNS, encode_quarantine, quarantine_rows
from trillium.core.jobs.sinks import ParquetSink, Sink, fsync_dir
from trillium.core.jobs.sources import ParquetSource, Rejected, Source, check_chunk_rows, chunks_with_rejects

__all__ = ["RAY_EXTRA", "import_ray", "run_ray_job"]

logger = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'trillium[ray]'"
DEFAULT_MAX_ATTEMPTS = 3
_STATS = ("part", "rows_in", "rows_out", "rows_quarantined", "attempt", "seconds", "failed")


def import_ray() -> ModuleType:
    """The ``ray`` module with Ray Data, or an ``EngineUnavailableError`` naming the extra."""
    try:
        import ray
        import ray.data  # the engine needs Ray Data, not only Ray Core
    except ImportError as exc:
        raise EngineUnavailableError(
            f"the ray engine needs Ray Data, which is not installed here ({exc}): {RAY_EXTRA}"
        ) from exc
    return ray


# --------------------------------------------------------------------------- files of a part


def _write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through a temporary file of its own and a rename: readers (and a rerun)
    see the old file or the whole new one; two attempts of one part never share a temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


class _Layout:
    """Where a Ray job keeps each part's files, in its output directory.

    Output parts are named as ``ParquetSink`` names them; the engine's own files live under
    ``_ray/``, which Parquet dataset readers skip (names starting with ``_``).
    """

    def __init__(self, sink: ParquetSink) -> None:
        self.sink = sink
        self.state = sink.directory / "_ray"

    def part(self, k: int) -> Path:
        return self.sink.part_path(k)

    def quarantine(self, k: int) -> Path:
        return self.state / "quarantine" / f"part-{k:05d}.csv"

    def marker(self, k: int) -> Path:
        return self.state / "done" / f"part-{k:05d}.json"

    def attempts(self, k: int) -> Path:
        return self.state / "attempts" / f"part-{k:05d}"

    def done(self, key: str) -> dict[int, dict[str, Any]]:
        """The parts of job ``key`` that finished (a marker of another job does not count)."""
        found: dict[int, dict[str, Any]] = {}
        for path in (self.state / "done").glob("part-*.json"):
            try:
                marker = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if marker.get("key") == key:
                found[int(marker["part"])] = marker
        return found

    def reset(self, keep: set[int]) -> None:
        """Forget every part not in ``keep``: its output, quarantine rows and marker, and all
        attempt counts (only deaths within one run count against a part)."""
        self.sink.directory.mkdir(parents=True, exist_ok=True)
        for folder, pattern in ((self.sink.directory, "part-*.parquet"), (self.state / "quarantine", "part-*.csv"),
                                (self.state / "done", "part-*.json"), (self.state / "attempts", "part-*")):
            for path in folder.glob(pattern):
                digits = path.name.split("-", 1)[1].split(".", 1)[0]
                if not digits.isdigit() or int(digits) not in keep or folder.name == "attempts":
                    path.unlink(missing_ok=True)
            for tmp in folder.glob(".part-*.tmp"):
                tmp.unlink(missing_ok=True)

    @property
    def redo_flag(self) -> Path:
        """Left by a run stopped for failing parts: the next run of that job redoes every part
        whose processor raised (their markers stay until then, and a part still in flight when
        the run stopped may add one after the stop)."""
        return self.state / "redo-failed.json"

    def redo_failed(self, key: str) -> bool:
        try:
            return json.loads(self.redo_flag.read_text()).get("key") == key
        except (OSError, ValueError):
            return False

    def bump_attempt(self, k: int) -> int:
        """Count one more attempt at part ``k`` (the count survives its worker's death)."""
        path = self.attempts(k)
        try:
            count = int(path.read_text() or 0) + 1
        except (OSError, ValueError):
            count = 1
        _write_atomic(path, lambda fh: fh.write(str(count).encode()))
        return count


# --------------------------------------------------------------------------- the plan and the actor


@dataclass
class _Plan:
    """Everything an actor needs, shipped once through the object store."""

    name: str
    key: str
    sink: ParquetSink
    factory: ProcessorFactory
    chunk_rows: int
    max_attempts: int
    parquet: ParquetSource | None = None  # read by the workers themselves
    fingerprint: str = ""
    chunks: dict[int, Any] = field(default_factory=dict)  # part -> ObjectRef of (frame, rejected)

    def read(self, k: int) -> tuple[pd.DataFrame, list[Rejected]]:
        """Part ``k``'s rows, indexed by their global row numbers, and the reader's rejects."""
        if self.parquet is None:
            import ray

            frame, rejected = ray.get(self.chunks[k])
            return frame, rejected
        host = socket.gethostname()
        try:
            here = self.parquet.fingerprint()
        except JobError as exc:
            raise JobError(f"{exc} (on worker host {host}): the ray engine reads Parquet input where it is "
                           "scored, so it must be on storage every node mounts at the same path") from None
        if here != self.fingerprint:
            raise JobError(f"{self.parquet.path} on worker host {host} is not the file the job was planned on "
                           f"({here} != {self.fingerprint}): the input changed during the job, or this node "
                           "mounts another file at that path")
        start = k * self.chunk_rows
        frame = self.parquet.read_rows(start, start + self.chunk_rows)
        frame.index = pd.RangeIndex(start, start + len(frame))
        return frame, []

    def run_part(self, k: int, processor: Processor) -> dict[str, Any]:
        """Process part ``k`` and write its files; the done-marker last."""
        t0 = time.perf_counter()
        layout = _Layout(self.sink)
        attempt = layout.bump_attempt(k)
        frame, rejected = self.read(k)
        error = None
        if attempt > self.max_attempts:
            output = pd.DataFrame()
            bad = frame.assign(reason=f"part {k}: its worker died on each of {attempt - 1} attempts (killed, out "
                                      "of memory or crashed); quarantined whole")
        else:
            output, bad, error = process_chunk(processor, frame, k, self.name)
        final = layout.part(k)
        if len(output):
            table = pa.Table.from_pandas(output, preserve_index=False)
            _write_atomic(final, lambda fh: pq.write_table(table, fh, compression=self.sink.compression))
        else:  # no empty parts, as ParquetSink: a zero-column part would become the dataset's schema
            final.unlink(missing_ok=True)
        rows = quarantine_rows(k, bad, rejected)
        _write_atomic(layout.quarantine(k), lambda fh: fh.write(encode_quarantine(rows)))
        stats = {"part": k, "rows_in": len(frame) + len(rejected), "rows_out": len(output),
                 "rows_quarantined": len(rows), "attempt": attempt, "seconds": time.perf_counter() - t0,
                 "failed": error is not None}
        marker = {**stats, "key": self.key, "error": error, "row_start": int(frame.index[0]) if len(frame) else None,
                  "host": socket.gethostname(), "pid": os.getpid()}
        _write_atomic(layout.marker(k), lambda fh: fh.write(json.dumps(marker).encode()))
        return stats


class _PartWorker:
    """The actor: builds the processor once (the model is loaded here), then does parts.

    ``plan`` is the object reference of the job's plan, fetched once per actor; the driver
    keeps it alive for the whole job, so a restarted actor can fetch it again.
    """

    def __init__(self, plan: Any) -> None:
        import ray

        self.plan: _Plan = ray.get(plan) if isinstance(plan, ray.ObjectRef) else plan
        self.processor = self.plan.factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stats = [self.plan.run_part(int(k), self.processor) for k in batch["part"]]
        return {name: np.array([s[name] for s in stats]) for name in _STATS}


# --------------------------------------------------------------------------- the driver


@contextmanager
def _session(ray: ModuleType, address: str | None) -> Iterator[None]:
    """Join the cluster at ``address`` (None: ``RAY_ADDRESS``, else a local Ray started for this
    job), unless this process already joined one; leave only what this call started."""
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise JobError(f"cannot join the Ray cluster at {address or 'RAY_ADDRESS / a new local one'}: "
                           f"{exc}") from exc
        started = True
    ctx = ray.data.DataContext.get_current()
    bars = ctx.enable_progress_bars
    ctx.enable_progress_bars = False  # the job's own bar counts rows; Ray's would count blocks
    try:
        yield
    finally:
        ctx.enable_progress_bars = bars
        if started:
            ray.shutdown()


def _one_block_per_part(ray: ModuleType, parts: list[int]) -> Any:
    """A dataset of the parts, one per block: a task then holds one part, so an actor's death
    costs Ray one part's retry and no finished part is redone."""
    items = [{"part": k} for k in parts]
    params = inspect.signature(ray.data.from_items).parameters
    blocks = "override_num_blocks" if "override_num_blocks" in params else "parallelism"  # Ray < 2.10
    return ray.data.from_items(items, **{blocks: len(items)})


def _user_error(exc: BaseException) -> BaseException:
    """The first Trillium error in a Ray exception's causes (what to show), else ``exc``."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        cur = stack.pop(0)
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        cause = getattr(cur, "cause", None)
        if isinstance(cause, TrilliumError):
            return cause
        if isinstance(cur, TrilliumError) and type(cur).__module__.startswith("trillium."):
            return cur
        stack += [cause if isinstance(cause, BaseException) else None, cur.__cause__, cur.__context__]
    return exc


def _plan_parts(ray: ModuleType, plan: _Plan, source: Source, done: dict[int, dict[str, Any]]) -> tuple[int, int]:
    """Fill ``plan`` with how workers get each part; return (number of parts, input records).

    A Parquet file is read by the workers; any other input is read here, chunk by chunk
    through its ``Source`` (the local engine's reader, rejects included), and each part not
    done yet goes into the object store.
    """
    rows = plan.chunk_rows
    if isinstance(source, ParquetSource):
        plan.parquet, plan.fingerprint = source, source.fingerprint()
        total = source.total_rows() or 0
        return math.ceil(total / rows), total
    row_start = count = total = 0
    for k, (frame, rejected) in enumerate(chunks_with_rejects(source, rows)):
        count = k + 1
        frame.index = pd.RangeIndex(row_start, row_start + len(frame))  # global row numbers, as run_job
        row_start += len(frame)
        total += len(frame) + len(rejected)
        if k in done:
            if done[k]["rows_in"] != len(frame) + len(rejected):
                raise JobError(f"input {source.uri} changed: part {k} now has {len(frame) + len(rejected)} rows, "
                               f"its done-marker says {done[k]['rows_in']}")
            continue
        plan.chunks[k] = ray.put((frame, rejected))
    return count, total


def _merge_quarantine(layout: _Layout, parts: int, path: Path) -> None:
    """The job's quarantine file: the header, then each part's rows in part order."""
    def write(fh: IO[bytes]) -> None:
        fh.write(encode_quarantine([list(QUARANTINE_COLUMNS)]))
        for k in range(parts):
            fh.write(layout.quarantine(k).read_bytes())

    _write_atomic(path, write)


def _record_totals(db: Database, job_id: int, markers: dict[int, dict[str, Any]]) -> None:
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(
            rows_in=sum(m["rows_in"] for m in markers.values()),
            rows_out=sum(m["rows_out"] for m in markers.values()),
            rows_quarantined=sum(m["rows_quarantined"] for m in markers.values()),
            chunks_done=len(markers), updated_at=utcnow(),
        ))


def run_ray_job(
    name: str,
    source: Source,
    factory: ProcessorFactory,
    sink: Sink,
    *,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    db: Database | None = None,
    chunk_rows: int | None = None,
    resume: bool = True,
    progress: bool = True,
    quarantine_path: str | os.PathLike[str] | None = None,
    max_failed_chunks: int | None = DEFAULT_MAX_FAILED_CHUNKS,
) -> JobResult:
    """Run (or resume, or skip if finished) the job ``name`` on Ray; see the module docstring.

    ``factory`` is called once per actor and must be picklable (cloudpickle); ``sink`` must be
    a ``ParquetSink``. ``workers`` actors of ``cpus_per_worker`` CPUs each (default: as many as
    the cluster's CPUs allow, at most one per part). The result counts the whole job, across
    runs; ``resumed_from_chunk`` is the number of parts already done when this run began.
    Raises ``JobError`` when the job cannot start or fails; it is then marked "failed", and
    running it again redoes only the parts without a done-marker.
    """
    ray = import_ray()
    started = time.perf_counter()
    if not name or len(name) > 200:
        raise JobError(f"job name must be 1-200 characters, got {name!r}")
    if not isinstance(sink, ParquetSink):
        raise JobError(f"the ray engine writes a directory of Parquet parts; {sink.uri} is a "
                       f"{type(sink).__name__}: give the job a directory (ParquetSink)")
    if workers is not None and workers < 1:
        raise JobError(f"workers must be at least 1, got {workers}")
    if max_attempts < 1:
        raise JobError(f"max_attempts must be at least 1, got {max_attempts}")
    rows = check_chunk_rows(chunk_rows if chunk_rows is not None else source.chunk_rows)
    check_failed_limit(max_failed_chunks)
    db = db or connect()
    fingerprint = source.fingerprint()
    key = job_key(name, source.uri, fingerprint, sink.uri, rows, engine="ray")

    with job_lock(key, name):
        finished = finished_job(db, key) if resume else None
        if finished is not None:
            logger.info("job %s (id %d) already done; nothing to do", name, finished.id)
            return job_result(finished, resumed_from=finished.chunks_done, processed=0, started=started)
        job_id, _, qpath = open_job(
            db, key=key, name=name, source=source, sink=sink, resume=resume, quarantine_path=quarantine_path,
            params={"engine": "ray", "chunk_rows": rows, "source_fingerprint": fingerprint, "address": address},
        )
        layout = _Layout(sink)
        processed = 0
        failed: list[int] = []  # parts of this run on which the processor raised
        try:
            with _session(ray, address):
                done = layout.done(key) if resume else {}
                if layout.redo_failed(key):
                    done = {k: m for k, m in done.items() if not m.get("error")}
                plan = _Plan(name=name, key=key, sink=sink, factory=factory, chunk_rows=rows,
                             max_attempts=max_attempts)
                parts, total = _plan_parts(ray, plan, source, done)
                done = {k: m for k, m in done.items() if k < parts}
                layout.reset(keep=set(done))
                layout.redo_flag.unlink(missing_ok=True)
                todo = [k for k in range(parts) if k not in done]
                logger.info("job %s (id %d) on ray: %d parts, %d done before, %d to do",
                            name, job_id, parts, len(done), len(todo))
                if todo:
                    cpus = float(ray.cluster_resources().get("CPU", 1.0))
                    size = min(len(todo), workers or max(1, int(cpus // cpus_per_worker)))
                    plan_ref = ray.put(plan)  # shipped once; every actor fetches it
                    # one part in flight per actor: a free actor takes the next part, so a slow part
                    # never holds others queued behind it while another actor idles
                    pool = ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1)
                    ds = _one_block_per_part(ray, todo).map_batches(
                        _PartWorker, batch_size=1, compute=pool, num_cpus=cpus_per_worker,
                        fn_constructor_args=(plan_ref,),
                    )
                    with progress_bar(progress) as bar:
                        task = bar.add_task(f"{name} (ray, {size} workers)", total=total)
                        bar.advance(task, sum(m["rows_in"] for m in done.values()))
                        results = iter(ds.iter_rows())
                        try:
                            for row in results:
                                processed += 1
                                bar.advance(task, int(row["rows_in"]))
                                if row["failed"]:
                                    failed.append(int(row["part"]))
                                    if max_failed_chunks is not None and len(failed) >= max_failed_chunks:
                                        break
                        finally:
                            # closing the iterator asks Ray to stop the dataset's execution, so a
                            # stopped job does not go on scoring the rest of the input
                            close = getattr(results, "close", None)
                            if close is not None:
                                close()
            if max_failed_chunks is not None and len(failed) >= max_failed_chunks:
                markers = layout.done(key)
                error = str(markers.get(failed[-1], {}).get("error"))
                # the next run drops the failed parts' markers and files (reset) and redoes them
                _write_atomic(layout.redo_flag, lambda fh: fh.write(json.dumps({"key": key}).encode()))
                raise FailedChunksError(failed_chunks_message(name, failed, error, unit="part"))
            markers = layout.done(key)
            missing = sorted(set(range(parts)) - set(markers))
            if missing:
                raise JobError(f"parts {missing[:10]} have no done-marker after the run")
            _merge_quarantine(layout, parts, qpath)
            _record_totals(db, job_id, markers)
            result = job_result(set_status(db, job_id, DONE), resumed_from=len(done), processed=processed,
                             started=started)
            logger.info("job %s (id %d) done on ray: %d rows in, %d out, %d quarantined (%s)",
                        name, job_id, result.rows_in, result.rows_out, result.rows_quarantined, qpath)
            return result
        except BaseException as exc:
            cause = _user_error(exc)
            text = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(cause).__name__}: {cause}"
            try:
                set_status(db, job_id, FAILED, text)
            except Exception:  # the database may be the cause; the original error matters more
                logger.exception("job %s: could not record the failure", name)
            if not isinstance(exc, Exception):
                raise
            if isinstance(exc, FailedChunksError):
                raise
            raise JobError(
                f"job {name!r} (id {job_id}) failed on the ray engine: {text}. Fix the cause and run it again: "
                "finished parts are kept."
            ) from exc
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
