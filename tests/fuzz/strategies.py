"""Shared Hypothesis strategies and property checks for fuzzing every input adapter.

Used by ``tests/fuzz/test_fuzz_adapters.py`` (a few dozen examples per adapter, in ``make test``)
and by ``benchmarks/fuzz_adapters.py`` (1,000+ examples per adapter, with statistics).

Each adapter has a strategy that makes one *case* (the bytes of one input file, or of a DICOM
series, with a note of how it was made) and a ``check_*`` function that writes the case into a
fresh folder, calls the adapter's public entry points on it and asserts the properties:

(a) the only exceptions are typed (``trillium.core.errors.TrilliumError`` subclasses) and their
    message names the file (its path string appears in the message);
(b) no hang (the callers put a deadline on each example);
(c) the readers write nothing into the input folder (listing and bytes compared before and
    after), and an entry point that writes output (``write_transactions``) leaves it complete
    or absent, never half-written;
(d) an accepted input gives a sane result (shapes, dtypes, finite values, images in [0, 1]).

A check returns an ``Outcome`` (accepted, or refused with the typed error's class name); a broken
property raises ``PropertyFailure``; an untyped exception from an adapter propagates as is.

Cases start from valid files made here (and, when ``../shared/data`` is present, from small
pieces of the real data sets) and are then mutated: bit flips, truncation, insertion, deletion
and duplication of byte runs, extreme integers written over header bytes, and structured edits
(header fields replaced by huge, negative, empty or NaN values; CSV cells with text in numeric
columns, huge numbers, odd quoting, wrong delimiters, NUL bytes).
"""

from __future__ import annotations

import base64
import bz2
import csv
import functools
import gzip
import hashlib
import io
import lzma
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from trillium.core.errors import InputValidationError, TrilliumError

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("TRILLIUM_SHARED_DATA") or REPO.parent / "shared" / "data")

ADAPTERS = ("finance_csv", "finance_parquet", "images", "dicom", "notes")


class PropertyFailure(AssertionError):
    """A fuzzing property does not hold (an untyped exception is reported as itself instead)."""


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    error: str | None = None  # class name of the typed error when refused


@dataclass(frozen=True)
class FileCase:
    """One input file: its name (the suffix picks the reader), its bytes and how it was made."""

    name: str
    data: bytes
    how: str
    option: str = ""  # finance: the format argument; notes: "note" or "csv"
    expect: Any = None  # unmutated valid seeds: what the reader must return (shape, array, ...)

    def reproducer(self) -> dict[str, Any]:
        return {"name": self.name, "how": self.how, "option": self.option,
                "data_b64": base64.b64encode(self.data).decode()}


@dataclass(frozen=True)
class SeriesCase:
    """A DICOM input: files (relative names and bytes), given as a folder, a zip or a file list."""

    files: tuple[tuple[str, bytes], ...]
    container: str  # "folder", "zip" or "list"
    how: str
    zip_data: bytes | None = None  # container "zip": the archive (possibly mutated)
    expect: tuple[int, int, int] | None = None  # unmutated valid seeds: the volume's shape

    def reproducer(self) -> dict[str, Any]:
        out: dict[str, Any] = {"container": self.container, "how": self.how,
                               "files": {n: base64.b64encode(b).decode() for n, b in self.files}}
        if self.zip_data is not None:
            out["zip_b64"] = base64.b64encode(self.zip_data).decode()
        return out


# --------------------------------------------------------------------------- generic helpers


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every entry under ``folder`` (folders as "dir")."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_unchanged(folder: Path, before: dict[str, str], what: str) -> None:
    after = snapshot(folder)
    if after != before:
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
        raise PropertyFailure(f"{what} changed its input folder: added {added}, removed {removed}, changed {changed}")


def assert_typed(exc: BaseException, names: Sequence[str], what: str) -> None:
    """A refusal must be a TrilliumError whose message holds one of ``names`` (the file's path)."""
    if not isinstance(exc, TrilliumError):
        raise exc
    msg = str(exc)
    if not any(n in msg for n in names):
        raise PropertyFailure(f"{what} raised {type(exc).__name__} without naming the file {names[0]!r}: {msg[:400]}")


def _positions(draw: Callable[[Any], Any], n: int, header: int, protect: int = 0) -> int:
    """A position in 0..n-1, half the time within the first ``header`` bytes (where formats keep
    their headers) so mutations hit structure rather than only payload; three times in four past
    the first ``protect`` bytes (the magic number), so the file still reaches its decoder."""
    if n <= 0:
        return 0
    lo = protect if n > protect and draw(st.integers(0, 3)) else 0
    if draw(st.booleans()):
        return draw(st.integers(lo, max(lo, min(n, header) - 1)))
    return draw(st.integers(lo, n - 1))


_EXTREME_INTS = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


@st.composite
def mutated(draw: Callable[[Any], Any], data: bytes, max_ops: int = 3, header: int = 128,
            min_ops: int = 0, protect: int = 0) -> tuple[bytes, tuple[str, ...]]:
    """``data`` after 0..max_ops byte-level mutations, and a short description of each."""
    buf = bytearray(data)
    ops: list[str] = []
    for _ in range(draw(st.integers(min_ops, max_ops))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "duplicate", "int"]))
        n = len(buf)
        if kind == "flip" and n:
            i, bit = _positions(draw, n, header, protect), draw(st.integers(0, 7))
            buf[i] ^= 1 << bit
            ops.append(f"flip@{i}.{bit}")
        elif kind == "truncate":
            i = _positions(draw, n + 1, n + 1, protect) if draw(st.booleans()) else max(0, n - draw(st.integers(0, 64)))
            del buf[i:]
            ops.append(f"truncate@{i}")
        elif kind == "insert":
            i = _positions(draw, n + 1, header, protect)
            run = draw(st.one_of(st.binary(min_size=1, max_size=32),
                                 st.tuples(st.integers(0, 255), st.integers(1, 2048)).map(lambda t: bytes([t[0]]) * t[1])))
            buf[i:i] = run
            ops.append(f"insert@{i}+{len(run)}")
        elif kind == "delete" and n:
            i, k = _positions(draw, n, header, protect), draw(st.integers(1, 256))
            del buf[i:i + k]
            ops.append(f"delete@{i}-{k}")
        elif kind == "overwrite" and n:
            i = _positions(draw, n, header, protect)
            run = draw(st.binary(min_size=1, max_size=16))
            buf[i:i + len(run)] = run
            ops.append(f"overwrite@{i}")
        elif kind == "duplicate" and n:
            i, k = draw(st.integers(0, n - 1)), draw(st.integers(1, 512))
            j = _positions(draw, n + 1, header, protect)
            buf[j:j] = buf[i:i + k]
            ops.append(f"duplicate@{i}-{k}->{j}")
        elif kind == "int" and n >= 4:
            i = _positions(draw, n - 3, header, protect)
            v = draw(st.sampled_from(_EXTREME_INTS))
            fmt = draw(st.sampled_from(["<I", ">I", "<H", ">H", "<i"]))
            if fmt == "<i":
                v = -draw(st.integers(1, 2**31))
            packed = struct.pack(fmt, v & (0xFFFF if "H" in fmt else 0xFFFFFFFF)) if fmt != "<i" else struct.pack("<i", v)
            buf[i:i + len(packed)] = packed
            ops.append(f"int{fmt}{v}@{i}")
    return bytes(buf), tuple(ops)


def _fixed_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- finance


HANDBOOK_COLUMNS = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT",
                    "TX_TIME_SECONDS", "TX_TIME_DAYS", "TX_FRAUD", "TX_FRAUD_SCENARIO")
FINANCE_LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    # column -> kind of value
    "canonical": (("transaction_id", "id"), ("timestamp", "ts"), ("customer_id", "id"), ("terminal_id", "id"),
                  ("amount", "amount"), ("label", "label")),
    "handbook": (("TRANSACTION_ID", "id"), ("TX_DATETIME", "ts"), ("CUSTOMER_ID", "id"), ("TERMINAL_ID", "id"),
                 ("TX_AMOUNT", "amount"), ("TX_TIME_SECONDS", "seconds"), ("TX_TIME_DAYS", "days"),
                 ("TX_FRAUD", "label"), ("TX_FRAUD_SCENARIO", "scenario")),
    "ulb": (("Time", "seconds"), *((f"V{i}", "feature") for i in range(1, 29)), ("Amount", "amount"),
            ("Class", "label")),
}

