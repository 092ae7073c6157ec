"""The local engine: a batch job run chunk by chunk in this process, and the choice of engine.

``run_job`` reads a ``Source`` chunk by chunk, hands each chunk to the job's *processor*
(``Processor``: transform + predict, returning a ``ProcessResult`` of output rows and rejected
rows), writes the output to the ``Sink`` and the rejects to the quarantine, then commits the
chunk's checkpoint; a processor that keeps raising stops the job (``FailedChunksError``).
``run_batch`` runs a job on the engine a command chose (``local`` here, or ``ray``:
``ray_engine``); ``output_sink`` and ``read_output`` map a command's ``--output`` to its sink.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trillium.core.db import Database, Job, JobChunk, connect
from trillium.core.errors import InputValidationError, JobError
from trillium.core.jobs.checkpoints import (
    DONE,
    FAILED,
    drop_checkpoints_from,
    finished_job,
    job_key,
    job_lock,
    open_job,
    record_checkpoint,
    set_status,
)
from trillium.core.jobs.quarantine import QuarantineFile
from trillium.core.jobs.sinks import CsvSink, ParquetSink, Sink
from trillium.core.jobs.sources import Source, check_chunk_rows, chunks_with_rejects

__all__ = [
    "DEFAULT_MAX_FAILED_CHUNKS",
    "ENGINES",
    "FailedChunksError",
    "JobResult",
    "ProcessResult",
    "Processor",
    "ProcessorFactory",
    "check_engine",
    "check_failed_limit",
    "failed_chunk_limit",
    "failed_chunks_message",
    "job_result",
    "output_sink",
    "process_chunk",
    "progress_bar",
    "read_output",
    "reasons_from",
    "run_batch",
    "run_job",
    "split_valid",
]

logger = logging.getLogger(__name__)


# A chunk whose processor raises is quarantined whole; this many in one run stop the job.
DEFAULT_MAX_FAILED_CHUNKS = 3


class FailedChunksError(JobError):
    """The processor raised on ``max_failed_chunks`` chunks of one run: the job was stopped
    (a broken model or a bug, not bad records) and those chunks were left for the next run."""


def check_failed_limit(max_failed_chunks: int | None) -> None:
    """Refuse (``JobError``) a ``max_failed_chunks`` that is neither None nor a positive integer.

    Public because both engines check the limit before a job starts.
    """
    if max_failed_chunks is not None and (not isinstance(max_failed_chunks, int) or max_failed_chunks < 1):
        raise JobError(f"max_failed_chunks must be a positive integer or None, got {max_failed_chunks!r}")


def failed_chunk_limit(option: int | None) -> int | None:
    """The limit a command-line ``--max-failed-chunks`` gives: unset -> the default, 0 -> never stop.
    A negative value is refused here, before a command spends time reading its input."""
    limit = DEFAULT_MAX_FAILED_CHUNKS if option is None else (option or None)
    check_failed_limit(limit)
    return limit


def failed_chunks_message(name: str, failed: Sequence[int], last_error: str, unit: str = "chunk") -> str:
    """What a stopped job says: which chunks failed, the last error, and what happens on rerun.

    Public because the Ray engine stops a job in the same words, with ``unit="part"``.
    """
    shown = ", ".join(str(k) for k in failed[:10]) + (", ..." if len(failed) > 10 else "")
    return (f"job {name!r}: the processor failed on {len(failed)} {unit}s of this run ({unit}s {shown}; last: "
            f"{last_error}), so the job was stopped rather than quarantine the whole input. Those {unit}s are "
            "not marked done: fix the model or processor and run the job again to redo them.")


# --------------------------------------------------------------------------- processors


@dataclass(frozen=True)
class ProcessResult:
    """What a processor returns for one chunk.

    ``output`` is written to the sink. ``quarantined`` holds rejected input rows: their original
    columns plus ``reason``, *keeping the chunk's index*, which the engine sets to each row's
    global input row number, so the quarantine file can say which row was bad.
    """

    output: pd.DataFrame
    quarantined: pd.DataFrame | None = None


Processor = Callable[[pd.DataFrame, int], ProcessResult | pd.DataFrame]
"""``(chunk, chunk_index) -> ProcessResult`` (a bare DataFrame means nothing was rejected)."""

ProcessorFactory = Callable[[], Processor]
"""Builds a ``Processor``: once for a local job, once in every Ray worker (see ``run_batch``).

