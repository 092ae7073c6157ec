"""Finance adapters: external formats -> canonical transaction records, bad rows quarantined.

Every test reads real files (CSV, gzip CSV, Parquet) or a real SQL table (SQLite and
PostgreSQL) written in tmp_path, and checks that no row is lost: valid + quarantined = input.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, insert, select

from tests.conftest import SHARED_DATA, require_shared
from trillium.core import jobs
from trillium.core.db import Database
from trillium.core.errors import InputValidationError
from trillium.finance.adapters import read_transactions, transaction_source, write_transactions
from trillium.finance.formats import PROFILES, ColumnMapping, detect_format
from trillium.finance.normalization import normalize
from trillium.finance.records import CANONICAL

HANDBOOK_RAW = SHARED_DATA / "finance" / "handbook_simulated_raw.parquet"
HANDBOOK_COLUMNS = [
    "TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT",
    "TX_TIME_SECONDS", "TX_TIME_DAYS", "TX_FRAUD", "TX_FRAUD_SCENARIO",
]
ULB_COLUMNS = ["Time", *[f"V{i}" for i in range(1, 29)], "Amount", "Class"]


def _handbook(n: int, start_id: int = 0) -> pd.DataFrame:
    """A small frame in the handbook's layout and dtypes."""
    rng = np.random.default_rng(start_id)
    seconds = np.sort(rng.integers(0, 86_400 * 3, n))
    fraud = (rng.random(n) < 0.2).astype("int64")
    return pd.DataFrame({
        "TRANSACTION_ID": np.arange(start_id, start_id + n, dtype="int64"),
        "TX_DATETIME": pd.Timestamp("2018-04-01") + pd.to_timedelta(seconds, unit="s"),
        "CUSTOMER_ID": rng.integers(0, 50, n),
        "TERMINAL_ID": rng.integers(0, 80, n),
        "TX_AMOUNT": rng.gamma(2.0, 30.0, n).round(2),
        "TX_TIME_SECONDS": seconds,
        "TX_TIME_DAYS": seconds // 86_400,
        "TX_FRAUD": fraud,
        "TX_FRAUD_SCENARIO": fraud * rng.integers(1, 4, n),
    })


def _assert_canonical_dtypes(frame: pd.DataFrame, *, card: bool = True) -> None:
    assert frame["transaction_id"].dtype == "int64"
    assert frame["timestamp"].dtype == "datetime64[ns]"
    assert frame["amount"].dtype == "float64"
    assert frame["label"].dtype == "Int8"
    if card:
        assert frame["customer_id"].dtype == "int64"
        assert frame["terminal_id"].dtype == "int64"


# --------------------------------------------------------------------------- the real handbook file


def test_handbook_real_file_first_100k_rows_all_valid() -> None:
    require_shared(HANDBOOK_RAW, "the handbook's simulated transactions")
    raw = next(pq.ParquetFile(HANDBOOK_RAW).iter_batches(batch_size=100_000)).to_pandas()
    assert len(raw) == 100_000
    assert detect_format(raw.columns) == "handbook"

    valid, quarantined = normalize(raw, PROFILES["handbook"], source=str(HANDBOOK_RAW))

    assert len(quarantined) == 0
    assert list(valid.columns) == [*CANONICAL, "fraud_scenario"]
    _assert_canonical_dtypes(valid)
    assert valid.index.equals(raw.index)
    assert (valid["transaction_id"].to_numpy() == raw["TRANSACTION_ID"].to_numpy()).all()
    assert (valid["timestamp"].to_numpy() == raw["TX_DATETIME"].to_numpy()).all()
    assert set(valid["label"].unique()) <= {0, 1}
    assert valid["label"].sum() == raw["TX_FRAUD"].sum()
    assert (valid["fraud_scenario"].to_numpy() == raw["TX_FRAUD_SCENARIO"].to_numpy()).all()


# --------------------------------------------------------------------------- quarantine