WEIRD_CELLS = (
    "", " ", "abc", "NaN", "nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "-1", "-0", "1.5", "0x1F",
    "99999999999999999999999", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "1e18", "1e19", "\x00", "a\x00b", '"', "'", "a,b", "a;b", "a\tb", "line\nbreak", "cr\rhere", "\u00e9",
    "\u2028", "\ufeff1", "2018-13-45", "9999-12-31T23:59:59", "0001-01-01", "-999999-01-01",
    "2018-04-01T00:00:00+14:00", "2018-04-01 25:00", "2262-04-12", "1677-09-21", "true", "FRAUD", "2",
    "1.0", "NULL", "None", "1,5", "\uff11\uff12", "1_000", " 7 ", "+5", "--5", "1e-400", "0.0000001",
)

_VALID_CELL: dict[str, st.SearchStrategy[str]] = {
    "id": st.integers(0, 10**6).map(str),
    "ts": st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 12, 31)).map(
        lambda d: d.isoformat(sep=" ", timespec="seconds")),
    "amount": st.floats(0, 1e5, allow_nan=False).map(lambda x: f"{x:.2f}"),
    "label": st.sampled_from(["0", "1"]),
    "seconds": st.integers(0, 10**7).map(str),
    "days": st.integers(0, 200).map(str),
    "scenario": st.sampled_from(["0", "1", "2", "3"]),
    "feature": st.floats(-50, 50, allow_nan=False).map(lambda x: f"{x:.6g}"),
}


def _cell(kind: str) -> st.SearchStrategy[str]:
    """Mostly a valid value of the column's kind, else a weird one."""
    return st.one_of(
        _VALID_CELL[kind], _VALID_CELL[kind], _VALID_CELL[kind],
        st.sampled_from(WEIRD_CELLS),
        st.integers(-10**30, 10**30).map(str),
        st.text(max_size=10),
    )


@functools.lru_cache(maxsize=1)
def _handbook_rows() -> list[dict[str, Any]] | None:
    """The first rows of the real handbook data set as records (None when the data is absent)."""
    path = SHARED_DATA / "finance" / "handbook_simulated_raw.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    batch = next(pq.ParquetFile(path).iter_batches(batch_size=12))
    return batch.to_pylist()


@st.composite
def _finance_table(draw: Callable[[Any], Any]) -> tuple[str, list[str], list[list[str]], str]:
    """(layout, header, rows of strings, how) with header and row perturbations."""
    real = _handbook_rows()
    layouts = ["canonical", "handbook", "ulb"] + (["real"] if real else [])
    layout = draw(st.sampled_from(layouts))
    how = [layout]
    if layout == "real":
        assert real is not None
        header = list(real[0])
        rows = [[str(r[c]) for c in header] for r in real]
        cols = FINANCE_LAYOUTS["handbook"]
        edits = draw(st.integers(0, 4))
        for _ in range(edits):  # a few real cells replaced by weird values
            i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1))
            rows[i][j] = draw(st.sampled_from(WEIRD_CELLS))
            how.append(f"cell[{i},{j}]")
    else:
        cols = FINANCE_LAYOUTS[layout]
        header = [c for c, _ in cols]
        n = draw(st.integers(0, 3 if layout == "ulb" else 6))
        rows = [[draw(_cell(kind)) for _, kind in cols] for _ in range(n)]
    # header perturbations
    if draw(st.integers(0, 3)) == 0:
        op = draw(st.sampled_from(["drop", "dup", "extra", "rename", "shuffle"]))
        how.append(f"header-{op}")
        if op == "drop" and header:
            j = draw(st.integers(0, len(header) - 1))
            header.pop(j)
            rows = [r[:j] + r[j + 1:] for r in rows]
        elif op == "dup" and header:
            j = draw(st.integers(0, len(header) - 1))
            header.append(header[j])
            rows = [[*r, r[j] if j < len(r) else ""] for r in rows]
        elif op == "extra":
            header.append(draw(st.sampled_from(["extra", "", "transaction_id", "Unnamed: 0", " amount", "timestamp",
                                                "label", "\x00", "reason"])))
            rows = [[*r, draw(st.sampled_from(WEIRD_CELLS))] for r in rows]
        elif op == "rename" and header:
            j = draw(st.integers(0, len(header) - 1))
            header[j] = draw(st.sampled_from(["", " ", header[j].upper(), header[j] + " ", "\ufeff" + header[j]]))
        elif op == "shuffle":
            perm = draw(st.permutations(range(len(header))))
            header = [header[k] for k in perm]
            rows = [[r[k] for k in perm] for r in rows]
    # row perturbations
    if rows and draw(st.integers(0, 3)) == 0:
        op = draw(st.sampled_from(["wide", "short", "blank", "comment"]))
        i = draw(st.integers(0, len(rows) - 1))
        how.append(f"row-{op}@{i}")
        if op == "wide":
            rows[i] = rows[i] + ["x"] * draw(st.integers(1, 3))
        elif op == "short":
            rows[i] = rows[i][: draw(st.integers(0, max(0, len(rows[i]) - 1)))]
        elif op == "blank":
            rows.insert(i, [])
        else:
            rows.insert(i, ["# comment"])
    return layout, header, rows, "+".join(how)


def _format_for(layout: str) -> st.SearchStrategy[str]:
    """The ``format`` argument: mostly "auto", else the layout's own profile, rarely another one."""
    own = "handbook" if layout == "real" else layout
    return st.sampled_from(["auto"] * 5 + [own] * 2 + ["canonical", "handbook", "ulb"])


_QUOTING = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL, "nonnumeric": csv.QUOTE_NONNUMERIC,
            "none": csv.QUOTE_NONE}
def _write_csv(records: list[list[str]], *, delimiter: str, quoting: str, lineterminator: str) -> str:
    """CSV text; with quoting "none" a record the writer cannot express unquoted (a lone empty
    field) is written with minimal quoting instead."""
    out = io.StringIO()
    plain = csv.writer(out, delimiter=delimiter, quoting=_QUOTING[quoting], lineterminator=lineterminator,
                       escapechar="\\" if quoting == "none" else None)
    fallback = csv.writer(out, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator=lineterminator)
    for record in records:
        try:
            plain.writerow(record)
        except csv.Error:
            fallback.writerow(record)
    return out.getvalue()


_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".csv": lambda b: b,
    ".csv.gz": lambda b: gzip.compress(b, mtime=0),
    ".csv.bz2": bz2.compress,
    ".csv.xz": lzma.compress,
}


@st.composite
def finance_csv_cases(draw: Callable[[Any], Any]) -> FileCase:
    layout, header, rows, how = draw(_finance_table())
    delimiter = draw(st.sampled_from([","] * 7 + [";", "\t", "|"]))
    quoting = draw(st.sampled_from(list(_QUOTING)))
    terminator = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = _write_csv([header, *rows], delimiter=delimiter, quoting=quoting, lineterminator=terminator)
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "cp1252", "latin-1"]))
    raw = text.encode(encoding, errors="replace")
    suffix = draw(st.sampled_from([".csv", ".csv", ".csv", ".csv.gz", ".csv.bz2", ".csv.xz"]))
    when = draw(st.sampled_from(["none", "none", "none", "before", "after"]))
    ops: tuple[str, ...] = ()
    if when == "before":
        raw, ops = draw(mutated(raw, min_ops=1))
    data = _COMPRESS[suffix](raw)
    if when == "after":
        data, ops = draw(mutated(data, min_ops=1, protect=6))
    fmt = draw(_format_for(layout))
    desc = f"{how} sep={delimiter!r} quoting={quoting} eol={terminator!r} {encoding} {suffix} mutate-{when} {' '.join(ops)}"
    return FileCase(name="tx" + suffix, data=data, how=desc, option=fmt)


