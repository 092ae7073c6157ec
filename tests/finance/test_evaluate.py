"""Finance evaluation: the handbook's metrics and split on hand-computed examples, the
``trillium finance evaluate`` command on simulated card data and on ULB-layout data, and the
``FraudModel`` round trip through the registry (integrity checked) with a calibration check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from trillium.core.cli import app
from trillium.core.db import Database
from trillium.core.errors import InputValidationError, IntegrityError
from trillium.core.registry import ModelRegistry
from trillium.finance.evaluate import card_precision_at_k, handbook_split, prepare
from trillium.finance.features import FeatureSpec, batch_features
from trillium.finance.fraud_model import FraudModel
from trillium.finance.simulate import simulate_transactions
from trillium.finance.train import TorchTrainSettings

D = np.datetime64


def _invoke(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"


# ----------------------------------------------------------------------- card precision@k
def test_card_precision_at_k_by_hand() -> None:
    #              card  day  y  score
    rows = [
        ("A", "2018-05-01", 0, 0.20), ("A", "2018-05-01", 1, 0.90),  # several tx: its max (0.90) counts
        ("B", "2018-05-01", 0, 0.30), ("B", "2018-05-01", 0, 0.80),
        ("C", "2018-05-01", 1, 0.70),
        ("D", "2018-05-01", 0, 0.10),
        ("A", "2018-05-02", 1, 0.95),  # detected on day 1: removed on day 2
        ("C", "2018-05-02", 1, 0.70),
        ("E", "2018-05-02", 0, 0.65),
        ("B", "2018-05-02", 0, 0.60),
    ]
    cards = np.array([r[0] for r in rows])
    days = np.array([r[1] for r in rows], dtype="datetime64[D]")
    y = np.array([r[2] for r in rows])
    scores = np.array([r[3] for r in rows])
    # k=2. Day 1: cards by max score A .90, B .80, C .70, D .10 -> top {A, B}, A fraud: 1/2; A detected.
    # Day 2 without A: C .70, E .65, B .60 -> top {C, E}, C fraud: 1/2 (1.0 had A stayed in).
    mean, per_day = card_precision_at_k(days, cards, y, scores, k=2)
    assert per_day == [0.5, 0.5]
    assert mean == 0.5
    # k larger than the cards: divided by k, not by the cards. Day 1: A, C fraud: 2/10; both
    # detected. Day 2: B, E remain, none fraud: 0/10.
    mean, per_day = card_precision_at_k(days, cards, y, scores, k=10)
    assert per_day == [0.2, 0.0]
    assert mean == pytest.approx(0.1, abs=1e-12)
    # rows in any order give the same answer
    perm = np.random.default_rng(0).permutation(len(rows))
    assert card_precision_at_k(days[perm], cards[perm], y[perm], scores[perm], k=2)[1] == [0.5, 0.5]


# ----------------------------------------------------------------------- the handbook split
def _split_frame(rows: list[tuple[str, int, int]], start: str) -> pd.DataFrame:
    """Rows (card, day offset from ``start``, label) as canonical transactions."""
    s = pd.Timestamp(start)
    return pd.DataFrame({
        "transaction_id": np.arange(len(rows)),
        "timestamp": [s + pd.Timedelta(days=d, hours=8 + i % 10) for i, (_, d, _) in enumerate(rows)],
        "customer_id": [c for c, _, _ in rows],
        "terminal_id": [i % 3 for i in range(len(rows))],
        "amount": 10.0 + np.arange(len(rows)),
        "label": pd.array([lab for _, _, lab in rows], dtype="Int8"),
    })


def test_handbook_split_removes_known_compromised_cards() -> None:
    # delta_train=3 (days 0-2), delta_delay=2, delta_test=3 (days 5, 6, 7). Test day 5+k drops
    # the cards with a fraud in training or on the delay days up to day 2+k.
    rows = [
        ("A", 1, 1), ("A", 0, 0), ("F", 2, 0),  # training: A's fraud is known from the start
        ("E", -1, 1),  # fraud before the training period: not known
        ("B", 3, 1),  # known from test day 6 on
        ("C", 4, 1),  # known from test day 7 on
        ("D", 5, 1), ("D", 6, 0), ("D", 7, 0),  # fraud on a test day: never known within the fold
    ]
    for card in "ABCEF":
        rows += [(card, 5, 0), (card, 6, 0), (card, 7, 0)]
    rows += [("F", 8, 0), ("F", 4, 0)]  # outside train and test
    frame = _split_frame(rows, "2018-05-01")
    data = prepare(frame, with_sequences=False)
    train, test = handbook_split(data, "2018-05-01", delta_train=3, delta_delay=2, delta_test=3)
    assert sorted(train.tolist()) == [0, 1, 2]
    kept = sorted((rows[i][0], rows[i][1]) for i in test)
    assert kept == sorted([
        ("B", 5), ("C", 5), ("C", 6), ("D", 5), ("D", 6), ("D", 7),
        ("E", 5), ("E", 6), ("E", 7), ("F", 5), ("F", 6), ("F", 7),
    ])
    assert len(set(test.tolist())) == len(test)
    with pytest.raises(InputValidationError, match="2017-01-01"):
        handbook_split(data, "2017-01-01")


def _handbook_reference_split(frame: pd.DataFrame, start: str) -> tuple[set[int], set[int]]:
    """The handbook's ``get_train_test_set`` (shared functions, chapter 3), 7/7/7 days."""
    day = ((frame["timestamp"] - pd.Timestamp(start).normalize()) // pd.Timedelta(days=1)).to_numpy()
    fraud = frame["label"].to_numpy(int) == 1
    train = (day >= 0) & (day < 7)
    known = set(frame.loc[train & fraud, "customer_id"])
    test: set[int] = set()
    for k in range(7):
        known |= set(frame.loc[(day == 7 + k - 1) & fraud, "customer_id"])
        today = (day == 14 + k) & ~frame["customer_id"].isin(known).to_numpy()
        test |= set(np.flatnonzero(today).tolist())
    return set(np.flatnonzero(train).tolist()), test


def test_handbook_split_matches_the_handbook_on_simulated_data() -> None:
    frame = simulate_transactions(n_customers=300, n_terminals=600, n_days=40, seed=2)
    data = prepare(frame, with_sequences=False)
    train, test = handbook_split(data, "2018-04-10")
    ref_train, ref_test = _handbook_reference_split(frame, "2018-04-10")
    assert set(train.tolist()) == ref_train
    assert set(test.tolist()) == ref_test
    # the removal is not vacuous here
    test_days = (data.day >= D("2018-04-24")) & (data.day < D("2018-05-01"))
    assert len(test) < test_days.sum()


# ----------------------------------------------------------------------- the evaluate command
def test_evaluate_cli_handbook_protocol(tmp_path: Path) -> None:
    frame = simulate_transactions(n_customers=500, n_terminals=1000, n_days=50, start_date="2018-04-01", seed=5)
    daily = frame.groupby(frame["timestamp"].dt.date)["label"].sum()
    assert (daily.loc[pd.Timestamp("2018-04-20").date():] > 0).all()
    data, out = tmp_path / "tx.parquet", tmp_path / "report" / "eval.json"
    frame.to_parquet(data)
    _invoke(["finance", "evaluate", "--data", str(data), "--json", str(out), "--train-start", "2018-04-20",
             "--folds", "1", "--kind", "gbt"])
    report = json.loads(out.read_text())
    assert report["model"] == "gbt"
    for key in ("auc_roc", "average_precision", "card_precision_at_100"):
        assert isinstance(report[key], float) and 0.0 <= report[key] <= 1.0, (key, report[key])
    assert report["auc_roc"] > 0.7
    fold = report["folds"][0]
    assert fold["train_start"] == "2018-04-20" and fold["frauds"] > 0
    assert len(fold["card_precision_at_100_per_day"]) == 7
    assert report["rows"] == len(frame)


def _ulb_csv(path: Path, n: int = 6_000, seed: int = 0) -> pd.DataFrame:
    """The ULB creditcard.csv layout: Time (s), V1..V28, Amount, Class; ~3 % frauds spread over
    two days, separable only through a few V columns (amount and time carry no signal)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.03).astype(int)
    v = rng.normal(size=(n, 28))
    v[:, 0] += 2.0 * y
    v[:, 2] -= 1.5 * y
    v[:, 9] += 1.0 * y
    frame = pd.DataFrame({
        "Time": np.sort(rng.uniform(0, 172_800, n)).round(),
        **{f"V{i + 1}": v[:, i] for i in range(28)},
        "Amount": np.round(rng.lognormal(3.0, 1.0, n), 2),
        "Class": y,
    })
    frame.to_csv(path, index=False)
    return frame


def test_evaluate_cli_ulb_time_split(tmp_path: Path) -> None:
    csv, out = tmp_path / "creditcard.csv", tmp_path / "ulb.json"
    frame = _ulb_csv(csv)
    third = len(frame) // 5
    assert frame["Class"].iloc[-third:].sum() > 10 and frame["Class"].iloc[:third].sum() > 10
    _invoke(["finance", "evaluate", "--data", str(csv), "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["model"] == "gbt+mlp"  # the default gbt+seq needs cards: its seq member is dropped
    for value in (report["auc_roc"], report["average_precision"], report["baseline"]["average_precision"]):
        assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert report["auc_roc"] > 0.8
    assert report["rows"] == len(frame) and report["frauds"] == int(frame["Class"].sum())


# ----------------------------------------------------------------------- FraudModel
@pytest.fixture(scope="module")
def small() -> dict:
    frame = simulate_transactions(n_customers=300, n_terminals=600, n_days=40, seed=11)
    spec = FeatureSpec()
    x, y, ts = batch_features(frame, spec), frame["label"].to_numpy(int), frame["timestamp"].to_numpy()
    cut = int(len(frame) * 0.8)
    models = {
        kind: FraudModel(kind=kind, spec=spec, gbt_params={"n_jobs": 1},
                         torch_settings=TorchTrainSettings(epochs=1), seed=0).fit(x[:cut], y[:cut], order=ts[:cut])
        for kind in ("gbt", "gbt+mlp")
    }
    return {"models": models, "x_test": x[cut:], "y_test": y[cut:]}


@pytest.mark.parametrize("kind", ["gbt", "gbt+mlp"])
def test_fraud_model_scores_and_registry_round_trip(small: dict, kind: str, database: Database) -> None:
    model: FraudModel = small["models"][kind]
    x, y = small["x_test"], small["y_test"]
    p = model.predict_proba(x)
    assert p.shape == (len(x),) and np.isfinite(p).all()
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(y, p) > 0.7  # it learned something on later, unseen days
    assert set(model.members_) == set(kind.split("+"))

    registry = ModelRegistry(db=database)
    record = model.register(registry, name="fraud")
    for runtime in (False, True):
        loaded, rec = FraudModel.load(registry, "fraud", "production", runtime=runtime)
        assert rec.version == record.version and loaded.kind == kind
        assert np.array_equal(loaded.predict_proba(x), p)

    # one byte appended to a stored file: refused on load
    with open(record.directory / "gbt.lgb.txt", "ab") as fh:
        fh.write(b" ")
    with pytest.raises(IntegrityError, match="gbt.lgb.txt"):
        FraudModel.load(registry, "fraud")


def test_fraud_model_tampered_torch_weights_refused(small: dict) -> None:
    registry = ModelRegistry()
    record = small["models"]["gbt+mlp"].register(registry, name="fraud-mlp")
    FraudModel.load(registry, "fraud-mlp", runtime=False)  # intact: loads
    with open(record.directory / "mlp.safetensors", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(IntegrityError, match="mlp.safetensors"):
        FraudModel.load(registry, "fraud-mlp", runtime=False)


def test_fraud_model_probabilities_are_calibrated_on_later_days() -> None:
    frame = simulate_transactions(n_customers=800, n_terminals=1600, n_days=50, seed=3)
    spec = FeatureSpec()
    x, y, ts = batch_features(frame, spec), frame["label"].to_numpy(int), frame["timestamp"].to_numpy()
    day = ((frame["timestamp"] - pd.Timestamp("2018-04-01")) // pd.Timedelta(days=1)).to_numpy()
    train, test = (day >= 14) & (day < 36), day >= 43  # a week's delay between them, as in production
    model = FraudModel(kind="gbt", spec=spec, gbt_params={"n_jobs": 1}, seed=0).fit(x[train], y[train], order=ts[train])
    assert set(model.members_["gbt"].calibrator.as_dict()) == {"a", "b"}
    p = model.predict_proba(x[test])
    observed = y[test].mean()
    assert y[test].sum() > 200
    assert observed / 2 < p.mean() < observed * 2, (p.mean(), observed)
