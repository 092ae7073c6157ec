"""Finance's part of model monitoring: what the profile holds, the batch hook, live performance.

The core's ``trillium.core.monitoring`` compares columns; this module says which columns a fraud
model's inputs are (its feature vector, by the spec's names) and where its labels come from
(analyst feedback on stored alerts).

- ``reference_profile``: made by ``lifecycle.train_model`` on the held-out window's rows (the
  model never trained on them; their scores are out of sample), stored with the version;
- ``monitor_scored``: called by ``batch.score_file`` after each job: one run for the job and one
  per day of the data, each with the alert precision the calibrated scores expect;
- ``live_performance``: alert precision by day and CP@100 on labelled days, from the analysts'
  labels (``store.feedback_labels``), beside the estimate made before any label.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from trillium.core.db import Database, Prediction, connect
from trillium.core.errors import InputValidationError
from trillium.core.monitoring.profile import build_profile
from trillium.core.monitoring.store import check_batch
from trillium.core.registry import ModelRegistry
from trillium.finance.pipeline import ALERT, DOMAIN
from trillium.finance.records import TRANSACTION_ID
from trillium.finance.store import feedback_labels

if TYPE_CHECKING:
    from trillium.finance.fraud_model import FraudModel
    from trillium.finance.pipeline import FraudScorer

log = logging.getLogger(__name__)


def feature_frame(model: FraudModel, x: np.ndarray) -> pd.DataFrame:
    """The model's input vectors as a frame named by the spec (the profile's columns)."""
    return pd.DataFrame(np.asarray(x), columns=model.spec.names)


def reference_profile(model: FraudModel, x: np.ndarray, seq: np.ndarray | None, *,
                      meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The profile of held-out rows ``x`` (and ``seq``) and the model's out-of-sample scores on them."""
    p = model.predict_proba(x, seq)
    frame = feature_frame(model, x)
    calendar = [c for c in ("tx_during_weekend",) if c in frame.columns]
    return build_profile(frame, p, calendar=calendar, meta={"domain": DOMAIN, **(meta or {})})


def monitor_scored(scorer: FraudScorer, x: np.ndarray, probability: np.ndarray, decision: np.ndarray,
                   timestamps: np.ndarray, *, db: Database | None = None, job_id: int | None = None,
                   label: str = "") -> list[int]:
    """Check one scored batch against the scoring version's profile; returns the run ids (none
    for an unregistered scorer, which has no profile)."""
    ref = scorer.registry_ref
    if ref is None:
        log.info("unregistered scorer: no reference profile, drift not checked")
        return []
    registry = ref.registry()
    record = registry.get(ref.name, ref.version)
    return check_batch(registry, record, feature_frame(scorer.model, x), probability, db=db or registry.db,
                       job_id=job_id, label=label, days=timestamps, alerted=np.asarray(decision) == ALERT)


def monitor_batch(scorer: FraudScorer, frame: pd.DataFrame, *, history: pd.DataFrame | None = None,
                  label: str, db: Database | None = None) -> list[int]:
    """Score a canonical frame (with ``history`` as card context) and check it as one batch
    (scope ``batch``, no job): what the demo does with its shifted day."""
    ref = scorer.registry_ref
    if ref is None:
        raise InputValidationError("monitoring needs a registered scorer (FraudScorer.from_registry)")
    x, seq = scorer.features_for(frame, history)
    scored = scorer.score_features(frame, x, seq, reasons="none")
    registry = ref.registry()
    ts = pd.to_datetime(frame["timestamp"])
    return check_batch(registry, registry.get(ref.name, ref.version), feature_frame(scorer.model, x),
                       scored["probability"].to_numpy(), db=db or registry.db, label=label, scope="batch",
                       alerted=scored["decision"].to_numpy() == ALERT,
                       one_day=len(ts) > 0 and ts.dt.normalize().nunique() == 1)


def live_performance(db: Database | None = None, *, model_version_id: int | None = None,
                     k: int = 100) -> pd.DataFrame:
    """Per day of stored alerts: how many, how many labelled, the realised alert precision
    among the labelled, the precision the scores expected, and CP@k on days whose top-k cards
    are all labelled (the handbook's card precision; a card counts once, at its best score).
    """
    db = db or connect()
    with db.session() as s:
        q = select(Prediction.entity_id, Prediction.score, Prediction.details).where(
            Prediction.domain == DOMAIN, Prediction.decision == ALERT)
        if model_version_id is not None:
            q = q.where(Prediction.model_version_id == model_version_id)
        rows = s.execute(q.order_by(Prediction.id)).all()
    cols = ["day", "alerts", "labelled", "frauds", "precision", "estimated_precision", "standard_error",
            "cards_top_k", "cards_labelled", f"cp_at_{k}"]
    if not rows:
        return pd.DataFrame(columns=cols)
    frame = pd.DataFrame({TRANSACTION_ID: [r.entity_id for r in rows], "score": [r.score for r in rows],
                          "card": [(r.details or {}).get("customer_id") for r in rows],
                          "day": [str((r.details or {}).get("timestamp", ""))[:10] for r in rows]})
    frame = frame.drop_duplicates(TRANSACTION_ID, keep="last")
    labels = feedback_labels(db)
    frame["label"] = labels.reindex(frame[TRANSACTION_ID].astype(str)).to_numpy()
    out = []
    for day, g in frame.groupby("day", sort=True):
        lab = g["label"].dropna()
        p = g["score"].to_numpy(float)
        cards = g.dropna(subset=["card"]).groupby("card").agg(score=("score", "max"), label=("label", "max"))
        top = cards.sort_values("score", ascending=False, kind="stable").head(k)
        all_labelled = len(top) > 0 and top["label"].notna().all()
        out.append({
            "day": day, "alerts": len(g), "labelled": len(lab), "frauds": int(lab.sum()),
            "precision": float(lab.mean()) if len(lab) else None,
            "estimated_precision": float(p.mean()),
            "standard_error": float(np.sqrt(np.sum(p * (1 - p))) / len(p)),
            "cards_top_k": len(top), "cards_labelled": int(top["label"].notna().sum()),
            f"cp_at_{k}": float((top["label"] == 1).sum() / k) if all_labelled else None,
        })
    return pd.DataFrame(out, columns=cols)


def performance_for(model: str, registry: ModelRegistry | None = None, db: Database | None = None
                    ) -> pd.DataFrame:
    """The ``Vertical.monitoring`` hook: live performance of every version of ``model`` (empty for
    models that are not fraud models)."""
    from trillium.finance.fraud_model import KIND

    registry = registry or ModelRegistry(db)
    versions = [r for r in registry.list(model) if r.kind == KIND]
    frames = []
    for rec in versions:
        perf = live_performance(db or registry.db, model_version_id=rec.id)
        if len(perf):
            frames.append(perf.assign(version=rec.version))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


__all__ = ["feature_frame", "live_performance", "monitor_batch", "monitor_scored", "performance_for", "reference_profile"]
