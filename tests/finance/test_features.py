"""Finance features: the batch path and the online path (in memory and in Redis) agree exactly,
the baseline reproduces the Fraud Detection Handbook's own feature file, labels count only
after the delay, analyst feedback reaches the online state, and bad input is refused by name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REQUIRE_PG, SHARED_DATA, require_shared
from trillium.core.errors import InputValidationError
from trillium.finance.features import (
    FeatureSpec,
    InMemoryState,
    OnlineFeatures,
    batch_features,
    previous_indices,
    sequence_tensor,
)
from trillium.finance.simulate import simulate_transactions

REDIS_URL = os.environ.get("TRILLIUM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
HANDBOOK_FEATURES = SHARED_DATA / "finance" / "handbook_features_2018-04-01_to_05-15.parquet"
HANDBOOK_RENAME = {
    "TRANSACTION_ID": "transaction_id", "TX_DATETIME": "timestamp", "CUSTOMER_ID": "customer_id",
    "TERMINAL_ID": "terminal_id", "TX_AMOUNT": "amount", "TX_FRAUD": "label",
}
HANDBOOK_COLUMNS = {"TX_DURING_WEEKEND": "tx_during_weekend", "TX_DURING_NIGHT": "tx_during_night"}
for _w in (1, 7, 30):
    HANDBOOK_COLUMNS |= {
        f"CUSTOMER_ID_NB_TX_{_w}DAY_WINDOW": f"customer_nb_tx_{_w}d",
        f"CUSTOMER_ID_AVG_AMOUNT_{_w}DAY_WINDOW": f"customer_avg_amount_{_w}d",
        f"TERMINAL_ID_NB_TX_{_w}DAY_WINDOW": f"terminal_nb_tx_{_w}d",
        f"TERMINAL_ID_RISK_{_w}DAY_WINDOW": f"terminal_risk_{_w}d",
    }
RISK = [f"terminal_risk_{w}d" for w in (1, 7, 30)]
TERMINAL_AGE = ["terminal_days_since_first_known_fraud", "terminal_days_since_last_known_fraud"]


# ----------------------------------------------------------------------- fixtures
def _redis_client() -> object:
    """A live client, or skip (fail under TRILLIUM_REQUIRE_POSTGRES=1, as CI does) with the reason."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001
        reason = f"Redis at {REDIS_URL} unreachable: {exc.__class__.__name__}: {exc}"
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def redis_state() -> Iterator[object]:
    """A ``RedisState`` under a fresh key prefix, every key under it deleted afterwards."""
    from trillium.finance.online_state import RedisState

    client = _redis_client()
    state = RedisState(REDIS_URL, prefix=f"trillium-test:{uuid.uuid4().hex}", client=client)
    try:
        yield state
    finally:
        state.clear()
        assert not list(client.scan_iter(match=f"{state.prefix}:*"))
        client.close()


@pytest.fixture(params=["memory", "redis"])
def state(request: pytest.FixtureRequest) -> object:
    return InMemoryState() if request.param == "memory" else request.getfixturevalue("redis_state")


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    frame = simulate_transactions(n_customers=300, n_terminals=600, n_days=60, seed=7)
    assert len(frame) > 30_000 and frame["label"].sum() > 1_000  # enough rows and labels to be a real check
    return frame


def _online(frame: pd.DataFrame, features: OnlineFeatures) -> tuple[np.ndarray, np.ndarray]:
    xs, seqs = [], []
    for row in frame.to_dict("records"):
        x, seq = features.update(row)
        xs.append(x)
        seqs.append(seq)
    return np.stack(xs), np.stack(seqs)