Why a factory: a worker must load its model itself (from the registry, sha256 checked), so
what travels to it is a small picklable object naming the model version, not the model.
"""

ENGINES = ("local", "ray")


def split_valid(frame: pd.DataFrame, reasons: pd.Series | Sequence[str | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``frame`` into (valid rows, rejected rows with a ``reason`` column).

    ``reasons`` has one entry per row: None, NaN or "" for a valid row, else why it is bad.
    The index is kept on both sides so the engine can report input row numbers.
    """
    if isinstance(reasons, pd.Series):
        why = reasons.reindex(frame.index)
    else:
        why = pd.Series(list(reasons), index=frame.index, dtype=object)
    bad = why.notna() & (why.astype(object) != "")
    rejected = frame.loc[bad].copy()
    rejected["reason"] = why[bad].astype(str).to_numpy()
    return frame.loc[~bad], rejected


def reasons_from(rules: Mapping[str, pd.Series]) -> pd.Series:
    """Per row, the messages of every rule whose mask is True, joined with "; " (None if none).

    ``rules`` maps a message to a boolean Series (True = the row breaks the rule), all on the
    same index; missing values in a mask count as False.
    """
    if not rules:
        raise ValueError("reasons_from needs at least one rule")
    masks = list(rules.values())
    out = pd.Series([None] * len(masks[0]), index=masks[0].index, dtype=object)
    for message, mask in rules.items():
        hit = mask.reindex(out.index).fillna(False).astype(bool)
        out[hit] = [message if cur is None else f"{cur}; {message}" for cur in out[hit]]
    return out


# --------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class JobResult:
    """What a run did; counters cover the whole job, across resumes."""

    job_id: int
    key: str
    name: str
    status: str
    rows_in: int
    rows_out: int
    rows_quarantined: int
    chunks: int
    resumed_from_chunk: int
    chunks_processed: int
    output: str
    quarantine: Path
    elapsed_s: float
    params: dict[str, Any] = field(default_factory=dict)


def job_result(job: Job, *, resumed_from: int, processed: int, started: float) -> JobResult:
    """The ``JobResult`` of a run from the job's row as stored; both engines report with it."""
    return JobResult(
        job_id=job.id,
        key=job.key,
        name=job.name,
        status=job.status,
        rows_in=job.rows_in,
        rows_out=job.rows_out,
        rows_quarantined=job.rows_quarantined,
        chunks=job.chunks_done,
        resumed_from_chunk=resumed_from,
        chunks_processed=processed,
        output=job.output_uri,
        quarantine=Path(job.params.get("quarantine", "")),
        elapsed_s=time.perf_counter() - started,
        params=dict(job.params),
    )


def process_chunk(
    processor: Processor, frame: pd.DataFrame, chunk_index: int, name: str
) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """Run the processor on a chunk: (output, quarantined rows, None), or, if it raises, the
    whole chunk quarantined and the error text as the third item.

    Public because a Ray worker runs each part through it, so both engines check a processor's
    result and quarantine a failing chunk alike.
    """
    if len(frame) == 0:
        return pd.DataFrame(), pd.DataFrame(columns=["reason"]), None
    try:
        result = processor(frame.copy(), chunk_index)
        if isinstance(result, pd.DataFrame):
            output, quarantined = result, None
        elif isinstance(result, ProcessResult):
            output, quarantined = result.output, result.quarantined
        else:
            raise TypeError(f"processor returned {type(result).__name__}, expected ProcessResult or DataFrame")
        if not isinstance(output, pd.DataFrame):
            raise TypeError(f"processor output is {type(output).__name__}, expected a DataFrame")
        if quarantined is None or len(quarantined) == 0:
            quarantined = pd.DataFrame(columns=["reason"])
        elif "reason" not in quarantined.columns:
            raise TypeError("processor's quarantined frame has no 'reason' column")
        return output, quarantined, None
    except Exception as exc:
        logger.warning(
            "job %s: processor failed on chunk %d; quarantining its %d rows", name, chunk_index, len(frame),
            exc_info=True,
        )
        error = f"{type(exc).__name__}: {exc}"
        return pd.DataFrame(), frame.assign(reason=f"processor failed on chunk {chunk_index}: {error}"), error


