"""Real-time scoring for the HTTP service: many requests, one model call, state applied once.

The service's dynamic batcher hands ``OnlineBatchScorer.score_requests`` every request that
arrived within a millisecond or so (each one transaction or a list). The transactions are scored
in *waves*: a wave is the longest run of the arrival order with no card or terminal twice, so their
histories are loaded together (two Redis round trips for the whole wave), their features computed, the model
called once on the stacked rows, reasons computed for the alerts in one call, and the wave
committed in one round trip. A transaction whose card or terminal appears earlier in the wave
starts the next one, so every transaction sees the ones before it, in the order they came, and
the day's alerts are counted in that order too:
the features equal ``FraudScorer.score`` fed the same transactions in the order the state
applied them (``tests/service/test_service_finance.py`` checks every feature and score).

State, by deployment:

- ``RedisState`` (several workers): the commit is atomic and conditional (see its module doc);
  a transaction that lost a race with another worker goes back into the next wave;
- ``LocalState`` (one worker): ``InMemoryState`` plus the same contract (stored results, daily
  alert counts), with no races since one thread applies every batch.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trillium.core.errors import InputValidationError
from trillium.finance.features import (
    InMemoryState,
    OnlineTransaction,
    calendar_vector,
    online_vector,
    parse_online,
)
from trillium.finance.online_state import Commit, LoadedState
from trillium.finance.pipeline import ALERT, OVER_BUDGET, PASS, FraudScorer
from trillium.finance.reasons import top_reasons

__all__ = ["LocalState", "OnlineBatchScorer", "ScoreRequest", "ScoredTransaction"]

log = logging.getLogger(__name__)


@dataclass
class ScoreRequest:
    """One HTTP request's transactions and options (the batcher's item)."""

    transactions: list[dict[str, Any]]
    explain: bool = False
    features: bool = False


@dataclass
class ScoredTransaction:
    """The answer for one transaction (``replayed``: its id was scored before; the stored answer)."""

    transaction_id: Any
    probability: float
    decision: str
    threshold: float
    reasons: list[dict[str, Any]]
    model: str
    model_version: int | None
    features: dict[str, float] | None = None
    replayed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"transaction_id": self.transaction_id, "probability": self.probability, "decision": self.decision,
                "threshold": self.threshold, "reasons": self.reasons, "model": self.model,
                "model_version": self.model_version, "features": self.features, "replayed": self.replayed}


class LocalState:
    """``InMemoryState`` with the commit contract of ``RedisState`` (one worker, one writer thread)."""

    def __init__(self, state: InMemoryState | None = None, max_results: int = 200_000) -> None:
        self.state = state or InMemoryState()
        self.results: OrderedDict[str, bytes] = OrderedDict()
        self.max_results = max_results
        self.alerts: dict[int, int] = {}

    def load_many(self, items: list[tuple[Any, Any, Any, int, int]], seq_width: int = 0) -> list[LoadedState]:
        out = []
        for card_id, terminal_id, tx_id, cutoff, _ in items:
            card, term = self.state.load(card_id, terminal_id, cutoff)
            out.append(LoadedState(card, term, b"0", b"0", 0, 0, self.results.get(str(tx_id))))
        return out

    def commit_many(self, commits: list[Commit]) -> list[tuple[str, bytes]]:
        out = []
        for c in commits:
            key = str(c.tx_id)
            if key in self.results:
                out.append(("dup", self.results[key]))
                continue
            self.state.append(c.card_id, c.terminal_id, c.tx_id, c.sec, c.cents, c.fraud, c.vector, c.seq_len)
            decision = PASS
            if c.alert:
                decision = ALERT
                if c.budget is not None:
                    day = c.sec // 86_400
                    self.alerts[day] = used = self.alerts.get(day, 0) + 1
                    if len(self.alerts) > 60:
                        self.alerts = {day: used}
                    if used > c.budget:
                        decision = OVER_BUDGET
            stored = f"{decision}|{c.result_json}".encode()
            self.results[key] = stored
            if len(self.results) > self.max_results:
                self.results.popitem(last=False)
            out.append(("ok", stored))
        return out

    def set_label(self, tx_id: Any, fraud: bool) -> bool:
        return self.state.set_label(tx_id, fraud)


@dataclass
class _Pending:
    request: int
    position: int
    tx: OnlineTransaction
    attempts: int = 0
    vector: np.ndarray | None = field(default=None, repr=False)


class OnlineBatchScorer:
    """Score batches of requests against a shared online state (see the module doc).

    ``state``: ``RedisState`` or ``LocalState``. ``max_attempts``: how often a transaction that
    keeps losing races is retried before its request fails (each retry reloads its histories).
    """

    def __init__(self, state: Any, *, max_attempts: int = 50, observer: Any = None) -> None:
        self.state = state
        self.max_attempts = max_attempts
        # called with (version, x, probabilities, alerted, seconds) of the rows scored and applied
        # once (not replays): what ``online_monitoring.OnlineDayCollector.observe`` samples
        self.observer = observer

    def score_requests(self, scorer: FraudScorer, version: int | None,
                       requests: list[ScoreRequest]) -> list[list[ScoredTransaction] | Exception]:
        """One list of answers per request, in its transactions' order; a request with a
        malformed transaction gets the ``InputValidationError`` (its other transactions are not
        applied: it is refused whole, before anything is written)."""
        spec = scorer.model.spec
        answers: list[list[ScoredTransaction | None] | Exception] = []
        pending: deque[_Pending] = deque()
        for r, req in enumerate(requests):
            try:
                parsed = [parse_online(spec, tx) for tx in req.transactions]
            except InputValidationError as exc:
                answers.append(exc)
                continue
            answers.append([None] * len(parsed))
            pending.extend(_Pending(r, i, p) for i, p in enumerate(parsed))
        while pending:
            wave, pending = self._next_wave(pending)
            retry = self._score_wave(scorer, version, requests, wave, answers)
            if retry:
                pending = deque([*retry, *pending])
        return [a if isinstance(a, Exception) else [x for x in a if x is not None] for a in answers]

    @staticmethod
    def _next_wave(pending: deque[_Pending]) -> tuple[list[_Pending], deque[_Pending]]:
        """The longest prefix of ``pending`` with no card or terminal twice: applying it at once is
        applying it in order, so commits (and the day's alert count) follow the arrival order."""
        cards: set[Any] = set()
        terminals: set[Any] = set()
        wave: list[_Pending] = []
        while pending:
            p = pending[0]
            c, t = p.tx.card_id, p.tx.terminal_id
            if c in cards or t in terminals:
                break
            wave.append(pending.popleft())
            cards.add(c)
            terminals.add(t)
        return wave, pending

    def _score_wave(self, scorer: FraudScorer, version: int | None, requests: list[ScoreRequest],
                    wave: list[_Pending], answers: list[Any]) -> list[_Pending]:
        spec = scorer.model.spec
        model = scorer.model
        names = spec.names
        horizon_days = spec.horizon_seconds / 86_400
        if not spec.card_history:  # nothing to load or apply: score and answer
            vectors = [calendar_vector(spec, p.tx) for p in wave]
            x = np.stack([v for v, _ in vectors])
            probs = model.predict_proba(x, None)
            if self.observer is not None:
                self.observer(version, x, probs, probs >= scorer.threshold, np.array([p.tx.sec for p in wave]))
            for i, p in enumerate(wave):
                decision = ALERT if probs[i] >= scorer.threshold else PASS
                answers[p.request][p.position] = self._answer(
                    scorer, version, requests[p.request], p.tx.tx_id, float(probs[i]), decision, x[i], None,
                    names, horizon_days)
            return []
        delay = spec.delay_days * 86_400
        loaded = self.state.load_many([(p.tx.card_id, p.tx.terminal_id, p.tx.tx_id, p.tx.sec - spec.horizon_seconds,
                                        p.tx.sec - delay) for p in wave],
                                      len(spec.seq_indices) if model.needs_sequence else 0)
        fresh = []
        for p, ld in zip(wave, loaded, strict=True):
            if ld.stored is not None:
                answers[p.request][p.position] = _replayed(ld.stored, requests[p.request].features)
            else:
                fresh.append((p, ld))
        if not fresh:
            return []
        rows = [online_vector(spec, p.tx.sec, p.tx.amount, p.tx.cents, ld.card, ld.terminal, p.tx.extra,
                              model.needs_sequence) for p, ld in fresh]
        x = np.stack([v for v, _ in rows])
        seq = np.stack([s for _, s in rows]) if model.needs_sequence else None
        probs = model.predict_proba(x, seq)
        alert = probs >= scorer.threshold
        reasons: dict[int, list[dict[str, Any]]] = {}
        want = [i for i, (p, _) in enumerate(fresh)
                if scorer.n_reasons and (alert[i] or requests[p.request].explain)]
        if want:
            contrib, _ = model.contributions(x[want], None if seq is None else seq[want])
            for row, i in enumerate(want):
                rs = top_reasons(names, x[i], contrib[row], scorer.n_reasons, horizon_days)
                reasons[i] = [r.as_dict() for r in rs]
        seq_idx = np.asarray(spec.seq_indices)
        commits = []
        for i, (p, ld) in enumerate(fresh):
            result = {"transaction_id": p.tx.tx_id, "probability": float(probs[i]), "threshold": scorer.threshold,
                      "reasons": reasons.get(i, []), "model": scorer.model_label, "model_version": version}
            commits.append(Commit(p.tx.card_id, p.tx.terminal_id, p.tx.tx_id, p.tx.sec, p.tx.cents, p.tx.fraud,
                                  x[i][seq_idx], spec.seq_len, ld, bool(alert[i]), scorer.alerts_per_day,
                                  json.dumps(result, separators=(",", ":"))))
        retry = []
        applied: list[int] = []
        for i, ((p, _), (status, stored)) in enumerate(zip(fresh, self.state.commit_many(commits), strict=True)):
            if status == "retry":
                p.attempts += 1
                if p.attempts >= self.max_attempts:
                    answers[p.request] = InputValidationError(
                        f"transaction {p.tx.tx_id!r}: its card or terminal kept changing under "
                        f"{self.max_attempts} attempts; retry the request")
                    continue
                retry.append(p)
                continue
            want_features = requests[p.request].features
            if status == "dup":
                answers[p.request][p.position] = _replayed(stored, want_features)
                continue
            decision, _, _ = stored.partition(b"|")
            applied.append(i)
            answers[p.request][p.position] = ScoredTransaction(
                p.tx.tx_id, float(probs[i]), decision.decode(), scorer.threshold, reasons.get(i, []),
                scorer.model_label, version, dict(zip(names, map(float, x[i]), strict=True)) if want_features else None)
        if self.observer is not None and applied:
            self.observer(version, x[applied], probs[applied], alert[applied],
                          np.array([fresh[i][0].tx.sec for i in applied]))
        return [p for p in retry if not isinstance(answers[p.request], Exception)]

    @staticmethod
    def _answer(scorer: FraudScorer, version: int | None, req: ScoreRequest, tx_id: Any, p: float, decision: str,
                x: np.ndarray, seq: np.ndarray | None, names: list[str], horizon_days: float) -> ScoredTransaction:
        reasons: list[dict[str, Any]] = []
        if scorer.n_reasons and (decision != PASS or req.explain):
            contrib, _ = scorer.model.contributions(x[None], None if seq is None else seq[None])
            reasons = [r.as_dict() for r in top_reasons(names, x, contrib[0], scorer.n_reasons, horizon_days)]
        feats = dict(zip(names, map(float, x), strict=True)) if req.features else None
        return ScoredTransaction(tx_id, p, decision, scorer.threshold, reasons, scorer.model_label, version, feats)


def _replayed(stored: bytes, _want_features: bool) -> ScoredTransaction:
    """The answer stored when this transaction id was first applied (its features are not kept)."""
    decision, _, body = stored.partition(b"|")
    r = json.loads(body)
    return ScoredTransaction(r["transaction_id"], r["probability"], decision.decode(), r["threshold"], r["reasons"],
                             r["model"], r.get("model_version"), None, replayed=True)