def _pa_column(draw: Callable[[Any], Any], kind: str, n: int) -> tuple[Any, str]:
    """(pyarrow array, type description) for one column: mostly its natural type, else an odd one."""
    import pyarrow as pa

    choice = draw(st.sampled_from(["natural", "natural", "natural", "string", "int64", "float64", "timestamp",
                                   "bool", "null", "binary", "list", "dict", "decimal", "date", "struct"]))
    if choice == "natural":
        choice = {"id": "int64", "ts": "timestamp", "amount": "float64", "label": "int64", "seconds": "int64",
                  "days": "int64", "scenario": "int64", "feature": "float64"}[kind]
        if kind == "ts" and draw(st.booleans()):
            return pa.array([draw(_VALID_CELL["ts"]) for _ in range(n)], pa.string()), "string-ts"
        if choice == "int64" and kind in ("id", "seconds", "days"):
            vals = [draw(st.one_of(st.integers(0, 10**6), st.none())) for _ in range(n)]
            return pa.array(vals, pa.int64()), "int64"
    nullable = st.none()
    if choice == "string":
        return pa.array([draw(st.one_of(_cell(kind), nullable)) for _ in range(n)], pa.string()), "string"
    if choice == "int64":
        vals = [draw(st.one_of(st.integers(-2**63, 2**63 - 1), st.sampled_from([0, 1, -1, 2**63 - 1, -2**63]),
                               nullable)) for _ in range(n)]
        return pa.array(vals, pa.int64()), "int64"
    if choice == "float64":
        vals = [draw(st.one_of(st.floats(), st.floats(0, 1e5), nullable)) for _ in range(n)]
        return pa.array(vals, pa.float64()), "float64"
    if choice == "timestamp":
        unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
        tz = draw(st.sampled_from([None, None, "UTC", "+05:30", "America/New_York"]))
        lim = {"s": 10**12, "ms": 10**15, "us": 10**18, "ns": 2**63 - 1}[unit]
        typical = {"s": 1.5e9, "ms": 1.5e12, "us": 1.5e15, "ns": 1.5e18}[unit]
        vals = [draw(st.one_of(st.integers(-lim, lim), st.integers(0, int(typical)), nullable)) for _ in range(n)]
        return pa.array(vals, pa.timestamp(unit, tz=tz)), f"timestamp[{unit},{tz}]"
    if choice == "bool":
        return pa.array([draw(st.one_of(st.booleans(), nullable)) for _ in range(n)], pa.bool_()), "bool"
    if choice == "null":
        return pa.nulls(n), "null"
    if choice == "binary":
        return pa.array([draw(st.one_of(st.binary(max_size=8), nullable)) for _ in range(n)], pa.binary()), "binary"
    if choice == "list":
        vals = [draw(st.one_of(st.lists(st.integers(-5, 5), max_size=3), nullable)) for _ in range(n)]
        return pa.array(vals, pa.list_(pa.int64())), "list"
    if choice == "dict":
        if draw(st.booleans()):
            arr = pa.array([draw(_cell(kind)) for _ in range(n)], pa.string())
            return arr.dictionary_encode(), "dictionary"
        arr = pa.array([draw(st.one_of(st.binary(max_size=6), _cell(kind).map(str.encode), nullable))
                        for _ in range(n)], pa.binary())
        return arr.dictionary_encode(), "dictionary<binary>"
    if choice == "decimal":
        vals = [draw(st.one_of(st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False), nullable))
                for _ in range(n)]
        return pa.array(vals, pa.decimal128(12, 2)), "decimal"
    if choice == "date":
        vals = [draw(st.one_of(st.integers(-10**6, 10**6), nullable)) for _ in range(n)]
        return pa.array(vals, pa.int32()).cast(pa.date32()), "date32"
    # struct
    vals = [draw(st.one_of(st.fixed_dictionaries({"a": st.integers(0, 9)}), nullable)) for _ in range(n)]
    return pa.array(vals, pa.struct([("a", pa.int64())])), "struct"


@st.composite
def finance_parquet_cases(draw: Callable[[Any], Any]) -> FileCase:
    import pyarrow as pa
    import pyarrow.parquet as pq

    real = _handbook_rows()
    layout = draw(st.sampled_from(["canonical", "handbook", "ulb"] + (["real"] if real else [])))
    how = [layout]
    if layout == "real":
        assert real is not None
        table = pa.Table.from_pylist(real)
        if draw(st.booleans()):  # one real column replaced by an odd type
            j = draw(st.integers(0, table.num_columns - 1))
            kind = dict(FINANCE_LAYOUTS["handbook"]).get(table.column_names[j], "id")
            arr, desc = _pa_column(draw, kind, table.num_rows)
            table = table.set_column(j, table.column_names[j], arr)
            how.append(f"{table.column_names[j]}:{desc}")
    else:
        cols = list(FINANCE_LAYOUTS[layout])
        n = draw(st.integers(0, 3 if layout == "ulb" else 6))
        arrays, names = [], []
        for name, kind in cols:
            arr, desc = _pa_column(draw, kind, n)
            arrays.append(arr)
            names.append(name)
            if desc not in ("int64", "float64", "timestamp[ns,None]"):
                how.append(f"{name}:{desc}")
        if draw(st.integers(0, 4)) == 0:
            op = draw(st.sampled_from(["drop", "dup", "extra"]))
            how.append(f"header-{op}")
            j = draw(st.integers(0, len(names) - 1))
            if op == "drop":
                arrays.pop(j)
                names.pop(j)
            elif op == "dup":
                arrays.append(arrays[j])
                names.append(names[j])
            else:
                arrays.append(pa.array([draw(st.sampled_from(WEIRD_CELLS)) for _ in range(n)], pa.string()))
                names.append(draw(st.sampled_from(["extra", "", "transaction_id", "reason", "__index_level_0__"])))
        table = pa.Table.from_arrays(arrays, names=names)
    buf = io.BytesIO()
    compression = draw(st.sampled_from(["none", "snappy", "gzip", "zstd"]))
    rg = draw(st.sampled_from([1, 2, 1000]))
    pq.write_table(table, buf, compression=compression, row_group_size=rg, use_dictionary=draw(st.booleans()))
    data = buf.getvalue()
    ops: tuple[str, ...] = ()
    if draw(st.booleans()):
        # Parquet keeps its metadata at the end: aim half of the mutations there.
        if draw(st.booleans()):
            tail = draw(st.integers(8, min(len(data), 512)))
            head, end = data[:-tail], data[-tail:]
            end, ops = draw(mutated(end, min_ops=1, header=64))
            data = head + end
            ops = tuple(f"tail{o}" for o in ops)
        else:
            data, ops = draw(mutated(data, min_ops=1, protect=4))
    fmt = draw(_format_for(layout))
    desc = f"{'+'.join(how)} {compression} rg={rg} {' '.join(ops)}"
    return FileCase(name="tx.parquet", data=data, how=desc, option=fmt)


def _check_finance_result(valid: Any, quarantined: Any, path: Path) -> None:
    from trillium.finance.records import AMOUNT, LABEL, TIMESTAMP, TRANSACTION_ID

    for col in (TRANSACTION_ID, TIMESTAMP, AMOUNT, LABEL):
        if col not in valid.columns:
            raise PropertyFailure(f"{path}: accepted frame lacks {col}; columns {list(valid.columns)}")
    if str(valid[AMOUNT].dtype) != "float64" or not np.isfinite(valid[AMOUNT].to_numpy()).all() \
            or (valid[AMOUNT].to_numpy() < 0).any():
        raise PropertyFailure(f"{path}: amount not finite non-negative float64: {valid[AMOUNT].head().tolist()}")
    if str(valid[TIMESTAMP].dtype) != "datetime64[ns]" or valid[TIMESTAMP].isna().any():
        raise PropertyFailure(f"{path}: timestamp {valid[TIMESTAMP].dtype} with NaT in valid rows")
    if str(valid[LABEL].dtype) != "Int8" or not valid[LABEL].dropna().isin([0, 1]).all():
        raise PropertyFailure(f"{path}: label not Int8 in {{0, 1, NA}}: {valid[LABEL].head().tolist()}")
    ids = valid[TRANSACTION_ID]
    if ids.isna().any() or ids.duplicated().any():
        raise PropertyFailure(f"{path}: missing or duplicate transaction ids among valid rows")
    if len(quarantined):
        if "reason" not in quarantined.columns:
            raise PropertyFailure(f"{path}: quarantine without a reason column")
        reasons = quarantined["reason"]
        if not all(isinstance(r, str) and r for r in reasons):
            raise PropertyFailure(f"{path}: quarantined rows without a reason: {reasons.head().tolist()}")
    overlap = set(valid.index) & {i for i in quarantined.index if i != -1}
    if overlap:
        raise PropertyFailure(f"{path}: rows both valid and quarantined: {sorted(overlap)[:5]}")


def _check_write(valid: Any, out_root: Path, src: Path) -> None:
    """``write_transactions`` of an accepted frame: the output is complete (reads back with the same
    rows and columns) or absent (with a typed error), never a half file or a leftover temporary."""
    import pandas as pd

    from trillium.finance.adapters import write_transactions

    for suffix in (".parquet", ".csv"):
        folder = out_root / suffix.strip(".")
        folder.mkdir(parents=True)
        target = folder / f"valid{suffix}"
        try:
            write_transactions(valid, target)
        except TrilliumError as exc:
            assert_typed(exc, [str(target)], f"write_transactions({target.name}) of {src.name}")
            left = sorted(p.name for p in folder.iterdir())
            if left:
                raise PropertyFailure(f"write_transactions({target.name}) failed but left {left}") from exc
            continue
        left = sorted(p.name for p in folder.iterdir())
        if left != [target.name]:
            raise PropertyFailure(f"write_transactions({target.name}) left {left}")
        back = pd.read_parquet(target) if suffix == ".parquet" else pd.read_csv(target, dtype=str,
                                                                                 keep_default_na=False)
        expected, got = [str(c) for c in valid.columns], [str(c) for c in back.columns]
        # pandas reads an empty header name back as "Unnamed: <i>": the file holds it as written
        same = len(got) == len(expected) and all(
            g == e or (suffix == ".csv" and not e.strip() and g.startswith("Unnamed: ")) for g, e in zip(got, expected))
        if len(back) != len(valid) or not same:
            raise PropertyFailure(f"write_transactions({target.name}) wrote {len(back)} rows {list(back.columns)}, "
                                  f"expected {len(valid)} rows {list(valid.columns)}")


