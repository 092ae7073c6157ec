"""What ``trillium monitor report`` prints and the dashboard's Monitoring page draws.

One dict per model: its runs (drift over time), the columns that moved and how often, data
quality, performance (estimated from the scores per run; realised from labels where the model's
vertical supplies them through ``Vertical.monitoring``), and its alerts.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pandas as pd

from trillium.core.db import Database, connect
from trillium.core.errors import InputValidationError
from trillium.core.monitoring import store
from trillium.core.verticals import load_ref, verticals

log = logging.getLogger(__name__)


def live_performance(model: str, db: Database | None = None) -> pd.DataFrame:
    """Realised performance from labels, from whichever vertical knows the model (empty if none)."""
    frames = []
    for v in verticals():
        if v.monitoring:
            perf = load_ref(v.monitoring)(model, db=db)
            if perf is not None and len(perf):
                frames.append(perf.assign(domain=v.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def moved_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """Per column (and the score): in how many runs it drifted, its largest and latest PSI."""
    rows = []
    for r in runs.itertuples():
        cols = list(r.columns) + ([r.score] if r.score else [])
        for c in cols:
            rows.append({"column": "score" if c["name"] == "__score__" else c["name"], "run_id": r.run_id,
                         "psi": c.get("psi") or 0.0, "drifted": bool(c.get("drifted")),
                         "missing": c.get("missing") or 0.0, "out_of_range": c.get("out_of_range") or 0.0,
                         "unseen": c.get("unseen") or 0.0})
    if not rows:
        return pd.DataFrame(columns=["column", "runs_drifted", "max_psi", "last_psi", "max_missing",
                                     "max_out_of_range", "max_unseen"])
    df = pd.DataFrame(rows).sort_values("run_id")
    out = df.groupby("column").agg(runs_drifted=("drifted", "sum"), max_psi=("psi", "max"), last_psi=("psi", "last"),
                                   max_missing=("missing", "max"), max_out_of_range=("out_of_range", "max"),
                                   max_unseen=("unseen", "max")).reset_index()
    return out.sort_values(["runs_drifted", "max_psi"], ascending=False, kind="stable").reset_index(drop=True)


def build_report(model: str, *, since: str | datetime | None = None, db: Database | None = None) -> dict[str, Any]:
    """The monitoring report of ``model``; an unknown model is an error naming the known ones."""
    db = db or connect()
    known = store.monitored_models(db)
    if model not in known:
        raise InputValidationError(f"--model {model!r} has no monitoring runs (monitored models: "
                                   f"{', '.join(known) or 'none yet; run a batch job first'})")
    runs = store.runs(model, since=since, db=db)
    alerts = store.alerts(model, since=since, db=db)
    moved = moved_columns(runs)
    perf = live_performance(model, db)
    timeline = [{
        "run_id": int(r.run_id), "version": int(r.version), "scope": r.scope, "day": None if pd.isna(r.day) else str(r.day),
        "job_id": None if pd.isna(r.job_id) else int(r.job_id), "label": r.label,
        "created_at": pd.Timestamp(r.created_at).isoformat(), "rows": int(r.rows), "status": r.status,
        "max_psi": float(r.max_psi), "score_psi": None if pd.isna(r.score_psi) else float(r.score_psi),
        "drifted": [c["name"] for c in r.columns if c.get("drifted")] + (["score"] if (r.score or {}).get("drifted")
                                                                           else []),
        "quality": {c["name"]: {k: c[k] for k in ("missing", "out_of_range", "unseen") if c.get(k)}
                    for c in r.columns if any(c.get(k) for k in ("missing", "out_of_range", "unseen"))},
        "performance": r.performance,
    } for r in runs.itertuples()]
    return {
        "model": model, "since": None if since is None else str(since),
        "runs": len(timeline), "status_counts": runs["status"].value_counts().to_dict() if len(runs) else {},
        "timeline": timeline,
        "moved_columns": moved.to_dict("records"),
        "alerts": [{**a, "created_at": pd.Timestamp(a["created_at"]).isoformat(),
                    "job_id": None if pd.isna(a["job_id"]) else int(a["job_id"])}
                   for a in alerts.to_dict("records")],
        "live_performance": perf.to_dict("records"),
    }


__all__ = ["build_report", "live_performance", "moved_columns"]
