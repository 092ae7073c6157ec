"""Card-less data (ULB's layout: Time, V1..V28, Amount, Class): train, score and queue alerts.

Such data has no card or terminal, so the model uses the given numeric columns as they are;
a sequence member is impossible and the trainer says so by training gbt+mlp instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from trillium.core.cli import app
from trillium.core.registry import ModelRegistry
from trillium.finance.adapters import read_transactions
from trillium.finance.lifecycle import feature_spec_for, train_model
from trillium.finance.pipeline import FraudScorer
from trillium.finance.store import alert_queue

SIGNAL = ("V1", "V4")


def _ulb(path: Path, n: int = 24_000, seed: int = 0) -> pd.DataFrame:
    """Two days in ULB's layout; frauds (2 %) shifted on V1 and V4 only. 2013-09-01 is a
    Sunday, so the weekend flag is constant on the training day and flips on the next."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.02).astype(int)
    v = rng.normal(size=(n, 28))
    v[:, 0] += 2.5 * y
    v[:, 3] -= 2.0 * y
    frame = pd.DataFrame(v, columns=[f"V{i}" for i in range(1, 29)])
    frame.insert(0, "Time", np.sort(rng.uniform(0, 2 * 86_400, n)).round())
    frame["Amount"] = np.abs(rng.normal(80, 60, n)).round(2)
    frame["Class"] = y
    frame.to_csv(path, index=False)
    return frame


def test_cardless_train_score_and_reasons(tmp_path: Path) -> None:
    _ulb(tmp_path / "ulb.csv")
    valid, quarantined = read_transactions(tmp_path / "ulb.csv", "ulb")
    assert len(quarantined) == 0
    spec = feature_spec_for(valid)
    assert not spec.card_history and spec.passthrough[:2] == ("V1", "V2") and len(spec.passthrough) == 28

    result = train_model(valid, kind="gbt+seq", train_days=1, holdout_days=1, autotune=False,
                         registry=ModelRegistry())
    assert result.model.kind == "gbt+mlp"  # no card: no card sequence
    assert result.metrics["auc_roc"] > 0.95 and "card_precision_at_100" not in result.metrics
    # the weekend flag is constant while training and flips after: the MLP must stay sane
    day2 = valid[valid["timestamp"] >= "2013-09-02"]
    scorer = FraudScorer.from_registry(threshold=0.5)
    logits = scorer.model.member_logits(scorer.features_for(day2)[0])
    assert np.abs(logits["mlp"]).max() < 50
    scored = scorer.score_batch(day2, reasons="alerts")
    assert roc_auc_score(day2["label"].astype(int), scored["probability"]) > 0.95
    alerts = scored[scored["decision"] == "alert"]
    assert len(alerts) > 0
    named = " ".join(alerts["reasons"].head(20))
    assert all(f'"feature": "{c}"' in named for c in SIGNAL)  # the reasons find the signal columns

    one = day2.drop(columns=["label"]).iloc[0].to_dict()
    res = scorer.score(one, explain=True)
    assert 0.0 <= res.probability <= 1.0 and res.reasons


def test_cardless_cli_train_score_alerts(tmp_path: Path) -> None:
    frame = _ulb(tmp_path / "ulb.csv", n=12_000, seed=1)
    frame[frame["Time"] >= 86_400].drop(columns=["Class"]).to_csv(tmp_path / "day2.csv", index=False)
    runner = CliRunner()
    res = runner.invoke(app, ["finance", "train", "--data", str(tmp_path / "ulb.csv"), "--train-days", "1",
                              "--holdout-days", "1", "--no-autotune"])
    assert res.exit_code == 0, res.output
    assert "(gbt+mlp)" in res.output and "CP@100" not in res.output
    res = runner.invoke(app, ["finance", "score", "--input", str(tmp_path / "day2.csv"), "--output",
                              str(tmp_path / "scores"), "--threshold", "0.5"])
    assert res.exit_code == 0, res.output
    queue = alert_queue(budget=1000)
    assert len(queue) > 0 and queue["customer_id"].isna().all()
    res = runner.invoke(app, ["finance", "alerts", "--limit", "3"])
    assert res.exit_code == 0 and "V1 = " in res.output


@pytest.mark.parametrize("kind", ["seq", "gbt+seq"])
def test_sequence_member_refused_without_cards(tmp_path: Path, kind: str) -> None:
    from trillium.core.errors import TrilliumError
    from trillium.finance.fraud_model import FraudModel

    valid, _ = read_transactions(_ulb_path(tmp_path), "ulb")
    spec = feature_spec_for(valid)
    x = np.zeros((10, len(spec.names)))
    with pytest.raises(TrilliumError, match="needs card ids"):
        FraudModel(kind, spec).fit(x, np.array([0, 1] * 5))


def _ulb_path(tmp_path: Path) -> Path:
    path = tmp_path / "small.csv"
    _ulb(path, n=500, seed=2)
    return path
