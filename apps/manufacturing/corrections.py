"""Operators' corrections of inspection verdicts, and the live performance they measure.

On a line an operator looks at some of the parts the inspector judged: the parts it rejected
(to scrap or rework them) and a sample of the ones it passed (an audit). Each look is a
correction record, ``defect`` or ``good``, stored in the shared ``feedback`` table against the
image's latest verdict (the prediction it judges) and audited with the operator. A newer record
for the same image supersedes the older (both are kept).

What that measures, per day of inspection and model version:

- **reject precision**: of the rejected parts an operator looked at, the share that were defects
  (a low value: good parts scrapped, the line's cost);
- **escape rate**: of the passed parts an operator looked at, the share that were defects (the
  defects that would ship, the customer's cost), with a Wilson 95 % interval, because an audit
  looks at few passed parts;
- how many verdicts were looked at, and how many were overturned.

No estimate is shown before corrections arrive: an anomaly score is not a calibrated probability,
so the CBPE-style estimate finance uses (``core.monitoring.performance``) would be a number with
no meaning here; the drift checks of the images are the early signal.
"""

from __future__ import annotations

import math

import pandas as pd
from sqlalchemy import select

from trillium.core.db import Database, Feedback, Prediction, connect
from trillium.core.errors import InputValidationError
from trillium.core.registry import ModelRegistry
from trillium.manufacturing.linestats import DEFECT, DOMAIN, GOOD, VERDICTS

COLUMNS = ["day", "version", "inspected", "reviewed", "overturned", "rejects_reviewed", "reject_precision",
           "passes_reviewed", "escapes", "escape_rate", "escape_rate_low", "escape_rate_high"]


def record_correction(image_id: str, verdict: str, *, operator: str, comment: str = "",
                      db: Database | None = None, origin: str | None = None) -> int:
    """Store an operator's verdict on an inspected image; returns the feedback id. The image
    must have been inspected (its latest verdict is what the correction judges). ``origin``:
    where the operator was (the dashboard's client address), kept in the audit row."""
    if verdict not in VERDICTS:
        raise InputValidationError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if not operator:
        raise InputValidationError("a correction needs the operator who made it")
    db = db or connect()
    entity = str(image_id)
    with db.session() as s:
        pred = s.execute(select(Prediction.id, Prediction.decision).where(
            Prediction.domain == DOMAIN, Prediction.entity_id == entity).order_by(Prediction.id.desc()).limit(1)
        ).first()
        if pred is None:
            raise InputValidationError(f"image {entity!r} has no stored inspection to correct")
        fb = Feedback(domain=DOMAIN, entity_id=entity, prediction_id=pred.id, label=verdict, analyst=operator,
                      comment=comment)
        s.add(fb)
        s.flush()
        fid = fb.id
    db.audit("manufacturing.correction", target=entity, actor=operator, verdict=verdict, was=pred.decision,
             feedback_id=fid, **({"origin": origin} if origin else {}))
    return fid


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def live_performance(db: Database | None = None, *, model_version_id: int | None = None) -> pd.DataFrame:
    """Per day of inspection (and model version id): reviews, reject precision and escape rate
    (see the module docstring). One verdict per image (its latest), one correction (its latest)."""
    db = db or connect()
    with db.session() as s:
        q = select(Prediction.id, Prediction.entity_id, Prediction.decision, Prediction.created_at,
                   Prediction.model_version_id).where(Prediction.domain == DOMAIN)
        if model_version_id is not None:
            q = q.where(Prediction.model_version_id == model_version_id)
        preds = pd.DataFrame(s.execute(q.order_by(Prediction.id)).all(),
                             columns=["id", "image", "verdict", "at", "version_id"])
        fbs = pd.DataFrame(s.execute(select(Feedback.prediction_id, Feedback.entity_id, Feedback.label)
                                     .where(Feedback.domain == DOMAIN).order_by(Feedback.id)).all(),
                           columns=["prediction_id", "image", "label"])
    if preds.empty:
        return pd.DataFrame(columns=COLUMNS)
    preds = preds.drop_duplicates("image", keep="last")
    latest = fbs.drop_duplicates("image", keep="last").set_index("image")
    preds["truth"] = preds["image"].map(latest["label"]) if len(latest) else None
    # a correction judges the verdict it was made against; a later re-inspection is unjudged
    judged = preds["image"].map(latest["prediction_id"]) if len(latest) else pd.Series(index=preds.index)
    preds.loc[judged.to_numpy() != preds["id"].to_numpy(), "truth"] = None
    preds["day"] = pd.to_datetime(preds["at"], utc=True).dt.strftime("%Y-%m-%d")
    out = []
    for (day, version), g in preds.groupby(["day", preds["version_id"].fillna(-1)], sort=True):
        rev = g[g["truth"].notna()]
        rejects, passes = rev[rev["verdict"] == DEFECT], rev[rev["verdict"] == GOOD]
        escapes = int((passes["truth"] == DEFECT).sum())
        lo, hi = _wilson(escapes, len(passes))
        out.append({
            "day": day, "version": None if version == -1 else int(version), "inspected": len(g),
            "reviewed": len(rev), "overturned": int((rev["truth"] != rev["verdict"]).sum()),
            "rejects_reviewed": len(rejects),
            "reject_precision": float((rejects["truth"] == DEFECT).mean()) if len(rejects) else None,
            "passes_reviewed": len(passes), "escapes": escapes,
            "escape_rate": escapes / len(passes) if len(passes) else None,
            "escape_rate_low": lo, "escape_rate_high": hi,
        })
    return pd.DataFrame(out, columns=COLUMNS)


def performance_for(model: str, registry: ModelRegistry | None = None, db: Database | None = None) -> pd.DataFrame:
    """The ``Vertical.monitoring`` hook: live performance of every version of ``model`` from
    operators' corrections (empty for models that are not inspectors)."""
    registry = registry or ModelRegistry(db)
    frames = []
    for rec in registry.list(model):
        if "detector_params" not in (rec.extra or {}):  # what Inspector.register stores
            continue
        perf = live_performance(db or registry.db, model_version_id=rec.id)
        if len(perf):
            frames.append(perf.assign(version=rec.version))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


__all__ = ["COLUMNS", "live_performance", "performance_for", "record_correction"]
