"""Manufacturing: recent inspections, the defect rate, its p-chart, threshold tuning, one-off inspection.

Thin over ``trillium.manufacturing`` (``linestats`` for stored verdicts and the p-chart,
``Inspector`` for an uploaded image) and the model registry (the production inspector's
threshold and its validation scores): the page computes nothing the API does not expose, apart
from counting the validation scores at or above a threshold the user is trying out (the
detector's own rule, ``score >= threshold``). Choosing a threshold registers nothing: it is kept
in the session and written to the audit log; ``trillium manufacturing inspect --threshold`` uses it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from trillium.core import db as dbmod
from trillium.core.config import database_url
from trillium.core.errors import RegistryError, TrilliumError

if TYPE_CHECKING:
    from trillium.manufacturing.pipeline import Inspector

st.set_page_config(page_title="Trillium · Manufacturing", layout="wide")

from trillium.dashboards.access import audit_view, origin, require

user = require("manufacturing:read")
st.title("Manufacturing: visual inspection")

INSPECTOR = "inspector"  # registry name of the inspector (trillium.manufacturing.pipeline.DEFAULT_NAME)
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"]
FREQS = ["15min", "1h", "1D"]
GRID = 4  # gallery images per row
TRAIN_HINT = ("Train one with `trillium manufacturing train --data <folder>` (a folder in the MVTec layout; "
              "`trillium manufacturing synth <folder>` writes a synthetic line) and it becomes 'production'.")


@st.cache_resource
def database(url: str) -> dbmod.Database:
    return dbmod.connect(url)


@st.cache_resource(show_spinner="loading the inspector")
def inspector_for(url: str, name: str, version: int) -> Inspector:
    """The registered inspector at one version (cached per database and version, so a newly
    registered production model is picked up on the next run)."""
    from trillium.core.registry import ModelRegistry
    from trillium.manufacturing.pipeline import Inspector

    return Inspector.from_registry(name, version, registry=ModelRegistry(database(url)))


def overlay_bytes(path: object) -> bytes | None:
    """The overlay PNG's bytes, or None when no overlay was stored or its file is gone."""
    if not isinstance(path, str) or not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def show_image(data: bytes, caption: str) -> bool:
    """st.image, or False (nothing shown) when the bytes are not an image the browser can get."""
    try:
        st.image(data, caption=caption, width="stretch")
    except Exception:  # noqa: BLE001 - a corrupt overlay file must not break the page
        return False
    return True


def rate(hits: int, total: int) -> str:
    return f"{hits / total:.1%}" if total else "n/a"


url = database_url()
try:
    db = database(url)
except TrilliumError as exc:
    st.error(f"The database is not reachable: {exc}")
    st.stop()

from trillium.core.registry import ModelRegistry
from trillium.core.untrusted import save_upload
from trillium.manufacturing.images import IMAGE_EXTENSIONS, ImageReadError
from trillium.manufacturing.linestats import (
    DEFAULT_LINE,
    VERDICTS,
    ControlLimitsError,
    defect_rate_summary,
    p_chart,
    recent_inspections,
)

# --- sidebar: which inspections -------------------------------------------------------------
# The lines seen among the latest inspections (the API has no list of lines).
lines = sorted(str(x) for x in recent_inspections(db=db, limit=1000)["line"].dropna().unique())
line_choice = st.sidebar.selectbox("Line", ["all lines", *lines], key="line")
line = None if line_choice == "all lines" else line_choice
verdict = st.sidebar.selectbox("Verdict", ["all", *VERDICTS], key="verdict")
limit = int(st.sidebar.number_input("Latest inspections in the gallery", min_value=1, max_value=500, value=24,
                                    step=4, key="limit"))

try:
    production = ModelRegistry(db).get(INSPECTOR, "production")
except RegistryError:
    production = None

where = f" of line {line!r}" if line else ""
no_inspections = (f"No inspections{where} stored yet. Inspect images with `trillium manufacturing inspect "
                  "<files or folder> --overlays <folder>` (or run `trillium demo`): their verdicts, scores and "
                  "overlays appear here.")

tab_gallery, tab_kpi, tab_chart, tab_threshold, tab_upload = st.tabs(
    ["Recent inspections", "Defect rate", "p-chart", "Threshold tuning", "Inspect an image"])

