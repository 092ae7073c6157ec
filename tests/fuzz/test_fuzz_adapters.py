"""Property-based fuzzing of every input adapter on generated and mutated files (Hypothesis).

Adapters and entry points (strategies and checks in ``tests/fuzz/strategies.py``, shared with
``benchmarks/fuzz_adapters.py``, which runs 1,000+ cases per adapter):

- finance transactions, CSV (.csv, .csv.gz/.bz2/.xz) and Parquet: ``read_transactions``, then
  ``write_transactions`` of what it accepted, then ``transaction_source(...).chunks()`` with
  ``normalize`` per chunk (the batch path);
- manufacturing images (PNG, JPEG, BMP, TIFF; 8/16 bit; grey, colour, alpha, palette, bilevel,
  float): ``read_image`` and ``load_batch``;
- DICOM CT series as a folder, a zip or a file list: ``load_ct`` and ``list_series``;
- clinical notes (UTF-8, UTF-8 BOM, UTF-16 LE/BE with BOM, cp1252, latin-1, binary garbage; note
  files and CSV exports): ``decode_text``, ``read_note`` / ``read_notes_csv`` and ``load_notes``.

Properties: (a) only typed errors (``TrilliumError`` subclasses) whose message names the file;
(b) no hang (a per-example Hypothesis deadline, and pytest-timeout on each test); (c) the input
folder is unchanged, and ``write_transactions`` leaves its output complete or absent; (d) an
accepted input gives a sane result (dtypes, shapes, finite values, images in [0, 1]; an
unmutated valid seed must be accepted with the expected shape).

``TRILLIUM_FUZZ_EXAMPLES`` sets the examples per adapter (default 50). Unset, the run is
derandomized (the same cases every time, as ``make test`` needs); set, each run draws new cases.
No example database is written (``database=None``). A failure prints the falsifying case (its
bytes) and a ``@reproduce_failure`` blob.

The regression cases at the end are the bugs these properties found, each pinned as a fixed
input so it is checked on every run whatever Hypothesis draws.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import struct
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings

# imported up front, so that no example's deadline is spent importing an adapter
from tests.fuzz.strategies import (
    STRATEGIES,
    TAGS,
    FileCase,
    Outcome,
    SeriesCase,
    garble_vr,
    run_case,
    seed_series,
    set_element,
)

# pydicom warns about each invalid value it reads (the point of the DICOM cases), and the image
# decoders about truncated data: expected noise here, not findings.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*"),
              pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")]

_ENV = os.environ.get("TRILLIUM_FUZZ_EXAMPLES", "").strip()
EXAMPLES = int(_ENV) if _ENV else 50
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),  # one case past 5 s is a hang
    database=None,  # no .hypothesis folder in the repository
    derandomize=not _ENV,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    print_blob=True,
)
TIMEOUT = 120 + 10 * EXAMPLES  # pytest-timeout for one adapter's test: a hang in native code fails it too


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(case=STRATEGIES["finance_csv"])
def test_fuzz_finance_csv(case: FileCase) -> None:
    run_case("finance_csv", case)


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(case=STRATEGIES["finance_parquet"])
def test_fuzz_finance_parquet(case: FileCase) -> None:
    run_case("finance_parquet", case)


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(case=STRATEGIES["images"])
def test_fuzz_images(case: FileCase) -> None:
    run_case("images", case)


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(case=STRATEGIES["dicom"])
def test_fuzz_dicom(case: SeriesCase) -> None:
    run_case("dicom", case)


@pytest.mark.timeout(TIMEOUT)
@FUZZ
@given(case=STRATEGIES["notes"])
def test_fuzz_notes(case: FileCase) -> None:
    run_case("notes", case)


# --------------------------------------------------------------------------- found bugs, pinned


CSV = b"transaction_id,timestamp,amount\n1,2020-01-01,5.0\n2,2020-01-02,6.0\n"


def _parquet(table: pa.Table, **kw: Any) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def _flip(data: bytes, pos: int, mask: int = 0xFF) -> bytes:
    out = bytearray(data)
    out[pos] ^= mask
    return bytes(out)


def _parquet_page_header_broken() -> FileCase:
    table = pa.table({"transaction_id": [1, 2], "timestamp": pa.array([1, 2], pa.timestamp("s")), "amount": [1.0, 2.0]})
    return FileCase("tx.parquet", _flip(_parquet(table, compression="none"), 8), "page header byte flipped")


def _parquet_binary_ids() -> FileCase:
    table = pa.table({"transaction_id": pa.array([b"\xff", b"2"], pa.binary()),
                      "timestamp": pa.array([1, 2], pa.timestamp("s")), "amount": [1.0, 2.0]})
    return FileCase("tx.parquet", _parquet(table), "binary ids, not UTF-8")


def _parquet_dictionary_binary_ids() -> FileCase:
    ids = pa.array([b"\xff", b"2"], pa.binary()).dictionary_encode()
    table = pa.table({"transaction_id": ids, "timestamp": pa.array([1, 2], pa.timestamp("s")), "amount": [1.0, 2.0]})
    return FileCase("tx.parquet", _parquet(table), "dictionary-encoded binary ids, not UTF-8")


def _parquet_zoned_labels() -> FileCase:
    table = pa.table({"transaction_id": [1, 2], "timestamp": pa.array([1, 2], pa.timestamp("s")), "amount": [1.0, 2.0],
                      "label": pa.array([10**18, 2], pa.timestamp("us", tz="UTC"))})
    return FileCase("tx.parquet", _parquet(table), "labels: zoned times, one in year 33658")


def _parquet_duplicate_columns() -> FileCase:
    table = pa.Table.from_arrays([pa.array([1, 2]), pa.array([1, 2], pa.timestamp("s")), pa.array([1.0, 2.0]),
                                  pa.array([3.0, 4.0])], names=["transaction_id", "timestamp", "amount", "amount"])
    return FileCase("tx.parquet", _parquet(table), "two columns named amount")


def _parquet_year_minus_1895() -> FileCase:
    table = pa.table({"transaction_id": [1, 2], "amount": [1.0, 2.0],
                      "timestamp": pa.array([-121_970_000_000, 2], pa.timestamp("s", tz="UTC"))})
    return FileCase("tx.parquet", _parquet(table), "a timestamp in year -1895 (quarantine reason)")


def _parquet_zoned_year_33658(column: str) -> FileCase:
    far = pa.array([1_000_000_000_000, 2], pa.timestamp("s", tz="America/New_York"))  # year 33658 and 1970
    columns = {"transaction_id": [1, 2], "timestamp": pa.array([1, 2], pa.timestamp("s")), "amount": [1.0, 2.0],
               "terminal_id": [1, 2], column: far}
    return FileCase("tx.parquet", _parquet(pa.table(columns)), f"{column}: a zoned time in year 33658")


def _dicom(seed: str, k: int, edit: Callable[[bytes], bytes], container: str = "folder") -> SeriesCase:
    files = seed_series(seed)
    files[k] = (files[k][0], edit(files[k][1]))
    return SeriesCase(tuple(files), container, f"{seed} [{k}] edited")


def _field(name: str, vr: str, value: bytes) -> Callable[[bytes], bytes]:
    return lambda data: set_element(data, TAGS[name], vr, value)


REFUSED = {"fin": Outcome(False, "InputValidationError"), "dcm": Outcome(False, "DicomInputError")}
# name -> (adapter, case builder, expected outcome); each was an untyped exception, a hang-free
# but insane accepted result, or a corrupted output before its fix.
REGRESSIONS: dict[str, tuple[str, Callable[[], Any], Outcome]] = {
    # zlib.error / lzma EOFError / csv.Error / ParserError escaped from the CSV reader
    "csv.gz corrupt deflate stream": ("finance_csv", lambda: FileCase(
        "tx.csv.gz", _flip(gzip.compress(CSV, mtime=0), 14, 0x55), "gz"), REFUSED["fin"]),
    "csv.xz truncated": ("finance_csv", lambda: FileCase("tx.csv.xz", lzma.compress(CSV)[:-20], "xz"),
                         REFUSED["fin"]),
    "csv quote then text in a field": ("finance_csv", lambda: FileCase(
        "tx.csv", b'transaction_id,timestamp,amount\n1,2020-01-01,""x","y"\n', "csv.Error"), REFUSED["fin"]),
    "csv header with an open quote": ("finance_csv", lambda: FileCase(
        "tx.csv", b'"transaction_id,timestamp\n', "EOF inside string"), REFUSED["fin"]),
    # write_transactions wrote a bare "\r" (the row split in two on reading)
    "csv id holding a carriage return": ("finance_csv", lambda: FileCase(
        "tx.csv", b'transaction_id,timestamp,amount\n"a\rb",2020-01-01,5.0\n', "CR in a quoted id"),
        Outcome(True)),
    # OSError from pyarrow's page reader; UnicodeDecodeError; AttributeError; NotImplementedError
    "parquet broken page header": ("finance_parquet", _parquet_page_header_broken, REFUSED["fin"]),
    "parquet binary ids": ("finance_parquet", _parquet_binary_ids, Outcome(True)),
    "parquet dictionary of binary ids": ("finance_parquet", _parquet_dictionary_binary_ids, Outcome(True)),
    "parquet zoned times as labels": ("finance_parquet", _parquet_zoned_labels, Outcome(True)),
    "parquet duplicate column names": ("finance_parquet", _parquet_duplicate_columns, REFUSED["fin"]),
    "parquet timestamp in year -1895": ("finance_parquet", _parquet_year_minus_1895, Outcome(True)),
    "parquet zoned timestamp in year 33658": ("finance_parquet", lambda: _parquet_zoned_year_33658("timestamp"),
                                              Outcome(True)),
    "parquet zoned time as terminal id": ("finance_parquet", lambda: _parquet_zoned_year_33658("terminal_id"),
                                          Outcome(True)),
    # DICOM: TypeError / OverflowError / ValueError / NotImplementedError, or an accepted volume
    # with zero rows, zero spacing, a NaN affine or infinite HU
    "dicom RescaleSlope with two values": ("dicom", lambda: _dicom("plain", 1, _field("RescaleSlope", "DS", b"2\\3 ")),
                                           REFUSED["dcm"]),
    "dicom RescaleSlope NaN": ("dicom", lambda: _dicom("plain", 0, _field("RescaleSlope", "DS", b"NaN ")),
                               REFUSED["dcm"]),
    "dicom RescaleIntercept 1e308": ("dicom", lambda: _dicom("plain", 0, _field("RescaleIntercept", "DS", b"1e308 ")),
                                     REFUSED["dcm"]),
    "dicom RescaleSlope 3e38": ("dicom", lambda: _dicom("plain", 0, _field("RescaleSlope", "DS", b"3e38")),
                                REFUSED["dcm"]),
    "dicom empty Columns": ("dicom", lambda: _dicom("single", 0, _field("Columns", "US", b"")), REFUSED["dcm"]),
    "dicom Rows 0": ("dicom", lambda: _dicom("single", 0, _field("Rows", "US", struct.pack("<H", 0))),
                     REFUSED["dcm"]),
    "dicom unknown VR in BitsAllocated": ("dicom", lambda: _dicom(
        "plain", 1, lambda b: garble_vr(b, TAGS["BitsAllocated"]), container="list"), REFUSED["dcm"]),
    "dicom SliceThickness with three values": ("dicom", lambda: _dicom(
        "single", 0, _field("SliceThickness", "DS", b"1\\2\\3 ")), REFUSED["dcm"]),
    "dicom SliceThickness NaN": ("dicom", lambda: _dicom("single", 0, _field("SliceThickness", "DS", b"NaN ")),
                                 REFUSED["dcm"]),
    "dicom PixelSpacing 0": ("dicom", lambda: _dicom("single", 0, _field("PixelSpacing", "DS", b"0\\0 ")),
                             REFUSED["dcm"]),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_found_bug_stays_fixed(name: str) -> None:
    adapter, build, expected = REGRESSIONS[name]
    assert run_case(adapter, build()) == expected
