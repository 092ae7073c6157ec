"""``trillium finance score --engine ray``: the same scores, alerts and quarantine as the local engine.

A small ``gbt+seq`` model is trained once for the module and registered in each test's own
registry; a local Ray cluster of 2 CPUs is started once for the module. The Ray run goes
through the command line, the local one through ``score_file``, on the same CSV with broken
rows, and their outputs are compared row by row.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sqlalchemy import select
from typer.testing import CliRunner

from trillium.core.cli import app
from trillium.core.db import Job, Prediction, connect
from trillium.core.jobs import read_quarantine
from trillium.core.registry import ModelRegistry
from trillium.finance.batch import read_scores, score_file
from trillium.finance.features import FeatureSpec, batch_features, previous_indices, sequence_tensor
from trillium.finance.fraud_model import FraudModel
from trillium.finance.pipeline import FraudScorer
from trillium.finance.simulate import simulate_transactions
from trillium.finance.train import TorchTrainSettings

CHUNK = 200


@pytest.fixture(scope="module")
def model() -> FraudModel:
    history = simulate_transactions(n_customers=200, n_terminals=400, n_days=40, seed=11)
    spec = FeatureSpec()
    x = batch_features(history, spec)
    seq = sequence_tensor(x.astype(np.float32), previous_indices(history, spec.seq_len), spec.seq_indices)
    torch.manual_seed(0)
    return FraudModel(kind="gbt+seq", spec=spec, gbt_params={"n_estimators": 40},
                      torch_settings=TorchTrainSettings(epochs=1)).fit(
        x, history["label"].to_numpy(dtype=int), seq, order=history["timestamp"].to_numpy())


def _broken_csv(path: Path) -> int:
    """New transactions as CSV with bad values, a repeated id and an unparseable line; returns
    the number of records."""
    frame = simulate_transactions(n_customers=80, n_terminals=150, n_days=8, seed=7)
    assert len(frame) > 700
    raw = frame.astype(str)
    raw.loc[5, "amount"] = "12,x"
    raw.loc[400, "customer_id"] = ""
    raw.loc[650, "transaction_id"] = raw.loc[10, "transaction_id"]
    lines = raw.to_csv(index=False).splitlines()
    lines.insert(500, lines[500] + ",extra,fields")
    path.write_text("\n".join(lines) + "\n")
    return len(frame) + 1


def test_score_on_ray_from_the_cli_equals_the_local_engine_row_by_row(
    ray_cluster: Any, model: FraudModel, tmp_path: Path
) -> None:
    model.register(ModelRegistry(connect()), "fraud")
    src = tmp_path / "tx.csv"
    records = _broken_csv(src)
    local = score_file(FraudScorer.from_registry("fraud", threshold=0.5), src, tmp_path / "local",
                       chunk_rows=CHUNK, progress=False)

    res = CliRunner().invoke(app, ["finance", "score", "--input", str(src), "--output", str(tmp_path / "ray"),
                                   "--threshold", "0.5", "--chunk-rows", str(CHUNK), "--engine", "ray",
                                   "--workers", "2"])

    assert res.exit_code == 0, res.output
    db = connect()
    with db.session() as s:
        job = s.scalars(select(Job).where(Job.output_uri == str((tmp_path / "ray").resolve()))).one()
    assert job.status == "done" and job.params["engine"] == "ray" and job.rows_in == records
    lo = read_scores(tmp_path / "local").sort_values("transaction_id", ignore_index=True)
    ro = read_scores(tmp_path / "ray").sort_values("transaction_id", ignore_index=True)
    assert len(ro) == local.job.rows_out and not ro["transaction_id"].duplicated().any()
    pd.testing.assert_frame_equal(ro, lo, check_exact=False, rtol=1e-9, atol=1e-12)
    alerts = ro["decision"] == "alert"
    assert alerts.any() and (ro.loc[alerts, "reasons"] != "").all() and (ro.loc[~alerts, "reasons"] == "").all()
    assert [p.name for p in sorted((tmp_path / "ray").glob("part-*.parquet"))] == [
        p.name for p in sorted((tmp_path / "local").glob("part-*.parquet"))]
    q = read_quarantine(Path(job.params["quarantine"]))
    pd.testing.assert_frame_equal(q, read_quarantine(local.job.quarantine))
    assert len(q) == 4 and q["reason"].str.startswith("unparseable CSV line").sum() == 1
    with db.session() as s:
        stored = s.scalars(select(Prediction.entity_id).where(Prediction.job_id == job.id)).all()
    assert sorted(stored) == sorted(ro.loc[alerts, "transaction_id"])


def test_score_on_ray_refuses_a_csv_output_and_names_the_extra_when_ray_is_missing(
    model: FraudModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model.register(ModelRegistry(connect()), "fraud")
    src = tmp_path / "tx.csv"
    _broken_csv(src)
    runner = CliRunner()
    res = runner.invoke(app, ["finance", "score", "--input", str(src), "--output", str(tmp_path / "out.csv"),
                              "--engine", "ray"])
    if _has_ray():
        assert res.exit_code == 2 and "writes a directory of Parquet parts" in _text(res.output)
    res = runner.invoke(app, ["finance", "score", "--input", str(src), "--output", str(tmp_path / "o"),
                              "--engine", "spark"])
    assert res.exit_code == 2 and "unknown batch engine 'spark'" in _text(res.output)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    res = runner.invoke(app, ["finance", "score", "--input", str(src), "--output", str(tmp_path / "o"),
                              "--engine", "ray"])
    assert res.exit_code == 2 and "pip install 'trillium[ray]'" in _text(res.output) and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def _text(output: str) -> str:
    """The output with the console's line wrapping undone."""
    return " ".join(output.split())


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True