def check_finance(case: FileCase, work: Path) -> Outcome:
    """``read_transactions`` (whole file), then ``write_transactions`` of what it accepted, then the
    batch path (``transaction_source(...).chunks()`` and ``normalize`` per chunk)."""
    from trillium.finance.adapters import read_transactions, transaction_source
    from trillium.finance.formats import PROFILES, detect_format
    from trillium.finance.normalization import normalize

    inp = work / "in"
    inp.mkdir(parents=True)
    path = inp / case.name
    path.write_bytes(case.data)
    before = snapshot(inp)
    names = [str(path), str(path.resolve())]
    try:
        valid, quarantined = read_transactions(path, case.option or "auto")
    except TrilliumError as exc:  # anything else propagates: an untyped exception is a finding
        assert_typed(exc, names, "read_transactions")
        outcome = Outcome(False, type(exc).__name__)
    else:
        _check_finance_result(valid, quarantined, path)
        outcome = Outcome(True)
    assert_unchanged(inp, before, "read_transactions")
    if outcome.accepted:
        _check_write(valid, work / "out", path)

    # The batch path: the same Source a job uses, normalized chunk by chunk.
    try:
        source = transaction_source(path, chunk_rows=3)
        mapping = PROFILES.get(case.option)
        for chunk in source.chunks():
            if mapping is None:
                mapping = PROFILES[detect_format(chunk.columns, source=str(path))]
            good, bad = normalize(chunk, mapping, source=str(path))
            source.take_rejected()
            if len(good) + len(bad) != len(chunk):
                raise PropertyFailure(f"{path}: normalize lost rows ({len(good)} + {len(bad)} != {len(chunk)})")
    except TrilliumError as exc:
        assert_typed(exc, names, "transaction_source(...).chunks() + normalize")
    assert_unchanged(inp, before, "transaction_source")
    return outcome


# --------------------------------------------------------------------------- images


# (kind, formats it can be written as)
IMAGE_KINDS: dict[str, tuple[str, ...]] = {
    "L8": (".png", ".jpg", ".bmp", ".tif"),
    "RGB8": (".png", ".jpg", ".bmp", ".tif"),
    "RGBA8": (".png", ".bmp", ".tif"),
    "LA8": (".png", ".tif"),
    "P": (".png", ".bmp", ".tif"),
    "1": (".png", ".bmp", ".tif"),
    "L16": (".png", ".tif"),
    "RGB16": (".png", ".tif"),
    "RGBA16": (".png", ".tif"),
    "F32": (".tif",),
    "I32": (".tif",),
    "CMYK8": (".jpg", ".tif"),
}


def _image_array(kind: str, h: int, w: int, seed: int, fill: str) -> np.ndarray:
    rng = _fixed_rng(seed)
    channels = {"L8": 1, "RGB8": 3, "RGBA8": 4, "LA8": 2, "P": 1, "1": 1, "L16": 1, "RGB16": 3, "RGBA16": 4,
                "F32": 1, "I32": 1, "CMYK8": 4}[kind]
    hi = 65535 if kind.endswith("16") else 255
    if kind == "F32":
        arr = rng.random((h, w), dtype=np.float32)
        if fill == "max":
            arr[:] = 1.0
        elif fill == "out":  # out of [0, 1] or non-finite: must be refused, not clipped silently
            arr[0, 0] = np.float32(np.inf if seed % 2 else -0.5)
        return arr
    if kind == "I32":  # 32-bit integer pixels: 0..65535 is read as 16 bit, anything else refused
        arr = rng.integers(0, 65536, size=(h, w), dtype=np.int64).astype(np.int32)
        if fill == "max":
            arr[:] = 65535
        elif fill == "out":
            arr[0, 0] = -1 if seed % 2 else 70000
        return arr
    dtype = np.uint16 if hi == 65535 else np.uint8
    if fill == "zero":
        arr = np.zeros((h, w, channels), dtype)
    elif fill == "max":
        arr = np.full((h, w, channels), hi, dtype)
    else:
        arr = rng.integers(0, hi + 1, size=(h, w, channels), dtype=dtype)
    if kind == "1":
        arr = (arr > hi // 2).astype(np.uint8) * 255
    return arr[:, :, 0] if channels == 1 else arr


def _encode_image(kind: str, arr: np.ndarray, ext: str, encoder: str, tiff_compression: str) -> bytes:
    import cv2
    from PIL import Image

    if kind in ("L16", "RGB16", "RGBA16") or (encoder == "cv2" and kind in ("L8", "RGB8", "RGBA8")):
        a = arr
        if a.ndim == 3 and a.shape[2] >= 3:
            a = np.ascontiguousarray(np.concatenate([a[:, :, 2::-1], a[:, :, 3:]], axis=2))
        ok, buf = cv2.imencode(ext, a)
        if not ok:
            raise ValueError(f"cv2 cannot encode {kind} as {ext}")
        return buf.tobytes()
    if kind == "P":
        im = Image.fromarray(arr, "L").convert("P")
    elif kind == "1":
        im = Image.fromarray(arr, "L").convert("1")
    elif kind == "F32":
        im = Image.fromarray(arr, "F")
    elif kind == "I32":
        im = Image.fromarray(arr, "I")
    elif kind == "CMYK8":
        im = Image.fromarray(arr, "CMYK")
    else:
        im = Image.fromarray(arr, {"L8": "L", "RGB8": "RGB", "RGBA8": "RGBA", "LA8": "LA"}[kind])
    out = io.BytesIO()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".tif": "TIFF"}[ext]
    kwargs = {"compression": tiff_compression} if fmt == "TIFF" and tiff_compression != "raw" else {}
    im.save(out, fmt, **kwargs)
    return out.getvalue()


def _expected_image(kind: str, arr: np.ndarray, ext: str) -> Any:
    """What ``read_image`` must return for an unmutated file: (shape, exact array or None)."""
    h, w = arr.shape[:2]
    channels = 1 if kind in ("L8", "LA8", "P", "1", "L16", "F32", "I32") else 3
    if kind == "P":
        channels = None  # palette: RGB, or grey where the decoder sees a grey palette (BMP)
    shape = (h, w, channels)
    if ext == ".jpg":
        return shape, None
    if kind in ("L8", "RGB8", "RGBA8"):
        a = arr if arr.ndim == 3 else arr[:, :, None]
        return shape, a[:, :, :channels].astype(np.float32) / 255.0
    if kind in ("L16", "RGB16", "RGBA16", "I32"):
        a = arr if arr.ndim == 3 else arr[:, :, None]
        return shape, a[:, :, :channels].astype(np.float32) / 65535.0
    return shape, None


@functools.lru_cache(maxsize=1)
def _real_images() -> tuple[tuple[str, bytes], ...]:
    """Two small real files of the Magnetic Tile set (a JPEG and a mask PNG), when present."""
    root = SHARED_DATA / "manufacturing" / "magnetic-tile"
    if not root.is_dir():
        return ()
    out = []
    for folder, ext in ((root / "train" / "good", ".jpg"), (root / "ground_truth" / "blowhole", ".png")):
        files = sorted((p for p in folder.glob(f"*{ext}")), key=lambda p: (p.stat().st_size, p.name)) \
            if folder.is_dir() else []
        if files:
            out.append((ext, files[0].read_bytes()))
    return tuple(out)


