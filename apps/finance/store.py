"""The finance vertical's reads and writes: alerts, the analysts' queue and labels, scoring jobs.

Finance keeps its results in the shared tables (``predictions`` with ``domain="finance"``,
``feedback``, ``jobs``); every read and write of them goes through here, so the dashboard, the
CLI, the batch job and (later) the service share one way in and never query the ORM themselves.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from trillium.core.db import Database, Feedback, Job, ModelVersion, Prediction, connect
from trillium.core.errors import InputValidationError
from trillium.finance.fraud_model import KIND as MODEL_KIND
from trillium.finance.pipeline import ALERT, DOMAIN
from trillium.finance.records import AMOUNT, CUSTOMER_ID, FRAUD, GENUINE, TERMINAL_ID, TIMESTAMP, TRANSACTION_ID

if TYPE_CHECKING:
    from trillium.finance.pipeline import FraudScorer

#: scoring jobs are named ``finance-score:<input file name>`` (``batch.score_file``)
SCORE_JOB_PREFIX = "finance-score:"


def store_alerts(scored: pd.DataFrame, *, db: Database | None = None, job_id: int | None = None,
                 model_version_id: int | None = None) -> int:
    """Write the alerts of a scored frame to the predictions table. Idempotent per job: an
    alert the job already stored is left as it is (with any feedback linked to it), so
    running a finished or resumed job again stores only what is missing. Returns the number of
    the frame's alerts now in the database (stored before or now)."""
    db = db or connect()
    alerts = scored[scored["decision"] == ALERT]
    total = len(alerts)
    with db.session() as s:
        if job_id is not None:
            have = set(s.scalars(select(Prediction.entity_id).where(Prediction.domain == DOMAIN,
                                                                    Prediction.job_id == job_id)).all())
            alerts = alerts[~alerts[TRANSACTION_ID].astype(str).isin(have)]
        s.add_all(
            Prediction(
                domain=DOMAIN, entity_id=str(r[TRANSACTION_ID]), model_version_id=model_version_id, job_id=job_id,
                score=float(r["probability"]), decision=ALERT,
                details={
                    "customer_id": _text(r.get(CUSTOMER_ID)), "terminal_id": _text(r.get(TERMINAL_ID)),
                    "amount": float(r[AMOUNT]), "timestamp": pd.Timestamp(r[TIMESTAMP]).isoformat(),
                    "reasons": json.loads(r["reasons"]) if r.get("reasons") else [],
                    "model": r.get("model", ""),
                },
            )
            for r in alerts.to_dict("records")
        )
    return total