BAD_CSV = """transaction_id,timestamp,customer_id,terminal_id,amount,label
1,2018-04-01 00:00:01,10,100,12.5,0
,2018-04-01 00:00:02,10,100,3.0,0
3,2018-04-01 00:00:03,11,101,abc,0
4,2018-04-01 00:00:04,11,101,-5,0
5,2018-13-45 99:00:00,12,102,7.0,0
6,2018-04-01 00:00:06,12,102,8.0,maybe
1,2018-04-01 00:00:07,13,103,9.0,1
8,2018-04-01 00:00:08,13,103, 10.25 ,fraud
9,2018-04-01T00:00:09,14,104,11.0,
10,2018-04-01 00:00:10,,104,12.0,genuine
11,2018-04-01 00:00:11,15,105,inf,0
12,2018-04-01 00:00:12,15,105,-1,x
13,,16,106,1.0,TRUE
"""

EXPECTED_REASONS = {
    1: "missing transaction_id",
    2: "bad amount: not a number ('abc')",
    3: "bad amount: negative (-5.0)",
    4: "bad timestamp: not an ISO 8601 date ('2018-13-45 99:00:00')",
    5: "bad label: 'maybe' is not one of 0, 1, true, false, fraud, genuine or empty",
    6: "duplicate transaction_id '1' (first at row 0)",
    9: "missing customer_id",
    10: "bad amount: not finite ('inf')",
    11: "bad amount: negative (-1.0); bad label: 'x' is not one of 0, 1, true, false, fraud, genuine or empty",
    12: "missing timestamp",
}


def test_bad_rows_are_quarantined_with_reasons_and_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)

    valid, quarantined = read_transactions(path)

    assert dict(quarantined["reason"]) == EXPECTED_REASONS
    assert sorted(valid.index) == [0, 7, 8]
    assert len(valid) + len(quarantined) == 13  # nothing lost
    # quarantined rows keep their original raw values and columns
    assert list(quarantined.columns) == ["transaction_id", "timestamp", "customer_id", "terminal_id", "amount",
                                         "label", "reason"]
    assert quarantined.loc[2, "amount"] == "abc"
    assert quarantined.loc[4, "timestamp"] == "2018-13-45 99:00:00"
    _assert_canonical_dtypes(valid)
    assert valid["transaction_id"].tolist() == [1, 8, 9]
    assert valid["amount"].tolist() == [12.5, 10.25, 11.0]
    assert valid["label"].tolist() == [0, 1, pd.NA]
    assert valid.loc[8, "timestamp"] == pd.Timestamp("2018-04-01 00:00:09")


def test_batch_job_quarantine_names_global_row_numbers(tmp_path: Path) -> None:
    """The core engine + transaction_source + normalize per chunk: bad rows reach the
    quarantine file with their global input row numbers, across chunks."""
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    out = tmp_path / "out"

    def processor(chunk: pd.DataFrame, _index: int) -> jobs.ProcessResult:
        valid, bad = normalize(chunk, PROFILES["canonical"], source=str(path))
        return jobs.ProcessResult(valid, bad)

    source = transaction_source(path, chunk_rows=4)
    assert isinstance(source, jobs.CsvSource)
    result = jobs.run_job("adapters-bad", source, processor, jobs.ParquetSink(out), progress=False)

    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (13, 4, 9)
    q = jobs.read_quarantine(result.quarantine)
    # per chunk, so the duplicate id 1 (rows 0 and 6) lies in different chunks and is not caught
    assert sorted(q["row_index"]) == sorted(set(EXPECTED_REASONS) - {6})
    assert dict(zip(q["row_index"], q["reason"], strict=True))[11] == EXPECTED_REASONS[11]
    assert json.loads(q.set_index("row_index").loc[2, "record"])["amount"] == "abc"
    written = pd.concat([pd.read_parquet(p) for p in sorted(out.glob("part-*.parquet"))])
    assert written["transaction_id"].tolist() == [1, 1, 8, 9]


