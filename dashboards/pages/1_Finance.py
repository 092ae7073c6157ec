"""Finance: the analysts' alert queue, a transaction's reasons, labels, KPIs, threshold what-if.

Thin over ``trillium.finance`` (``alert_queue``, ``record_feedback``, ``read_scores``) and the
database: the page computes nothing the API does not expose. Heavy reads (a scoring job's
output) are cached per job; labelling writes through ``record_feedback`` (audited).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from trillium.core import db as dbmod
from trillium.core.config import database_url
from trillium.core.errors import TrilliumError

st.set_page_config(page_title="Trillium · Finance", layout="wide")

from trillium.dashboards.access import audit_view, origin, require

user = require("finance:read")
st.title("Finance: fraud alerts")


@st.cache_resource
def database(url: str) -> dbmod.Database:
    return dbmod.connect(url)


@st.cache_data(show_spinner="reading the scoring job's output")
def job_scores(output_uri: str, updated: str) -> pd.DataFrame:
    """All scores of a finished scoring job (cached per job and its last update)."""
    from trillium.finance.batch import read_scores

    return read_scores(output_uri)


try:
    db = database(database_url())
except TrilliumError as exc:
    st.error(f"The database is not reachable: {exc}")
    st.stop()

from trillium.finance.records import FRAUD, GENUINE
from trillium.finance.store import alert_details, alert_queue, latest_scoring_job, model_history, record_feedback

budget = st.sidebar.number_input("Alert budget per day", min_value=1, max_value=10_000, value=100, step=10)
show_labelled = st.sidebar.checkbox("Show labelled alerts", value=False)

queue = alert_queue(db=db, budget=int(budget), include_labelled=show_labelled)
if queue.empty:
    st.info("No finance alerts yet. Score transactions with `trillium finance score` "
            "(or run `trillium demo`) and they appear here, most suspicious first.")
    st.stop()

days = sorted(queue["day"].unique(), reverse=True)
day = st.sidebar.selectbox("Day", ["all days", *days])
shown = queue if day == "all days" else queue[queue["day"] == day]

tab_queue, tab_kpi, tab_whatif = st.tabs(["Alert queue", "KPIs over time", "Threshold what-if"])

with tab_queue:
    st.caption(f"{len(shown):,} alerts awaiting review (at most {budget} a day, highest scores first)")
    st.dataframe(shown[["day", "transaction_id", "score", "customer_id", "amount", "reasons", "label"]],
                 hide_index=True, use_container_width=True)
    choice = st.selectbox("Transaction", shown["transaction_id"].tolist(), key="alert_choice")
    row = shown[shown["transaction_id"] == choice].iloc[0]
    details = alert_details(int(row["prediction_id"]), db=db)
    audit_view(user, "finance.alert.view", str(choice), customer=str(row["customer_id"]))
    left, right = st.columns([3, 2])
    with left:
        st.subheader(f"Transaction {choice}")
        st.write(f"**Score** {row['score']:.3f} · **card** {row['customer_id']} · **terminal** "
                 f"{details.get('terminal_id')} · **amount** {float(row['amount']):,.2f} · {details.get('timestamp')}")
        reasons = pd.DataFrame(details.get("reasons", []))
        if not reasons.empty:
            st.caption("Why: each reason's contribution to the fraud log-odds")
            st.bar_chart(reasons.set_index("text")["contribution"], horizontal=True)
            st.markdown("\n".join(f"- {t}" for t in reasons["text"]))
        else:
            st.caption("No reasons stored for this alert.")
    with right:
        st.subheader("Label")
        if not user.allows("finance:write"):
            st.caption(f"Labelling needs the finance:write scope (fraud_analyst); {user.name} may only read.")
        else:
            comment = st.text_input("Comment", key="comment")
            b1, b2 = st.columns(2)
            for col, label in ((b1, FRAUD), (b2, GENUINE)):
                if col.button(f"Mark {label}", key=f"label_{label}", use_container_width=True):
                    try:  # the label carries the logged-in user; record_feedback audits it (finance.feedback)
                        fid = record_feedback(choice, label, db=db, analyst=user.name, comment=comment)
                        db.audit("finance.label", target=str(choice), actor=user.name, label=label,
                                 feedback_id=fid, origin=origin())
                        st.success(f"Transaction {choice} labelled {label} (feedback {fid}).")
                    except TrilliumError as exc:
                        st.error(str(exc))
    # the card's recent history, from the latest scoring job that holds the card
    job = latest_scoring_job(db)
    if job is not None and Path(job.output_uri).exists():
        scores = job_scores(job.output_uri, str(job.updated_at))
        card = scores[scores["customer_id"].astype(str) == str(row["customer_id"])]
        if len(card):
            st.caption(f"Card {row['customer_id']}: its latest transactions in job {job.name}")
            st.dataframe(card.sort_values("timestamp", ascending=False).head(20)[
                ["timestamp", "transaction_id", "terminal_id", "amount", "probability", "decision"]],
                hide_index=True, use_container_width=True)

with tab_kpi:
    every = alert_queue(db=db, budget=10_000, include_labelled=True)
    per_day = every.groupby("day").agg(alerts=("transaction_id", "size"),
                                       labelled=("label", lambda s: s.notna().sum()),
                                       frauds=("label", lambda s: (s == FRAUD).sum()))
    per_day["alert precision (labelled)"] = per_day["frauds"] / per_day["labelled"].where(per_day["labelled"] > 0)
    st.caption("Alert volume per day, and the share of labelled alerts that analysts confirmed as fraud")
    st.bar_chart(per_day["alerts"])
    if per_day["labelled"].sum():
        st.line_chart(per_day["alert precision (labelled)"])
    history = model_history(db)
    if not history.empty:
        st.caption("Held-out metrics of each registered fraud model version (AP, CP@100 over time)")
        st.line_chart(history.set_index("version")[["auc_roc", "average_precision", "card_precision_at_100"]])
        st.dataframe(history, hide_index=True, use_container_width=True)

with tab_whatif:
    job = latest_scoring_job(db)
    if job is None or not Path(job.output_uri).exists():
        st.info("The what-if needs a finished scoring job's output (`trillium finance score`).")
    else:
        scores = job_scores(job.output_uri, str(job.updated_at))
        threshold = st.slider("Threshold", 0.0, 1.0, 0.5, 0.01, key="threshold")
        scores = scores.assign(day=pd.to_datetime(scores["timestamp"]).dt.date.astype(str))
        alerts = scores[scores["probability"] >= threshold]
        per = alerts.groupby("day").size()
        labels = every.set_index("transaction_id")["label"] if len(every) else pd.Series(dtype=object)
        labelled = alerts["transaction_id"].astype(str).map(labels).dropna()
        c1, c2, c3 = st.columns(3)
        c1.metric("alerts per day (mean)", f"{per.mean() if len(per) else 0:,.0f}")
        c2.metric("days over the budget", f"{int((per > budget).sum())} of {scores['day'].nunique()}")
        c3.metric("labelled alerts confirmed fraud",
                  f"{(labelled == FRAUD).mean():.0%}" if len(labelled) else "no labels yet")
        st.caption(f"Job {job.name}: {len(scores):,} scored transactions; what-if on their stored probabilities")
        st.bar_chart(per)
