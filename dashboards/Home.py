"""Trillium's Streamlit dashboard: the home page (database, models, recent jobs).

Thin over the database and the domain APIs: nothing here computes what the APIs do not
expose. Domain pages are added under ``pages/`` by each vertical.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlalchemy import func, select

from trillium.core import db as dbmod
from trillium.core.config import database_url
from trillium.core.errors import TrilliumError

st.set_page_config(page_title="Trillium", layout="wide")

from trillium.dashboards.access import require

user = require()  # everyone may see the home page, once logged in


@st.cache_resource
def database(url: str) -> dbmod.Database:
    """One engine per URL for the whole server (keyed by URL so a changed setting is seen)."""
    return dbmod.connect(url)


st.title("Trillium")
st.caption("Fraud scoring, chest-CT and record analysis, visual inspection — on one measured core.")

try:
    d = database(database_url())
except TrilliumError as exc:
    st.error(f"The database is not reachable: {exc}")
    st.stop()

with d.session() as s:
    counts = {
        "model versions": s.scalar(select(func.count()).select_from(dbmod.ModelVersion)),
        "jobs": s.scalar(select(func.count()).select_from(dbmod.Job)),
        "predictions": s.scalar(select(func.count()).select_from(dbmod.Prediction)),
        "feedback labels": s.scalar(select(func.count()).select_from(dbmod.Feedback)),
    }
    models = s.scalars(select(dbmod.ModelVersion).order_by(dbmod.ModelVersion.created_at.desc()).limit(20)).all()
    model_rows = [
        {"name": m.name, "version": m.version, "kind": m.kind,
         "backend (1 row)": m.autotune.get("choice", {}).get("1", "-"), "metrics": m.metrics}
        for m in models
    ]
    jobs = s.scalars(select(dbmod.Job).order_by(dbmod.Job.updated_at.desc()).limit(20)).all()
    job_rows = [
        {"job": j.name, "status": j.status, "rows in": j.rows_in, "rows out": j.rows_out,
         "quarantined": j.rows_quarantined, "chunks": j.chunks_done, "updated": j.updated_at}
        for j in jobs
    ]

st.caption(f"Database: {d.safe_url}")
cols = st.columns(len(counts))
for col, (label, value) in zip(cols, counts.items()):
    col.metric(label, value or 0)

st.subheader("Models")
if model_rows:
    st.dataframe(pd.DataFrame(model_rows), hide_index=True, use_container_width=True)
else:
    st.info("No model registered yet. Run `trillium demo` (or `make demo`) to create one.")

st.subheader("Batch jobs")
if job_rows:
    st.dataframe(pd.DataFrame(job_rows), hide_index=True, use_container_width=True)
else:
    st.info("No batch job has run yet.")

# Open monitoring alerts (drift, data quality): the latest few, in text so the page's tables stay
# the registry's and the jobs'; the Monitoring page has the rest.
from trillium.core.monitoring.store import alerts as monitoring_alerts

recent = monitoring_alerts(db=d, open_only=True, limit=5)
if len(recent):
    st.subheader("Monitoring alerts")
    for a in recent.itertuples():
        (st.error if a.severity == "act" else st.warning)(f"{a.model} v{a.version} · {a.rule}: {a.message}")
    st.caption("All alerts, drift over time and performance: the Monitoring page.")

if user.is_admin:
    from trillium.dashboards.admin import admin_section

    admin_section(d, user)
