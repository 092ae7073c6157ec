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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    Numeric,
    Select,
    Table,
    Text,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.orm import Session

from trillium.core.config import jobs_dir
from trillium.core.db import Database, Job, JobChunk, connect
from trillium.core.db.models import utcnow
from trillium.core.errors import InputValidationError, JobError

__all__ = [
    "CHUNK_COLUMN",
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
    "read_quarantine",
    "reasons_from",
    "run_batch",
    "run_job",
    "split_valid",
]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 10_000
CHUNK_COLUMN = "_chunk"
QUARANTINE_COLUMNS = ("chunk_index", "row_index", "reason", "record")
RUNNING, DONE, FAILED = "running", "done", "failed"
# A chunk whose processor raises is quarantined whole; this many in one run stop the job.
DEFAULT_MAX_FAILED_CHUNKS = 3


class FailedChunksError(JobError):
    """The processor raised on ``max_failed_chunks`` chunks of one run: the job was stopped
    (a broken model or a bug, not bad records) and those chunks were left for the next run."""


def _check_failed_limit(max_failed_chunks: int | None) -> None:
    if max_failed_chunks is not None and (not isinstance(max_failed_chunks, int) or max_failed_chunks < 1):
        raise JobError(f"max_failed_chunks must be a positive integer or None, got {max_failed_chunks!r}")


def failed_chunk_limit(option: int | None) -> int | None:
    """The limit a command-line ``--max-failed-chunks`` gives: unset -> the default, 0 -> never stop.
    A negative value is refused here, before a command spends time reading its input."""
    limit = DEFAULT_MAX_FAILED_CHUNKS if option is None else (option or None)
    _check_failed_limit(limit)
    return limit


def _failed_chunks_message(name: str, failed: Sequence[int], last_error: str, unit: str = "chunk") -> str:
    """What a stopped job says: which chunks failed, the last error, and what happens on rerun."""
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


@dataclass(frozen=True)
class Rejected:
    """An input record the *reader* could not turn into a row (e.g. a CSV line with too many
    fields): ``record`` keeps its raw fields; ``row_index`` is -1 when the reader cannot number it."""

    reason: str
    record: Any
    row_index: int = -1


# --------------------------------------------------------------------------- sources


