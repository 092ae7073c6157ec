"""Where a batch job writes: the ``Sink`` classes (Parquet parts, CSV, SQL), each with its reader.

Every write is either idempotent per chunk or undone on resume (``prepare``), so a job killed
at any instant writes no row twice; each sink's ``read`` gives back what the job wrote, in
chunk order. ``AppendFile`` (a file that grows by whole chunks, truncated back to a
checkpoint) also holds the quarantine file.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
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
    Table,
    Text,
    delete,
    insert,
    inspect,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from trillium.core.db import Database
from trillium.core.errors import JobError
from trillium.core.jobs.sources import resolve_sql_engine, safe_sql_url

__all__ = [
    "CHUNK_COLUMN",
    "AppendFile",
    "CsvSink",
    "ParquetSink",
    "Sink",
    "SqlSink",
    "fsync_dir",
    "native_value",
]


CHUNK_COLUMN = "_chunk"


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

    def read(self, *, equals: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """What the job wrote, in chunk order; only the rows whose column equals the value, for
        each item of ``equals``. Each sink class gives its own."""
        raise NotImplementedError(f"{type(self).__name__} cannot read back its output")

    def close(self) -> None:
        """Release files and connections."""


class AppendFile:
    """A file that grows by whole chunks and is truncated back to a checkpoint on resume.

    Public because the quarantine file (``quarantine.QuarantineFile``) is kept the same way as
    a ``CsvSink``'s output.
    """

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
        assert self._fh is not None, "open() first"  # nosec B101 # programming error, not input
        return self._fh.tell()

    def append(self, data: bytes) -> int:
        assert self._fh is not None, "open() first"  # nosec B101 # programming error, not input
        if data:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())  # durable before the checkpoint that points past it
        return self._fh.tell()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (fsync the directory), where the platform allows it.

    Public because the Ray engine writes its part files with the same temporary-file-and-rename
    discipline as ``ParquetSink``.
    """
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
    Read the output in order with ``parts()`` (the files) or ``read()`` (the rows).
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

    def read(self, *, equals: Mapping[str, Any] | None = None, empty_columns: Sequence[str] = ()) -> pd.DataFrame:
        """The parts' rows in chunk order; only those whose column equals the value, for each item
        of ``equals`` (Parquet filters them while reading). No parts (no rows written, or no
        folder): an empty frame with ``empty_columns``."""
        filters = [(column, "==", value) for column, value in equals.items()] if equals else None
        frames = [pd.read_parquet(part, filters=filters) for part in self.parts()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(empty_columns) or None)

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
        fsync_dir(self.directory)
        return 0


class CsvSink(Sink):
    """One CSV file: chunks are appended, the byte offset after each is its checkpoint.

    The header is written once, by the first chunk with rows; later chunks must have the same
    columns (reordered if needed), else the job fails rather than write misaligned rows.
    """

    def __init__(self, path: str | os.PathLike[str], *, sep: str = ",") -> None:
        self.path = Path(path).expanduser().resolve()
        self.sep = sep
        self._file = AppendFile(self.path)
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

    def read(
        self,
        *,
        equals: Mapping[str, Any] | None = None,
        empty_columns: Sequence[str] = (),
        dtype: Any = None,
        parse_dates: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """The file's rows in chunk order; only those whose column equals the value, for each item
        of ``equals``. ``dtype`` and ``parse_dates`` go to ``pandas.read_csv`` (a CSV does not keep
        types). No rows written (no file, or an empty one): an empty frame with ``empty_columns``."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return pd.DataFrame(columns=list(empty_columns) or None)
        frame = pd.read_csv(self.path, sep=self.sep, dtype=dtype, parse_dates=parse_dates)
        if not equals:
            return frame
        keep = pd.Series(True, index=frame.index)
        for column, value in equals.items():
            keep &= frame[column] == value
        return frame[keep].reset_index(drop=True)

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


def native_value(value: Any) -> Any:
    """A value a DB driver or ``json`` accepts: NaN/NA/NaT -> None, numpy scalars -> Python.

    Public because the quarantine's JSON records (``quarantine``) convert values the same way
    as ``SqlSink``'s rows.
    """
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
        return f"{safe_sql_url(self.target)}#{name}"

    def bind(self, db: Database) -> None:
        if isinstance(self.target, str) and self.target == db.url:
            self._engine, self._owns_engine = db.engine, False
        else:
            self._engine, self._owns_engine = resolve_sql_engine(self.target)
        self._same_db = self._engine is db.engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine, self._owns_engine = resolve_sql_engine(self.target)
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
            {**{n: native_value(v) for n, v in zip(names, row)}, CHUNK_COLUMN: chunk_index}
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

    def read(self, *, equals: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """The table's rows in chunk order, without the ``_chunk`` column; only those whose column
        equals the value, for each item of ``equals``. No table yet (no rows written): an empty
        frame. ``close()`` releases a connection this opened."""
        with self.engine.connect() as conn:
            table = self._reflect(conn)
            if table is None:
                return pd.DataFrame()
            stmt = select(*[c for c in table.c if c.name != CHUNK_COLUMN]).order_by(table.c[CHUNK_COLUMN])
            for column, value in (equals or {}).items():
                stmt = stmt.where(table.c[column] == value)
            result = conn.execute(stmt)
            return pd.DataFrame([tuple(r) for r in result], columns=list(result.keys()))

    def close(self) -> None:
        if self._owns_engine and self._engine is not None:
            self._engine.dispose()
        self._engine = None
        self._table = None