def _patch_header(draw: Callable[[Any], Any], data: bytes, ext: str) -> tuple[bytes, str]:
    """Replace a size / depth field of the format's header with an extreme value."""
    big = draw(st.sampled_from([0, 1, 65535, 65536, 30000, 2**31 - 1, 2**32 - 1, 100_000]))
    buf = bytearray(data)
    if data.startswith(b"\x89PNG") and len(buf) >= 33:
        field_ = draw(st.sampled_from(["width", "height", "depth", "colour"]))
        if field_ in ("width", "height"):
            struct.pack_into(">I", buf, 16 if field_ == "width" else 20, big & 0xFFFFFFFF)
        else:
            buf[24 if field_ == "depth" else 25] = draw(st.sampled_from([0, 1, 2, 3, 4, 6, 7, 8, 16, 32, 255]))
        if draw(st.booleans()):  # keep the IHDR CRC valid, so the decoder trusts the header
            struct.pack_into(">I", buf, 29, zlib.crc32(bytes(buf[12:29])) & 0xFFFFFFFF)
        return bytes(buf), f"png-{field_}={big}"
    if data.startswith(b"BM") and len(buf) >= 30:
        field_ = draw(st.sampled_from(["width", "height", "bpp", "offset"]))
        if field_ == "bpp":
            struct.pack_into("<H", buf, 28, draw(st.sampled_from([0, 1, 2, 3, 7, 9, 16, 17, 33, 64, 65535])))
        else:
            value = draw(st.sampled_from([big & 0x7FFFFFFF, -(big & 0x7FFFFFFF) or -1, -(2**31)]))
            struct.pack_into("<i", buf, {"width": 18, "height": 22, "offset": 10}[field_], value)
        return bytes(buf), f"bmp-{field_}"
    if data[:2] in (b"II", b"MM") and len(buf) >= 8:
        end = "<" if data[:2] == b"II" else ">"
        ifd = struct.unpack_from(end + "I", buf, 4)[0]
        if ifd + 2 <= len(buf):
            count = struct.unpack_from(end + "H", buf, ifd)[0]
            entries = [ifd + 2 + 12 * k for k in range(count) if ifd + 2 + 12 * (k + 1) <= len(buf)]
            if entries:
                pos = draw(st.sampled_from(entries))
                tag, typ = struct.unpack_from(end + "HH", buf, pos)
                if draw(st.booleans()):
                    struct.pack_into(end + "I", buf, pos + 4, draw(st.sampled_from([0, 2, 0xFFFF, 0x7FFFFFFF])))
                    return bytes(buf), f"tiff-tag{tag}-count"
                if typ == 3:  # SHORT
                    struct.pack_into(end + "H", buf, pos + 8, big & 0xFFFF)
                else:
                    struct.pack_into(end + "I", buf, pos + 8, big & 0xFFFFFFFF)
                return bytes(buf), f"tiff-tag{tag}={big}"
        return data, "tiff-noifd"
    if data.startswith(b"\xff\xd8"):
        for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
            i = data.find(marker)
            if i >= 0 and i + 9 <= len(buf):
                which = draw(st.sampled_from(["height", "width", "precision", "components"]))
                if which == "precision":
                    buf[i + 4] = draw(st.sampled_from([0, 1, 12, 16, 255]))
                elif which == "components":
                    buf[i + 9] = draw(st.sampled_from([0, 2, 4, 5, 255])) if i + 9 < len(buf) else 0
                else:
                    struct.pack_into(">H", buf, i + 5 if which == "height" else i + 7, big & 0xFFFF)
                return bytes(buf), f"jpeg-{which}={big}"
    return data, "no-header"


