"""Finance data adapters: read and write transaction files and tables, and the batch job's source.

Two ways in, for Parquet / CSV files (also ``.csv.gz/.bz2/.xz``) and SQL tables:

* ``read_transactions`` reads a whole file or table and normalizes it
  (``trillium.finance.normalization``) into (valid canonical rows, quarantined raw rows with a
  ``reason``), in a format named or detected (``trillium.finance.formats``).
* ``transaction_source`` gives the core engine's ``Source`` for the same inputs, for a batch job
  that calls ``normalize`` per chunk (the engine sets each chunk's index to the global input row
  numbers, which the quarantine keeps).

``write_transactions`` writes canonical records back to Parquet or CSV, atomically.
"""

from __future__ import annotations

import csv
import lzma
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Select, inspect

from trillium.core.db import Database
from trillium.core.errors import InputValidationError, JobError
from trillium.core.jobs import DEFAULT_CHUNK_ROWS, CsvSource, ParquetSource, Source, SqlSource
from trillium.finance.formats import PROFILES, ColumnMapping, detect_format
from trillium.finance.normalization import normalize

__all__ = [
    "read_transactions",
    "transaction_source",
    "write_transactions",
]

Target = str | os.PathLike[str] | Engine | Database


_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


# What a damaged file raises when only its header or schema is read (``_empty_input``: pandas, the
# .gz / .bz2 / .xz decompressors, pyarrow): all of it means "this file cannot be read", never a
# crash. The core sources turn the same errors into a ``JobError`` while reading the chunks.
_CSV_READ_ERRORS: tuple[type[BaseException], ...] = (
    pd.errors.ParserError, csv.Error, UnicodeDecodeError, ValueError, OSError, EOFError, zlib.error, lzma.LZMAError,
)


def _parquet_read_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (pa.ArrowException, OSError, ValueError)


def _is_sql(target: Target) -> bool:
    return isinstance(target, (Engine, Database)) or (isinstance(target, str) and "://" in target)


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    for suffix in _CSV_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise InputValidationError(
        f"{path}: unknown transaction file type; expected .parquet, .csv, .csv.gz, .csv.bz2 or .csv.xz "
        "(or an SQLAlchemy URL with table=)"
    )


def _engine_of(target: Engine | Database | str) -> Engine:
    if isinstance(target, Database):
        return target.engine
    if isinstance(target, Engine):
        return target
    from sqlalchemy import create_engine

    return create_engine(target)


def _name(target: Target, table: str | None = None) -> str:
    """A printable name of the input (no password)."""
    if isinstance(target, Database):
        url = target.safe_url
    elif isinstance(target, Engine):
        url = target.url.render_as_string(hide_password=True)
    elif isinstance(target, str) and "://" in target:
        from sqlalchemy.engine import make_url

        url = make_url(target).render_as_string(hide_password=True)
    else:
        return str(target)
    return f"{url} table {table!r}" if table else url


