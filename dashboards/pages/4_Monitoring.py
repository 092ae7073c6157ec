"""Monitoring: per model, drift over time, the columns that moved, data quality, performance, alerts.

Thin over ``trillium.core.monitoring`` (``report.build_report``, ``store.acknowledge``): the page
draws the same report ``trillium monitor report`` prints and computes nothing of its own.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from trillium.core import db as dbmod
from trillium.core.config import database_url
from trillium.core.errors import TrilliumError

st.set_page_config(page_title="Trillium · Monitoring", layout="wide")

from trillium.dashboards.access import require

user = require()  # every logged-in user; acknowledging an alert needs a field's write scope or admin
st.title("Monitoring: drift, data quality, performance")


@st.cache_resource
def database(url: str) -> dbmod.Database:
    return dbmod.connect(url)


try:
    db = database(database_url())
except TrilliumError as exc:
    st.error(f"The database is not reachable: {exc}")
    st.stop()

from trillium.core.monitoring import store
from trillium.core.monitoring.report import build_report

models = store.monitored_models(db)
if not models:
    st.info("No monitoring runs yet. Every batch job of a model registered with a reference profile is "
            "checked for drift and data quality (run `trillium demo`, or score a file).")
    st.stop()

model = st.sidebar.selectbox("Model", models, key="model")
since = st.sidebar.date_input("Since", value=None, key="since")
try:
    rep = build_report(model, since=None if since is None else str(since), db=db)
except TrilliumError as exc:
    st.error(str(exc))
    st.stop()

timeline = pd.DataFrame(rep["timeline"])
open_alerts = [a for a in rep["alerts"] if not a["acknowledged"]]
latest = rep["timeline"][-1] if rep["timeline"] else None
cols = st.columns(4)
cols[0].metric("runs", rep["runs"])
cols[1].metric("latest status", latest["status"] if latest else "-")
cols[2].metric("open alerts", len(open_alerts))
est = (latest or {}).get("performance", {}).get("estimated_precision")
cols[3].metric("estimated alert precision (latest run)",
               "-" if est is None else f"{est:.3f} ± {latest['performance']['standard_error']:.3f}")

tab_drift, tab_quality, tab_perf, tab_alerts = st.tabs(["Drift over time", "Data quality", "Performance", "Alerts"])

with tab_drift:
    if timeline.empty:
        st.info("No run in this period.")
    else:
        finer = timeline[timeline["scope"] != "job"]  # days and single batches; a job's own run repeats them
        shown = finer if len(finer) else timeline
        x = shown["day"].fillna(shown["label"].where(shown["label"] != "", shown["created_at"].str[:19]))
        chart = pd.DataFrame({"largest PSI of a column": shown["max_psi"].to_numpy(),
                              "PSI of the score": shown["score_psi"].astype(float).to_numpy()}, index=x.to_numpy())
        st.caption("PSI per run (per day of data where the job gave one, and per checked batch): 0.1 is "
                   "watch, 0.25 is act; a PSI counts only with a significant test (small batches are noisy).")
        st.line_chart(chart)
        st.subheader("Columns that moved")
        moved = pd.DataFrame(rep["moved_columns"])
        st.dataframe(moved[["column", "runs_drifted", "max_psi", "last_psi"]], hide_index=True,
                     use_container_width=True, key="moved")
        st.subheader("Runs")
        st.dataframe(timeline[["run_id", "version", "scope", "day", "label", "rows", "status", "max_psi", "score_psi"]]
                     .assign(drifted=timeline["drifted"].map(", ".join)),
                     hide_index=True, use_container_width=True, key="runs")

with tab_quality:
    moved = pd.DataFrame(rep["moved_columns"])
    quality = moved[["column", "max_missing", "max_out_of_range", "max_unseen"]] if len(moved) else moved
    st.caption("The largest share per column over the runs shown: missing values, values outside the "
               "reference range, values in categories the reference never saw.")
    st.dataframe(quality, hide_index=True, use_container_width=True, key="quality")

with tab_perf:
    perf = pd.DataFrame([{"run": r["day"] or r["label"], "scope": r["scope"], **(r["performance"] or {})}
                         for r in rep["timeline"]])
    if "estimated_precision" in perf:
        st.caption("Before labels: the alert precision the calibrated scores expect (mean probability of the "
                   "alerted rows) with its standard error.")
        st.dataframe(perf, hide_index=True, use_container_width=True, key="estimated")
    live = pd.DataFrame(rep["live_performance"])
    st.subheader("From labels")
    if live.empty:
        st.info("No labels yet: analysts' labels of a fraud model's alerts, operators' corrections of an "
                "inspector's verdicts (`trillium manufacturing correct`).")
    else:
        st.dataframe(live, hide_index=True, use_container_width=True, key="live")

with tab_alerts:
    if not rep["alerts"]:
        st.success("No alert: every rule is within its threshold.")
    else:
        frame = pd.DataFrame(rep["alerts"])
        st.dataframe(frame[["alert_id", "severity", "rule", "feature", "value", "threshold", "message",
                            "acknowledged"]], hide_index=True, use_container_width=True, key="alerts")
        if open_alerts and (user.is_admin or any(sc.endswith(":write") for sc in user.scopes)):
            pick = st.selectbox("Alert", [a["alert_id"] for a in open_alerts], key="ack_id",
                                format_func=lambda i: next(a["message"] for a in open_alerts if a["alert_id"] == i))
            if st.button("Acknowledge", key="ack"):
                store.acknowledge(int(pick), by=user.name, db=db)
                db.audit("monitoring.alert.acknowledge", target=str(pick), actor=user.name, model=model)
                st.rerun()
