"""Scoring for the service (``OnlineBatchScorer``): batched waves give exactly what one transaction
at a time through ``FraudScorer.score`` gives (features, probabilities, decisions under the daily
budget, reasons), in memory and in Redis; two workers racing on the same cards still apply every
transaction once, each seeing the ones applied before it; a retried id is answered, not re-applied.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import REQUIRE_PG
from trillium.core.errors import InputValidationError
from trillium.finance.features import FeatureSpec, batch_features, previous_indices, sequence_tensor
from trillium.finance.fraud_model import FraudModel
from trillium.finance.online_state import tx_hash
from trillium.finance.pipeline import ALERT, OVER_BUDGET, FraudScorer
from trillium.finance.serving import LocalState, OnlineBatchScorer, ScoreRequest
from trillium.finance.simulate import simulate_transactions
from trillium.finance.train import TorchTrainSettings

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def model() -> FraudModel:
    history = simulate_transactions(n_customers=150, n_terminals=300, n_days=30, seed=3)
    spec = FeatureSpec()
    x = batch_features(history, spec)
    seq = sequence_tensor(x.astype(np.float32), previous_indices(history, spec.seq_len), spec.seq_indices)
    y = history["label"].to_numpy(dtype=int)
    torch.manual_seed(0)
    return FraudModel(kind="gbt+seq", spec=spec, gbt_params={"n_estimators": 40},
                      torch_settings=TorchTrainSettings(epochs=1)).fit(
        x, y, seq, order=history["timestamp"].to_numpy())


@pytest.fixture(scope="module")
def stream() -> pd.DataFrame:
    """Four days of other cards, in time order, with their labels dropped (as a processor sends them)."""
    frame = simulate_transactions(n_customers=60, n_terminals=80, n_days=4, seed=9)
    return frame.drop(columns=["label", "fraud_scenario"], errors="ignore")


def _redis_state(prefix: str) -> Any:
    from trillium.finance.online_state import RedisState

    try:
        return RedisState(REDIS_URL, prefix=prefix)
    except Exception as exc:  # noqa: BLE001
        if REQUIRE_PG:
            pytest.fail(f"Redis at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")


@pytest.fixture(params=["memory", "redis"])
def state(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield LocalState()
        return
    s = _redis_state(f"trillium-test:{uuid.uuid4().hex}")
    yield s
    s.clear()


def _requests(txs: list[dict[str, Any]], rng: random.Random) -> list[ScoreRequest]:
    """The transactions cut into requests of 1 to 12 (some single, some lists), half with features."""
    out, i = [], 0
    while i < len(txs):
        n = rng.choice([1, 1, 1, rng.randint(2, 12)])
        out.append(ScoreRequest(txs[i:i + n], features=True, explain=rng.random() < 0.1))
        i += n
    return out


def test_batched_waves_equal_one_at_a_time(model: FraudModel, stream: pd.DataFrame, state: Any) -> None:
    """Batches of up to 40 requests, cards repeated inside a batch and inside a list: every feature,
    probability, decision (a budget of 3 alerts a day, so over_budget happens) and reason equals the
    in-process scorer fed the same transactions in the same order."""
    rng = random.Random(5)
    txs = stream.to_dict("records")[:1500]
    # the top 15 % of the batch scores: several alerts a day against a budget of 3, so it is exercised
    threshold = float(np.quantile(FraudScorer(model).score_batch(stream.iloc[:1500])["probability"], 0.85))
    reference = FraudScorer(model, alerts_per_day=3)
    served = FraudScorer(model, alerts_per_day=3)
    reference.threshold = served.threshold = threshold
    scorer = OnlineBatchScorer(state)
    requests = _requests(txs, rng)
    got = []
    i = 0
    while i < len(requests):
        n = rng.randint(1, 40)
        for answer in scorer.score_requests(served, 7, requests[i:i + n]):
            assert not isinstance(answer, Exception), answer
            got.extend(answer)
        i += n
    assert len(got) == len(txs)
    decisions = {ALERT: 0, OVER_BUDGET: 0}
    names = model.spec.names
    pos = 0
    for req in requests:
        for tx in req.transactions:
            want = reference.score(tx, explain=True if req.explain else "alerts")
            have = got[pos]
            pos += 1
            assert have.transaction_id == tx["transaction_id"]
            assert have.model_version == 7 and have.model == served.model_label
            np.testing.assert_allclose(have.probability, want.probability, rtol=1e-6, atol=1e-9)
            assert have.decision == want.decision, (tx["transaction_id"], have.decision, want.decision)
            assert [r["feature"] for r in have.reasons] == [r.feature for r in want.reasons]
            decisions[have.decision] = decisions.get(have.decision, 0) + 1
            assert have.features is not None and list(have.features) == names
    assert decisions[ALERT] >= 3 and decisions[OVER_BUDGET] >= 1  # the budget was exercised
    # the features themselves, exactly: recompute the reference's vectors in the same order
    check = FraudScorer(model, alerts_per_day=3)
    pos = 0
    for req in requests:
        for tx in req.transactions:
            x, _ = check.features.update(tx)
            assert np.array_equal(np.array(list(got[pos].features.values())), x), tx["transaction_id"]
            pos += 1


def test_a_retried_transaction_is_answered_not_applied_again(model: FraudModel, stream: pd.DataFrame,
                                                             state: Any) -> None:
    txs = stream.to_dict("records")[:30]
    served = FraudScorer(model, alerts_per_day=100)
    scorer = OnlineBatchScorer(state)
    first = scorer.score_requests(served, 1, [ScoreRequest(txs)])[0]
    again = scorer.score_requests(served, 1, [ScoreRequest(txs[:10]), ScoreRequest(txs[10:11] * 3)])
    replayed = [*again[0], *again[1]]
    assert all(r.replayed for r in replayed)
    assert [r.probability for r in replayed] == [r.probability for r in first[:10]] + [first[10].probability] * 3
    # the next new transaction of a card sees its history once, not twice
    reference = FraudScorer(model, alerts_per_day=100)
    for tx in txs:
        reference.score(tx)
    nxt = stream.to_dict("records")[30]
    got = scorer.score_requests(served, 1, [ScoreRequest([nxt], features=True)])[0][0]
    x, _ = reference.features.update(nxt)
    assert np.array_equal(np.array(list(got.features.values())), x)


def test_a_malformed_transaction_refuses_its_request_whole(model: FraudModel, stream: pd.DataFrame,
                                                           state: Any) -> None:
    txs = stream.to_dict("records")[:5]
    bad = dict(txs[2], amount=-3.0)
    served = FraudScorer(model, alerts_per_day=100)
    scorer = OnlineBatchScorer(state)
    out = scorer.score_requests(served, 1, [ScoreRequest(txs[:2]), ScoreRequest([txs[3], bad]),
                                            ScoreRequest(txs[4:5])])
    assert isinstance(out[1], InputValidationError) and "amount" in str(out[1])
    assert len(out[0]) == 2 and len(out[2]) == 1
    # nothing of the refused request was applied: txs[3] is new when sent again
    again = scorer.score_requests(served, 1, [ScoreRequest([txs[3]])])[0][0]
    assert not again.replayed


def test_two_workers_racing_on_the_same_cards_apply_each_transaction_once(model: FraudModel,
                                                                           stream: pd.DataFrame) -> None:
    """Two scorers (two connections, as two worker processes have) score transactions of 4 cards on
    one terminal at once. The terminal's list is the order the state applied them; replayed in that
    order, the in-process scorer gives every feature exactly and every probability."""
    prefix = f"trillium-test:{uuid.uuid4().hex}"
    a, b = _redis_state(prefix), _redis_state(prefix)
    try:
        txs = [dict(tx, terminal_id="T-shared") for tx in stream.to_dict("records")
               if tx["customer_id"] in set(stream["customer_id"].unique()[:4])][:240]
        served = FraudScorer(model, threshold=0.99)
        results: dict[Any, Any] = {}
        errors: list[BaseException] = []

        def work(scorer: OnlineBatchScorer, part: list[dict[str, Any]]) -> None:
            try:
                for i in range(0, len(part), 3):
                    for answer in scorer.score_requests(served, 1, [ScoreRequest([tx], features=True)
                                                                    for tx in part[i:i + 3]]):
                        for r in answer:
                            results[r.transaction_id] = r
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(OnlineBatchScorer(s), txs[k::2])) for k, s in ((0, a), (1, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert len(results) == len(txs) and not any(r.replayed for r in results.values())
        by_id = {str(tx["transaction_id"]): tx for tx in txs}
        # the terminal's history in the order it was applied
        of_hash = {tx_hash(i): i for i in by_id}
        applied = [of_hash[h] for h in a.terminal_hashes("T-shared")]
        assert sorted(applied) == sorted(by_id)  # each once
        reference = FraudScorer(model, threshold=0.99)
        for tx_id in applied:
            tx = by_id[tx_id]
            want = reference.score(tx)
            have = results[tx["transaction_id"]]
            np.testing.assert_allclose(have.probability, want.probability, rtol=1e-6, atol=1e-9)
        check = FraudScorer(model, threshold=0.99)
        for tx_id in applied:
            x, _ = check.features.update(by_id[tx_id])
            assert np.array_equal(np.array(list(results[by_id[tx_id]["transaction_id"]].features.values())), x)
    finally:
        a.clear()
