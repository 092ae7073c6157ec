"""Where a batch job reads: the ``Source`` classes (Parquet, CSV, folder, SQL) and their helpers.

A source yields its input as pandas DataFrames of ``chunk_rows`` rows in a deterministic order,
so chunk N is the same rows after a restart, plus a fingerprint that changes when the input
does. Records a reader cannot turn into rows (``Rejected``) are handed to the engine with the
chunk they were read in (``chunks_with_rejects``), for the quarantine.
"""

from __future__ import annotations

import csv
import hashlib
import lzma
import os
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, MetaData, Select, Table, create_engine, func, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import NoSuchTableError

from trillium.core.db import Database
from trillium.core.errors import JobError

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "CsvSource",
    "FolderSource",
    "ParquetSource",
    "Rejected",
    "Source",
    "SqlSource",
    "check_chunk_rows",
    "chunks_with_rejects",
    "resolve_sql_engine",
    "safe_sql_url",
]


DEFAULT_CHUNK_ROWS = 10_000

# What a damaged CSV file raises from inside the reader beyond pandas' own parse errors (the csv
# module, the .gz / .bz2 / .xz decompressors: a corrupt or truncated stream, an unterminated quote
# the python engine gives up on): the file cannot be read, a ``JobError`` naming it, never a crash.
_CSV_READ_ERRORS: tuple[type[BaseException], ...] = (csv.Error, OSError, EOFError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class Rejected:
    """An input record the *reader* could not turn into a row (e.g. a CSV line with too many
    fields): ``record`` keeps its raw fields; ``row_index`` is -1 when the reader cannot number it."""

    reason: str
    record: Any
    row_index: int = -1


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


def check_chunk_rows(chunk_rows: int) -> int:
    """``chunk_rows`` if it is a positive integer, else a ``JobError``.

    Public because every source checks its own ``chunk_rows`` with it and both engines check
    a job's override the same way, before any work is done.
    """
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise JobError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    return chunk_rows


class _FileSource(Source):
    def __init__(self, path: str | os.PathLike[str], chunk_rows: int) -> None:
        self.path = Path(path).expanduser().resolve()
        self.chunk_rows = check_chunk_rows(chunk_rows)

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
    """A Parquet file, streamed batch by batch (never loaded whole).

    A footer that cannot be read, and damaged pages or metadata found only while iterating, are a
    ``JobError`` naming the file.
    """

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
        rows = check_chunk_rows(chunk_rows or self.chunk_rows)
        pf = self._open()
        pending: list[pa.RecordBatch] = []
        held = 0
        try:
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
        except (pa.ArrowException, OSError, ValueError) as exc:  # damaged pages or metadata
            raise JobError(f"cannot read {self.path} as Parquet: {type(exc).__name__}: {exc}") from exc


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
    engine with an ``on_bad_lines`` callable) instead of failing the read. A file that cannot be
    parsed or decompressed (a corrupt or truncated .gz / .bz2 / .xz stream, an unterminated
    quote) is a ``JobError`` naming it.
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
        wide: list[list[str]] = []
        try:
            with _open_text(self.path, encoding) as fh:
                reader = csv.reader(fh, delimiter=sep, quotechar=kwargs.get("quotechar", '"'))
                header = next(reader, None)
                if not header:
                    return []
                for record in reader:
                    if len(record) <= len(header):
                        break
                    wide.append(record)
        except (*_CSV_READ_ERRORS, ValueError) as exc:
            raise self._unreadable(exc) from exc
        return wide

    def _unreadable(self, exc: BaseException) -> JobError:
        return JobError(f"cannot read {self.path} as CSV: {type(exc).__name__}: {exc}")

    def chunks(self, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
        rows = check_chunk_rows(chunk_rows or self.chunk_rows)
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
        except _CSV_READ_ERRORS as exc:
            raise self._unreadable(exc) from exc

    def take_rejected(self) -> list[Rejected]:
        taken, self._rejected = self._rejected, []
        return taken


class FolderSource(Source):
    """The items under a folder (image files, study folders, note files, ...), one row each: ``path``.

    ``discover(root)`` says what an item is (sorted, so chunk N is the same items after a
    restart; a module-level function, so the source pickles); the fingerprint covers every file
    of every item (relative path, size, mtime), so adding, removing or rewriting one makes it
    another job.
    """

    def __init__(self, root: str | os.PathLike[str], chunk_rows: int,
                 discover: Callable[[Path], list[Path]] | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.chunk_rows = check_chunk_rows(chunk_rows)
        self._discover = discover
        self._items: list[Path] | None = None

    def discover(self) -> list[Path]:
        """The items under ``self.root``, sorted (every file, recursively, unless told otherwise)."""
        if self._discover is not None:
            return list(self._discover(self.root))
        return sorted(p for p in self.root.rglob("*") if p.is_file())

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


def resolve_sql_engine(target: Database | Engine | str) -> tuple[Engine, bool]:
    """(engine, whether we created it and must dispose of it).

    Public because ``SqlSource`` and ``SqlSink`` (``sinks``) take the same kinds of target.
    """
    if isinstance(target, Database):
        return target.engine, False
    if isinstance(target, Engine):
        return target, False
    return create_engine(target), True


def safe_sql_url(target: Database | Engine | str) -> str:
    """The target's URL with its password hidden: what a SQL source's or sink's ``uri`` (and so
    the job key and its messages) names. Shared by ``SqlSource`` and ``SqlSink``."""
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
        self.chunk_rows = check_chunk_rows(chunk_rows)
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
            self._engine, self._owns_engine = resolve_sql_engine(self.target)
        return self._engine

    def _query_id(self) -> str:
        if isinstance(self.query, str):
            return self.query
        compiled = self.query.compile(self.engine)
        text = f"{compiled}|{sorted(compiled.params.items(), key=lambda kv: kv[0])!r}|{self.order_by}"
        return "query-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def uri(self) -> str:
        return f"{safe_sql_url(self.target)}#{self._query_id()}"

    def _statement(self, conn: Connection) -> Select[Any]:
        if isinstance(self.query, Select):
            stmt = self.query
            cols = stmt.selected_columns
        else:
            try:
                table = Table(self.query, MetaData(), autoload_with=conn)
            except NoSuchTableError:
                raise JobError(f"input table {self.query!r} not found in {safe_sql_url(self.target)}") from None
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
        rows = check_chunk_rows(chunk_rows or self.chunk_rows)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=rows).execute(self._statement(conn))
            columns = list(result.keys())
            for part in result.partitions():
                yield pd.DataFrame([tuple(r) for r in part], columns=columns)

    def close(self) -> None:
        if self._owns_engine and self._engine is not None:
            self._engine.dispose()
            self._engine = None


def chunks_with_rejects(source: Source, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, list[Rejected]]]:
    """Each chunk with the records the reader rejected while producing it; rejects after the
    last chunk come as one more, empty chunk, so none is lost.

    Public because both engines read a source through it (the Ray engine for the inputs its
    driver reads), so chunk k is the same rows and rejects on either.
    """
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