def test_duplicates_keep_the_first_and_string_ids_stay_strings() -> None:
    frame = pd.DataFrame({
        "transaction_id": ["A-1", " A-2 ", "A-1", "007"],
        "timestamp": ["2018-04-01"] * 4,
        "customer_id": ["c1", "c2", "c3", "c4"],
        "terminal_id": [1, 2, 3, 4],
        "amount": [1.0, 2.0, 3.0, 4.0],
    })
    valid, quarantined = normalize(frame, PROFILES["canonical"])
    assert valid["transaction_id"].tolist() == ["A-1", "A-2", "007"]  # stripped, leading zeros kept
    assert pd.api.types.is_string_dtype(valid["transaction_id"].dtype)
    assert pd.api.types.is_string_dtype(valid["customer_id"].dtype)
    assert valid["terminal_id"].dtype == "int64"
    assert dict(quarantined["reason"]) == {2: "duplicate transaction_id 'A-1' (first at row 0)"}
    assert valid["label"].isna().all()  # no label column: unknown


def test_id_dtype_int64_quarantines_non_integers() -> None:
    frame = pd.DataFrame({"transaction_id": ["1", "2.0", "x3"], "timestamp": ["2018-04-01"] * 3,
                          "amount": ["1", "2", "3"]})
    mapping = ColumnMapping(customer_id=None, terminal_id=None, id_dtype="int64")
    valid, quarantined = normalize(frame, mapping)
    assert valid["transaction_id"].tolist() == [1, 2]
    assert valid["transaction_id"].dtype == "int64"
    assert dict(quarantined["reason"]) == {2: "bad transaction_id: not an integer ('x3')"}


def test_timezones_become_naive_utc(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "transaction_id": [1, 2, 3],
        "timestamp": ["2018-04-01T02:00:00+02:00", "2018-04-01T00:00:00Z", "2018-04-01 00:00:00"],
        "amount": [1.0, 2.0, 3.0],
    })
    mapping = PROFILES["canonical"]
    valid, _ = normalize(frame, mapping)
    assert valid["timestamp"].dtype == "datetime64[ns]"
    assert (valid["timestamp"] == pd.Timestamp("2018-04-01")).all()
    aware = frame.assign(timestamp=pd.to_datetime(["2018-04-01T02:00:00+02:00"] * 3, utc=False))
    valid, _ = normalize(aware, mapping)
    assert valid["timestamp"].dtype == "datetime64[ns]"
    assert (valid["timestamp"] == pd.Timestamp("2018-04-01")).all()


# --------------------------------------------------------------------------- files and round trips


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz"])
def test_round_trip_through_files(tmp_path: Path, suffix: str) -> None:
    raw = _handbook(500)
    src = tmp_path / f"handbook{suffix}"
    if suffix == ".parquet":
        raw.to_parquet(src, index=False)
    else:
        raw.to_csv(src, index=False)
    valid, quarantined = read_transactions(src)  # auto-detects the handbook layout
    assert len(quarantined) == 0 and len(valid) == 500
    _assert_canonical_dtypes(valid)
    assert "TX_TIME_SECONDS" not in valid.columns and "fraud_scenario" in valid.columns

    back = write_transactions(valid, tmp_path / f"canonical{suffix}")
    again, quarantined = read_transactions(back)  # auto-detects the canonical layout
    assert len(quarantined) == 0
    canonical = list(CANONICAL)
    pd.testing.assert_frame_equal(again[canonical], valid[canonical])
    # extra columns come back as read: CSV values are strings
    assert again["fraud_scenario"].astype("int64").tolist() == valid["fraud_scenario"].astype("int64").tolist()


def _write_gzip(path: Path, text: str) -> None:
    """Same bytes on every run (mtime 0), so a failure reproduces."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write(text.encode())


def test_gzip_csv_reads_every_row(tmp_path: Path) -> None:
    """The core CsvSource scans a .csv.gz's compressed bytes for over-wide lines and can skip
    good rows; the adapter's source reads the same file through gzip: every row arrives."""
    for seed in range(12):
        path = tmp_path / f"t{seed}.csv.gz"
        _write_gzip(path, _handbook(200, start_id=seed * 1000).to_csv(index=False))
        valid, quarantined = read_transactions(path, "handbook")
        assert (len(valid), len(quarantined)) == (200, 0), path
    wide = tmp_path / "wide.csv.gz"
    text = _handbook(3).to_csv(index=False).splitlines()
    text.insert(1, text[1] + ",extra")
    _write_gzip(wide, "\n".join(text) + "\n")
    valid, quarantined = read_transactions(wide)
    assert len(valid) == 3
    assert quarantined["reason"].tolist() == ["unparseable CSV line: 10 fields, more than the header has"]
    assert quarantined.index.tolist() == [-1]


