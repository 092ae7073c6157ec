"""``FraudScorer``: the public scoring API, real time and batch.

``score(tx)`` updates the online state with one transaction and returns its probability, the
decision and the top reasons; ``score_batch(frame)`` does the same for a whole frame with the
vectorized features (the card history is the frame's own, optionally after ``history``).

Decisions: ``threshold`` (alert when p >= threshold) or a daily alert budget
(``alerts_per_day``): the threshold is read off the model's out-of-sample score distribution
so that about that many transactions a day exceed it, and online at most that many alerts are
raised per calendar day (the rest above the threshold are marked ``over_budget``, so nothing
is hidden). Reasons come from TreeSHAP when the model has a tree member, else from captum
Integrated Gradients.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trillium.core.contract import Predictor
from trillium.core.errors import InputValidationError
from trillium.core.registry import ModelRef, ModelRegistry
from trillium.finance.features import FeatureTable, OnlineFeatures
from trillium.finance.fraud_model import FraudModel
from trillium.finance.reasons import Reason, top_reasons
from trillium.finance.records import (
    AMOUNT,
    CUSTOMER_ID,
    TERMINAL_ID,
    TIMESTAMP,
    TRANSACTION_ID,
)

log = logging.getLogger(__name__)

DOMAIN = "finance"
ALERT, PASS, OVER_BUDGET = "alert", "pass", "over_budget"
REASONS = ("alerts", "all", "none")  # which scored rows get reasons in batch


@dataclass(frozen=True)
class ScoreResult:
    transaction_id: Any
    probability: float
    decision: str
    threshold: float
    reasons: list[Reason] = field(default_factory=list)
    model: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"transaction_id": self.transaction_id, "probability": self.probability, "decision": self.decision,
                "threshold": self.threshold, "reasons": [r.as_dict() for r in self.reasons], "model": self.model}

    def to_rows(self) -> list[dict[str, Any]]:
        """One row, as a batch job's output has it (reasons as JSON text)."""
        row = self.as_dict()
        row["reasons"] = json.dumps(row["reasons"]) if self.reasons else ""
        return [row]


