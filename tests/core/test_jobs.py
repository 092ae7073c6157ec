"""Batch engine: chunked read -> process -> write with checkpoints, quarantine and resume.

The kill tests run the job in a real child process (``_jobs_worker.py``) and SIGKILL it, once
at whatever moment it has reached after a few checkpoints, and once at the worst moment (output
and quarantine written, checkpoint not yet committed); the resumed job must then have written
every input row exactly once, to the output or to the quarantine.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import lzma
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import MetaData, Table, create_engine, func, select, text

from trillium.core import jobs
from trillium.core.db import Database, Job, JobChunk, connect
from trillium.core.errors import JobError

WORKER = Path(__file__).with_name("_jobs_worker.py")
_spec = importlib.util.spec_from_file_location("_jobs_worker", WORKER)
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def _is_bad(i: int) -> bool:
    return i % 13 == 5


def _write_input(path: Path, n: int) -> tuple[list[int], list[int]]:
    """``n`` rows with id = row number; every 13th amount is negative. Returns (good, bad) ids."""
    ids = list(range(n))
    amount = [-1.0 - i if _is_bad(i) else 1.5 * i for i in ids]
    pd.DataFrame({"id": ids, "amount": amount}).to_parquet(path, index=False, row_group_size=64)
    return [i for i in ids if not _is_bad(i)], [i for i in ids if _is_bad(i)]


def _output_ids(kind: str, output: Path, db: Database) -> list[int]:
    if kind == "parquet":
        parts = jobs.ParquetSink(output).parts()
        return [int(i) for p in parts for i in pd.read_parquet(p)["id"]]
    if kind == "csv":
        return [int(i) for i in pd.read_csv(output)["id"]]
    engine = db.engine if kind == "sql_same" else create_engine(f"sqlite:///{output}")
    with engine.connect() as conn:
        rows = conn.execute(text('SELECT id FROM scores ORDER BY "_chunk", id')).all()
    return [int(r[0]) for r in rows]


def _checkpoints(db: Database, name: str) -> tuple[str | None, int]:
    with db.engine.connect() as conn:
        job = conn.execute(select(Job.id, Job.status).where(Job.name == name)).first()
        if job is None:
            return None, 0
        done = conn.execute(select(func.count()).select_from(JobChunk).where(JobChunk.job_id == job.id)).scalar_one()
    return job.status, int(done)


def _assert_exactly_once(result: jobs.JobResult, kind: str, output: Path, db: Database, good: list[int], bad: list[int]) -> None:
    assert result.status == "done"
    assert _output_ids(kind, output, db) == good  # every valid row once, in input order
    q = jobs.read_quarantine(result.quarantine)
    assert not q.duplicated(["chunk_index", "row_index"]).any()
    assert sorted(q["row_index"]) == bad
    assert set(q["reason"]) == {"negative amount"}
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (len(good) + len(bad), len(good), len(bad))


# --------------------------------------------------------------------------- formats


def test_parquet_in_parquet_out_keeps_order_and_quarantines_bad_rows(tmp_path: Path) -> None:
    src = tmp_path / "tx.parquet"
    good, bad = _write_input(src, 1000)
    sink = jobs.ParquetSink(tmp_path / "scored")

    result = jobs.run_job("score-parquet", jobs.ParquetSource(src, 100), worker.score, sink, progress=False)

    assert result.chunks == 10 and result.chunks_processed == 10 and result.resumed_from_chunk == 0
    assert len(sink.parts()) == 10
    out = pd.concat([pd.read_parquet(p) for p in sink.parts()], ignore_index=True)
    assert out["id"].tolist() == good
    assert out["score"].tolist() == [2 * 1.5 * i for i in good]
    assert result.quarantine == tmp_path / "scored.quarantine.csv"
    q = jobs.read_quarantine(result.quarantine)
    assert q["row_index"].tolist() == bad
    assert q["chunk_index"].tolist() == [i // 100 for i in bad]
    assert set(q["reason"]) == {"negative amount"}
    first = json.loads(q["record"].iloc[0])
    assert first == {"id": bad[0], "amount": -1.0 - bad[0]}
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (1000, len(good), len(bad))


def test_csv_in_csv_out_quarantines_malformed_values_and_unparseable_lines(tmp_path: Path) -> None:
    src = tmp_path / "tx.csv"
    src.write_text(
        "id,amount,note\n"
        "0,1.0,a,EXTRA\n"  # wider than the header, first data line: pandas would misparse it
        "1,2.0,b\n"
        "2,abc,c\n"  # malformed number
        '3,"12,5",d\n'  # decimal comma
        "4,-3,e\n"  # negative
        "5,4.5,f,g,h\n"  # wider than the header
        "6,5.0,\n"
        "7,,i\n"  # missing amount
        "8,7.25,j\n"
    )
    out = tmp_path / "scores.csv"
    stale = "stale output of an earlier job\n" * 100
    out.write_text(stale)  # a fresh job replaces what was there
    (tmp_path / "scores.quarantine.csv").write_text(stale)
    result = jobs.run_job("score-csv", jobs.CsvSource(src, chunk_rows=3), worker.score, jobs.CsvSink(out), progress=False)

    written = pd.read_csv(out)
    assert written["id"].tolist() == [1, 6, 8]
    assert written["score"].tolist() == [4.0, 10.0, 14.5]
    assert out.read_text().count("id,amount,score") == 1  # header once
    q = jobs.read_quarantine(result.quarantine)
    assert result.quarantine == tmp_path / "scores.quarantine.csv"
    by_id = {json.loads(r)["id"]: reason for r, reason in zip(q["record"], q["reason"]) if r.startswith("{")}
    assert by_id == {
        "2": "amount is not a number",
        "3": "amount is not a number",
        "4": "negative amount",
        "7": "amount is not a number",
    }
    lines = q[q["row_index"] == -1]
    assert sorted(json.loads(r)[0] for r in lines["record"]) == ["0", "5"]
    assert all("unparseable CSV line" in r for r in lines["reason"])
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (9, 3, 6)


def test_sql_source_and_sinks_on_both_databases(database: Database, tmp_path: Path) -> None:
    n = 60
    pd.DataFrame({"id": range(n), "amount": [-1.0 if _is_bad(i) else float(i) for i in range(n)]}).to_sql(
        "transactions", database.engine, index=False
    )
    good = [i for i in range(n) if not _is_bad(i)]

    sink = jobs.SqlSink(database, "scores")
    src = jobs.SqlSource(database, "transactions", chunk_rows=7, order_by="id")
    result = jobs.run_job("score-sql", src, worker.score, sink, db=database, progress=False)
    assert sink.same_database
    assert result.chunks == 9 and result.rows_out == len(good)
    assert _output_ids("sql_same", tmp_path, database) == good
    with database.engine.connect() as conn:
        chunk_of = dict(conn.execute(text('SELECT id, "_chunk" FROM scores')).all())
    assert all(chunk_of[i] == i // 7 for i in good)

    # Starting over replaces the table's rows instead of adding to them.
    again = jobs.run_job("score-sql", src, worker.score, sink, db=database, progress=False, resume=False)
    assert again.chunks_processed == 9
    assert _output_ids("sql_same", tmp_path, database) == good

    # Into another database; the input here is a Select with a bound parameter.
    tx = Table("transactions", MetaData(), autoload_with=database.engine)
    other_db = tmp_path / "other.db"
    other = jobs.SqlSink(f"sqlite:///{other_db}", "scores")
    query = select(tx).where(tx.c.id < 30)
    res = jobs.run_job(
        "score-sql-other", jobs.SqlSource(database, query, 10, order_by="id"), worker.score, other,
        db=database, progress=False,
    )
    assert not other.same_database
    assert res.rows_in == 30 and res.quarantine.parent.name == "jobs"
    assert _output_ids("sql_other", other_db, database) == [i for i in good if i < 30]


def test_processor_error_quarantines_the_chunk_and_the_job_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "tx.parquet"
    good, bad = _write_input(src, 100)

    def flaky(frame: pd.DataFrame, chunk_index: int) -> jobs.ProcessResult:
        if chunk_index == 2:
            raise ValueError("model exploded")
        return worker.score(frame, chunk_index)

    sink = jobs.ParquetSink(tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="trillium.core.jobs"):
        result = jobs.run_job("flaky", jobs.ParquetSource(src, 20), flaky, sink, progress=False)

    assert result.status == "done" and result.chunks == 5
    assert _output_ids("parquet", sink.directory, connect()) == [i for i in good if not 40 <= i < 60]
    q = jobs.read_quarantine(result.quarantine)
    crashed = q[q["chunk_index"] == 2]
    assert crashed["row_index"].tolist() == list(range(40, 60))
    assert all("ValueError: model exploded" in r for r in crashed["reason"])
    assert sorted(q[q["chunk_index"] != 2]["row_index"]) == [i for i in bad if not 40 <= i < 60]
    assert "processor failed on chunk 2" in caplog.text


class _Breakable:
    """A processor that raises on every chunk >= ``from_chunk`` while ``broken`` (a model file gone bad)."""

    def __init__(self, from_chunk: int) -> None:
        self.from_chunk, self.broken, self.calls = from_chunk, True, []

    def __call__(self, frame: pd.DataFrame, chunk_index: int) -> jobs.ProcessResult:
        self.calls.append(chunk_index)
        if self.broken and chunk_index >= self.from_chunk:
            raise RuntimeError("weights file truncated")
        return worker.score(frame, chunk_index)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_processor_failing_on_every_chunk_stops_the_job_and_the_fixed_rerun_redoes_them(
        tmp_path: Path, kind: str) -> None:
    src = tmp_path / "tx.parquet"
    good, bad = _write_input(src, 200)  # 10 chunks of 20
    out = tmp_path / ("out" if kind == "parquet" else "out.csv")
    sink = (lambda: jobs.ParquetSink(out)) if kind == "parquet" else (lambda: jobs.CsvSink(out))
    proc = _Breakable(from_chunk=1)
    with pytest.raises(jobs.FailedChunksError, match=r"failed on 3 chunks of this run \(chunks 1, 2, 3; last: "
                                                     r"RuntimeError: weights file truncated\)"):
        jobs.run_job("broken-model", jobs.ParquetSource(src, 20), proc, sink(), progress=False)
    assert proc.calls == [0, 1, 2, 3]  # stopped at the third failure, not after quarantining all 10 chunks
    db = connect()
    with db.session() as s:
        job = s.scalars(select(Job).where(Job.name == "broken-model")).one()
        chunks = s.scalars(select(JobChunk).where(JobChunk.job_id == job.id)).all()
    # only chunk 0 stays checkpointed; the totals say so
    assert job.status == "failed" and "failed on 3 chunks" in (job.error or "")
    assert [c.chunk_index for c in chunks] == [0] and (job.chunks_done, job.rows_in) == (1, 20)

    proc.broken = False  # the model is fixed
    result = jobs.run_job("broken-model", jobs.ParquetSource(src, 20), proc, sink(), progress=False)
    assert result.status == "done" and result.resumed_from_chunk == 1 and result.chunks == 10
    assert proc.calls[4:] == list(range(1, 10))
    # every row exactly once: the good ones in the output, the bad ones in the quarantine, and no
    # whole-chunk "processor failed" rows left from the stopped run
    assert _output_ids(kind, out, db) == good
    q = jobs.read_quarantine(result.quarantine)
    assert sorted(q["row_index"]) == bad and not q["reason"].str.contains("processor failed").any()
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (200, len(good), len(bad))


def test_the_failed_chunk_limit_can_be_raised_or_turned_off(tmp_path: Path) -> None:
    src = tmp_path / "tx.parquet"
    _write_input(src, 100)
    two = _Breakable(from_chunk=3)  # fails on chunks 3 and 4 only: under the default limit of 3
    assert jobs.run_job("two-fail", jobs.ParquetSource(src, 20), two, jobs.ParquetSink(tmp_path / "a"),
                        progress=False).status == "done"
    every = _Breakable(from_chunk=0)
    result = jobs.run_job("never-stop", jobs.ParquetSource(src, 20), every, jobs.ParquetSink(tmp_path / "b"),
                          progress=False, max_failed_chunks=None)
    assert result.status == "done" and result.rows_quarantined == 100 and result.rows_out == 0
    # the command-line option: unset gives the default, 0 turns the stop off
    assert (jobs.failed_chunk_limit(None), jobs.failed_chunk_limit(0), jobs.failed_chunk_limit(5)) == (
        jobs.DEFAULT_MAX_FAILED_CHUNKS, None, 5)
    with pytest.raises(JobError, match="max_failed_chunks must be a positive integer or None, got -1"):
        jobs.failed_chunk_limit(-1)
    with pytest.raises(JobError, match="max_failed_chunks must be a positive integer"):
        jobs.run_job("bad-limit", jobs.ParquetSource(src, 20), every, jobs.ParquetSink(tmp_path / "c"),
                     progress=False, max_failed_chunks=0)


def test_missing_input_is_a_job_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(JobError, match="nope.parquet"):
        jobs.run_job("x", jobs.ParquetSource(missing), worker.score, jobs.ParquetSink(tmp_path / "o"), progress=False)
    with pytest.raises(JobError, match="nope.csv"):
        jobs.run_job("x", jobs.CsvSource(tmp_path / "nope.csv"), worker.score, jobs.CsvSink(tmp_path / "o.csv"))


def _flip(data: bytes, pos: int, mask: int = 0xFF) -> bytes:
    return data[:pos] + bytes([data[pos] ^ mask]) + data[pos + 1:]


_CSV = b"id,value\n1,5.0\n2,6.0\n"


@pytest.mark.parametrize(("name", "damage", "expected"), [
    ("in.csv.gz", lambda: _flip(gzip.compress(_CSV, mtime=0), 14, 0x55), "as CSV: error"),  # zlib.error
    ("in.csv.xz", lambda: lzma.compress(_CSV)[:-20], "as CSV: EOFError"),
    ("in.csv", lambda: b'id,value\n1,""x","y"\n', "as CSV: Error"),  # csv.Error
    ("in.parquet", None, "as Parquet: OSError"),  # a page header that cannot be read
])
def test_a_damaged_input_file_is_a_job_error_naming_it(tmp_path: Path, name: str, damage: Any, expected: str) -> None:
    path = tmp_path / name
    if damage is None:
        pd.DataFrame({"id": [1, 2], "value": [5.0, 6.0]}).to_parquet(path, index=False, compression=None)
        path.write_bytes(_flip(path.read_bytes(), 8))
    else:
        path.write_bytes(damage())
    source = jobs.ParquetSource(path, 1) if name.endswith(".parquet") else jobs.CsvSource(path, 1)
    with pytest.raises(JobError, match=re.escape(f"cannot read {path} {expected}")):
        list(source.chunks())


def test_split_valid_and_reasons_from_keep_the_index() -> None:
    frame = pd.DataFrame({"a": [1, -2, 3, None]}, index=[10, 11, 12, 13])
    reasons = jobs.reasons_from({"negative": frame["a"] < 0, "missing": frame["a"].isna(), "odd": frame["a"] == 3})
    valid, bad = jobs.split_valid(frame, reasons)
    assert valid.index.tolist() == [10]
    assert bad.index.tolist() == [11, 12, 13]
    assert bad["reason"].tolist() == ["negative", "odd", "missing"]
    valid, bad = jobs.split_valid(frame, [None, "", "x", None])
    assert valid.index.tolist() == [10, 11, 13] and bad["reason"].tolist() == ["x"]


# --------------------------------------------------------------------------- resume


def test_rerun_of_a_finished_job_does_no_work_and_resume_false_redoes_it(tmp_path: Path) -> None:
    src = tmp_path / "tx.parquet"
    good, bad = _write_input(src, 200)
    calls: list[int] = []

    def counted(frame: pd.DataFrame, chunk_index: int) -> jobs.ProcessResult:
        calls.append(chunk_index)
        return worker.score(frame, chunk_index)

    out = tmp_path / "scores.csv"
    first = jobs.run_job("rerun", jobs.ParquetSource(src, 50), counted, jobs.CsvSink(out), progress=False)
    stamp = out.stat().st_mtime_ns, (out.read_bytes(), first.quarantine.read_bytes())
    assert calls == [0, 1, 2, 3]
    _assert_exactly_once(first, "csv", out, connect(), good, bad)

    second = jobs.run_job("rerun", jobs.ParquetSource(src, 50), counted, jobs.CsvSink(out), progress=False)
    assert calls == [0, 1, 2, 3]  # nothing processed
    assert (second.job_id, second.status, second.chunks_processed, second.chunks) == (first.job_id, "done", 0, 4)
    assert (out.stat().st_mtime_ns, (out.read_bytes(), first.quarantine.read_bytes())) == stamp

    third = jobs.run_job("rerun", jobs.ParquetSource(src, 50), counted, jobs.CsvSink(out), progress=False, resume=False)
    assert calls == [0, 1, 2, 3] * 2 and third.chunks_processed == 4
    assert (out.read_bytes(), first.quarantine.read_bytes()) == stamp[1]  # rewritten, not appended
    assert third.rows_in == 200  # counters restarted, not doubled


def test_a_failed_job_is_marked_failed_and_resumes_after_the_fix(tmp_path: Path) -> None:
    src = tmp_path / "tx.parquet"
    good, bad = _write_input(src, 100)
    out = tmp_path / "scores.csv"

    def drifting(frame: pd.DataFrame, chunk_index: int) -> jobs.ProcessResult:
        result = worker.score(frame, chunk_index)
        if chunk_index == 2:  # a bug: different output columns mid-way
            return jobs.ProcessResult(result.output.rename(columns={"score": "risk"}), result.quarantined)
        return result

    with pytest.raises(JobError, match=r"failed at chunk 2: .*differ"):
        jobs.run_job("drift", jobs.ParquetSource(src, 20), drifting, jobs.CsvSink(out), progress=False)
    status, done = _checkpoints(connect(), "drift")
    assert (status, done) == ("failed", 2)
    with connect().session() as s:
        assert "differ" in (s.scalars(select(Job.error)).one() or "")

    result = jobs.run_job("drift", jobs.ParquetSource(src, 20), worker.score, jobs.CsvSink(out), progress=False)
    assert result.resumed_from_chunk == 2 and result.chunks_processed == 3
    _assert_exactly_once(result, "csv", out, connect(), good, bad)


def test_the_same_job_cannot_run_twice_at_once(tmp_path: Path) -> None:
    key = "k" * 64
    lock = jobs.checkpoints.job_lock
    with lock(key, "twice"), pytest.raises(JobError, match="already running"), lock(key, "twice"):
        pass
    with lock("k" * 64, "twice"):  # released on exit
        pass


def _spawn(cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _db_cfg(database: Database, request: pytest.FixtureRequest) -> dict[str, Any]:
    if database.url.startswith("postgresql"):
        url, args = request.getfixturevalue("pg_schema")
        return {"db_url": url, "connect_args": args}
    return {"db_url": database.url, "connect_args": None}


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_job_killed_mid_way_resumes_without_loss_or_duplicates(
    kind: str, database: Database, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    src = tmp_path / "tx.parquet"
    good, bad = _write_input(src, 1000)  # 40 chunks of 25 rows
    output = tmp_path / ("out" if kind == "parquet" else "out.csv")
    name = f"kill-{kind}"
    cfg = {**_db_cfg(database, request), "name": name, "input": str(src), "chunk_rows": 25, "sink": kind,
           "output": str(output), "sleep": 0.2}  # 40 chunks take 8 s at least: time to catch it part way

    proc = _spawn(cfg)
    # Generous: the child imports pandas and SQLAlchemy on two shared cores; a child that exits is
    # caught at once below, one that hangs or checkpoints nothing still fails here.
    deadline = time.monotonic() + 180
    try:
        while _checkpoints(database, name)[1] < 3:
            assert proc.poll() is None, f"worker exited early: {proc.communicate()[1].decode()[-2000:]}"
            assert time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    status, done = _checkpoints(database, name)
    assert status == "running" and 3 <= done < 40

    result = jobs.run_job(name, jobs.ParquetSource(src, 25), worker.score, worker.make_sink(kind, str(output), database),
                          db=database, progress=False)
    assert result.resumed_from_chunk >= done > 0
    assert result.chunks == 40 and result.chunks_processed == 40 - result.resumed_from_chunk
    _assert_exactly_once(result, kind, output, database, good, bad)


@pytest.mark.parametrize("kind", ["parquet", "csv", "sql_same", "sql_other"])
def test_a_kill_between_write_and_checkpoint_writes_nothing_twice(kind: str, tmp_path: Path) -> None:
    src = tmp_path / "tx.parquet"
    good, bad = _write_input(src, 250)  # 10 chunks of 25; chunk 4 has bad rows 109 and 122
    output = tmp_path / {"parquet": "out", "csv": "out.csv"}.get(kind, "out.db")
    db = connect()
    name = f"die-{kind}"
    cfg = {"db_url": db.url, "name": name, "input": str(src), "chunk_rows": 25, "sink": kind,
           "output": str(output), "die_after_chunk": 4}

    proc = _spawn(cfg)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert _checkpoints(db, name) == ("running", 4)
    # Chunk 4 reached the output and the quarantine, but not the checkpoint.
    if kind in ("parquet", "csv"):
        assert 109 in set(jobs.read_quarantine(tmp_path / "out.quarantine.csv")["row_index"])
    # In the job's own database chunk 4's rows died with its checkpoint's transaction.
    assert (100 in _output_ids(kind, output, db)) is (kind != "sql_same")

    result = jobs.run_job(name, jobs.ParquetSource(src, 25), worker.score, worker.make_sink(kind, str(output), db),
                          db=db, progress=False)
    assert result.resumed_from_chunk == 4 and result.chunks_processed == 6
    _assert_exactly_once(result, kind, output, db, good, bad)


def test_output_sink_follows_the_output_name_and_the_ray_engine_refuses_csv(tmp_path) -> None:
    from trillium.core.errors import InputValidationError
    from trillium.core.jobs import CsvSink, ParquetSink, output_sink

    assert isinstance(output_sink(tmp_path / "scores.csv"), CsvSink)
    assert isinstance(output_sink(tmp_path / "scores"), ParquetSink)
    assert isinstance(output_sink(tmp_path / "scores.parquet", "ray"), ParquetSink)
    (tmp_path / "out.v2").mkdir()
    assert isinstance(output_sink(tmp_path / "out.v2"), ParquetSink)  # an existing folder, whatever its name
    with pytest.raises(InputValidationError, match=r"scores\.txt: a \.csv file or a directory"):
        output_sink(tmp_path / "scores.txt")
    with pytest.raises(InputValidationError, match=r"scores\.csv: the ray engine writes a directory of Parquet"):
        output_sink(tmp_path / "scores.csv", "ray")


# --------------------------------------------------------------------------- a changed input is another job


def _kill_at_the_worst_moment(name: str, src: Path, chunk_rows: int, kind: str, output: Path) -> int:
    """Run the job in a child, SIGKILLed once chunk 4 is written but not checkpointed; its job id."""
    db = connect()
    proc = _spawn({"db_url": db.url, "name": name, "input": str(src), "chunk_rows": chunk_rows, "sink": kind,
                   "output": str(output), "die_after_chunk": 4})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert _checkpoints(db, name) == ("running", 4)
    with db.session() as s:
        return s.scalars(select(Job.id).where(Job.name == name)).one()


def _chunks_of(job_id: int) -> list[int]:
    with connect().session() as s:
        found = s.scalars(select(JobChunk.chunk_index).where(JobChunk.job_id == job_id).order_by(JobChunk.chunk_index))
        return list(found)


@pytest.mark.parametrize(("change", "kind"), [("rewritten input", "csv"), ("other chunk_rows", "parquet")])
def test_a_changed_input_or_chunking_starts_a_new_job_instead_of_resuming_the_killed_one(
    change: str, kind: str, tmp_path: Path
) -> None:
    """The job key covers the input's fingerprint and ``chunk_rows``: after a kill part way, a
    rewritten input (as many rows, other records) or another chunk size must not resume the
    killed job's checkpoints, nor leave any of its rows in the output or the quarantine."""
    src = tmp_path / "tx.parquet"
    _write_input(src, 250)  # 10 chunks of 25
    output = tmp_path / ("out" if kind == "parquet" else "out.csv")
    name = f"changed-{kind}"
    old_job = _kill_at_the_worst_moment(name, src, 25, kind, output)
    assert 100 in _output_ids(kind, output, connect())  # the killed run's chunk 4 is on disk
    before = jobs.ParquetSource(src, 25).fingerprint()

    if change == "rewritten input":
        # Other records, the same number of rows: no row count gives the change away.
        ids = list(range(5000, 5250))
        pd.DataFrame({"id": ids, "amount": [-1.0 - i if _is_bad(i) else 0.5 * i for i in ids]}).to_parquet(
            src, index=False, row_group_size=64)
        assert jobs.ParquetSource(src, 25).fingerprint() != before
        rows, good = 25, [i for i in ids if not _is_bad(i)]
        bad = [k for k, i in enumerate(ids) if _is_bad(i)]  # quarantine rows are row numbers
    else:
        # 100 rows a chunk: 3 chunks, fewer than the killed run's 5 parts, so a stale one would show.
        ids, rows = list(range(250)), 100
        good, bad = [i for i in ids if not _is_bad(i)], [i for i in ids if _is_bad(i)]

    sink = worker.make_sink(kind, str(output), connect())
    result = jobs.run_job(name, jobs.ParquetSource(src, rows), worker.score, sink, progress=False)

    _assert_exactly_once(result, kind, output, connect(), good, bad)  # only the new rows, each once
    q = jobs.read_quarantine(result.quarantine)
    assert {json.loads(r)["id"] for r in q["record"]} == {ids[k] for k in bad}
    assert q["chunk_index"].tolist() == [k // rows for k in bad]
    if kind == "parquet":
        parts = [p.name for p in jobs.ParquetSink(output).parts()]
        assert parts == [f"part-{k:05d}.parquet" for k in range(result.chunks)]  # no part of the killed run left
    # A new job did it all: the killed job's checkpoints were neither taken over nor extended.
    assert result.job_id != old_job
    assert result.params["source_fingerprint"] == jobs.ParquetSource(src, rows).fingerprint()
    assert result.resumed_from_chunk == 0 and result.chunks_processed == result.chunks == -(-250 // rows)
    assert _chunks_of(result.job_id) == list(range(result.chunks)) and _chunks_of(old_job) == [0, 1, 2, 3]