with tab_gallery:
    recent = recent_inspections(db=db, line=line, limit=limit)
    if recent.empty:
        st.info(no_inspections)
    else:
        shown = recent if verdict == "all" else recent[recent["verdict"] == verdict]
        st.caption(f"{len(shown)} of the latest {len(recent)} inspections{where}"
                   + (f" with verdict {verdict}" if verdict != "all" else "") + ", newest first")
        if shown.empty:
            st.info(f"No {verdict} verdict among the latest {len(recent)} inspections{where}.")
        rows = shown.to_dict("records")
        for start in range(0, len(rows), GRID):
            for col, r in zip(st.columns(GRID), rows[start:start + GRID]):
                with col:
                    kind = f" · {r['defect_type']}" if isinstance(r["defect_type"], str) else ""
                    caption = f"{r['verdict']} · score {r['score']:.3f}{kind} · {Path(str(r['image_id'])).name}"
                    data = overlay_bytes(r["overlay"])
                    if data is None or not show_image(data, caption):
                        st.markdown(f"**{r['verdict']}** · score {r['score']:.3f}{kind}")
                        why = "no overlay stored" if not isinstance(r["overlay"], str) else "overlay file missing or unreadable"
                        st.caption(f"{r['image_id']} ({why})")
        if len(shown):
            with st.expander("As a table"):
                st.dataframe(shown[["inspected_at", "image_id", "verdict", "score", "defect_type", "line", "job_id",
                                    "overlay"]], hide_index=True)
        st.subheader("Correct a verdict")
        if not user.allows("manufacturing:write"):
            st.caption("Recording an operator's verdict needs the manufacturing:write scope (quality_engineer).")
        else:
            st.caption("What you found when you looked at the part; the Monitoring page measures reject "
                       "precision and escapes from these. Recorded with your login.")
            with st.form("correction", clear_on_submit=True):
                image = st.selectbox("part", [str(x) for x in recent["image_id"]], key="correct_image")
                found = st.radio("found", ["defect", "good"], horizontal=True, key="correct_verdict")
                note = st.text_input("comment (optional)", key="correct_comment")
                if st.form_submit_button("Record correction"):
                    from trillium.manufacturing.corrections import record_correction

                    try:
                        fid = record_correction(image, found, operator=user.name, comment=note, db=db, origin=origin())
                    except TrilliumError as exc:
                        st.error(str(exc))
                    else:
                        st.success(f"Correction {fid}: {Path(image).name} is {found} (by {user.name}).")

with tab_kpi:
    summary = defect_rate_summary(db=db, line=line)
    if not summary["inspected"]:
        st.info(no_inspections)
    else:
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("inspected", f"{summary['inspected']:,}")
        c2.metric("defects", f"{summary['defects']:,}")
        c3.metric("good", f"{summary['good']:,}")
        c4.metric("defect rate", f"{summary['rate']:.2%}")
        st.caption(f"One count per image (its latest verdict){where}, inspected from "
                   f"{summary['first_inspected_at']} to {summary['last_inspected_at']}")
        if summary["by_defect_type"]:
            st.caption("Defects by type")
            st.bar_chart(pd.Series(summary["by_defect_type"], name="defects").rename_axis("defect type"),
                         x_label="defect type", y_label="defects")
        else:
            st.caption("No defects among them.")