class FraudScorer(Predictor):
    """Score transactions with a trained ``FraudModel`` (the finance vertical's ``Predictor``).

    The decision step (``threshold``, or a daily budget read off the model's scores, and how many
    reasons) is set here, apart from the model, and travels with a batch job to its workers.

    Args:
        model: the trained model (``FraudScorer.from_registry`` loads the production one).
        threshold: alert when the probability reaches it; overrides ``alerts_per_day``.
        alerts_per_day: the daily alert budget (default 100, the handbook's CP@100 budget).
        state: the online feature store (in-process by default; ``RedisState`` to share).
        n_reasons: how many reasons to give per scored transaction.
        model_label: a name for the model in results ("fraud:v3").
    """

    def __init__(self, model: FraudModel, *, threshold: float | None = None, alerts_per_day: int | None = 100,
                 state: Any = None, n_reasons: int = 3, model_label: str = "", model_version_id: int | None = None
                 ) -> None:
        if threshold is None and (alerts_per_day is None or alerts_per_day < 1):
            raise InputValidationError(f"give a threshold or a daily alert budget >= 1 (alerts_per_day={alerts_per_day})")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise InputValidationError(f"threshold must be a probability in [0, 1], got {threshold}")
        self.model = model
        self.alerts_per_day = None if threshold is not None else int(alerts_per_day or 0)
        self.threshold = float(threshold) if threshold is not None else model.budget_threshold(self.alerts_per_day)
        self.features = OnlineFeatures(model.spec, state)
        self.n_reasons = n_reasons
        self.model_label = model_label or f"fraud ({model.kind})"
        self.model_version_id = model_version_id
        self._alerts_by_day: dict[Any, int] = {}
        self._horizon_days = model.spec.horizon_seconds / 86_400
        self.registry_ref: ModelRef | None = None  # where the model came from (Ray workers load it there)

    #: what a batch job's workers re-apply after loading the same version (``trillium.core.contract``)
    decision_fields = ("threshold", "n_reasons", "model_label", "model_version_id")

    @classmethod
    def from_registry(cls, name: str = "fraud", ref: int | str = "production", *,
                      registry: ModelRegistry | None = None, device: str | None = None, **kwargs: Any
                      ) -> FraudScorer:
        """Load a registered version; its torch members run on ``device`` (default: the
        ``TRILLIUM_DEVICE`` environment variable, else the CPU; ``trillium.core.runtime.inference_device``)."""
        registry = registry or ModelRegistry()
        model, record = FraudModel.load(registry, name, ref, device=device)
        kwargs.setdefault("model_label", f"{name}:v{record.version}")
        kwargs.setdefault("model_version_id", record.id)
        scorer = cls(model, **kwargs)
        scorer.registry_ref = ModelRef.of(registry, record)
        return scorer

    def runtimes(self) -> dict[str, Any]:
        """The core runtimes of the model's torch members (``seq``, ``mlp``); LightGBM has none."""
        return {name: m.runtime for name, m in self.model.members_.items() if m.runtime is not None}

    # ----------------------------------------------------------------- real time
    def score(self, tx: Mapping[str, Any], *, explain: bool | str = "alerts") -> ScoreResult:
        """Score one transaction (updating the card's and terminal's state).

        ``explain``: "alerts" (default) gives reasons for alerts and over-budget ones, the
        transactions an analyst reviews (TreeSHAP costs about 1 ms a row here, which every
        transaction need not pay); True for every transaction; False for none.
        """
        vector, seq = self.features.update(tx)
        x = vector[None, :]
        p = float(self.model.predict_proba(x, seq[None] if self.model.needs_sequence else None)[0])
        decision = PASS
        if p >= self.threshold:
            decision = ALERT
            if self.alerts_per_day is not None:
                day = pd.Timestamp(tx[TIMESTAMP]).date()
                used = self._alerts_by_day.get(day, 0)
                if used >= self.alerts_per_day:
                    decision = OVER_BUDGET
                else:
                    if len(self._alerts_by_day) > 60:
                        self._alerts_by_day = {day: used}
                    self._alerts_by_day[day] = used + 1
        reasons: list[Reason] = []
        if self.n_reasons and (explain is True or (explain == "alerts" and decision != PASS)):
            contrib, _ = self.model.contributions(x, seq[None] if self.model.needs_sequence else None)
            reasons = top_reasons(self.model.spec.names, vector, contrib[0], self.n_reasons, self._horizon_days)
        return ScoreResult(tx[TRANSACTION_ID], p, decision, self.threshold, reasons, self.model_label)

    def label(self, transaction_id: Any, fraud: bool) -> bool:
        """Tell the online state a transaction's true label (from an analyst)."""
        return self.features.label(transaction_id, fraud)

    # ----------------------------------------------------------------- batch
    def feature_table(self, frame: pd.DataFrame, history: pd.DataFrame | None = None) -> FeatureTable:
        """Features of ``frame``'s rows with ``history`` rows before them as context (scored
        nowhere); sequences are built on demand per slice, so a big batch never holds them all."""
        return FeatureTable.compute(frame, self.model.spec, sequences=self.model.needs_sequence, history=history)

    def features_for(self, frame: pd.DataFrame, history: pd.DataFrame | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """Features (and sequences) of all of ``frame``'s rows (see ``feature_table``)."""
        table = self.feature_table(frame, history)
        return table.rows(np.arange(len(frame)))

    def score_features(self, frame: pd.DataFrame, x: np.ndarray, seq: np.ndarray | None,
                       reasons: str = "alerts") -> pd.DataFrame:
        """Score precomputed features; ``reasons``: "alerts" (default), "all" or "none"."""
        if reasons not in REASONS:
            raise InputValidationError(f"reasons must be one of {', '.join(REASONS)}, got {reasons!r}")
        p = self.model.predict_proba(x, seq)
        decision = np.where(p >= self.threshold, ALERT, PASS)
        out = pd.DataFrame({
            TRANSACTION_ID: frame[TRANSACTION_ID].to_numpy(),
            TIMESTAMP: frame[TIMESTAMP].to_numpy(),
            CUSTOMER_ID: frame[CUSTOMER_ID].to_numpy() if CUSTOMER_ID in frame else None,
            TERMINAL_ID: frame[TERMINAL_ID].to_numpy() if TERMINAL_ID in frame else None,
            AMOUNT: frame[AMOUNT].to_numpy(),
            "probability": p,
            "decision": decision,
        })
        texts = np.full(len(out), "", dtype=object)
        which = np.arange(len(out)) if reasons == "all" else (
            np.flatnonzero(decision == ALERT) if reasons == "alerts" else np.zeros(0, np.int64))
        if len(which):
            contrib, _ = self.model.contributions(x[which], None if seq is None else seq[which])
            names = self.model.spec.names
            for row, i in enumerate(which):
                rs = top_reasons(names, x[i], contrib[row], self.n_reasons, self._horizon_days)
                texts[i] = json.dumps([r.as_dict() for r in rs])
        out["reasons"] = texts
        out["model"] = self.model_label
        return out

    def score_batch(self, frame: pd.DataFrame, *, history: pd.DataFrame | None = None,
                    reasons: str = "alerts") -> pd.DataFrame:
        """Score every row of a canonical frame (vectorized); one output row per input row."""
        x, seq = self.features_for(frame, history)
        return self.score_features(frame, x, seq, reasons)