def test_empty_file_gives_empty_frames(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(",".join(CANONICAL) + "\n")
    valid, quarantined = read_transactions(path)
    assert len(valid) == 0 and len(quarantined) == 0
    assert list(valid.columns) == list(CANONICAL)
    _assert_canonical_dtypes(valid)


# --------------------------------------------------------------------------- ULB


def _write_ulb(path: Path, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.normal(size=(n, 28)), columns=[f"V{i}" for i in range(1, 29)])
    frame.insert(0, "Time", np.sort(rng.integers(0, 172_792, n)).astype("float64"))
    frame["Amount"] = rng.gamma(2.0, 40.0, n).round(2)
    frame["Class"] = (rng.random(n) < 0.1).astype(int)
    frame.to_csv(path, index=False)
    return frame


def test_ulb_layout(tmp_path: Path) -> None:
    path = tmp_path / "creditcard.csv"
    frame = _write_ulb(path, 50)
    lines = path.read_text().splitlines()
    fields = lines[4].split(",")  # data row 3
    fields[3] = "x"  # V3
    lines[4] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")

    valid, quarantined = read_transactions(path)  # auto: ulb

    assert dict(quarantined["reason"]) == {3: "bad V3: not a finite number ('x')"}
    assert len(valid) == 49
    assert list(valid.columns) == ["transaction_id", "timestamp", "amount", "label",
                                   *[f"V{i}" for i in range(1, 29)]]  # no card, no terminal
    _assert_canonical_dtypes(valid, card=False)
    assert (valid.dtypes[[f"V{i}" for i in range(1, 29)]] == "float64").all()
    good = frame.drop(index=3)
    assert valid["transaction_id"].tolist() == good.index.tolist()  # the row number
    expected = pd.Timestamp("2013-09-01") + pd.to_timedelta(good["Time"], unit="s")
    assert (valid["timestamp"].to_numpy() == expected.to_numpy()).all()
    assert np.allclose(valid["V1"], good["V1"])
    assert valid["label"].tolist() == good["Class"].tolist()


def test_ulb_chunks_use_global_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "creditcard.csv"
    _write_ulb(path, 30)
    source = transaction_source(path, chunk_rows=8)
    ids: list[int] = []
    start = 0
    for chunk in source.chunks():
        chunk.index = pd.RangeIndex(start, start + len(chunk))  # as the core engine does
        start += len(chunk)
        valid, quarantined = normalize(chunk, PROFILES["ulb"])
        assert len(quarantined) == 0
        ids += valid["transaction_id"].tolist()
    assert ids == list(range(30))


# --------------------------------------------------------------------------- SQL


def test_sql_table_on_both_backends(database: Database, tmp_path: Path) -> None:
    raw = _handbook(300)
    raw.loc[5, "TX_AMOUNT"] = -2.0
    raw.loc[7, "CUSTOMER_ID"] = None  # becomes NULL
    raw.sample(frac=1, random_state=0).to_sql("bank_tx", database.engine, index=False)  # no primary key

    for target in (database, database.engine):
        valid, quarantined = read_transactions(target, table="bank_tx")  # auto: handbook
        assert len(valid) + len(quarantined) == 300
        assert sorted(quarantined["TRANSACTION_ID"]) == [5, 7]
        reasons = dict(zip(quarantined["TRANSACTION_ID"], quarantined["reason"], strict=True))
        assert reasons == {5: "bad amount: negative (-2.0)", 7: "missing customer_id"}
        _assert_canonical_dtypes(valid)
        assert valid["transaction_id"].is_monotonic_increasing  # ordered by the id column: no key
        expected = raw.drop(index=[5, 7]).reset_index(drop=True)
        assert (valid["timestamp"].to_numpy() == expected["TX_DATETIME"].to_numpy()).all()
        assert np.allclose(valid["amount"], expected["TX_AMOUNT"])

    source = transaction_source(database, table="bank_tx", order_by="TRANSACTION_ID", chunk_rows=100)
    assert isinstance(source, jobs.SqlSource)
    assert [len(c) for c in source.chunks()] == [100, 100, 100]


def test_sql_keyed_table_and_bound_query(database: Database) -> None:
    meta = MetaData()
    table = Table(
        "tx", meta,
        Column("transaction_id", Integer, primary_key=True),
        Column("timestamp", DateTime),
        Column("customer_id", String(20)),
        Column("amount", Float),
        Column("label", String(10)),
    )
    meta.create_all(database.engine)
    rows = [
        {"transaction_id": i, "timestamp": pd.Timestamp("2018-04-01") + pd.Timedelta(minutes=i),
         "customer_id": f"c{i % 3}", "amount": float(i), "label": ["fraud", "genuine", None][i % 3]}
        for i in range(10)
    ]
    with database.engine.begin() as conn:
        conn.execute(insert(table), rows)

    valid, quarantined = read_transactions(database, table="tx")
    assert len(valid) == 10 and len(quarantined) == 0
    assert valid["label"].tolist() == [1, 0, pd.NA] * 3 + [1]
    assert valid["customer_id"].tolist()[:3] == ["c0", "c1", "c2"]

    query = select(table).where(table.c.amount >= 7.0)  # a bound parameter, never formatted SQL
    valid, _ = read_transactions(database, query=query, order_by="transaction_id")
    assert valid["transaction_id"].tolist() == [7, 8, 9]
    assert valid["timestamp"].dtype == "datetime64[ns]"


def test_sqlite_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    _handbook(20).to_sql("t", url, index=False)
    valid, quarantined = read_transactions(url, "handbook", table="t")
    assert (len(valid), len(quarantined)) == (20, 0)
    _handbook(0).to_sql("empty", url, index=False)
    valid, quarantined = read_transactions(url, table="empty")
    assert (len(valid), len(quarantined)) == (0, 0)
    assert list(valid.columns) == [*CANONICAL, "fraud_scenario"]


# --------------------------------------------------------------------------- detection and errors


def test_detect_format() -> None:
    assert detect_format(CANONICAL) == "canonical"
    assert detect_format(["transaction_id", "timestamp", "amount"]) == "canonical"
    assert detect_format(HANDBOOK_COLUMNS) == "handbook"
    assert detect_format(ULB_COLUMNS) == "ulb"
    assert detect_format(ULB_COLUMNS[:-1]) == "ulb"  # unlabelled input to score
    with pytest.raises(InputValidationError, match=r"cannot tell .*\[id, when, how_much\].*handbook"):
        detect_format(["id", "when", "how_much"])


def test_missing_mapped_column_names_file_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "partial.parquet"
    _handbook(5).drop(columns=["TX_AMOUNT", "TERMINAL_ID"]).to_parquet(path, index=False)
    with pytest.raises(InputValidationError) as info:
        read_transactions(path, "handbook")
    message = str(info.value)
    assert str(path) in message
    assert "['TERMINAL_ID', 'TX_AMOUNT']" in message
    assert "TX_DATETIME" in message and "columns found" in message


def test_input_errors(tmp_path: Path, database: Database) -> None:
    with pytest.raises(InputValidationError, match="not found: .*nope.csv"):
        read_transactions(tmp_path / "nope.csv")
    (tmp_path / "tx.txt").write_text("a,b\n")
    with pytest.raises(InputValidationError, match=r"tx\.txt: unknown transaction file type"):
        read_transactions(tmp_path / "tx.txt")
    with pytest.raises(InputValidationError, match="no table 'missing'"):
        read_transactions(database, table="missing")
    with pytest.raises(InputValidationError, match="needs table="):
        transaction_source(database)
    with pytest.raises(InputValidationError, match="must be a SQLAlchemy Select"):
        transaction_source(database, query="select * from tx", order_by="transaction_id")  # type: ignore[arg-type]
    with pytest.raises(InputValidationError, match="unknown transaction format 'swift'"):
        read_transactions(tmp_path / "tx.txt", "swift")
    with pytest.raises(InputValidationError, match="timestamp_unit"):
        ColumnMapping(timestamp_unit="fortnight")