with tab_chart:
    if not lines:
        st.info(no_inspections)
    else:
        if line is None:
            chart_line = st.selectbox("Line to chart (a p-chart is per line)", lines,
                                      index=lines.index(DEFAULT_LINE) if DEFAULT_LINE in lines else 0,
                                      key="chart_line")
        else:
            chart_line = line
        left, right = st.columns([1, 2])
        freq = left.radio("Bucket", FREQS, index=1, horizontal=True, key="freq")
        stored = right.checkbox("Use the stored phase-I limits", value=False, key="stored_limits",
                                help="Judge the data against the centre line fixed from a stable baseline period "
                                     "(`trillium manufacturing limits`), instead of one computed from the charted data.")
        chart = None
        try:
            chart = p_chart(db=db, line=chart_line, freq=freq, limits="stored" if stored else None)
        except ControlLimitsError:
            st.info(f"No control limits are stored for line {chart_line!r} yet. Fix them from a period in which "
                    f"the line was stable with `trillium manufacturing limits --line {chart_line} --start <time> "
                    "--end <time>`, or untick the box to chart against the data's own centre line.")
        except TrilliumError as exc:
            st.error(str(exc))
        if chart is not None and chart.points.empty:
            st.info(f"No inspections of line {chart_line!r} to chart.")
        elif chart is not None:
            pts = chart.points.assign(centre=chart.p_bar)
            pts["signal"] = np.where(pts["out_of_control"], "out of control",
                                     np.where(pts["run_rule"], "run of 8", "in control"))
            c1, c2, c3, c4 = st.columns(4)
            c1.metric("p-bar (centre line)", f"{chart.p_bar:.2%}")
            c2.metric("buckets", f"{len(pts):,}")
            c3.metric("out of control", f"{int(pts['out_of_control'].sum()):,}")
            c4.metric("in a run of 8", f"{int(pts['run_rule'].sum()):,}")
            st.caption(f"Centre line from {chart.baseline}")
            x = alt.X("bucket_start:T", title=f"bucket start ({freq}, UTC)")
            base = alt.Chart(pts).encode(x=x)
            limits_layer = (
                base.transform_fold(["ucl", "lcl"], as_=["limit", "value"])
                .mark_line(strokeDash=[4, 3], color="#888", interpolate="step-after")
                .encode(y="value:Q", detail="limit:N")
            )
            centre = alt.Chart(pd.DataFrame({"p_bar": [chart.p_bar]})).mark_rule(color="#2a9d8f").encode(y="p_bar:Q")
            p_line = base.mark_line(color="#1f77b4").encode(y=alt.Y("p:Q", title="fraction defective", axis=alt.Axis(
                format="%")))
            p_points = base.mark_point(filled=True, size=60).encode(
                y="p:Q",
                color=alt.Color("signal:N", scale=alt.Scale(domain=["in control", "run of 8", "out of control"],
                                                            range=["#1f77b4", "#f4a261", "#d62828"])),
                tooltip=["bucket_start:T", "n:Q", "defects:Q", alt.Tooltip("p:Q", format=".2%"),
                         alt.Tooltip("lcl:Q", format=".2%"), alt.Tooltip("ucl:Q", format=".2%"), "signal:N"],
            )
            st.altair_chart(limits_layer + centre + p_line + p_points, width="stretch")
            signals = chart.signals
            if len(signals):
                st.warning(f"{len(signals)} bucket(s) call for a look: out of the 3-sigma limits or in a run of 8 "
                           "on one side of the centre line.")
                st.dataframe(signals, hide_index=True)
            else:
                st.success("No signal: every bucket is within its limits and no run of 8 on one side.")
            with st.expander("All buckets"):
                st.dataframe(chart.points, hide_index=True)