def _batch(frame: pd.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    x = batch_features(frame, spec)
    return x, sequence_tensor(x.astype(np.float32), previous_indices(frame, spec.seq_len), spec.seq_indices)


def _tx(tx_id: object, when: str, card: int, terminal: int, amount: float = 20.0, label: object = 0) -> dict:
    return {"transaction_id": tx_id, "timestamp": pd.Timestamp(when), "customer_id": card,
            "terminal_id": terminal, "amount": amount, "label": label}


# ----------------------------------------------------------------------- batch == online
def test_batch_equals_online_in_memory(sim: pd.DataFrame) -> None:
    spec = FeatureSpec()
    x_batch, seq_batch = _batch(sim, spec)
    x_online, seq_online = _online(sim, OnlineFeatures(spec))
    assert x_batch.shape == (len(sim), len(spec.names))
    assert seq_batch.shape == (len(sim), spec.seq_len, len(spec.seq_indices) + 1)
    assert np.array_equal(x_batch, x_online)
    assert np.array_equal(seq_batch, seq_online)
    # the comparison covers the delayed label features, not only zeros
    names = spec.names
    assert (x_batch[:, names.index("terminal_risk_7d")] > 0).sum() > 1_000
    assert (x_batch[:, names.index("customer_risk_30d")] > 0).sum() > 100
    assert seq_batch[:, :, -1].all(axis=1).sum() > len(sim) // 2  # most rows have a full history


def test_batch_equals_online_in_redis(sim: pd.DataFrame, redis_state: object) -> None:
    spec = FeatureSpec()
    head = sim.iloc[:10_500].reset_index(drop=True)  # ~0.5 ms a transaction against Redis
    assert head["timestamp"].max() - head["timestamp"].min() > pd.Timedelta(days=17)  # past the 7-day delay
    x_batch, seq_batch = _batch(head, spec)
    x_online, seq_online = _online(head, OnlineFeatures(spec, redis_state))
    assert np.array_equal(x_batch, x_online)
    assert np.array_equal(seq_batch, seq_online)
    assert (x_batch[:, spec.names.index("terminal_risk_7d")] > 0).sum() > 100


# ----------------------------------------------------------------------- the handbook's own features
def test_baseline_reproduces_handbook_feature_file() -> None:
    require_shared(HANDBOOK_FEATURES, "the handbook's reference feature file")
    ref = pd.read_parquet(HANDBOOK_FEATURES).iloc[:150_000]
    missing = [c for c in [*HANDBOOK_RENAME, *HANDBOOK_COLUMNS] if c not in ref.columns]
    assert not missing, f"{HANDBOOK_FEATURES} lacks {missing}"
    frame = ref.rename(columns=HANDBOOK_RENAME)
    spec = FeatureSpec()
    ours = batch_features(frame, spec)
    differs = np.zeros(len(frame), dtype=bool)
    for theirs, name in HANDBOOK_COLUMNS.items():
        differs |= ~np.isclose(ours[:, spec.names.index(name)], ref[theirs].to_numpy(np.float64), rtol=0, atol=1e-6)
    assert differs.sum() < 0.0001 * len(frame), f"{differs.sum()} rows differ from the handbook"
    # each difference is a same-second tie of one card, which the handbook's unstable sort orders differently
    same_second = frame.duplicated(["customer_id", "timestamp"], keep=False).to_numpy()
    assert same_second[differs].all(), frame.loc[differs & ~same_second, ["transaction_id", "timestamp", "customer_id"]]
    # the reference exercises every feature (risk features are not all zero in it)
    assert (ref["TERMINAL_ID_RISK_7DAY_WINDOW"] > 0).sum() > 100


# ----------------------------------------------------------------------- the delay
def _delay_frame(fraud: int) -> pd.DataFrame:
    rows = [
        _tx(0, "2018-01-01 10:00:00", 1, 100, 50.0, fraud),  # the fraud (or not)
        _tx(1, "2018-01-05 10:00:00", 2, 100),  # 4 days later
        _tx(2, "2018-01-08 09:59:59", 3, 100),  # 1 s short of 7 days
        _tx(3, "2018-01-08 10:00:00", 4, 100),  # exactly 7 days later
        _tx(4, "2018-01-09 10:00:00", 5, 100),  # 8 days later: out of the 1-day window, in the 7-day one
        _tx(5, "2018-01-09 10:00:00", 6, 200),  # another terminal
    ]
    frame = pd.DataFrame(rows)
    frame["label"] = frame["label"].astype("Int8")
    return frame


def _changed(a: np.ndarray, b: np.ndarray, names: list[str]) -> set[tuple[int, str]]:
    rows, cols = np.nonzero(a != b)
    return {(int(r), names[c]) for r, c in zip(rows, cols, strict=True)}


def test_fraud_label_counts_only_after_the_delay() -> None:
    spec = FeatureSpec()
    names = spec.names
    with_fraud, without = batch_features(_delay_frame(1), spec), batch_features(_delay_frame(0), spec)
    assert _changed(with_fraud, without, names) == {
        (3, "terminal_risk_1d"), (3, "terminal_risk_7d"), (3, "terminal_risk_30d"), *((3, a) for a in TERMINAL_AGE),
        (4, "terminal_risk_7d"), (4, "terminal_risk_30d"), *((4, a) for a in TERMINAL_AGE),
    }
    col = {n: i for i, n in enumerate(names)}
    assert with_fraud[3, col["terminal_nb_tx_1d"]] == 1 and with_fraud[3, col["terminal_risk_1d"]] == 1.0
    assert with_fraud[2, col["terminal_nb_tx_1d"]] == 0 and with_fraud[2, col["terminal_risk_30d"]] == 0.0
    assert with_fraud[4, col["terminal_nb_tx_1d"]] == 0 and with_fraud[4, col["terminal_risk_7d"]] == 1.0
    assert with_fraud[3, col["terminal_days_since_first_known_fraud"]] == 7.0
    assert with_fraud[4, col["terminal_days_since_last_known_fraud"]] == 8.0
    # the online path agrees on both frames
    for frame, x in ((_delay_frame(1), with_fraud), (_delay_frame(0), without)):
        assert np.array_equal(_online(frame, OnlineFeatures(spec))[0], x)
    # a shorter delay makes the label visible 4 days later
    short = FeatureSpec(delay_days=3)
    changed = _changed(batch_features(_delay_frame(1), short), batch_features(_delay_frame(0), short), short.names)
    assert (1, "terminal_risk_7d") in changed and (1, "terminal_risk_1d") not in changed
    with pytest.raises(ValueError, match="delay_days"):
        FeatureSpec(delay_days=0)


# ----------------------------------------------------------------------- analyst feedback
def test_analyst_label_reaches_later_transactions(state: object) -> None:
    spec = FeatureSpec()
    col = {n: i for i, n in enumerate(spec.names)}
    before = [_tx("a", "2018-03-01 10:00:00", 1, 7, label=pd.NA), _tx("b", "2018-03-03 10:00:00", 2, 7, label=pd.NA)]
    later = _tx("c", "2018-03-09 11:00:00", 3, 7, label=pd.NA)  # 8 days after "a", same terminal

    labelled = OnlineFeatures(spec, state)
    plain = OnlineFeatures(spec)
    for tx in before:
        assert np.array_equal(labelled.update(tx)[0], plain.update(tx)[0])
    assert labelled.label("a", True) is True
    x_labelled, _ = labelled.update(later)
    x_plain, _ = plain.update(later)
    assert x_plain[col["terminal_risk_7d"]] == 0.0
    assert x_labelled[col["terminal_nb_tx_7d"]] == 1.0  # only "a" is in (t - 14 d, t - 7 d]
    assert x_labelled[col["terminal_risk_7d"]] == 1.0 and x_labelled[col["terminal_risk_30d"]] == 1.0
    differ = {spec.names[i] for i in np.flatnonzero(x_labelled != x_plain)}
    assert differ == {"terminal_risk_7d", "terminal_risk_30d", *TERMINAL_AGE}

    # a correction back to genuine is seen by the next transaction
    labelled.label("a", False)
    x_again, _ = labelled.update(_tx("d", "2018-03-09 12:00:00", 4, 7, label=pd.NA))
    assert x_again[col["terminal_risk_7d"]] == 0.0 and x_again[col["terminal_nb_tx_7d"]] == 1.0


def test_label_of_unknown_transaction_is_refused_in_memory() -> None:
    features = OnlineFeatures(FeatureSpec())
    features.update(_tx(5, "2018-03-01 10:00:00", 1, 7))
    assert features.label(999, True) is False
    assert features.label(5, True) is True


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize("change", [
    pytest.param({"amount": None}, id="amount-none"),
    pytest.param({"amount": -3.5}, id="negative-amount"),
    pytest.param({"amount": float("nan")}, id="nan-amount"),
    pytest.param({"amount": "twelve"}, id="text-amount"),
    pytest.param({"customer_id": None}, id="customer-none"),
    pytest.param({"customer_id": np.nan}, id="customer-nan"),
    pytest.param({"drop": "amount"}, id="amount-missing"),
    pytest.param({"drop": "customer_id"}, id="customer-missing"),
])
def test_bad_input_raises_naming_the_transaction(change: dict) -> None:
    features = OnlineFeatures(FeatureSpec())
    tx = _tx("tx-bad-4711", "2018-03-01 10:00:00", 1, 7)
    if "drop" in change:
        del tx[change["drop"]]
    else:
        tx.update(change)
    with pytest.raises(InputValidationError, match="tx-bad-4711"):
        features.update(tx)
    # the refused transaction left no trace in the state
    x, seq = features.update(_tx("tx-ok", "2018-03-01 10:00:01", 1, 7))
    assert x[features.names.index("customer_nb_tx_1d")] == 1.0
    assert not seq[:, -1].any()