def progress_bar(enabled: bool) -> Any:
    """The rows-done progress bar on stderr (disabled unless ``enabled`` and stderr is a
    terminal); both engines show the same one."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled or not console.is_terminal,
    )


def run_job(
    name: str,
    source: Source,
    processor: Processor,
    sink: Sink,
    *,
    db: Database | None = None,
    chunk_rows: int | None = None,
    resume: bool = True,
    progress: bool = True,
    quarantine_path: str | os.PathLike[str] | None = None,
    max_failed_chunks: int | None = DEFAULT_MAX_FAILED_CHUNKS,
) -> JobResult:
    """Run (or resume, or skip if finished) the job ``name`` over ``source`` into ``sink``.

    Per chunk: process, write the output, write the quarantine, then commit the checkpoint; the
    writes before the commit are undone or overwritten on resume, so a kill anywhere loses
    nothing and duplicates nothing. ``chunk_rows`` overrides the source's. ``resume=False``
    discards the job's checkpoints and starts over. The quarantine defaults to
    ``<output>.quarantine.csv`` (or ``$TRILLIUM_HOME/jobs/`` for a SQL sink).
    ``max_failed_chunks``: after the processor has raised on this many chunks of the run, the
    job stops with ``FailedChunksError`` and the checkpoints from the first of them on are
    dropped, so the next run redoes them (None: never stop; every such chunk is quarantined).
    Raises ``JobError`` when the job cannot start or fails; the job is then marked "failed"
    and running it again resumes it.
    """
    started = time.perf_counter()
    if not name or len(name) > 200:
        raise JobError(f"job name must be 1-200 characters, got {name!r}")
    rows = check_chunk_rows(chunk_rows if chunk_rows is not None else source.chunk_rows)
    check_failed_limit(max_failed_chunks)
    db = db or connect()
    fingerprint = source.fingerprint()  # raises JobError naming a missing input
    key = job_key(name, source.uri, fingerprint, sink.uri, rows)

    with job_lock(key, name):
        done = finished_job(db, key) if resume else None
        if done is not None:
            logger.info("job %s (id %d) already done; nothing to do", name, done.id)
            return job_result(done, resumed_from=done.chunks_done, processed=0, started=started)
        job_id, committed, qpath = open_job(
            db, key=key, name=name, source=source, sink=sink, resume=resume, quarantine_path=quarantine_path,
            params={"chunk_rows": rows, "source_fingerprint": fingerprint},
        )
        resume_from = len(committed)
        last = committed[-1] if committed else None
        if resume_from:
            logger.info("job %s (id %d): resuming from chunk %d", name, job_id, resume_from)
        else:
            logger.info("job %s (id %d): starting %s -> %s", name, job_id, source.uri, sink.uri)

        quarantine = QuarantineFile(qpath)
        chunk_index = resume_from
        processed = 0
        failed: list[int] = []  # chunks of this run on which the processor raised
        try:
            sink.bind(db)
            sink.prepare(resume_from, last.output_offset if last else 0)
            quarantine.prepare(resume_from, last.quarantine_offset if last else 0)
            with progress_bar(progress) as bar:
                task = bar.add_task(name, total=None if bar.disable else source.total_rows())
                row_start = seen = 0
                for chunk_index, (frame, rejected) in enumerate(chunks_with_rejects(source, rows)):
                    seen = chunk_index + 1
                    frame.index = pd.RangeIndex(row_start, row_start + len(frame))  # global row numbers
                    row_start += len(frame)
                    rows_in = len(frame) + len(rejected)
                    if chunk_index < resume_from:  # re-read, not re-done
                        if committed[chunk_index].rows_in != rows_in:
                            raise JobError(
                                f"input {source.uri} changed: chunk {chunk_index} now has {rows_in} rows, "
                                f"its checkpoint says {committed[chunk_index].rows_in}"
                            )
                        bar.advance(task, rows_in)
                        continue
                    output, bad, error = process_chunk(processor, frame, chunk_index, name)
                    if error is not None:
                        failed.append(chunk_index)
                        if max_failed_chunks is not None and len(failed) >= max_failed_chunks:
                            drop_checkpoints_from(db, job_id, failed[0])
                            raise FailedChunksError(failed_chunks_message(name, failed, error))
                    with db.session() as s:  # its commit is the checkpoint
                        out_offset = sink.write(chunk_index, output, s)
                        q_offset = quarantine.write(chunk_index, bad, rejected)
                        record_checkpoint(s, job_id, JobChunk(
                            job_id=job_id, chunk_index=chunk_index, rows_in=rows_in, rows_out=len(output),
                            rows_quarantined=len(bad) + len(rejected), output_offset=out_offset,
                            quarantine_offset=q_offset,
                        ))
                    processed += 1
                    bar.advance(task, rows_in)
                if seen < resume_from:
                    raise JobError(f"input {source.uri} has {seen} chunks, fewer than the {resume_from} checkpointed")
            result = job_result(set_status(db, job_id, DONE), resumed_from=resume_from, processed=processed,
                             started=started)
            logger.info("job %s (id %d) done: %d rows in, %d out, %d quarantined (%s)",
                        name, job_id, result.rows_in, result.rows_out, result.rows_quarantined, qpath)
            return result
        except BaseException as exc:
            text = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            try:
                set_status(db, job_id, FAILED, text)
            except Exception:  # the database may be the cause; the original error matters more
                logger.exception("job %s: could not record the failure", name)
            if not isinstance(exc, Exception):
                raise
            if isinstance(exc, FailedChunksError):
                raise
            raise JobError(
                f"job {name!r} (id {job_id}) failed at chunk {chunk_index}: {text}. "
                "Fix the cause and run it again: it resumes from its last checkpoint."
            ) from exc
        finally:
            sink.close()
            quarantine.close()
            close = getattr(source, "close", None)
            if close is not None:
                close()


# --------------------------------------------------------------------------- output and engine choice


def output_sink(output: str | os.PathLike[str], engine: str = "local") -> Sink:
    """The sink a batch command's ``--output`` names: a ``.csv`` file, or a directory of Parquet
    parts (``.parquet``, no suffix, or an existing folder). The ray engine writes Parquet parts
    only, so it refuses a ``.csv`` output before any work is done."""
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        if engine == "ray":
            raise InputValidationError(f"--output {output}: the ray engine writes a directory of Parquet parts, "
                                       "not a .csv file")
        return CsvSink(path)
    if suffix in (".parquet", "") or path.is_dir():
        return ParquetSink(path)
    raise InputValidationError(f"--output {output}: a .csv file or a directory of Parquet parts (no suffix)")


def read_output(
    output: str | os.PathLike[str],
    *,
    equals: Mapping[str, Any] | None = None,
    empty_columns: Sequence[str] = (),
    dtype: Any = None,
    parse_dates: Sequence[str] | None = None,
) -> pd.DataFrame:
    """What a batch job wrote to ``output`` (the sink ``output_sink`` names: a ``.csv`` file, or a
    directory of Parquet parts from either engine), in chunk order.

    ``equals`` keeps only the rows whose column equals the value, for each item (Parquet filters
    them while reading); nothing written yet gives an empty frame with ``empty_columns``;
    ``dtype`` and ``parse_dates`` apply to a CSV, which does not keep types. See
    ``ParquetSink.read`` and ``CsvSink.read``.
    """
    sink = output_sink(output)
    if isinstance(sink, CsvSink):
        return sink.read(equals=equals, empty_columns=empty_columns, dtype=dtype, parse_dates=parse_dates)
    assert isinstance(sink, ParquetSink)  # nosec B101 # type narrowing: one of two sinks
    return sink.read(equals=equals, empty_columns=empty_columns)


def check_engine(engine: str) -> str:
    """``engine`` if it is one of ``ENGINES`` and usable here, checked before any work is done:
    a ``JobError`` naming the choices, or for ``ray`` without Ray installed an
    ``EngineUnavailableError`` naming the extra to install."""
    if engine not in ENGINES:
        raise JobError(f"unknown batch engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "ray":
        from trillium.core.jobs.ray_engine import import_ray

        import_ray()
    return engine


def run_batch(
    name: str,
    source: Source,
    factory: ProcessorFactory,
    sink: Sink,
    *,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    db: Database | None = None,
    chunk_rows: int | None = None,
    resume: bool = True,
    progress: bool = True,
    quarantine_path: str | os.PathLike[str] | None = None,
    max_failed_chunks: int | None = DEFAULT_MAX_FAILED_CHUNKS,
) -> JobResult:
    """Run a batch job on the chosen engine.

    ``local`` (the default) builds the processor once and runs ``run_job`` in this process,
    exactly as before engines existed. ``ray`` runs the same chunks as parts on a Ray cluster
    (``trillium.core.jobs.ray_engine``; needs ``pip install 'trillium[ray]'``): ``address`` is the
    cluster to join (None: ``RAY_ADDRESS`` or a local Ray started for the job), ``workers``
    the number of actors (default: one per CPU of the cluster). Both give the same output
    parts and quarantine rows for the same input and ``chunk_rows``.
    """
    check_engine(engine)
    if engine == "local":
        if address is not None or workers is not None:
            raise JobError("address and workers apply to the ray engine only (engine='ray')")
        return run_job(name, source, factory(), sink, db=db, chunk_rows=chunk_rows, resume=resume,
                       progress=progress, quarantine_path=quarantine_path, max_failed_chunks=max_failed_chunks)
    from trillium.core.jobs.ray_engine import run_ray_job

    return run_ray_job(name, source, factory, sink, address=address, workers=workers, db=db, chunk_rows=chunk_rows,
                       resume=resume, progress=progress, quarantine_path=quarantine_path,
                       max_failed_chunks=max_failed_chunks)