with tab_threshold:
    if production is None:
        st.info(f"No inspector registered yet, so there is no threshold to tune. {TRAIN_HINT}")
    else:
        extra = production.extra
        registered = float(extra.get("threshold", 0.5))
        scores = extra.get("validation_scores") or {}
        good = np.asarray(scores.get("good") or [], dtype=float)
        defect = np.asarray(scores.get("defect") or [], dtype=float)
        st.caption(f"{production.name} v{production.version} (production): registered threshold {registered:.4f} "
                   f"({extra.get('threshold_rule') or 'rule not recorded'}); validation set: {len(good)} good and "
                   f"{len(defect)} defect images")
        applied = st.session_state.get("applied_threshold")
        if applied and applied["model"] != f"{production.name}:v{production.version}":
            applied = None  # chosen for another model version
        start_value = applied["threshold"] if applied else registered
        threshold = st.slider("Threshold (an image is a defect when its score is at or above it)", 0.0, 1.0,
                              value=float(start_value), step=0.001, format="%.3f", key="threshold")
        false_alarms = int((good >= threshold).sum())
        caught = int((defect >= threshold).sum())
        c1, c2, c3 = st.columns(3)
        c1.metric("false-alarm rate (validation good)", rate(false_alarms, len(good)))
        c2.metric("recall (validation defects)", rate(caught, len(defect)) if len(defect) else "no labelled defects")
        c3.metric("flagged / validation images", f"{false_alarms + caught} / {len(good) + len(defect)}")
        st.caption(f"At {threshold:.3f}: {false_alarms} of {len(good)} good validation images flagged (false alarms)"
                   + (f", {caught} of {len(defect)} defect images caught" if len(defect) else
                      "; no labelled defect images were given at training, so recall cannot be shown"))
        if len(good) + len(defect):
            points = pd.DataFrame({"score": np.r_[good, defect],
                                   "set": ["good"] * len(good) + ["defect"] * len(defect)})
            ticks = alt.Chart(points).mark_tick(thickness=2, size=18).encode(
                x=alt.X("score:Q", title="validation score"), y=alt.Y("set:N", title=None),
                color=alt.Color("set:N", scale=alt.Scale(domain=["good", "defect"], range=["#2a9d8f", "#d62828"])))
            rule = alt.Chart(pd.DataFrame({"score": [threshold]})).mark_rule(color="black").encode(x="score:Q")
            st.altair_chart(ticks + rule, width="stretch")
        else:
            st.caption("The registered model holds no validation scores.")
        if not user.allows("manufacturing:write"):
            st.caption("Applying a threshold needs the manufacturing:write scope (quality_engineer).")
        elif st.button("Apply threshold", key="apply_threshold"):
            target = f"{production.name}:v{production.version}"
            try:  # the choice carries the logged-in user and where they are
                db.audit("manufacturing.threshold", target=target, actor=user.name, origin=origin(),
                         threshold=float(threshold), registered_threshold=registered,
                         false_alarms=false_alarms, n_good=len(good), caught=caught, n_defect=len(defect))
            except Exception as exc:  # noqa: BLE001 - a failed write is shown, the page goes on
                st.error(f"The choice could not be written to the audit log: {exc}")
            else:
                applied = {"model": target, "threshold": float(threshold)}
                st.session_state["applied_threshold"] = applied
                st.success(f"Threshold {threshold:.3f} applied for {target} (recorded in the audit log).")
        if applied:
            st.markdown(f"**Chosen threshold: {applied['threshold']:.3f}** (registered: {registered:.4f}). "
                        f"Inspect with it: `trillium manufacturing inspect <images> --threshold "
                        f"{applied['threshold']:.3f}`.")

with tab_upload:
    if production is None:
        st.info(f"No inspector registered yet, so there is nothing to inspect with. {TRAIN_HINT}")
    else:
        upload = st.file_uploader("Image to inspect", type=IMAGE_TYPES, key="upload") \
            if user.allows("manufacturing:write") else None
        if not user.allows("manufacturing:write"):
            st.caption("Inspecting an uploaded image needs the manufacturing:write scope (quality_engineer).")
        if upload is None:
            st.caption(f"Inspected with {production.name} v{production.version} (production); "
                       "nothing is stored in the database.")
        else:
            result, overlay = None, None
            try:
                inspector = inspector_for(url, production.name, production.version)
                with tempfile.TemporaryDirectory(prefix="trillium-upload-") as tmp:
                    # the client's name is a label only: the file gets a name of ours (trillium.core.untrusted)
                    suffix = Path(upload.name).suffix.lower()
                    path = save_upload(upload.getvalue(), tmp, label=upload.name,
                                       suffix=suffix if suffix in IMAGE_EXTENSIONS else ".img")
                    result = inspector.inspect(path, overlay_dir=Path(tmp) / "overlays", keep_maps=False)
                    overlay = overlay_bytes(result.overlay)
            except ImageReadError as exc:
                st.error(f"Cannot inspect {upload.name!r}: {exc.reason}. Upload a PNG, JPEG, BMP or TIFF image.")
            except (TrilliumError, ValueError) as exc:
                st.error(f"Cannot inspect {upload.name!r}: {exc}")
            if result is not None:
                audit_view(user, "manufacturing.upload.inspect", upload.name[:200], verdict=result.verdict,
                           score=float(result.score), size=upload.size)
                left, right = st.columns([1, 2])
                with left:
                    st.metric("verdict", result.verdict)
                    st.metric("score", f"{result.score:.4f}")
                    st.metric("defect type", result.defect_type or ("-" if result.verdict == "good" else "unspecified"))
                    st.caption(f"{production.name} v{production.version}, registered threshold "
                               f"{result.threshold:.4f}")
                    applied = st.session_state.get("applied_threshold")
                    if applied and applied["model"] == f"{production.name}:v{production.version}":
                        flagged = "flagged" if result.score >= applied["threshold"] else "passed"
                        st.caption(f"At your applied threshold {applied['threshold']:.3f} it would be {flagged}.")
                with right:
                    if overlay is None or not show_image(overlay, f"{upload.name}: anomaly overlay"):
                        st.caption("No overlay could be shown.")