def _text(value: Any) -> str | None:
    """An id as text; None when the data has no such id (card-less data such as ULB)."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def alert_queue(*, db: Database | None = None, day: str | None = None, budget: int = 100,
                include_labelled: bool = False) -> pd.DataFrame:
    """The analyst's queue: alerts ordered by score, at most ``budget`` per day (the most
    suspicious first), already-labelled ones left out unless asked for. A transaction
    alerted by several jobs appears once (its latest alert)."""
    if budget < 1:
        raise InputValidationError(f"the alert budget must be >= 1 per day, got {budget}")
    db = db or connect()
    with db.session() as s:
        rows = s.execute(
            select(Prediction.id, Prediction.entity_id, Prediction.score, Prediction.details, Prediction.created_at)
            .where(Prediction.domain == DOMAIN, Prediction.decision == ALERT)
        ).all()
        labelled = dict(s.execute(select(Feedback.entity_id, Feedback.label).where(Feedback.domain == DOMAIN)
                                  .order_by(Feedback.id)).all())  # the latest label wins
    if not rows:
        return pd.DataFrame(columns=["prediction_id", TRANSACTION_ID, "score", "day", CUSTOMER_ID, AMOUNT, "label"])
    frame = pd.DataFrame([{
        "prediction_id": r.id, TRANSACTION_ID: r.entity_id, "score": r.score,
        TIMESTAMP: r.details.get("timestamp"), CUSTOMER_ID: r.details.get("customer_id"),
        TERMINAL_ID: r.details.get("terminal_id"), AMOUNT: r.details.get("amount"),
        "reasons": "; ".join(x["text"] for x in r.details.get("reasons", [])),
        "label": labelled.get(r.entity_id),
    } for r in rows])
    frame = frame.sort_values("prediction_id").drop_duplicates(TRANSACTION_ID, keep="last")
    frame["day"] = pd.to_datetime(frame[TIMESTAMP]).dt.date.astype(str)
    if day:
        frame = frame[frame["day"] == day]
    if not include_labelled:
        frame = frame[frame["label"].isna()]
    frame = frame.sort_values(["day", "score"], ascending=[True, False], kind="stable")
    return frame.groupby("day", sort=True).head(budget).reset_index(drop=True)


def record_feedback(transaction_id: Any, label: str, *, db: Database | None = None, analyst: str = "",
                    comment: str = "", scorer: FraudScorer | None = None) -> int:
    """Store an analyst's label (fraud / genuine) for a transaction; returns the feedback id.

    A newer label for the same transaction supersedes the older (both are kept for audit).
    If a live ``scorer`` is given, its online state learns the label too.
    """
    if label not in (FRAUD, GENUINE):
        raise InputValidationError(f"label must be {FRAUD!r} or {GENUINE!r}, got {label!r}")
    db = db or connect()
    entity = str(transaction_id)
    with db.session() as s:
        pred = s.scalar(select(Prediction.id).where(Prediction.domain == DOMAIN, Prediction.entity_id == entity)
                        .order_by(Prediction.id.desc()).limit(1))
        fb = Feedback(domain=DOMAIN, entity_id=entity, prediction_id=pred, label=label, analyst=analyst,
                      comment=comment)
        s.add(fb)
        s.flush()
        fid = fb.id
    db.audit("finance.feedback", target=entity, actor=analyst or None, label=label)
    if scorer is not None:
        scorer.label(transaction_id, label == FRAUD)
    return fid


def feedback_labels(db: Database | None = None) -> pd.Series:
    """The latest analyst label per transaction id (str) as 1 fraud / 0 genuine."""
    db = db or connect()
    with db.session() as s:
        rows = s.execute(select(Feedback.entity_id, Feedback.label).where(Feedback.domain == DOMAIN)
                         .order_by(Feedback.id)).all()
    latest: dict[str, int] = {}
    for entity, label in rows:
        latest[entity] = 1 if label == FRAUD else 0
    return pd.Series(latest, dtype="int64", name="label")


def latest_scoring_job(db: Database | None = None) -> Job | None:
    """The most recently finished scoring job (its ``output_uri`` holds every scored row)."""
    db = db or connect()
    with db.session() as s:
        return s.scalars(select(Job).where(Job.name.startswith(SCORE_JOB_PREFIX, autoescape=True),
                                           Job.status == "done")
                         .order_by(Job.updated_at.desc()).limit(1)).first()


def alert_details(prediction_id: int, db: Database | None = None) -> dict[str, Any]:
    """What was stored with one alert (card, terminal, amount, time, reasons, model)."""
    db = db or connect()
    with db.session() as s:
        pred = s.get(Prediction, int(prediction_id))
        return dict(pred.details) if pred is not None and pred.domain == DOMAIN else {}


def model_history(db: Database | None = None) -> pd.DataFrame:
    """Each registered fraud model version with its held-out metrics, oldest first."""
    db = db or connect()
    with db.session() as s:
        versions = s.scalars(select(ModelVersion).where(ModelVersion.kind == MODEL_KIND)
                             .order_by(ModelVersion.created_at)).all()
        return pd.DataFrame([{"version": v.version, "created": v.created_at,
                              **{k: v.metrics.get(k) for k in ("auc_roc", "average_precision",
                                                               "card_precision_at_100")}} for v in versions])
