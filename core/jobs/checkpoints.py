"""A job's state in the database: its row (``jobs``), its chunk checkpoints (``job_chunks``),
its status, and the host lock that keeps it from running twice at once.

The local engine (``engine.run_job``) and the Ray engine (``ray_engine.run_ray_job``) both
open, lock, finish and fail their jobs through these functions, so a job row means the same
whichever engine ran it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from trillium.core.config import jobs_dir
from trillium.core.db import Database, Job, JobChunk
from trillium.core.db.models import utcnow
from trillium.core.errors import JobError
from trillium.core.jobs.sinks import Sink
from trillium.core.jobs.sources import Source

__all__ = [
    "DONE",
    "FAILED",
    "RUNNING",
    "drop_checkpoints_from",
    "finished_job",
    "job_key",
    "job_lock",
    "open_job",
    "record_checkpoint",
    "set_status",
]


# A job row's status.
RUNNING, DONE, FAILED = "running", "done", "failed"


def job_key(name: str, source_uri: str, fingerprint: str, sink_uri: str, chunk_rows: int,
            engine: str = "local") -> str:
    """The identity of a job: same name, input, output, chunking and engine = the same job.

    The engine is part of it because the engines keep their progress differently (checkpoint
    rows for the local one, done-markers next to the output for Ray), so one cannot resume the
    other's job; a local job's key is what it was before engines existed.
    """
    fields: list[Any] = [name, source_uri, fingerprint, sink_uri, chunk_rows]
    if engine != "local":
        fields.append(engine)
    blob = json.dumps(fields)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@contextmanager
def job_lock(key: str, name: str) -> Iterator[None]:
    """Refuse to run a job twice at once on this host.

    A killed job leaves status "running" in the database, so the status cannot tell a live run
    from a dead one; an OS file lock can, because the kernel drops it when the process dies.
    Both engines hold it for the whole run.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): rely on the caller
        yield
        return
    path = jobs_dir() / f"{key}.lock"
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"job {name!r} is already running in another process (lock {path})") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "job"


def finished_job(db: Database, key: str) -> Job | None:
    """The job ``key`` if it is done (then a run of it, on either engine, is a no-op), else None."""
    with db.session() as s:
        return s.scalars(select(Job).where(Job.key == key, Job.status == DONE)).one_or_none()


def open_job(
    db: Database,
    *,
    key: str,
    name: str,
    source: Source,
    sink: Sink,
    params: dict[str, Any],
    resume: bool,
    quarantine_path: str | os.PathLike[str] | None,
) -> tuple[int, list[JobChunk], Path]:
    """Create the job row, or reopen it with its checkpoints (none if ``resume`` is False).

    Returns (job id, committed checkpoints in chunk order, quarantine path). Both engines start
    a run with it, so the job row and the quarantine path follow the same rules on either; the
    Ray engine ignores the checkpoints (it keeps its progress in done-markers).
    """
    with db.session() as s:
        job = s.scalars(select(Job).where(Job.key == key)).one_or_none()
        if quarantine_path is not None:
            qpath = Path(quarantine_path).expanduser().resolve()
        elif job is not None and resume and job.params.get("quarantine"):
            qpath = Path(job.params["quarantine"])
        else:
            qpath = sink.default_quarantine_path() or jobs_dir() / f"{_slug(name)}-{key[:12]}.quarantine.csv"
        if str(qpath) == sink.uri:
            raise JobError(f"the quarantine file cannot be the output itself: {qpath}")
        params = {**params, "quarantine": str(qpath)}
        committed: list[JobChunk] = []
        if job is None:
            job = Job(key=key, name=name, status=RUNNING, input_uri=source.uri, output_uri=sink.uri, params=params)
            s.add(job)
            s.flush()
        elif not resume:
            s.execute(delete(JobChunk).where(JobChunk.job_id == job.id))
            job.rows_in = job.rows_out = job.rows_quarantined = job.chunks_done = 0
        else:
            found = s.scalars(select(JobChunk).where(JobChunk.job_id == job.id).order_by(JobChunk.chunk_index))
            committed = list(found)
            if [c.chunk_index for c in committed] != list(range(len(committed))):
                raise JobError(f"job {name!r} (id {job.id}) has non-contiguous checkpoints; rerun with resume=False")
            stored = job.params.get("quarantine")
            if committed and stored and stored != str(qpath):
                raise JobError(
                    f"job {name!r} was started with quarantine file {stored}; pass the same "
                    "quarantine_path to resume it, or resume=False to start over"
                )
        job.status, job.error, job.params, job.updated_at = RUNNING, None, params, utcnow()
        return job.id, committed, qpath


def record_checkpoint(s: Session, job_id: int, chunk: JobChunk) -> None:
    """Record a finished chunk and add it to the job's counters (committed with ``s``).

    ``s`` is the session in which the sink wrote the chunk, so the checkpoint commits with it.
    """
    s.add(chunk)
    s.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            rows_in=Job.rows_in + chunk.rows_in,
            rows_out=Job.rows_out + chunk.rows_out,
            rows_quarantined=Job.rows_quarantined + chunk.rows_quarantined,
            chunks_done=Job.chunks_done + 1,
            updated_at=utcnow(),
        )
    )


def drop_checkpoints_from(db: Database, job_id: int, first: int) -> None:
    """Drop the checkpoints of chunks >= ``first`` and recount the job's totals from the rest: the
    next run resumes at ``first`` and each sink truncates its output back to chunk ``first - 1``'s."""
    with db.session() as s:
        s.execute(delete(JobChunk).where(JobChunk.job_id == job_id, JobChunk.chunk_index >= first))
        kept = s.scalars(select(JobChunk).where(JobChunk.job_id == job_id)).all()
        s.execute(update(Job).where(Job.id == job_id).values(
            rows_in=sum(c.rows_in for c in kept), rows_out=sum(c.rows_out for c in kept),
            rows_quarantined=sum(c.rows_quarantined for c in kept), chunks_done=len(kept), updated_at=utcnow()))


def set_status(db: Database, job_id: int, status: str, error: str | None = None) -> Job:
    """Set the job's status (``DONE``, ``FAILED`` with the error text) and return the row as now
    stored: both engines end every run with it."""
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=status, error=error, updated_at=utcnow()))
        job = s.get(Job, job_id, populate_existing=True)
        assert job is not None  # nosec B101 # type narrowing: the row just updated
        return job
