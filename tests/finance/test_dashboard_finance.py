"""The finance page: empty database guidance, the alert queue, labelling, KPIs and the what-if."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from tests.dashboard_login import logged_in
from tests.finance.whatif import expected_alerts_per_day
from trillium import dashboards
from trillium.core.db import Feedback, Job, connect
from trillium.core.registry import ModelRegistry
from trillium.finance.batch import score_file
from trillium.finance.lifecycle import train_model
from trillium.finance.pipeline import FraudScorer
from trillium.finance.simulate import simulate_transactions

PAGE = str(Path(dashboards.__file__).parent / "pages" / "1_Finance.py")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_finance_page_on_empty_database() -> None:
    at = logged_in(AppTest.from_file(PAGE, default_timeout=60)).run()
    assert not at.exception
    assert any("No finance alerts yet" in i.value for i in at.info)


@pytest.fixture
def scored(tmp_path: Path, one_thread: None) -> Path:
    sim = simulate_transactions(n_customers=300, n_terminals=600, n_days=50, seed=4)
    history = sim[sim["timestamp"] < "2018-05-13"]
    train_model(history, kind="gbt", train_days=21, holdout_days=7, autotune=False, registry=ModelRegistry())
    today = sim[sim["timestamp"] >= "2018-05-13"].drop(columns=["label", "fraud_scenario"])
    today.to_csv(tmp_path / "today.csv", index=False)
    history.to_parquet(tmp_path / "history.parquet", index=False)
    scorer = FraudScorer.from_registry(alerts_per_day=20)
    score_file(scorer, tmp_path / "today.csv", tmp_path / "scores", history=tmp_path / "history.parquet",
               progress=False)
    return tmp_path


def test_finance_page_queue_label_kpis_whatif(scored: Path) -> None:
    at = logged_in(AppTest.from_file(PAGE, default_timeout=60)).run()
    assert not at.exception
    queue = at.dataframe[0].value
    assert len(queue) > 0
    assert queue.groupby("day")["score"].apply(lambda s: s.is_monotonic_decreasing).all()  # by score each day
    chosen = at.selectbox(key="alert_choice").value
    at.button(key="label_fraud").click().run()
    assert not at.exception
    assert any(f"Transaction {chosen} labelled fraud" in s.value for s in at.success)
    with connect().session() as s:
        labels = s.scalars(select(Feedback)).all()
    assert [(f.entity_id, f.label, f.analyst) for f in labels] == [(str(chosen), "fraud", "tester")]
    # labelled alerts leave the queue
    at.run()
    assert str(chosen) not in set(at.dataframe[0].value["transaction_id"].astype(str))
    # what-if: the page shows the mean alerts per day of the job's stored probabilities at each threshold
    with connect().session() as s:  # the job whose output the page reads
        (output,) = [Path(j.output_uri) for j in s.scalars(select(Job).where(Job.name.like("finance-score:%")))]
    assert output == scored / "scores"
    low, high = expected_alerts_per_day(output, 0.2), expected_alerts_per_day(output, 0.9)
    assert low != high  # the two thresholds tell a slider that does nothing from one that works
    at.slider(key="threshold").set_value(0.2).run()
    assert not at.exception and metric(at, "alerts per day (mean)") == low
    at.slider(key="threshold").set_value(0.9).run()
    assert not at.exception and metric(at, "alerts per day (mean)") == high
