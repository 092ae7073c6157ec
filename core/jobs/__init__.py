"""The batch engine: chunked read -> process -> write, with a database checkpoint per chunk.

A job reads its input in chunks of ``chunk_rows`` rows (a ``Source``), hands each chunk to a
*processor* (transform + predict) that returns the output rows and the rows it rejects, writes
the output (a ``Sink``) and the rejects (the quarantine file), then commits a checkpoint: one
``job_chunks`` row plus the job's counters. A job killed at any instant (SIGKILL included)
resumes where it stopped, with no row lost and none written twice, because every write is
either idempotent per chunk or undone on resume:

* ``ParquetSink`` writes ``part-<chunk>.parquet`` through a temporary file and ``os.replace``:
  the name is a function of the chunk, so a chunk written but not checkpointed is simply
  rewritten (and parts past the checkpoint are deleted on resume).
* ``CsvSink`` and the quarantine file append whole chunks, fsync, and record the byte offset in
  the checkpoint; on resume the file is truncated back to the last committed offset.
* ``SqlSink`` inserts into the job database in the *same transaction* as the checkpoint
  (exactly once); into another database it first deletes the rows of that chunk (``_chunk``).

Bad records never stop a job: processors route them to the quarantine with a reason, a CSV
line that cannot be split into the header's fields is quarantined by the reader, and a chunk
on which the processor raises is quarantined whole with the exception text. A processor that
keeps raising is not bad input but a broken model or a bug: once it has failed on
``max_failed_chunks`` chunks of a run (default 3) the job stops (``FailedChunksError``) instead
of quarantining the whole input and reporting "done", and those chunks are not checkpointed, so
the run after the fix redoes them. Anything else (disk full, database gone, output schema drift)
marks the job ``failed`` and raises ``JobError``; running the same job again resumes it.

A job is identified by a key: the sha256 of its name, input (URI and fingerprint: size and
mtime, or table row count), output URI and chunk size. Running a finished job again is a no-op;
``resume=False`` starts it over.

The package, one purpose a module: ``sources`` (where a job reads), ``sinks`` (where it writes,
and reading that back), ``quarantine`` (the rejected records), ``checkpoints`` (the job's row,
checkpoints, status and lock in the database), ``engine`` (the local engine, processors and the
choice of engine) and ``ray_engine`` (the Ray engine). This module re-exports the public API.
"""

from __future__ import annotations

from trillium.core.jobs.checkpoints import job_key
from trillium.core.jobs.engine import (
    DEFAULT_MAX_FAILED_CHUNKS,
    ENGINES,
    FailedChunksError,
    JobResult,
    Processor,
    ProcessorFactory,
    ProcessResult,
    check_engine,
    failed_chunk_limit,
    output_sink,
    read_output,
    reasons_from,
    run_batch,
    run_job,
    split_valid,
)
from trillium.core.jobs.quarantine import QUARANTINE_COLUMNS, encode_quarantine, quarantine_rows, read_quarantine
from trillium.core.jobs.sinks import CHUNK_COLUMN, CsvSink, ParquetSink, Sink, SqlSink
from trillium.core.jobs.sources import (
    DEFAULT_CHUNK_ROWS,
    CsvSource,
    FolderSource,
    ParquetSource,
    Rejected,
    Source,
    SqlSource,
)

__all__ = [
    "CHUNK_COLUMN",
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_MAX_FAILED_CHUNKS",
    "ENGINES",
    "QUARANTINE_COLUMNS",
    "CsvSink",
    "CsvSource",
    "FailedChunksError",
    "FolderSource",
    "JobResult",
    "ParquetSink",
    "ParquetSource",
    "ProcessResult",
    "Processor",
    "ProcessorFactory",
    "Rejected",
    "Sink",
    "Source",
    "SqlSink",
    "SqlSource",
    "check_engine",
    "encode_quarantine",
    "failed_chunk_limit",
    "job_key",
    "output_sink",
    "quarantine_rows",
    "read_output",
    "read_quarantine",
    "reasons_from",
    "run_batch",
    "run_job",
    "split_valid",
]
