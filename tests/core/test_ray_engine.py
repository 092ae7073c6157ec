"""The Ray Data engine: the same parts and quarantine rows as the local engine, exactly once.

A local Ray cluster of 2 CPUs is started once for the module. The processors here score a
small registered torch model that each actor loads once from the registry (sha256 checked)
and runs through the core runtime; they are pickled by value, since Ray's workers cannot
import this test module. Every Ray output is compared row by row with the local engine's on
the same input and chunk size.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sqlalchemy import update

from trillium.core import jobs
from trillium.core.db import Database, Job, connect
from trillium.core.errors import EngineUnavailableError, IntegrityError, JobError
from trillium.core.models.reference import TabularMLP
from trillium.core.registry import WEIGHTS_FILE, ModelRef, ModelRegistry

N_ROWS = 600
CHUNK = 100
FEATURES = ["x0", "x1", "x2", "x3"]
POISON_ID = 250  # the processor raises on the chunk holding this id: the whole chunk is quarantined


# --------------------------------------------------------------------------- the job under test


@dataclass
class Scoring:
    """A processor factory: validate, then score the valid rows with a registered model.

    ``crash_part`` / ``crash_marker``: the worker process dies (``os._exit``) when it starts
    that part, once (the marker file says it already did), or every time if ``always``.
    ``log``: a file where each (pid, event) is appended, to see loads and attempts.
    """

    model: ModelRef
    log: str
    crash_part: int = -1
    crash_marker: str = ""
    always: bool = False
    broken_marker: str = ""  # while this file exists the model is "broken": every part raises

    def __call__(self) -> jobs.Processor:
        runtime = self.model.registry().load_runtime(self.model.name, self.model.version, device="cpu")
        self._note("load")

        def process(chunk: pd.DataFrame, index: int) -> jobs.ProcessResult:
            self._note(f"part {index}")
            if index == self.crash_part and (self.always or not os.path.exists(self.crash_marker)):
                Path(self.crash_marker).touch()
                os._exit(1)
            if self.broken_marker and os.path.exists(self.broken_marker):
                raise RuntimeError("weights file truncated")
            if (chunk["id"] == POISON_ID).any():
                raise ValueError(f"poison row {POISON_ID}")
            why = jobs.reasons_from({"negative amount": chunk["amount"] < 0, "missing x0": chunk["x0"].isna()})
            good, bad = jobs.split_valid(chunk, why)
            with torch.inference_mode():
                score = runtime(torch.tensor(good[FEATURES].to_numpy(np.float32))).reshape(-1).numpy()
            return jobs.ProcessResult(good[["id", "amount"]].assign(score=score.astype(np.float64)), bad)

        return process

    def _note(self, event: str) -> None:
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\t{event}\n")


def _events(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(pid), event) for pid, event in (line.split("\t") for line in log.read_text().splitlines())]


def _register(registry: ModelRegistry) -> ModelRef:
    torch.manual_seed(0)
    net = TabularMLP(n_features=len(FEATURES), hidden=(8,))
    record = registry.register_torch("scorer", net, torch.randn(4, len(FEATURES)),
                                     init_kwargs={"n_features": len(FEATURES), "hidden": [8]})
    return ModelRef.of(registry, record)


def _frame(n: int = N_ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": np.arange(n), "amount": rng.uniform(1, 100, n).round(2),
                          **{c: rng.normal(size=n) for c in FEATURES}})
    frame.loc[frame["id"] % 47 == 3, "amount"] *= -1
    frame.loc[frame["id"] % 61 == 7, "x0"] = np.nan
    return frame


@pytest.fixture
def model(trillium_home: Path) -> ModelRef:
    return _register(ModelRegistry(connect()))


def _outputs(result: jobs.JobResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    parts = jobs.ParquetSink(result.output).parts()
    out = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return out, jobs.read_quarantine(result.quarantine)


def _assert_same(local: jobs.JobResult, ray: jobs.JobResult) -> None:
    """Row by row: the same parts, the same rows (scores to float tolerance), the same quarantine."""
    assert [p.name for p in jobs.ParquetSink(ray.output).parts()] == [p.name for p in jobs.ParquetSink(local.output).parts()]
    (lo, lq), (ro, rq) = _outputs(local), _outputs(ray)
    lo, ro = lo.sort_values("id", ignore_index=True), ro.sort_values("id", ignore_index=True)
    pd.testing.assert_frame_equal(ro, lo, check_exact=False, rtol=1e-6, atol=1e-7)
    pd.testing.assert_frame_equal(rq, lq)
    assert (ray.rows_in, ray.rows_out, ray.rows_quarantined, ray.chunks) == (
        local.rows_in, local.rows_out, local.rows_quarantined, local.chunks)


# --------------------------------------------------------------------------- tests without a cluster


def test_read_rows_is_the_chunk_whatever_the_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    _frame(1000).to_parquet(path, index=False, row_group_size=64)
    source = jobs.ParquetSource(path, chunk_rows=150)
    for k, chunk in enumerate(source.chunks()):
        pd.testing.assert_frame_equal(source.read_rows(k * 150, (k + 1) * 150), chunk)
    assert len(source.read_rows(1000, 1150)) == 0 and list(source.read_rows(1000, 1150).columns) == list(chunk.columns)


def test_without_ray_the_engine_error_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    with pytest.raises(EngineUnavailableError, match=r"pip install 'trillium\[ray\]'"):
        jobs.check_engine("ray")
    path = tmp_path / "in.parquet"
    _frame(10).to_parquet(path, index=False)
    with pytest.raises(EngineUnavailableError, match=r"trillium\[ray\]"):
        jobs.run_batch("j", jobs.ParquetSource(path), lambda: lambda c, i: c, jobs.ParquetSink(tmp_path / "out"),
                       engine="ray", progress=False)
    with connect().session() as s:
        assert s.query(Job).count() == 0  # refused before any job was opened
    assert jobs.check_engine("local") == "local"


def test_engine_choice_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    _frame(10).to_parquet(path, index=False)
    with pytest.raises(JobError, match="unknown batch engine 'spark'"):
        jobs.check_engine("spark")
    with pytest.raises(JobError, match="ray engine only"):
        jobs.run_batch("j", jobs.ParquetSource(path), lambda: lambda c, i: c, jobs.ParquetSink(tmp_path / "o"),
                       address="auto", progress=False)


def test_a_worker_that_sees_another_input_file_refuses_the_part(tmp_path: Path) -> None:
    from trillium.core.jobs.ray_engine import _Plan

    path = tmp_path / "in.parquet"
    _frame(10).to_parquet(path, index=False)
    plan = _Plan(name="j", key="k", sink=jobs.ParquetSink(tmp_path / "o"), factory=lambda: lambda c, i: c,
                 chunk_rows=5, max_attempts=1, parquet=jobs.ParquetSource(path), fingerprint="elsewhere:1:2")
    with pytest.raises(JobError, match="not the file the job was planned on"):
        plan.read(0)
    path.unlink()
    with pytest.raises(JobError, match="storage every node mounts at the same path"):
        plan.read(0)


# --------------------------------------------------------------------------- on the cluster


def test_ray_matches_the_local_engine_row_by_row_and_loads_the_model_once_per_actor(
    ray_cluster: Any, model: ModelRef, tmp_path: Path
) -> None:
    src = tmp_path / "in.parquet"
    _frame().to_parquet(src, index=False, row_group_size=64)
    log = tmp_path / "events.log"
    factory = Scoring(model, str(log))
    local = jobs.run_batch("score", jobs.ParquetSource(src), factory, jobs.ParquetSink(tmp_path / "local"),
                           chunk_rows=CHUNK, progress=False)
    log.unlink()

    ray = jobs.run_batch("score", jobs.ParquetSource(src), factory, jobs.ParquetSink(tmp_path / "ray"),
                         engine="ray", chunk_rows=CHUNK, progress=False)

    assert ray.status == "done" and ray.params["engine"] == "ray" and ray.chunks_processed == N_ROWS // CHUNK
    _assert_same(local, ray)
    q = jobs.read_quarantine(ray.quarantine)
    assert ray.quarantine.name == "ray.quarantine.csv"  # the local engine's default place
    assert set(q.loc[q["chunk_index"] == POISON_ID // CHUNK, "reason"]) == {
        f"processor failed on chunk 2: ValueError: poison row {POISON_ID}"}
    assert {"negative amount", "missing x0"} <= set(q["reason"])
    events = _events(log)
    loads = [pid for pid, e in events if e == "load"]
    assert 1 <= len(loads) <= 2 and len(set(loads)) == len(loads)  # once per actor, not per part
    assert sorted(e for _, e in events if e != "load") == [f"part {k}" for k in range(N_ROWS // CHUNK)]


def test_a_processor_failing_on_every_part_stops_the_ray_job_and_the_fixed_rerun_redoes_them(
    ray_cluster: Any, model: ModelRef, tmp_path: Path
) -> None:
    src = tmp_path / "in.parquet"
    _frame().to_parquet(src, index=False, row_group_size=64)
    broken = tmp_path / "model-is-broken"
    broken.touch()
    factory = Scoring(model, str(tmp_path / "events.log"), broken_marker=str(broken))
    out = tmp_path / "ray"
    with pytest.raises(jobs.FailedChunksError, match=r"failed on \d parts of this run .*last: RuntimeError: "
                                                     r"weights file truncated"):
        jobs.run_batch("broken", jobs.ParquetSource(src), factory, jobs.ParquetSink(out), engine="ray",
                       chunk_rows=CHUNK, progress=False, max_failed_chunks=2)
    # the failed parts are not kept as done (a part still in flight at the stop may yet write its
    # marker; the rerun redoes it all the same, see the redo flag)
    assert (out / "_ray" / "redo-failed.json").exists()
    with connect().session() as s:
        assert s.query(Job).filter(Job.name == "broken").one().status == "failed"

    broken.unlink()  # the model is fixed: the rerun redoes every part, as the local engine would
    local = jobs.run_batch("broken", jobs.ParquetSource(src), factory, jobs.ParquetSink(tmp_path / "local"),
                           chunk_rows=CHUNK, progress=False)
    ray = jobs.run_batch("broken", jobs.ParquetSource(src), factory, jobs.ParquetSink(out), engine="ray",
                         chunk_rows=CHUNK, progress=False, max_failed_chunks=2)
    assert ray.status == "done" and ray.chunks_processed == N_ROWS // CHUNK
    assert not (out / "_ray" / "redo-failed.json").exists()
    _assert_same(local, ray)  # no whole-part "weights file truncated" rows left in the quarantine


def test_csv_input_read_by_the_driver_gives_the_local_rows_and_reader_rejects(
    ray_cluster: Any, model: ModelRef, tmp_path: Path
) -> None:
    src = tmp_path / "in.csv"
    lines = _frame(250).to_csv(index=False).splitlines()
    lines.insert(120, "999,1,2,3,4,5,6,7")  # more fields than the header: the reader rejects it
    src.write_text("\n".join(lines) + "\n")
    factory = Scoring(model, str(tmp_path / "events.log"))
    local = jobs.run_batch("csv", jobs.CsvSource(src, dtype=None), factory, jobs.ParquetSink(tmp_path / "local"),
                           chunk_rows=CHUNK, progress=False)
    ray = jobs.run_batch("csv", jobs.CsvSource(src, dtype=None), factory, jobs.ParquetSink(tmp_path / "ray"),
                         engine="ray", chunk_rows=CHUNK, progress=False)
    _assert_same(local, ray)
    q = jobs.read_quarantine(ray.quarantine)
    assert (q["row_index"] == -1).sum() == 1 and q["reason"].str.startswith("unparseable CSV line").sum() == 1


def test_an_actor_killed_mid_job_is_retried_and_every_row_lands_exactly_once(
    ray_cluster: Any, model: ModelRef, tmp_path: Path
) -> None:
    src = tmp_path / "in.parquet"
    _frame().to_parquet(src, index=False, row_group_size=64)
    local = jobs.run_batch("kill", jobs.ParquetSource(src), Scoring(model, str(tmp_path / "l.log")),
                           jobs.ParquetSink(tmp_path / "local"), chunk_rows=CHUNK, progress=False)
    log, marker = tmp_path / "events.log", tmp_path / "killed"
    factory = Scoring(model, str(log), crash_part=3, crash_marker=str(marker))

    ray = jobs.run_batch("kill", jobs.ParquetSource(src), factory, jobs.ParquetSink(tmp_path / "ray"),
                         engine="ray", chunk_rows=CHUNK, progress=False)

    assert marker.exists()  # the actor did die in part 3
    starts = [pid for pid, e in _events(log) if e == "part 3"]
    assert len(starts) == 2 and starts[0] != starts[1]  # retried by Ray in a new actor process
    _assert_same(local, ray)
    out, _ = _outputs(ray)
    assert not out["id"].duplicated().any()

    # Run again: the job is done, nothing is redone.
    again = jobs.run_batch("kill", jobs.ParquetSource(src), factory, jobs.ParquetSink(tmp_path / "ray"),
                           engine="ray", chunk_rows=CHUNK, progress=False)
    assert again.job_id == ray.job_id and again.chunks_processed == 0

    # A driver killed after part 4 was written but before its marker: the rerun redoes part 4 only.
    (tmp_path / "ray" / "_ray" / "done" / "part-00004.json").unlink()
    with connect().session() as s:
        s.execute(update(Job).where(Job.id == ray.job_id).values(status="failed"))
    log.unlink()
    resumed = jobs.run_batch("kill", jobs.ParquetSource(src), factory, jobs.ParquetSink(tmp_path / "ray"),
                             engine="ray", chunk_rows=CHUNK, progress=False)
    assert resumed.chunks_processed == 1 and resumed.resumed_from_chunk == N_ROWS // CHUNK - 1
    assert [e for _, e in _events(log) if e.startswith("part")] == ["part 4"]
    _assert_same(local, resumed)


def test_a_part_that_kills_every_worker_is_quarantined_whole_after_its_attempts(
    ray_cluster: Any, model: ModelRef, tmp_path: Path
) -> None:
    from trillium.core.jobs.ray_engine import run_ray_job

    src = tmp_path / "in.parquet"
    _frame(300).to_parquet(src, index=False)
    factory = Scoring(model, str(tmp_path / "events.log"), crash_part=1, crash_marker=str(tmp_path / "m"),
                      always=True)
    res = run_ray_job("poison", jobs.ParquetSource(src), factory, jobs.ParquetSink(tmp_path / "ray"),
                      chunk_rows=CHUNK, max_attempts=1, progress=False)
    out, q = _outputs(res)
    whole = q[q["chunk_index"] == 1]
    assert sorted(whole["row_index"]) == list(range(100, 200))
    why = "part 1: its worker died on each of 1 attempts (killed, out of memory or crashed); quarantined whole"
    assert set(whole["reason"]) == {why}
    assert res.rows_in == 300 and res.rows_out + res.rows_quarantined == 300
    assert sorted([*out["id"], *q.loc[q["row_index"] >= 0, "row_index"]]) == list(range(300))


def test_a_tampered_model_fails_the_job_naming_the_file(ray_cluster: Any, model: ModelRef, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    _frame(200).to_parquet(src, index=False)
    weights = Path(model.location.root) / model.name / f"v{model.version}" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    db: Database = connect()
    with pytest.raises(JobError, match=r"IntegrityError: .*weights\.safetensors was modified after registration"):
        jobs.run_batch("tampered", jobs.ParquetSource(src), Scoring(model, str(tmp_path / "e.log")),
                       jobs.ParquetSink(tmp_path / "ray"), engine="ray", chunk_rows=CHUNK, progress=False, db=db)
    with db.session() as s:
        assert s.query(Job.status).filter(Job.name == "tampered").scalar() == "failed"
    assert not list((tmp_path / "ray").glob("part-*.parquet"))
    with pytest.raises(IntegrityError, match=r"weights\.safetensors was modified after registration"):
        Scoring(model, str(tmp_path / "e.log"))()


@pytest.mark.parametrize("change", ["rewritten input", "other chunk_rows"])
def test_a_changed_input_or_chunking_starts_a_new_ray_job_instead_of_resuming_the_stopped_one(
    ray_cluster: Any, model: ModelRef, tmp_path: Path, change: str
) -> None:
    """The Ray job key covers the input's fingerprint and ``chunk_rows``, and the done-markers
    carry it: after a run stopped part way, a rewritten input (as many rows, other records) or
    another chunk size must redo every part, keeping none of the stopped run's parts."""
    src, out = tmp_path / "in.parquet", tmp_path / "ray"
    _frame().to_parquet(src, index=False, row_group_size=64)
    factory = Scoring(model, str(tmp_path / "events.log"))
    # Stopped part way: the processor raises on part 2 (the poison row) and one failing part is the
    # limit; one actor takes the parts in order, so parts 0 and 1 are done by then.
    with pytest.raises(jobs.FailedChunksError, match=rf"poison row {POISON_ID}"):
        jobs.run_batch("changed", jobs.ParquetSource(src), factory, jobs.ParquetSink(out), engine="ray",
                       workers=1, chunk_rows=CHUNK, progress=False, max_failed_chunks=1)
    with connect().session() as s:
        old_id, old_key, status = s.query(Job.id, Job.key, Job.status).filter(Job.name == "changed").one()
    assert status == "failed"

    def markers() -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((out / "_ray" / "done").glob("part-*.json"))]

    stopped = [m for m in markers() if not m["error"]]
    assert {0, 1} <= {m["part"] for m in stopped} and all(m["key"] == old_key for m in stopped)
    assert jobs.ParquetSink(out).parts()  # and their rows are on disk

    if change == "rewritten input":
        # other records (no poison row now), the same number of rows: no part count gives it away
        _frame().assign(id=lambda f: f["id"] + 1000, x1=lambda f: -f["x1"]).to_parquet(
            src, index=False, row_group_size=64)
        rows = CHUNK
    else:
        rows = 150  # 4 parts instead of 6: parts 0 and 1 now hold other rows
    ray = jobs.run_batch("changed", jobs.ParquetSource(src), factory, jobs.ParquetSink(out), engine="ray",
                         chunk_rows=rows, progress=False)
    local = jobs.run_batch("changed", jobs.ParquetSource(src), factory, jobs.ParquetSink(tmp_path / "local"),
                           chunk_rows=rows, progress=False)

    _assert_same(local, ray)  # the new input's rows only, each once, as the local engine writes them
    if change == "rewritten input":
        assert _outputs(ray)[0]["id"].min() >= 1000  # no row of the first input
    # A new job did every part: none of the stopped job's parts was kept.
    with connect().session() as s:
        new_key = s.query(Job.key).filter(Job.id == ray.job_id).scalar()
    assert ray.job_id != old_id and new_key != old_key
    assert ray.status == "done" and ray.resumed_from_chunk == 0 and ray.chunks_processed == ray.chunks == 600 // rows
    assert [m["part"] for m in markers()] == list(range(600 // rows)) and {m["key"] for m in markers()} == {new_key}