@st.composite
def image_cases(draw: Callable[[Any], Any]) -> FileCase:
    real = _real_images()
    source = draw(st.sampled_from(["gen"] * 4 + (["real"] if real else [])))
    expect = None
    if source == "real":
        ext, data = draw(st.sampled_from(list(real)))
        how = [f"real{ext}"]
    else:
        kind = draw(st.sampled_from(sorted(IMAGE_KINDS)))
        ext = draw(st.sampled_from(IMAGE_KINDS[kind]))
        h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
        fill = draw(st.sampled_from(["random", "random", "zero", "max"] + (["out"] if kind in ("F32", "I32") else [])))
        arr = _image_array(kind, h, w, draw(st.integers(0, 2**32 - 1)), fill)
        encoder = draw(st.sampled_from(["pil", "cv2"]))
        tiff = draw(st.sampled_from(["raw", "tiff_lzw", "tiff_adobe_deflate", "packbits"]))
        data = _encode_image(kind, arr, ext, encoder, tiff)
        how = [f"{kind}{ext} {h}x{w} {fill} {encoder} {tiff if ext == '.tif' else ''}".rstrip()]
        if fill != "out":
            expect = _expected_image(kind, arr, ext)
    mutate = draw(st.sampled_from(["none", "none", "header", "header", "bytes", "bytes", "both"]))
    if mutate in ("header", "both"):
        data, desc = _patch_header(draw, data, ext)
        how.append(desc)
    if mutate in ("bytes", "both"):
        data, ops = draw(mutated(data, min_ops=1, protect=8))
        how.append(" ".join(ops))
    if mutate != "none":
        expect = None
    name_ext = ext
    if draw(st.integers(0, 5)) == 0:  # the wrong suffix: the content decides, not the name
        name_ext = draw(st.sampled_from([".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".PNG"]))
        how.append(f"named{name_ext}")
    return FileCase(name="img" + name_ext, data=data, how=" ".join(how), expect=expect)


def check_image(case: FileCase, work: Path) -> Outcome:
    """``read_image``, then ``load_batch`` (which must quarantine, never raise, for a bad file)."""
    from trillium.manufacturing.images import load_batch, read_image

    inp = work / "in"
    inp.mkdir(parents=True)
    path = inp / case.name
    path.write_bytes(case.data)
    before = snapshot(inp)
    names = [str(path)]
    try:
        img = read_image(path)
    except TrilliumError as exc:
        assert_typed(exc, names, "read_image")
        outcome = Outcome(False, type(exc).__name__)
        if case.expect is not None:
            raise PropertyFailure(f"read_image refused a valid file ({case.how}): {exc}") from exc
    else:
        outcome = Outcome(True)
        if not isinstance(img, np.ndarray) or img.dtype != np.float32 or img.ndim != 3 or img.shape[2] not in (1, 3):
            raise PropertyFailure(f"read_image returned {type(img).__name__} {getattr(img, 'dtype', '')} "
                                  f"{getattr(img, 'shape', '')}")
        if img.shape[0] < 1 or img.shape[1] < 1 or not np.isfinite(img).all() or img.min() < 0 or img.max() > 1:
            raise PropertyFailure(f"read_image returned shape {img.shape}, range "
                                  f"[{np.nanmin(img) if img.size else 'empty'}, {np.nanmax(img) if img.size else ''}]")
        if case.expect is not None:
            shape, exact = case.expect
            if img.shape[:2] != tuple(shape[:2]) or (shape[2] is not None and img.shape[2] != shape[2]):
                raise PropertyFailure(f"read_image gave {img.shape} for a valid {case.how}, expected {shape}")
            if exact is not None and not np.allclose(img, exact, atol=1e-6):
                raise PropertyFailure(f"read_image changed the pixels of a lossless {case.how}")
    assert_unchanged(inp, before, "read_image")
    batch, bad = load_batch([path], (8, 8), 3)
    if len(batch) + len(bad) != 1 or (len(bad) == 1) == outcome.accepted:
        raise PropertyFailure(f"load_batch gave {len(batch)} images and {len(bad)} quarantined; "
                              f"read_image {'accepted' if outcome.accepted else 'refused'} the file")
    if len(batch) and (batch.shape != (1, 3, 8, 8) or not np.isfinite(batch).all()):
        raise PropertyFailure(f"load_batch returned {batch.shape}")
    assert_unchanged(inp, before, "load_batch")
    return outcome


# --------------------------------------------------------------------------- DICOM

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
IMPLICIT_LE = "1.2.840.10008.1.2"

TAGS = {
    "Rows": 0x00280010, "Columns": 0x00280011, "BitsAllocated": 0x00280100, "BitsStored": 0x00280101,
    "HighBit": 0x00280102, "PixelRepresentation": 0x00280103, "SamplesPerPixel": 0x00280002,
    "NumberOfFrames": 0x00280008, "PhotometricInterpretation": 0x00280004,
    "RescaleSlope": 0x00281053, "RescaleIntercept": 0x00281052, "SliceThickness": 0x00180050,
    "PixelSpacing": 0x00280030, "ImagePositionPatient": 0x00200032, "ImageOrientationPatient": 0x00200037,
    "Modality": 0x00080060, "SeriesInstanceUID": 0x0020000E, "InstanceNumber": 0x00200013,
    "StudyDate": 0x00080020, "PixelData": 0x7FE00010,
}
US_FIELDS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel")
DS_FIELDS = {"RescaleSlope": 1, "RescaleIntercept": 1, "SliceThickness": 1, "PixelSpacing": 2,
             "ImagePositionPatient": 3, "ImageOrientationPatient": 6}
DS_WEIRD = ("NaN", "nan", "inf", "-inf", "1e308", "-1e308", "1e-308", "abc", "", "0", "-0", "-1", "1,5", " ",
            "1e39", "3.4e38", "123456789012345678", "0x10")
SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.3.4", "")


def _meta_end(buf: bytes) -> int:
    if len(buf) < 144 or buf[128:132] != b"DICM":
        return -1
    (glen,) = struct.unpack_from("<I", buf, 140)
    return 144 + glen


def _elements(buf: bytes, start: int, end: int, explicit: bool) -> list[tuple[int, int, int]]:
    """(tag, start, end) of each top-level element from ``start`` (stops at undefined lengths)."""
    out, pos = [], start
    while pos + 8 <= end:
        group, elem = struct.unpack_from("<HH", buf, pos)
        if explicit:
            vr = bytes(buf[pos + 4:pos + 6])
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    break
                (length,) = struct.unpack_from("<I", buf, pos + 8)
                vstart = pos + 12
            else:
                (length,) = struct.unpack_from("<H", buf, pos + 6)
                vstart = pos + 8
        else:
            (length,) = struct.unpack_from("<I", buf, pos + 4)
            vstart = pos + 8
        if length == 0xFFFFFFFF:
            out.append(((group << 16) | elem, pos, -1))
            break
        out.append(((group << 16) | elem, pos, vstart + length))
        pos = vstart + length
    return out


def _encode_element(tag: int, vr: str, value: bytes, explicit: bool) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack("<I", len(value)) + value
    if vr.encode() in _LONG_VRS:
        return head + vr.encode() + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return head + vr.encode() + struct.pack("<H", len(value) & 0xFFFF) + value


def set_element(data: bytes, tag: int, vr: str, value: bytes | None) -> bytes:
    """``data`` (a Part-10 file) with the top-level element ``tag`` replaced, inserted or (value
    None) removed, at the byte level, so any value can be written whatever its VR allows."""
    meta_end = _meta_end(data)
    if meta_end < 0:
        return data
    syntax = _syntax(data)
    explicit = syntax != IMPLICIT_LE
    elems = _elements(data, meta_end, len(data), explicit)
    new = b"" if value is None else _encode_element(tag, vr, value, explicit)
    for t, s, e in elems:
        if t == tag and e > 0:
            return data[:s] + new + data[e:]
        if t > tag or e < 0:
            return data if value is None else data[:s] + new + data[s:]
    return data if value is None else data + new


def _syntax(data: bytes) -> str:
    meta_end = _meta_end(data)
    for t, s, e in _elements(data, 132, meta_end, True):
        if t == 0x00020010 and e > 0:
            return data[s + 8:e].rstrip(b"\x00 ").decode("ascii", "replace")
    return ""


def set_syntax(data: bytes, uid: str) -> bytes:
    """``data`` with its file meta TransferSyntaxUID replaced (group length fixed), dataset unchanged."""
    meta_end = _meta_end(data)
    if meta_end < 0:
        return data
    value = uid.encode() + (b"\x00" if len(uid) % 2 else b"")
    out = bytearray()
    for t, s, e in _elements(data, 144, meta_end, True):
        if e < 0:
            return data
        out += _encode_element(t, "UI", value, True) if t == 0x00020010 else data[s:e]
    return data[:140] + struct.pack("<I", len(out)) + bytes(out) + data[meta_end:]


def garble_vr(data: bytes, tag: int, vr: bytes = b"U\x01") -> bytes:
    """``data`` with the VR bytes of the explicit-VR element ``tag`` replaced (an unknown VR
    fails only when pydicom converts the value, which it does lazily, on first access)."""
    meta_end = _meta_end(data)
    for t, s, e in _elements(data, meta_end, len(data), True) if meta_end > 0 else ():
        if t == tag and e > 0:
            return data[:s + 4] + vr + data[s + 6:]
    return data


def seed_series(name: str) -> list[tuple[str, bytes]]:
    """The files of one of ``dicom_seeds`` by name."""
    for seed_name, files, _ in dicom_seeds():
        if seed_name == name:
            return list(files)
    raise KeyError(name)


def _ds_text(values: Sequence[str]) -> bytes:
    raw = "\\".join(values).encode("latin-1", "replace")
    return raw + (b" " if len(raw) % 2 else b"")


@st.composite
def _header_edit(draw: Callable[[Any], Any]) -> tuple[str, Callable[[bytes], bytes]]:
    """One structured edit of a slice: (description, function on the file's bytes)."""
    kind = draw(st.sampled_from(["us", "us", "ds", "ds", "str", "delete", "pixels", "syntax"]))
    if kind == "us":
        name = draw(st.sampled_from(US_FIELDS))
        form = draw(st.sampled_from(["US", "US", "SS", "two", "empty", "text"]))
        if form == "US":
            v = draw(st.sampled_from([0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 24, 32, 64, 255, 4096, 32767, 65535]))
            return f"{name}=US{v}", lambda b, t=TAGS[name], v=v: set_element(b, t, "US", struct.pack("<H", v))
        if form == "SS":
            v = draw(st.sampled_from([-1, -8, -32768]))
            return f"{name}=SS{v}", lambda b, t=TAGS[name], v=v: set_element(b, t, "SS", struct.pack("<h", v))
        if form == "two":
            return f"{name}=VM2", lambda b, t=TAGS[name]: set_element(b, t, "US", struct.pack("<HH", 8, 8))
        if form == "empty":
            return f"{name}=empty", lambda b, t=TAGS[name]: set_element(b, t, "US", b"")
        text = draw(st.sampled_from(["abc", "NaN", "-5", "1e9", "8.5", "", "99999999999"]))
        return f"{name}=IS{text!r}", lambda b, t=TAGS[name], x=text: set_element(b, t, "IS", _ds_text([x]))
    if kind == "ds":
        name = draw(st.sampled_from(sorted(DS_FIELDS)))
        vm = DS_FIELDS[name]
        count = draw(st.sampled_from([vm, vm, vm, 0, 1, vm + 1, 7]))
        values = [draw(st.one_of(st.sampled_from(DS_WEIRD),
                                 st.floats(-1e4, 1e4, allow_nan=False).map(lambda x: f"{x:.6g}")))
                  for _ in range(count)]
        return (f"{name}={values}",
                lambda b, t=TAGS[name], v=values: set_element(b, t, "DS", _ds_text(v)))
    if kind == "str":
        name, choices = draw(st.sampled_from([
            ("Modality", ["MR", "", "ct", "CT\\MR", "\xff\xfe"]),
            ("SeriesInstanceUID", ["", "1.2.3", "\xff\xfe", "1.2.3\\4.5.6", "x" * 64]),
            ("NumberOfFrames", ["0", "-1", "2", "99999999", "abc", ""]),
            ("PhotometricInterpretation", ["RGB", "PALETTE COLOR", "", "YBR_FULL"]),
            ("InstanceNumber", ["abc", "-1", "99999999999999999999"]),
            ("StudyDate", ["", "2024", "abcdefgh", "20241399"]),
        ]))
        text = draw(st.sampled_from(choices))
        vr = {"Modality": "CS", "SeriesInstanceUID": "UI", "NumberOfFrames": "IS", "PhotometricInterpretation": "CS",
              "InstanceNumber": "IS", "StudyDate": "DA"}[name]
        return f"{name}={text!r}", lambda b, t=TAGS[name], x=text, vr=vr: set_element(b, t, vr, _ds_text([x]))
    if kind == "delete":
        name = draw(st.sampled_from(sorted(TAGS)))
        return f"delete {name}", lambda b, t=TAGS[name]: set_element(b, t, "UN", None)
    if kind == "pixels":
        how = draw(st.sampled_from(["empty", "half", "odd", "double", "one"]))

        def pixels(b: bytes, how: str = how) -> bytes:
            meta_end = _meta_end(b)
            if meta_end < 0:
                return b
            explicit = _syntax(b) != IMPLICIT_LE
            for t, s, e in _elements(b, meta_end, len(b), explicit):
                if t == TAGS["PixelData"] and e > 0:
                    value = b[s + (12 if explicit else 8):e]
                    value = {"empty": b"", "half": value[: len(value) // 2], "odd": value[:-1],
                             "double": value * 2, "one": value[:2]}[how]
                    return b[:s] + _encode_element(t, "OW", value, explicit) + b[e:]
            return b

        return f"PixelData {how}", pixels
    uid = draw(st.sampled_from(SYNTAXES))
    return f"TransferSyntaxUID={uid!r}", lambda b, u=uid: set_syntax(b, u)


def _series_bytes(folder: Path) -> list[tuple[str, bytes]]:
    return [(str(p.relative_to(folder)), p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]


@functools.lru_cache(maxsize=1)
def dicom_seeds() -> tuple[tuple[str, tuple[tuple[str, bytes], ...], tuple[int, int, int] | None], ...]:
    """Small valid series as (name, files, expected shape), built once per process.

    Written by the project's ``write_ct_series`` (plain, RLE, implicit VR, unsigned 12-bit with a
    fractional slope, several series in one folder) and, when ``../shared/data`` is present,
    cut from real TCIA slices (their headers as the scanner wrote them, pixels cropped to 8 x 8).
    """
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    from trillium.medical.imaging.dicom_write import SeriesInfo, write_ct_series

    seeds = []
    rng = _fixed_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def hu(shape: tuple[int, int, int]) -> np.ndarray:
            return rng.integers(-1024, 2000, size=shape).astype(np.int16)

        def info(n: int) -> SeriesInfo:
            return SeriesInfo(study_uid=f"1.2.826.0.1.3680043.8.498.{n}.1", series_uid=f"1.2.826.0.1.3680043.8.498.{n}.2",
                              frame_of_reference_uid=f"1.2.826.0.1.3680043.8.498.{n}.3", study_date="20240101")

        write_ct_series(hu((3, 6, 5)), root / "plain", spacing=(2.5, 0.7, 0.8), origin=(-10, 5, 30), info=info(1))
        seeds.append(("plain", tuple(_series_bytes(root / "plain")), (3, 6, 5)))
        write_ct_series(hu((1, 4, 4)), root / "single", spacing=(1.0, 1.0, 1.0), info=info(2), file_names="index")
        seeds.append(("single", tuple(_series_bytes(root / "single")), (1, 4, 4)))
        write_ct_series(hu((3, 5, 7)), root / "rle", spacing=(1.25, 0.5, 0.5), info=info(3), compression="rle",
                        file_names="index")
        seeds.append(("rle", tuple(_series_bytes(root / "rle")), (3, 5, 7)))
        paths = write_ct_series(hu((4, 4, 6)), root / "implicit", spacing=(3.0, 0.9, 0.9), info=info(4),
                                file_names="index")
        for p in paths:
            ds = pydicom.dcmread(p)
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.save_as(p, enforce_file_format=True)
        seeds.append(("implicit", tuple(_series_bytes(root / "implicit")), (4, 4, 6)))
        paths = write_ct_series(hu((3, 6, 6)), root / "u12", spacing=(2.0, 0.6, 0.6), info=info(5), file_names="index")
        for p in paths:
            ds = pydicom.dcmread(p)
            ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
            ds.RescaleSlope, ds.RescaleIntercept = 0.5, -1024.25
            ds.PixelData = (np.frombuffer(ds.PixelData, "<i2").astype(np.int32) & 0x0FFF).astype("<u2").tobytes()
            ds.save_as(p, enforce_file_format=True)
        seeds.append(("unsigned12-float-slope", tuple(_series_bytes(root / "u12")), (3, 6, 6)))
        write_ct_series(hu((3, 4, 4)), root / "two" / "ct", spacing=(2.0, 1.0, 1.0), info=info(6))
        paths = write_ct_series(hu((2, 4, 4)), root / "two" / "mr", spacing=(2.0, 1.0, 1.0), info=info(7))
        for p in paths:
            ds = pydicom.dcmread(p)
            ds.Modality = "MR"
            ds.save_as(p, enforce_file_format=True)
        seeds.append(("ct-and-mr", tuple(_series_bytes(root / "two")), (3, 4, 4)))
        for name, series in _real_dicom_series():
            seeds.append((name, series, (len(series), 8, 8)))
    return tuple(seeds)


def _real_dicom_series() -> list[tuple[str, tuple[tuple[str, bytes], ...]]]:
    """Three adjacent real slices of each TCIA series under ../shared/data, cropped to 8 x 8."""
    import pydicom

    out = []
    roots = [SHARED_DATA / "medical-imaging" / "lidc-idri", SHARED_DATA / "medical-imaging" / "lung-pet-ct-dx"]
    for root in roots:
        first = min(root.rglob("*.dcm"), default=None) if root.is_dir() else None
        if first is None:
            continue
        heads = []  # every slice of the first file's folder (one series), by position
        for f in sorted(first.parent.glob("*.dcm")):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            if "ImagePositionPatient" in ds:
                heads.append((float(ds.ImagePositionPatient[2]), f))
        heads.sort()
        if len(heads) < 3:
            continue
        chosen = heads[:3]
        series = []
        for k, (_, f) in enumerate(chosen):
            ds = pydicom.dcmread(f)
            pixels = ds.pixel_array[100:108, 100:108]
            for elem in list(ds):
                if elem.VR == "SQ" or elem.tag.is_private:
                    del ds[elem.tag]
            ds.Rows, ds.Columns = 8, 8
            ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            series.append((f"real{k}.dcm", buf.getvalue()))
        out.append((f"real-{root.name}", tuple(series)))
    return out


@st.composite
def dicom_cases(draw: Callable[[Any], Any]) -> SeriesCase:
    seeds = dicom_seeds()
    name, files, expect = seeds[draw(st.integers(0, len(seeds) - 1))]
    files_l = list(files)
    how = [name]
    # structured header edits, then byte mutations of one slice
    for _ in range(draw(st.integers(0, 3))):
        k = draw(st.integers(0, len(files_l) - 1))
        desc, edit = draw(_header_edit())
        files_l[k] = (files_l[k][0], edit(files_l[k][1]))
        how.append(f"[{k}] {desc}")
    if draw(st.integers(0, 2)) == 0:
        k = draw(st.integers(0, len(files_l) - 1))
        data, ops = draw(mutated(files_l[k][1], min_ops=1, header=600, protect=132))
        files_l[k] = (files_l[k][0], data)
        how.append(f"[{k}] {' '.join(ops)}")
    # series-level edits
    if draw(st.integers(0, 4)) == 0:
        op = draw(st.sampled_from(["drop", "duplicate", "readme", "empty", "garbage", "nested"]))
        how.append(op)
        if op == "drop" and len(files_l) > 1:
            files_l.pop(draw(st.integers(0, len(files_l) - 1)))
        elif op == "duplicate":
            k = draw(st.integers(0, len(files_l) - 1))
            files_l.append(("copy-" + Path(files_l[k][0]).name, files_l[k][1]))
        elif op == "readme":
            files_l.append(("README.txt", b"exported by PACS\n"))
        elif op == "empty":
            files_l.append(("empty.dcm", b""))
        elif op == "garbage":
            files_l.append(("DICOMDIR", draw(st.binary(max_size=300))))
        else:
            files_l = [(f"a/b/{n}", b) for n, b in files_l]
    changed = len(how) > 1
    container = draw(st.sampled_from(["folder", "zip", "list"]))
    zip_data = None
    if container == "zip":
        buf = io.BytesIO()
        method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
        with zipfile.ZipFile(buf, "w", method) as zf:
            for n, b in files_l:
                zf.writestr(n, b)
            if draw(st.integers(0, 5)) == 0:
                odd = draw(st.sampled_from(["../evil.dcm", "/abs.dcm", "dir/", "c:\\x.dcm"]))
                zf.writestr(odd, b"" if odd.endswith("/") else files_l[0][1])
                how.append(f"member {odd}")
                changed = True
        zip_data = buf.getvalue()
        if draw(st.integers(0, 3)) == 0:
            zip_data, ops = draw(mutated(zip_data, min_ops=1, protect=4))
            how.append("zip " + " ".join(ops))
            changed = True
    return SeriesCase(files=tuple(files_l), container=container, how=" | ".join(how), zip_data=zip_data,
                      expect=None if changed else expect)


def check_dicom(case: SeriesCase, work: Path) -> Outcome:
    """``load_ct`` on the folder, zip or file list, then ``list_series`` on the same input."""
    from trillium.medical.imaging.dicom_io import list_series, load_ct

    inp = work / "in"
    inp.mkdir(parents=True)
    series = inp / "series"
    paths = []
    for n, b in case.files:
        p = series / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b)
        paths.append(p)
    source: Any
    if case.container == "zip":
        assert case.zip_data is not None
        zpath = inp / "study.zip"
        zpath.write_bytes(case.zip_data)
        source, names = zpath, [str(zpath)]
    elif case.container == "list":
        source, names = paths, [str(p) for p in paths]
    else:
        source, names = series, [str(series)]
    before = snapshot(inp)
    try:
        vol = load_ct(source)
    except TrilliumError as exc:
        assert_typed(exc, names, "load_ct")
        outcome = Outcome(False, type(exc).__name__)
        if case.expect is not None:
            raise PropertyFailure(f"load_ct refused a valid series ({case.how}): {exc}") from exc
    else:
        outcome = Outcome(True)
        hu, affine = vol.hu, vol.affine
        if hu.ndim != 3 or min(hu.shape) < 1 or hu.dtype not in (np.int16, np.float32):
            raise PropertyFailure(f"load_ct returned hu {hu.dtype} {hu.shape}")
        if hu.dtype == np.float32 and not np.isfinite(hu).all():
            raise PropertyFailure(f"load_ct returned non-finite HU ({case.how})")
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise PropertyFailure(f"load_ct returned a non-finite affine {affine.tolist()} ({case.how})")
        spacing = np.asarray(vol.spacing)
        if not (np.isfinite(spacing).all() and (spacing > 0).all()):
            raise PropertyFailure(f"load_ct returned spacing {vol.spacing} ({case.how})")
        if len(vol.files) > hu.shape[0]:
            raise PropertyFailure(f"load_ct: {len(vol.files)} files for {hu.shape[0]} slices")
        if case.expect is not None and hu.shape != tuple(case.expect):
            raise PropertyFailure(f"load_ct gave {hu.shape} for a valid series ({case.how}), expected {case.expect}")
    assert_unchanged(inp, before, "load_ct")
    try:
        listed = list_series(source)
        if not listed or any(e["slices"] < 1 for e in listed):
            raise PropertyFailure(f"list_series returned {listed}")
    except TrilliumError as exc:
        assert_typed(exc, names, "list_series")
    assert_unchanged(inp, before, "list_series")
    return outcome


# --------------------------------------------------------------------------- clinical notes

NOTE_ENCODINGS = ("utf-8", "utf-8-sig", "utf-16-le-bom", "utf-16-be-bom", "utf-16-le-nobom", "cp1252", "latin-1")
ODD_TEXT = ("\u00b0", "\u00b5", "\u2019", "\u201c", "\u201d", "\u2014", "\u00a0", "\ufeff", "\u2028", "\U0001f600",
            "\u4e2d\u6587", "\r\n", "\r", "\t", "\x0c", "\x01", "\x1b", "\x7f", "\x85", "\x00", "\u00e9",
            "Patient ID: 12345\n", "MRN: \n", "\n\n\n")


@functools.lru_cache(maxsize=1)
def _real_sentences() -> tuple[str, ...]:
    out = []
    note = REPO / "tests" / "medical" / "admission_note.txt"
    if note.is_file():
        out.extend(line for line in note.read_text(encoding="utf-8").splitlines() if line.strip())
    negex = SHARED_DATA / "medical-records" / "negex" / "rsAnnotations-1-120-random.tsv"
    if negex.is_file():
        for line in negex.read_text(encoding="utf-8", errors="replace").splitlines()[1:40]:
            parts = line.split("\t")
            if len(parts) > 2:
                out.append(parts[2])
    return tuple(out) or ("HISTORY: chest pain.", "PLAN: ECG.")


def _note_text() -> st.SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(_real_sentences()), st.sampled_from(ODD_TEXT), st.text(max_size=20))
    return st.lists(piece, min_size=1, max_size=8).map(" ".join)


def _encode_note(text: str, encoding: str) -> bytes:
    if encoding == "utf-16-le-bom":
        return b"\xff\xfe" + text.encode("utf-16-le", "surrogatepass")
    if encoding == "utf-16-be-bom":
        return b"\xfe\xff" + text.encode("utf-16-be", "surrogatepass")
    if encoding == "utf-16-le-nobom":
        return text.encode("utf-16-le", "surrogatepass")
    return text.encode(encoding, errors="replace")


@st.composite
def note_cases(draw: Callable[[Any], Any]) -> FileCase:
    kind = draw(st.sampled_from(["note", "note", "note", "csv"]))
    if kind == "note":
        source = draw(st.sampled_from(["text", "text", "text", "binary", "special"]))
        if source == "binary":
            data, how = draw(st.binary(max_size=400)), "binary"
        elif source == "special":
            data = draw(st.sampled_from([b"", b"   \n\t", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfea",
                                         b"\xff\xfe\x00\xd8", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"%PDF-1.4\n",
                                         b"PK\x03\x04" + b"\x00" * 26]))
            how = f"special {data[:12]!r}"
        else:
            encoding = draw(st.sampled_from(NOTE_ENCODINGS))
            data, how = _encode_note(draw(_note_text()), encoding), encoding
        name = "note" + draw(st.sampled_from([".txt", ".txt", ".note", ".md", ".TXT", ".text"]))
    else:
        header = draw(st.sampled_from([["description", "medical_specialty", "sample_name", "transcription", "keywords"],
                                       ["transcription"], ["id", "transcription"], ["description", "text"],
                                       ["transcription", "transcription"], []]))
        rows = [[draw(st.one_of(_note_text(), st.sampled_from(["", " ", "\x00", '"', "a,b"]))) for _ in header]
                for _ in range(draw(st.integers(0, 4)))]
        quoting = draw(st.sampled_from(["minimal", "all", "none"]))
        text = _write_csv(([header] if header else []) + rows, quoting=quoting,
                          delimiter=draw(st.sampled_from([",", ",", ";", "\t"])),
                          lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
        encoding = draw(st.sampled_from(NOTE_ENCODINGS))
        data, how = _encode_note(text, encoding), f"csv {header} {quoting} {encoding}"
        name = "notes.csv"
    if draw(st.integers(0, 2)) == 0:
        data, ops = draw(mutated(data, min_ops=1, header=32))
        how += " " + " ".join(ops)
    return FileCase(name=name, data=data, how=how, option=kind)


_ENCODING_NAMES = {"utf-8", "utf-8-sig", "utf-16-le", "utf-16-be", "cp1252", "latin-1"}


def _check_note(note: Any, path: Path) -> None:
    if not isinstance(note.text, str) or not note.text.strip() or "\r" in note.text:
        raise PropertyFailure(f"{path}: note text empty or with carriage returns: {note.text[:80]!r}")
    if note.metadata.get("encoding") not in _ENCODING_NAMES:
        raise PropertyFailure(f"{path}: note encoding {note.metadata.get('encoding')!r}")


def check_notes(case: FileCase, work: Path) -> Outcome:
    """``decode_text`` on the bytes; ``read_note`` or ``read_notes_csv`` on the file; ``load_notes``
    on the folder (which must quarantine a bad file, never raise)."""
    from trillium.medical.records.notes import decode_text, load_notes, read_note, read_notes_csv

    inp = work / "in"
    inp.mkdir(parents=True)
    path = inp / case.name
    path.write_bytes(case.data)
    before = snapshot(inp)
    names = [str(path)]
    label = f"<fuzz {case.name}>"
    try:
        text, encoding = decode_text(case.data, label)
    except TrilliumError as exc:
        assert_typed(exc, [label], "decode_text")
    else:
        if not text.strip() or "\r" in text or encoding not in _ENCODING_NAMES:
            raise PropertyFailure(f"decode_text returned {text[:60]!r} as {encoding!r}")
    try:
        if case.option == "csv":
            notes, rejected = read_notes_csv(path)
            for note in notes:
                _check_note(note, path)
            if any(not r.reason or str(path) not in r.source for r in rejected):
                raise PropertyFailure(f"{path}: rejected rows without a reason or a source naming the file")
        else:
            note = read_note(path)
            _check_note(note, path)
            if note.note_id != path.stem or note.source != str(path):
                raise PropertyFailure(f"{path}: note id {note.note_id!r}, source {note.source!r}")
    except TrilliumError as exc:
        assert_typed(exc, names, "read_notes_csv" if case.option == "csv" else "read_note")
        outcome = Outcome(False, type(exc).__name__)
    else:
        outcome = Outcome(True)
    assert_unchanged(inp, before, "read_note")
    # The batch reader: a bad file becomes a RejectedNote, never an exception.
    notes, rejected = load_notes([inp] if case.option == "note" else [path])
    if case.option == "note" and (len(notes) + len(rejected) != 1 or (len(notes) == 1) != outcome.accepted):
        raise PropertyFailure(f"load_notes gave {len(notes)} notes and {len(rejected)} rejected for one file "
                              f"that read_note {'accepted' if outcome.accepted else 'refused'}")
    for note in notes:
        _check_note(note, path)
    assert_unchanged(inp, before, "load_notes")
    return outcome


# --------------------------------------------------------------------------- registry

STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "finance_csv": finance_csv_cases(),
    "finance_parquet": finance_parquet_cases(),
    "images": image_cases(),
    "dicom": dicom_cases(),
    "notes": note_cases(),
}
CHECKS: dict[str, Callable[[Any, Path], Outcome]] = {
    "finance_csv": check_finance,
    "finance_parquet": check_finance,
    "images": check_image,
    "dicom": check_dicom,
    "notes": check_notes,
}


def run_case(adapter: str, case: Any) -> Outcome:
    """Run one case's check in a fresh temporary folder (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{adapter}-") as tmp:
        return CHECKS[adapter](case, Path(tmp))


__all__ = ["ADAPTERS", "CHECKS", "STRATEGIES", "FileCase", "InputValidationError", "Outcome", "PropertyFailure",
           "SeriesCase", "run_case"]