def transaction_source(
    path_or_url: Target,
    *,
    table: str | None = None,
    query: Select[Any] | None = None,
    order_by: str | Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Source:
    """The core engine's ``Source`` for a transaction input, for a batch job that calls
    ``normalize`` on each chunk.

    A ``.parquet`` file -> ``ParquetSource``; ``.csv`` (also ``.csv.gz/.bz2/.xz``) ->
    ``CsvSource`` (every value a string); an SQLAlchemy URL, ``Engine`` or ``Database`` with
    ``table=`` (or a ``Select`` in ``query=``) -> ``SqlSource`` ordered by ``order_by``, else by
    the table's primary key. Raises ``InputValidationError`` for a missing file or table or an
    unknown file type.
    """
    if _is_sql(path_or_url):
        target: Any = path_or_url
        if query is not None:
            if not isinstance(query, Select):
                raise InputValidationError(
                    f"{_name(target)}: query must be a SQLAlchemy Select (values as bound parameters), "
                    f"not {type(query).__name__}"
                )
            if not order_by:
                raise InputValidationError(f"{_name(target)}: a query needs order_by for a stable chunk order")
            return SqlSource(target, query, chunk_rows, order_by=order_by)
        if not table:
            raise InputValidationError(f"{_name(target)}: reading transactions from a database needs table=")
        engine = _engine_of(target)
        try:
            insp = inspect(engine)
            if not insp.has_table(table):
                raise InputValidationError(f"{_name(target)}: no table {table!r}; tables: {insp.get_table_names()}")
            if not order_by and not insp.get_pk_constraint(table).get("constrained_columns"):
                raise InputValidationError(
                    f"{_name(target, table)} has no primary key: pass order_by (e.g. the transaction id "
                    "column) so chunks keep a stable order"
                )
        finally:
            if not isinstance(target, (Engine, Database)):
                engine.dispose()
        return SqlSource(target, table, chunk_rows, order_by=order_by)
    if table is not None or query is not None:
        raise InputValidationError(f"{path_or_url}: table= and query= apply to a database URL, not a file")
    path = Path(path_or_url).expanduser()
    kind = _file_kind(path)
    if not path.is_file():
        raise InputValidationError(f"transaction file not found: {path}")
    if kind == "parquet":
        return ParquetSource(path, chunk_rows)
    return CsvSource(path, chunk_rows)  # the core source decompresses .gz / .bz2 / .xz itself


def _empty_input(source: Source) -> pd.DataFrame:
    """A zero-row frame with the input's columns (a header-only CSV or empty table yields no chunk)."""
    if isinstance(source, ParquetSource):
        import pyarrow.parquet as pq

        try:
            return pq.read_schema(source.path).empty_table().to_pandas()
        except _parquet_read_errors() as exc:
            raise JobError(f"cannot read {source.path} as Parquet: {type(exc).__name__}: {exc}") from exc
    if isinstance(source, CsvSource):
        try:
            return pd.read_csv(source.path, nrows=0, dtype=str)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
        except _CSV_READ_ERRORS as exc:  # e.g. a header line with an unterminated quote
            raise JobError(f"cannot read {source.path} as CSV: {type(exc).__name__}: {exc}") from exc
    if isinstance(source, SqlSource):
        if isinstance(source.query, Select):
            return pd.DataFrame(columns=[c.name for c in source.query.selected_columns])
        return pd.DataFrame(columns=[c["name"] for c in inspect(source.engine).get_columns(source.query)])
    return pd.DataFrame()


def read_transactions(
    path_or_url: Target,
    format: str = "auto",
    *,
    mapping: ColumnMapping | None = None,
    table: str | None = None,
    query: Select[Any] | None = None,
    order_by: str | Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid canonical rows, quarantined raw rows) of a whole transaction file or table.

    ``format`` is a ``PROFILES`` name or "auto" (``detect_format``); ``mapping`` overrides it.
    The rows are read through the same ``Source`` a batch job uses, numbered 0.. in input order
    (the frame index, kept in both outputs). CSV lines the reader cannot split (more fields
    than the header) are quarantined too, with row number -1 and their fields in ``record``.
    A table without a primary key is read in the order of ``order_by``, else of the mapping's
    transaction id column.
    """
    if format != "auto" and format not in PROFILES and mapping is None:
        raise InputValidationError(f"unknown transaction format {format!r}; expected auto or one of {list(PROFILES)}")
    name = _name(path_or_url, table)
    if _is_sql(path_or_url) and table and not order_by and query is None:
        order_by = _default_order(path_or_url, table, format, mapping)
    source = transaction_source(path_or_url, table=table, query=query, order_by=order_by, chunk_rows=200_000)
    frames: list[pd.DataFrame] = []
    rejected: list[Any] = []
    try:
        for chunk in source.chunks():
            frames.append(chunk)
            rejected.extend(source.take_rejected())
        rejected.extend(source.take_rejected())
        raw = pd.concat(frames, ignore_index=True) if frames else _empty_input(source)  # index: row numbers
    except JobError as exc:
        raise InputValidationError(f"{name}: {exc}") from exc
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    if mapping is None:
        mapping = PROFILES[format if format != "auto" else detect_format(raw.columns, source=name)]
    valid, quarantined = normalize(raw, mapping, source=name)
    if rejected:
        extra = pd.DataFrame(
            {"reason": [r.reason for r in rejected], "record": [",".join(map(str, r.record)) for r in rejected]},
            index=pd.Index([r.row_index for r in rejected]),
        )
        quarantined = pd.concat([quarantined, extra]) if len(quarantined) else extra
    return valid, quarantined


def _default_order(target: Target, table: str, format: str, mapping: ColumnMapping | None) -> list[str] | None:
    """The mapping's id column when the table has no primary key (None: let the key decide)."""
    engine = _engine_of(target)  # type: ignore[arg-type]
    try:
        insp = inspect(engine)
        if not insp.has_table(table) or insp.get_pk_constraint(table).get("constrained_columns"):
            return None
        columns = [c["name"] for c in insp.get_columns(table)]
    finally:
        if not isinstance(target, (Engine, Database)):
            engine.dispose()
    if mapping is None:
        try:
            mapping = PROFILES[format if format != "auto" else detect_format(columns, source=_name(target, table))]
        except InputValidationError:
            return None
    return [mapping.transaction_id] if mapping.transaction_id in columns else None


def _has_carriage_return(frame: pd.DataFrame) -> bool:
    """Whether a text value or a column name holds a carriage return."""
    if any("\r" in str(c) for c in frame.columns):
        return True
    for col in range(frame.shape[1]):
        values = frame.iloc[:, col]
        if values.dtype == object:
            if values.map(lambda v: isinstance(v, str) and "\r" in v).any():
                return True
        elif pd.api.types.is_string_dtype(values.dtype) and values.str.contains("\r", regex=False, na=False).any():
            return True
    return False


def write_transactions(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write canonical records to ``.parquet`` or ``.csv`` (``.csv.gz`` ...) by suffix, atomically
    (temporary file, then rename); the index is not written. Returns the path."""
    path = Path(path).expanduser()
    kind = _file_kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if kind == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            compression = {".csv": None, ".csv.gz": "gzip", ".csv.bz2": "bz2", ".csv.xz": "xz"}[kind]
            # The csv module quotes a field only for the characters of the line terminator: with
            # "\n", a lone "\r" in a text value (a quoted CSV cell can hold one) would be written
            # bare and split the row on reading. RFC 4180's "\r\n" makes such fields quoted.
            eol = "\r\n" if _has_carriage_return(frame) else "\n"
            frame.to_csv(tmp, index=False, compression=compression, lineterminator=eol)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputValidationError(f"cannot write transactions to {path}: {exc.strerror or exc}") from exc
    return path