class Source(ABC):
    """Where a job reads: pandas DataFrames in a deterministic order, so chunk N is the same
    rows after a restart, plus a fingerprint that changes when the input does."""

    chunk_rows: int = DEFAULT_CHUNK_ROWS

    @property
    @abstractmethod
    def uri(self) -> str:
        """A stable name of the input, part of the job key."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Changes when the input changes, so a changed input is a new job, not a resume."""

    @abstractmethod
    def chunks(self, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
        """The input in chunks of ``chunk_rows`` rows (the last one may be shorter)."""

    def total_rows(self) -> int | None:
        """The number of rows if cheaply known (for the progress bar), else None."""
        return None

    def take_rejected(self) -> list[Rejected]:
        """Records rejected while reading the chunk just yielded (then forgotten)."""
        return []

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return self.chunks()


def _check_rows(chunk_rows: int) -> int:
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise JobError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    return chunk_rows


class _FileSource(Source):
    def __init__(self, path: str | os.PathLike[str], chunk_rows: int) -> None:
        self.path = Path(path).expanduser().resolve()
        self.chunk_rows = _check_rows(chunk_rows)

    @property
    def uri(self) -> str:
        return str(self.path)

    def _stat(self) -> os.stat_result:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise JobError(f"input file not found: {self.path}") from None
        if not self.path.is_file():
            raise JobError(f"input is not a file: {self.path}")
        return st

    def fingerprint(self) -> str:
        st = self._stat()
        return f"{self.path}:{st.st_size}:{st.st_mtime_ns}"


class ParquetSource(_FileSource):
    """A Parquet file, streamed batch by batch (never loaded whole)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        *,
        columns: Sequence[str] | None = None,
    ) -> None:
        super().__init__(path, chunk_rows)
        self.columns = list(columns) if columns is not None else None

    def _open(self) -> pq.ParquetFile:
        self._stat()
        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise JobError(f"cannot read {self.path} as Parquet: {exc}") from exc

    def total_rows(self) -> int | None:
        return self._open().metadata.num_rows

    def read_rows(self, start: int, stop: int) -> pd.DataFrame:
        """Rows ``start`` to ``stop - 1`` of the file, reading only the row groups that hold them.

        Why: a Ray worker reads its own part of a file on shared storage instead of receiving
        it from the driver; with chunk-aligned bounds this is the frame ``chunks`` yields.
        """
        if start < 0 or stop < start:
            raise JobError(f"bad row range {start}:{stop} of {self.path}")
        pf = self._open()
        meta = pf.metadata
        groups: list[int] = []
        first = seen = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if seen + n > start and seen < stop and n:
                if not groups:
                    first = seen
                groups.append(g)
            seen += n
        if not groups:
            return pf.schema_arrow.empty_table().select(self.columns or pf.schema_arrow.names).to_pandas()
        try:
            table = pf.read_row_groups(groups, columns=self.columns)
        except (pa.ArrowException, OSError) as exc:
            raise JobError(f"cannot read rows {start}:{stop} of {self.path}: {exc}") from exc
        return table.slice(start - first, stop - start).to_pandas()

    def chunks(self, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
        rows = _check_rows(chunk_rows or self.chunk_rows)
        pf = self._open()
        pending: list[pa.RecordBatch] = []
        held = 0
        # Re-batch to exactly `rows` rows: pyarrow does not promise batches that span row
        # groups, and chunk N must mean the same rows whatever the file's row-group layout.
        for batch in pf.iter_batches(batch_size=rows, columns=self.columns):
            pending.append(batch)
            held += batch.num_rows
            while held >= rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, rows).to_pandas()
                rest = table.slice(rows)
                pending, held = rest.to_batches(), rest.num_rows
        if held:
            yield pa.Table.from_batches(pending).to_pandas()


def _open_text(path: Path, encoding: str) -> Any:
    """A text handle on a CSV file, through its decompressor for .gz / .bz2 / .xz (as pandas
    reads it), so a scan of the raw records sees the same records pandas parses."""
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(Path(path).suffix.lower())
    if opener is None:
        return open(path, newline="", encoding=encoding, errors="replace")
    return opener(path, "rt", newline="", encoding=encoding, errors="replace")


class CsvSource(_FileSource):
    """A CSV file read in chunks by pandas; every value is kept as the string it is by default.

    Why strings: per-chunk type inference would give a column different dtypes in different
    chunks, and a malformed value ("12,5", "n/a") must reach the processor to be quarantined
    with a reason rather than crash the reader. Pass ``dtype=`` to override.
    A line with more fields than the header is handed to ``take_rejected`` (pandas' python
    engine with an ``on_bad_lines`` callable) instead of failing the read.
    Other keyword arguments go to ``pandas.read_csv``.
    """

    def __init__(
        self, path: str | os.PathLike[str], chunk_rows: int = DEFAULT_CHUNK_ROWS, **read_csv_kwargs: Any
    ) -> None:
        super().__init__(path, chunk_rows)
        for bad in ("chunksize", "iterator", "nrows"):
            if bad in read_csv_kwargs:
                raise JobError(f"CsvSource sets {bad!r} itself; pass chunk_rows instead")
        self.read_csv_kwargs = read_csv_kwargs
        self._rejected: list[Rejected] = []

    def _on_bad_line(self, fields: list[str]) -> None:
        self._rejected.append(
            Rejected(f"unparseable CSV line: {len(fields)} fields, more than the header has", list(fields))
        )

    def _wide_leading_records(self, kwargs: dict[str, Any]) -> list[list[str]]:
        """Records right after the header with more fields than it.

        pandas treats a wide *first* data line as a sign of an index column (shifting every
        column) or, with ``index_col=False``, silently truncates it; so such lines are taken
        out with ``skiprows`` and quarantined here instead.
        """
        sep = kwargs.get("sep", kwargs.get("delimiter", ","))
        if any(k in kwargs for k in ("header", "names", "skiprows", "comment", "index_col")):
            return []
        if not isinstance(sep, str) or len(sep) != 1:
            return []
        encoding = kwargs.get("encoding") or "utf-8"
        with _open_text(self.path, encoding) as fh:
            reader = csv.reader(fh, delimiter=sep, quotechar=kwargs.get("quotechar", '"'))
            header = next(reader, None)
            if not header:
                return []
            wide: list[list[str]] = []
            for record in reader:
                if len(record) <= len(header):
                    break
                wide.append(record)
        return wide

    def chunks(self, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
        rows = _check_rows(chunk_rows or self.chunk_rows)
        self._stat()
        kwargs: dict[str, Any] = dict(self.read_csv_kwargs)
        kwargs.setdefault("dtype", str)
        self._rejected = []
        if "engine" not in kwargs and "on_bad_lines" not in kwargs:
            kwargs["engine"] = "python"
            kwargs["on_bad_lines"] = self._on_bad_line
            wide = self._wide_leading_records(kwargs)
            kwargs.setdefault("index_col", False)
            if wide:
                kwargs["skiprows"] = list(range(1, len(wide) + 1))
                self._rejected = [
                    Rejected(f"unparseable CSV line: {len(r)} fields, more than the header has", r) for r in wide
                ]
        try:
            with pd.read_csv(self.path, chunksize=rows, **kwargs) as reader:
                yield from reader
        except pd.errors.EmptyDataError:
            return
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise JobError(f"cannot parse {self.path}: {exc}") from exc

    def take_rejected(self) -> list[Rejected]:
        taken, self._rejected = self._rejected, []
        return taken


class FolderSource(Source):
    """The items under a folder (image files, study folders, ...), one row each: ``path``.

    Subclasses say what an item is (``discover``, sorted, so chunk N is the same items after a
    restart); the fingerprint covers every file of every item (relative path, size, mtime), so
    adding, removing or rewriting one makes it another job.
    """

    def __init__(self, root: str | os.PathLike[str], chunk_rows: int) -> None:
        self.root = Path(root).expanduser().resolve()
        self.chunk_rows = _check_rows(chunk_rows)
        self._items: list[Path] | None = None

    @abstractmethod
    def discover(self) -> list[Path]:
        """The items under ``self.root``, sorted."""

    @property
    def uri(self) -> str:
        return str(self.root)

    def items(self) -> list[Path]:
        if self._items is None:
            if not self.root.is_dir():
                raise JobError(f"input folder not found: {self.root}")
            self._items = self.discover()
        return self._items

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for item in self.items():
            for f in [item] if item.is_file() else sorted(q for q in item.rglob("*") if q.is_file()):
                st = f.stat()
                h.update(f"{f.relative_to(self.root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return f"{self.root}:{len(self.items())}:{h.hexdigest()[:16]}"

    def total_rows(self) -> int | None:
        return len(self.items())

    def chunks(self, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
        rows = chunk_rows or self.chunk_rows
        paths = [str(p) for p in self.items()]
        for i in range(0, len(paths), rows):
            yield pd.DataFrame({"path": paths[i:i + rows]})


def _resolve_engine(target: Database | Engine | str) -> tuple[Engine, bool]:
    """(engine, whether we created it and must dispose of it)."""
    if isinstance(target, Database):
        return target.engine, False
    if isinstance(target, Engine):
        return target, False
    return create_engine(target), True


def _safe_url(target: Database | Engine | str) -> str:
    if isinstance(target, Database):
        return target.safe_url
    if isinstance(target, Engine):
        return target.url.render_as_string(hide_password=True)
    return make_url(target).render_as_string(hide_password=True)


class SqlSource(Source):
    """A table or a SQLAlchemy ``Select``, streamed with a server-side cursor in a fixed order.

    Why ``order_by``: SQL has no row order unless asked; without one, chunk N could hold other
    rows after a restart. A table defaults to its primary key; a ``Select`` must name columns.
    Raw SQL strings are not accepted (a string is a table name), so values only ever travel as
    bound parameters inside the ``Select``.
    """

    def __init__(
        self,
        target: Database | Engine | str,
        query: str | Select[Any],
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        order_by: str | Sequence[str] | None = None,
    ) -> None:
        self.target = target
        self.query = query
        self.chunk_rows = _check_rows(chunk_rows)
        self.order_by = [order_by] if isinstance(order_by, str) else list(order_by or [])
        if isinstance(query, Select) and not self.order_by:
            raise JobError("SqlSource with a Select needs order_by (column names) for a stable chunk order")
        if not isinstance(query, (str, Select)):
            raise JobError(f"SqlSource takes a table name or a sqlalchemy Select, not {type(query).__name__}")
        self._engine: Engine | None = None
        self._owns_engine = False

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine, self._owns_engine = _resolve_engine(self.target)
        return self._engine

    def _query_id(self) -> str:
        if isinstance(self.query, str):
            return self.query
        compiled = self.query.compile(self.engine)
        text = f"{compiled}|{sorted(compiled.params.items(), key=lambda kv: kv[0])!r}|{self.order_by}"
        return "query-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def uri(self) -> str:
        return f"{_safe_url(self.target)}#{self._query_id()}"

    def _statement(self, conn: Connection) -> Select[Any]:
        if isinstance(self.query, Select):
            stmt = self.query
            cols = stmt.selected_columns
        else:
            try:
                table = Table(self.query, MetaData(), autoload_with=conn)
            except NoSuchTableError:
                raise JobError(f"input table {self.query!r} not found in {_safe_url(self.target)}") from None
            stmt = select(table)
            cols = table.c
            if not self.order_by:
                self.order_by = [c.name for c in table.primary_key.columns]
                if not self.order_by:
                    raise JobError(f"table {self.query!r} has no primary key: pass order_by for a stable chunk order")
        try:
            return stmt.order_by(*[cols[name] for name in self.order_by])
        except KeyError as exc:
            raise JobError(f"order_by column {exc.args[0]!r} is not in {self._query_id()}") from None

    def total_rows(self) -> int | None:
        with self.engine.connect() as conn:
            stmt = self._statement(conn).order_by(None)
            return int(conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())

    def fingerprint(self) -> str:
        return f"{self._query_id()}:{self.total_rows()}"

    def chunks(self, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
        rows = _check_rows(chunk_rows or self.chunk_rows)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=rows).execute(self._statement(conn))
            columns = list(result.keys())
            for part in result.partitions():
                yield pd.DataFrame([tuple(r) for r in part], columns=columns)

    def close(self) -> None:
        if self._owns_engine and self._engine is not None:
            self._engine.dispose()
            self._engine = None


# --------------------------------------------------------------------------- sinks


class Sink(ABC):
    """Where a job writes. ``prepare`` undoes whatever a killed run wrote past its checkpoint;
    ``write`` must be repeatable for a chunk (the engine may write a chunk again after a kill)."""

    @property
    @abstractmethod
    def uri(self) -> str:
        """A stable name of the output, part of the job key."""

    def default_quarantine_path(self) -> Path | None:
        """Where the quarantine file goes when the caller names none (None: the job directory)."""
        return None

    def bind(self, db: Database) -> None:
        """Learn the job database (a SQL sink writes in the checkpoint's transaction if it is its own)."""

    @abstractmethod
    def prepare(self, resume_from: int, offset: int) -> None:
        """Forget output of chunks >= ``resume_from``; ``offset`` is the last checkpoint's (0 if none)."""

    @abstractmethod
    def write(self, chunk_index: int, frame: pd.DataFrame, session: Session) -> int:
        """Write one chunk; return the offset to record in its checkpoint.

        ``session`` is the job database session whose commit is the checkpoint.
        """

    def close(self) -> None:
        """Release files and connections."""


class _AppendFile:
    """A file that grows by whole chunks and is truncated back to a checkpoint on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: io.BufferedRandom | None = None

    def open(self, resume_from: int, offset: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from == 0:
            offset = 0
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < offset:
            raise JobError(
                f"{self.path} has {size} bytes but the job's checkpoint says {offset}: the file was "
                "truncated or replaced since; run the job with resume=False to start over"
            )
        if not self.path.exists():
            self.path.touch()
        self._fh = open(self.path, "r+b")  # noqa: SIM115 - held open for the whole job
        self._fh.truncate(offset)
        self._fh.seek(offset)
        os.fsync(self._fh.fileno())

    @property
    def offset(self) -> int:
        assert self._fh is not None, "open() first"
        return self._fh.tell()

    def append(self, data: bytes) -> int:
        assert self._fh is not None, "open() first"
        if data:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())  # durable before the checkpoint that points past it
        return self._fh.tell()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on every platform; the data itself is already synced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_PART = re.compile(r"^part-(\d+)\.parquet$")


class ParquetSink(Sink):
    """A directory of ``part-<chunk>.parquet`` files, one per chunk with output rows.

    Each part appears atomically (temporary file, fsync, ``os.replace``) under a name fixed by
    its chunk index, so rewriting a chunk after a kill replaces it instead of duplicating it.
    Read the output in order with ``parts()``.
    """

    def __init__(self, directory: str | os.PathLike[str], *, compression: str = "snappy") -> None:
        self.directory = Path(directory).expanduser().resolve()
        self.compression = compression

    @property
    def uri(self) -> str:
        return str(self.directory)

    def default_quarantine_path(self) -> Path:
        return self.directory.with_name(self.directory.name + ".quarantine.csv")

    def part_path(self, chunk_index: int) -> Path:
        return self.directory / f"part-{chunk_index:05d}.parquet"

    def parts(self) -> list[Path]:
        """The part files in chunk order."""
        found = [(int(m.group(1)), p) for p in self.directory.glob("part-*.parquet") if (m := _PART.match(p.name))]
        return [p for _, p in sorted(found)]

    def prepare(self, resume_from: int, offset: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for tmp in self.directory.glob(".part-*.tmp"):
            tmp.unlink(missing_ok=True)
        for part in self.directory.glob("part-*.parquet"):
            m = _PART.match(part.name)
            if m and int(m.group(1)) >= resume_from:
                part.unlink()

    def write(self, chunk_index: int, frame: pd.DataFrame, session: Session) -> int:
        final = self.part_path(chunk_index)
        if len(frame) == 0:
            # No empty parts: a zero-column part would become the schema of the whole dataset.
            final.unlink(missing_ok=True)
            return 0
        tmp = self.directory / f".{final.name}.tmp"
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression=self.compression)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        return 0


class CsvSink(Sink):
    """One CSV file: chunks are appended, the byte offset after each is its checkpoint.

    The header is written once, by the first chunk with rows; later chunks must have the same
    columns (reordered if needed), else the job fails rather than write misaligned rows.
    """

    def __init__(self, path: str | os.PathLike[str], *, sep: str = ",") -> None:
        self.path = Path(path).expanduser().resolve()
        self.sep = sep
        self._file = _AppendFile(self.path)
        self._columns: list[str] | None = None

    @property
    def uri(self) -> str:
        return str(self.path)

    def default_quarantine_path(self) -> Path:
        stem = self.path.name[: -len(".csv")] if self.path.name.lower().endswith(".csv") else self.path.name
        return self.path.with_name(stem + ".quarantine.csv")

    def prepare(self, resume_from: int, offset: int) -> None:
        self._file.open(resume_from, offset)
        self._columns = None
        if self._file.offset > 0:
            with open(self.path, newline="", encoding="utf-8") as fh:
                self._columns = next(csv.reader(fh, delimiter=self.sep), None)

    def write(self, chunk_index: int, frame: pd.DataFrame, session: Session) -> int:
        if len(frame) == 0:
            return self._file.offset
        names = [str(c) for c in frame.columns]
        frame = frame.set_axis(names, axis=1)
        header = self._columns is None
        if self._columns is None:
            self._columns = names
        elif names != self._columns:
            if sorted(names) != sorted(self._columns):
                raise JobError(
                    f"chunk {chunk_index} output columns {names} differ from the columns already in "
                    f"{self.path}: {self._columns}"
                )
            frame = frame[self._columns]
        data = frame.to_csv(index=False, header=header, sep=self.sep, lineterminator="\n")
        return self._file.append(data.encode("utf-8"))

    def close(self) -> None:
        self._file.close()


def _sql_type(values: pd.Series) -> Any:
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind == "boolean":
        return Boolean()
    if kind == "integer":
        return BigInteger()
    if kind in ("floating", "mixed-integer-float"):
        return Float()
    if kind == "decimal":
        return Numeric()
    if kind in ("datetime64", "datetime"):
        tz = getattr(values.dtype, "tz", None) is not None
        return DateTime(timezone=tz)
    return Text()


def _native(value: Any) -> Any:
    """A value a DB driver or ``json`` accepts: NaN/NA/NaT -> None, numpy scalars -> Python."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class SqlSink(Sink):
    """A database table, created from the first chunk's columns if missing, with a ``_chunk``
    column that says which chunk wrote each row.

    In the job's own database the rows and the checkpoint commit in one transaction, so a
    chunk is written exactly once. In another database the chunk's earlier rows (a killed run's)
    are deleted before inserting, in one transaction there. The table holds this job's output:
    a fresh run (new input, or ``resume=False``) replaces its rows, like the file sinks.
    """

    def __init__(self, target: Database | Engine | str, table: str, *, schema: str | None = None) -> None:
        if not table:
            raise JobError("SqlSink needs a table name")
        self.target = target
        self.table_name = table
        self.schema = schema
        self._engine: Engine | None = None
        self._owns_engine = False
        self._same_db = False
        self._table: Table | None = None

    @property
    def uri(self) -> str:
        name = f"{self.schema}.{self.table_name}" if self.schema else self.table_name
        return f"{_safe_url(self.target)}#{name}"

    def bind(self, db: Database) -> None:
        if isinstance(self.target, str) and self.target == db.url:
            self._engine, self._owns_engine = db.engine, False
        else:
            self._engine, self._owns_engine = _resolve_engine(self.target)
        self._same_db = self._engine is db.engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine, self._owns_engine = _resolve_engine(self.target)
        return self._engine

    @property
    def same_database(self) -> bool:
        """Whether rows commit in the checkpoint's transaction (set by ``bind``)."""
        return self._same_db

    def _reflect(self, conn: Connection) -> Table | None:
        if self._table is not None:
            return self._table
        if not inspect(conn).has_table(self.table_name, schema=self.schema):
            return None
        table = Table(self.table_name, MetaData(), schema=self.schema, autoload_with=conn)
        if CHUNK_COLUMN not in table.c:
            raise JobError(
                f"table {self.uri} exists without a {CHUNK_COLUMN!r} column; SqlSink needs it to write "
                "each chunk exactly once: use a new table"
            )
        self._table = table
        return table

    def _create(self, conn: Connection, frame: pd.DataFrame) -> Table:
        columns = [Column(str(name), _sql_type(frame[name])) for name in frame.columns]
        table = Table(
            self.table_name,
            MetaData(),
            *columns,
            Column(CHUNK_COLUMN, Integer, nullable=False, index=True),
            schema=self.schema,
        )
        table.create(conn, checkfirst=True)
        self._table = table
        return table

    def prepare(self, resume_from: int, offset: int) -> None:
        with self.engine.begin() as conn:
            table = self._reflect(conn)
            if table is not None:
                conn.execute(delete(table).where(table.c[CHUNK_COLUMN] >= resume_from))

    def _write(self, conn: Connection, chunk_index: int, frame: pd.DataFrame) -> None:
        table = self._reflect(conn)
        if table is None:
            if len(frame) == 0:
                return
            table = self._create(conn, frame)
        conn.execute(delete(table).where(table.c[CHUNK_COLUMN] == chunk_index))
        if len(frame) == 0:
            return
        unknown = [str(c) for c in frame.columns if str(c) not in table.c]
        if unknown:
            raise JobError(f"output columns {unknown} are not in table {self.uri}")
        names = [str(c) for c in frame.columns]
        records = [
            {**{n: _native(v) for n, v in zip(names, row)}, CHUNK_COLUMN: chunk_index}
            for row in frame.itertuples(index=False, name=None)
        ]
        conn.execute(insert(table), records)

    def write(self, chunk_index: int, frame: pd.DataFrame, session: Session) -> int:
        if self._same_db:
            self._write(session.connection(), chunk_index, frame)
        else:
            with self.engine.begin() as conn:
                self._write(conn, chunk_index, frame)
        return 0

    def close(self) -> None:
        if self._owns_engine and self._engine is not None:
            self._engine.dispose()
        self._engine = None
        self._table = None


# --------------------------------------------------------------------------- quarantine


def _jsonable(value: Any) -> Any:
    value = _native(value)
    if isinstance(value, float) and math.isinf(value):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def quarantine_rows(chunk_index: int, quarantined: pd.DataFrame, rejected: Sequence[Rejected]) -> list[list[Any]]:
    """The quarantine file's rows for one chunk: [chunk_index, row_index, reason, record JSON].

    Shared by both engines so that a record rejected on a Ray worker is written exactly as the
    local engine writes it (same row number, reason and JSON).
    """
    rows: list[list[Any]] = []
    if len(quarantined):
        fields = [c for c in quarantined.columns if c != "reason"]
        for row_index, reason, record in zip(
            quarantined.index,
            quarantined["reason"],
            quarantined[fields].to_dict("records"),
        ):
            try:
                number = int(row_index)
            except (TypeError, ValueError):
                number = -1
            payload = {str(k): _jsonable(v) for k, v in record.items()}
            rows.append([chunk_index, number, str(reason), json.dumps(payload, default=str, ensure_ascii=False)])
    for item in rejected:
        record = [_jsonable(v) for v in item.record] if isinstance(item.record, list) else _jsonable(item.record)
        rows.append([chunk_index, item.row_index, item.reason, json.dumps(record, default=str, ensure_ascii=False)])
    return rows


def encode_quarantine(rows: list[list[Any]]) -> bytes:
    """Quarantine rows as the CSV bytes of the quarantine file (UTF-8, ``\\n`` line ends)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


class _QuarantineFile:
    """The rejected records of a job, as CSV: chunk_index, row_index, reason, record (JSON)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = _AppendFile(path)

    def prepare(self, resume_from: int, offset: int) -> None:
        self._file.open(resume_from, offset)
        if self._file.offset == 0:
            self._file.append(self._encode([list(QUARANTINE_COLUMNS)]))

    @staticmethod
    def _encode(rows: list[list[Any]]) -> bytes:
        return encode_quarantine(rows)

    def write(self, chunk_index: int, quarantined: pd.DataFrame, rejected: Sequence[Rejected]) -> int:
        rows = quarantine_rows(chunk_index, quarantined, rejected)
        return self._file.append(self._encode(rows)) if rows else self._file.offset

    def close(self) -> None:
        self._file.close()


def read_quarantine(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A quarantine file as a DataFrame (``record`` left as JSON text)."""
    return pd.read_csv(
        path,
        dtype={"chunk_index": "int64", "row_index": "int64", "reason": str, "record": str},
        keep_default_na=False,
    )


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
def _job_lock(key: str, name: str) -> Iterator[None]:
    """Refuse to run a job twice at once on this host.

    A killed job leaves status "running" in the database, so the status cannot tell a live run
    from a dead one; an OS file lock can, because the kernel drops it when the process dies.
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


def _result(job: Job, *, resumed_from: int, processed: int, started: float) -> JobResult:
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


def _process(
    processor: Processor, frame: pd.DataFrame, chunk_index: int, name: str
) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """Run the processor on a chunk: (output, quarantined rows, None), or, if it raises, the
    whole chunk quarantined and the error text as the third item."""
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


def _chunks_with_rejects(source: Source, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, list[Rejected]]]:
    """Each chunk with the records the reader rejected while producing it; rejects after the
    last chunk come as one more, empty chunk, so none is lost."""
    chunks = source.chunks(chunk_rows)
    try:
        for frame in chunks:
            yield frame, source.take_rejected()
        tail = source.take_rejected()
        if tail:
            yield pd.DataFrame(), tail
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _progress_bar(enabled: bool) -> Any:
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


def _finished(db: Database, key: str) -> Job | None:
    with db.session() as s:
        return s.scalars(select(Job).where(Job.key == key, Job.status == DONE)).one_or_none()


def _open_job(
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

    Returns (job id, committed checkpoints in chunk order, quarantine path).
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


def _checkpoint(s: Session, job_id: int, chunk: JobChunk) -> None:
    """Record a finished chunk and add it to the job's counters (committed with ``s``)."""
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


def _uncheckpoint_from(db: Database, job_id: int, first: int) -> None:
    """Drop the checkpoints of chunks >= ``first`` and recount the job's totals from the rest: the
    next run resumes at ``first`` and each sink truncates its output back to chunk ``first - 1``'s."""
    with db.session() as s:
        s.execute(delete(JobChunk).where(JobChunk.job_id == job_id, JobChunk.chunk_index >= first))
        kept = s.scalars(select(JobChunk).where(JobChunk.job_id == job_id)).all()
        s.execute(update(Job).where(Job.id == job_id).values(
            rows_in=sum(c.rows_in for c in kept), rows_out=sum(c.rows_out for c in kept),
            rows_quarantined=sum(c.rows_quarantined for c in kept), chunks_done=len(kept), updated_at=utcnow()))


def _set_status(db: Database, job_id: int, status: str, error: str | None = None) -> Job:
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=status, error=error, updated_at=utcnow()))
        job = s.get(Job, job_id, populate_existing=True)
        assert job is not None
        return job


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
    rows = _check_rows(chunk_rows if chunk_rows is not None else source.chunk_rows)
    _check_failed_limit(max_failed_chunks)
    db = db or connect()
    fingerprint = source.fingerprint()  # raises JobError naming a missing input
    key = job_key(name, source.uri, fingerprint, sink.uri, rows)

    with _job_lock(key, name):
        done = _finished(db, key) if resume else None
        if done is not None:
            logger.info("job %s (id %d) already done; nothing to do", name, done.id)
            return _result(done, resumed_from=done.chunks_done, processed=0, started=started)
        job_id, committed, qpath = _open_job(
            db, key=key, name=name, source=source, sink=sink, resume=resume, quarantine_path=quarantine_path,
            params={"chunk_rows": rows, "source_fingerprint": fingerprint},
        )
        resume_from = len(committed)
        last = committed[-1] if committed else None
        if resume_from:
            logger.info("job %s (id %d): resuming from chunk %d", name, job_id, resume_from)
        else:
            logger.info("job %s (id %d): starting %s -> %s", name, job_id, source.uri, sink.uri)

        quarantine = _QuarantineFile(qpath)
        chunk_index = resume_from
        processed = 0
        failed: list[int] = []  # chunks of this run on which the processor raised
        try:
            sink.bind(db)
            sink.prepare(resume_from, last.output_offset if last else 0)
            quarantine.prepare(resume_from, last.quarantine_offset if last else 0)
            with _progress_bar(progress) as bar:
                task = bar.add_task(name, total=None if bar.disable else source.total_rows())
                row_start = seen = 0
                for chunk_index, (frame, rejected) in enumerate(_chunks_with_rejects(source, rows)):
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
                    output, bad, error = _process(processor, frame, chunk_index, name)
                    if error is not None:
                        failed.append(chunk_index)
                        if max_failed_chunks is not None and len(failed) >= max_failed_chunks:
                            _uncheckpoint_from(db, job_id, failed[0])
                            raise FailedChunksError(_failed_chunks_message(name, failed, error))
                    with db.session() as s:  # its commit is the checkpoint
                        out_offset = sink.write(chunk_index, output, s)
                        q_offset = quarantine.write(chunk_index, bad, rejected)
                        _checkpoint(s, job_id, JobChunk(
                            job_id=job_id, chunk_index=chunk_index, rows_in=rows_in, rows_out=len(output),
                            rows_quarantined=len(bad) + len(rejected), output_offset=out_offset,
                            quarantine_offset=q_offset,
                        ))
                    processed += 1
                    bar.advance(task, rows_in)
                if seen < resume_from:
                    raise JobError(f"input {source.uri} has {seen} chunks, fewer than the {resume_from} checkpointed")
            result = _result(_set_status(db, job_id, DONE), resumed_from=resume_from, processed=processed,
                             started=started)
            logger.info("job %s (id %d) done: %d rows in, %d out, %d quarantined (%s)",
                        name, job_id, result.rows_in, result.rows_out, result.rows_quarantined, qpath)
            return result
        except BaseException as exc:
            text = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            try:
                _set_status(db, job_id, FAILED, text)
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




def check_engine(engine: str) -> str:
    """``engine`` if it is one of ``ENGINES`` and usable here, checked before any work is done:
    a ``JobError`` naming the choices, or for ``ray`` without Ray installed an
    ``EngineUnavailableError`` naming the extra to install."""
    if engine not in ENGINES:
        raise JobError(f"unknown batch engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "ray":
        from trillium.core.ray_engine import import_ray

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
    (``trillium.core.ray_engine``; needs ``pip install 'trillium[ray]'``): ``address`` is the
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
    from trillium.core.ray_engine import run_ray_job

    return run_ray_job(name, source, factory, sink, address=address, workers=workers, db=db, chunk_rows=chunk_rows,
                       resume=resume, progress=progress, quarantine_path=quarantine_path,
                       max_failed_chunks=max_failed_chunks)
