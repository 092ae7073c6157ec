"""Medical: CT studies (slice viewer, findings, heatmaps, DICOM zip upload), the patient view, the
record viewer with entities highlighted, similar cases, note upload.

Thin over ``trillium.medical``: ``store`` for stored notes, CT findings and the patient view;
``RecordStructurer`` for an uploaded note; ``SimilarCaseIndex`` built over the stored notes
(cached until a note is added). Note text is HTML-escaped before highlighting.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import streamlit as st

from trillium.core import db as dbmod
from trillium.core.config import database_url
from trillium.core.errors import TrilliumError

st.set_page_config(page_title="Trillium · Medical", layout="wide")

from trillium.dashboards.access import audit_view, origin, require

user = require("medical:read")
st.title("Medical: CT studies, patients, records and similar cases")

COLOURS = {"problem": "#fde2e1", "medication": "#dff0d8", "allergy": "#fcf8e3", "vital": "#d9edf7",
           "lab": "#e8e1f5", "procedure": "#f0e6d2", "finding": "#e6eef0"}
FLAGS = ("negated", "uncertain", "hypothetical", "historical", "family")


def _code(problem: dict) -> str:
    """The code shown after a coded problem of the patient view (issue 23): " `ICD-10-CM I10`"."""
    return f" `{problem['code_system']} {problem['code']}`" if problem.get("code") else ""

EXTRACT_HINT = ("Structure notes with `trillium medical records extract <files or folder>` "
                "(`trillium medical records synth <folder>` writes synthetic ones), or upload a note below.")


@st.cache_resource
def database(url: str) -> dbmod.Database:
    return dbmod.connect(url)


@st.cache_resource(show_spinner="loading the CT series")
def ct_volume(source: str, mtime: float) -> Any:
    """The series behind a stored study (``mtime`` renews the cache when the files change)."""
    from trillium.medical.imaging.dicom_io import load_ct

    return load_ct(source)


@st.cache_resource(show_spinner="loading the chest-CT model")
def ct_analyzer(url: str) -> Any:
    from trillium.core.registry import ModelRegistry
    from trillium.medical.imaging.analyzer import StudyAnalyzer

    return StudyAnalyzer.from_registry(registry=ModelRegistry(database(url)))


WINDOWS = {"lung (-600 / 1500)": (-600, 1500), "mediastinum (40 / 400)": (40, 400), "bone (400 / 1800)": (400, 1800)}


def ct_slice_png(volume: Any, k: int, window: tuple[int, int], findings: list[dict[str, Any]]) -> Any:
    """One axial slice in the chosen window with each finding that crosses it circled, as RGB."""
    import cv2
    import numpy as np

    centre, width = window
    grey = np.clip((volume.hu[k].astype(np.float32) - (centre - width / 2)) / width * 255, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    sz, _, sx = volume.spacing
    for f in findings:
        kji = volume.patient_to_voxel(f["center_mm"])
        r_mm = f["diameter_mm"] / 2
        dz = abs(kji[0] - k) * sz
        if dz <= r_mm:
            r_px = max(2, int(np.rint(np.sqrt(r_mm ** 2 - dz ** 2) / sx)) + 3)
            colour = (255, 80, 80) if (f.get("malignancy") or 0) >= 0.5 else (255, 200, 0)
            cv2.circle(rgb, (int(np.rint(kji[2])), int(np.rint(kji[1]))), r_px, colour, 1)
            cv2.putText(rgb, str(f.get("id", "")), (int(kji[2]) + r_px + 2, int(kji[1])), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, colour, 1)
    return rgb


def show_ct_study(study: dict[str, Any]) -> None:
    from pathlib import Path

    import numpy as np

    findings = study["findings"]
    rows = [{"id": f.get("id"), "centre (mm, LPS)": [round(v, 1) for v in f["center_mm"]],
             "diameter (mm)": f["diameter_mm"], "type": f["type"], "Lung-RADS": f["category"],
             "malignancy": None if f["malignancy"] is None else f"{f['malignancy']:.2f} ± {f['malignancy_std'] or 0:.2f}",
             "nodule p": f.get("nodule_probability")} for f in findings]
    st.caption(f"series {study['series_uid']} · patient {study['patient_id']} · date {study['study_date']} · "
               f"model {study['details'].get('model', '?')} · analysed {study['analyzed_at']}")
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    else:
        st.info("No nodules reported in this study.")
    source = study.get("source") or ""
    if not source or not Path(source).exists():
        st.warning(f"The series files are no longer at {source or '(no path recorded)'}; the slice viewer needs them.")
        return
    try:
        volume = ct_volume(source, Path(source).stat().st_mtime)
    except TrilliumError as exc:
        st.error(f"Cannot read the series: {exc}")
        return
    c1, c2 = st.columns([1, 3])
    with c1:
        window = st.radio("Window", list(WINDOWS), key=f"ct-window-{study['id']}")
        start = int(np.rint(volume.patient_to_voxel(findings[0]["center_mm"])[0])) if findings else volume.shape[0] // 2
        k = st.slider("Slice", 0, volume.shape[0] - 1, min(max(start, 0), volume.shape[0] - 1),
                      key=f"ct-slice-{study['id']}")
        st.caption(f"{volume.shape[0]} slices · {volume.spacing[0]:.2f} mm apart · "
                   f"pixels {volume.spacing[2]:.2f} mm")
    with c2:
        st.image(ct_slice_png(volume, k, WINDOWS[window], findings), caption=f"axial slice {k}", width="stretch")
    heat_dir = study["details"].get("heatmap_dir")
    if heat_dir and findings:
        st.subheader("Heatmaps (captum: Grad-CAM and Integrated Gradients on the malignancy network)")
        for f in findings:
            for method, name in (f.get("heatmaps") or {}).items():
                png = Path(heat_dir) / name
                if png.exists():
                    st.image(str(png), caption=f"finding {f.get('id')}: {method} "
                                               f"(axial, coronal, sagittal through its centre)")


@st.cache_resource
def structurer() -> Any:
    from trillium.medical.records.structurer import RecordStructurer

    return RecordStructurer()


@st.cache_resource(show_spinner="indexing the stored notes")
def note_index(url: str, fingerprint: tuple[int, str]) -> Any:
    """A similar-case index over the stored notes; ``fingerprint`` (count, latest time) renews it."""
    from trillium.medical.records.retrieval import SimilarCaseIndex
    from trillium.medical.store import indexable_notes

    texts, ids, concepts = indexable_notes(db=database(url))
    return SimilarCaseIndex(method="hybrid").fit(texts, ids, concepts)


def highlighted(text: str, entities: list[dict[str, Any]]) -> str:
    """The note as HTML: each entity in its kind's colour, negated ones struck through, with the
    attributes in the tooltip."""
    out, pos = [], 0
    for e in sorted(entities, key=lambda e: (e["start"], -e["end"])):
        if e["start"] < pos:
            continue
        out.append(html.escape(text[pos:e["start"]]))
        flags = [f for f in FLAGS if e.get(f)]
        style = f"background:{COLOURS.get(e['kind'], '#eee')};padding:0 2px;border-radius:3px;"
        if e.get("negated"):
            style += "text-decoration:line-through;"
        tip = html.escape(f"{e['kind']}: {e['normalized']}" + (f" [{', '.join(flags)}]" if flags else ""))
        badge = "".join(f"<sup>{html.escape(f[:3].upper())}</sup>" for f in flags)
        out.append(f'<span title="{tip}" style="{style}">{html.escape(text[e["start"]:e["end"]])}</span>{badge}')
        pos = e["end"]
    out.append(html.escape(text[pos:]))
    return ("<div style='white-space:pre-wrap;font-family:monospace;font-size:0.85rem;line-height:1.5'>"
            + "".join(out) + "</div>")


def entity_table(entities: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"kind": e["kind"], "text": e["text"], "normalized": e["normalized"], "section": e["section"],
             "attributes": ", ".join(f for f in FLAGS if e.get(f)) or "affirmed",
             "values": ", ".join(f"{k}={v}" for k, v in (e.get("values") or {}).items())} for e in entities]
    return pd.DataFrame(rows, columns=["kind", "text", "normalized", "section", "attributes", "values"])


def show_note(text: str, entities: list[dict[str, Any]], key: str) -> None:
    kinds = sorted({e["kind"] for e in entities})
    chosen = st.multiselect("Entity kinds", kinds, default=kinds, key=f"kinds-{key}")
    shown = [e for e in entities if e["kind"] in chosen]
    st.markdown(" ".join(f"<span style='background:{COLOURS[k]};padding:0 4px'>{k}</span>" for k in kinds)
                + " &nbsp; struck through = negated; NEG / UNC / HYP / HIS / FAM = attributes",
                unsafe_allow_html=True)
    st.markdown(highlighted(text, shown), unsafe_allow_html=True)
    st.dataframe(entity_table(shown), hide_index=True, width="stretch")


try:
    url = database_url()
    db = database(url)
    from trillium.medical.store import list_patients, load_note, patient_view, recent_notes

    patients = list_patients(db=db)
    notes = recent_notes(db=db, limit=100_000)
except TrilliumError as exc:
    st.error(f"The database is not reachable: {exc}")
    st.stop()

c1, c2, c3 = st.columns(3)
c1.metric("patients", len(patients))
c2.metric("notes", len(notes))
c3.metric("CT studies", sum(p["ct_studies"] for p in patients))

tab_ct, tab_patient, tab_record, tab_similar, tab_upload = st.tabs(["CT studies", "Patient view", "Record viewer",
                                                                    "Similar cases",
                                                            "Upload a note"])

with tab_ct:
    from trillium.medical.store import list_ct_studies

    studies = list_ct_studies(db=db)
    if not studies:
        st.info("No CT studies yet. Analyse one with `trillium medical analyze <DICOM folder or zip>` "
                "(`trillium medical phantom <folder>` writes a synthetic one), or upload a zipped series below.")
    else:
        label = {s_["id"]: f"{s_['patient_id'] or '?'} · {s_['study_date'] or ''} · {len(s_['findings'])} findings"
                 f" · {s_['series_uid'][-12:]}" for s_ in studies}
        chosen = st.selectbox("Study", list(label), format_func=label.get, key="ct-study")
        study_ = next(s_ for s_ in studies if s_["id"] == chosen)
        audit_view(user, "medical.ct.view", study_["series_uid"], patient=study_["patient_id"] or "",
                   findings=len(study_["findings"]))
        show_ct_study(study_)
    st.subheader("Analyse a study")
    ct_upload = st.file_uploader("A zipped DICOM series", type=["zip"], key="ct-upload") \
        if user.allows("medical:write") else None
    if not user.allows("medical:write"):
        st.caption("Uploading a study needs the medical:write scope (clinician).")
    if ct_upload is not None and st.button("Analyse and store", key="ct-analyse"):
        from trillium.medical.imaging.analyzer import analyze_upload

        try:
            # the client's file name is only a label: the upload is checked, kept under a name of ours,
            # and only then is the model loaded
            result = analyze_upload(ct_upload.getvalue(), ct_upload.name, lambda: ct_analyzer(url), db=db)
        except TrilliumError as exc:
            st.error(f"Cannot analyse this upload: {exc}")
        else:
            db.audit("medical.ct.upload", target=result.series_uid, actor=user.name, origin=origin(),
                     patient=getattr(result, "patient_id", "") or "", findings=len(result.findings))
            st.success(f"Stored series {result.series_uid}: {len(result.findings)} findings "
                       f"in {result.timings['total']:.1f} s.")

with tab_patient:
    if not patients:
        st.info("No patients yet. " + EXTRACT_HINT)
    else:
        pid = st.selectbox("Patient", [p["patient_id"] for p in patients], key="patient")
        view = patient_view(pid, db=db)
        audit_view(user, "medical.patient.view", pid, patient=pid)
        s = view["summary"]
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("notes", s["notes"])
        m2.metric("CT studies", s["ct_studies"])
        m3.metric("CT findings", s["ct_findings"])
        m4.metric("largest nodule", f"{s['largest_nodule_mm']:.1f} mm" if s["largest_nodule_mm"] else "-")
        left, right = st.columns(2)
        with left:
            st.subheader("Problems")
            for group, label in (("active", "Active"), ("past", "Past history"), ("uncertain", "Uncertain"),
                                 ("ruled_out", "Ruled out"), ("family_history", "Family history")):
                items = view["problems"][group]
                st.markdown(f"**{label}**: " + (", ".join(f"{p['problem']}{_code(p)} ({p['mentions']})" for p in items)
                                                 if items else "none recorded"))
            st.subheader("Allergies")
            if view["allergies"]:
                st.write(", ".join(a["text"] + (f" ({a['values']['reaction']})" if a["values"].get("reaction") else "")
                                   for a in view["allergies"]))
            else:
                st.write("No known allergies" if view["no_known_allergies"] else "none recorded")
        with right:
            st.subheader("Medications (latest mention)")
            meds = [{"medication": m["normalized"], "dose": m["values"].get("dose"), "unit": m["values"].get("unit"),
                     "route": m["values"].get("route"), "frequency": m["values"].get("frequency"),
                     "as needed": m["values"].get("as_needed"), "note": m["note_id"]} for m in view["medications"]]
            if meds:
                st.dataframe(pd.DataFrame(meds), hide_index=True, width="stretch")
            else:
                st.write("none recorded")
            st.subheader("Vitals and labs (latest)")
            vl = [{"name": v["normalized"], "value": v["text"], "note": v["note_id"]}
                  for v in view["vitals"] + view["labs"]]
            if vl:
                st.dataframe(pd.DataFrame(vl), hide_index=True, width="stretch")
            else:
                st.write("none recorded")
        st.subheader("CT findings")
        rows = [{"series": c["series_uid"], "date": c["study_date"], "centre (mm, LPS)": f["center_mm"],
                 "diameter (mm)": f["diameter_mm"], "type": f["type"], "category": f["category"],
                 "malignancy": None if f["malignancy"] is None else
                 f"{f['malignancy']:.2f} ± {f['malignancy_std'] or 0:.2f}"}
                for c in view["ct_studies"] for f in c["findings"]]
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        else:
            st.info("No CT studies analysed for this patient.")

with tab_record:
    if not notes:
        st.info("No notes yet. " + EXTRACT_HINT)
    else:
        note_id = st.selectbox("Note", [n["note_id"] for n in notes], key="note",
                               format_func=lambda i: f"{i} (patient {next(n['patient_id'] for n in notes if n['note_id'] == i)})")
        stored = load_note(note_id, db=db)
        if stored is None:
            st.warning(f"Note {note_id} is no longer in the database.")
        else:
            audit_view(user, "medical.note.view", note_id, patient=stored.get("patient_id") or "")
            show_note(stored["text"], stored["entities"], "stored")

with tab_similar:
    if len(notes) < 2:
        st.info("Similar cases need at least two stored notes. " + EXTRACT_HINT)
    else:
        index = note_index(url, (len(notes), str(notes[0]["structured_at"])))
        mode = st.radio("Query", ["A stored note", "Free text"], horizontal=True, key="sim-mode")
        k = st.slider("How many", 1, min(10, len(notes) - 1), min(3, len(notes) - 1), key="sim-k")
        hits = []
        if mode == "A stored note":
            qid = st.selectbox("Note", [n["note_id"] for n in notes], key="sim-note")
            hits = index.neighbours(qid, k=k)
            audit_view(user, "medical.note.similar", qid, k=k)
        else:
            text = st.text_area("Describe the case", key="sim-text")
            if text.strip():
                hits = index.query(text, k=k, concepts=structurer().structure(text).concepts())
        if hits:
            by_id = {n["note_id"]: n for n in notes}
            st.dataframe(pd.DataFrame([{"rank": h.rank, "note": h.note_id, "score": round(h.score, 3),
                                        "patient": by_id.get(h.note_id, {}).get("patient_id")} for h in hits]),
                         hide_index=True, width="stretch")

with tab_upload:
    if not user.allows("medical:write"):
        st.info("Uploading notes needs the medical:write scope (clinician).")
    upload = st.file_uploader("A clinical note (plain text)", type=["txt", "text", "note", "md"], key="upload") \
        if user.allows("medical:write") else None
    if upload is not None:
        from trillium.medical.records.notes import Note, NoteReadError, decode_text

        try:
            text, encoding = decode_text(upload.getvalue(), upload.name)  # size-capped: TRILLIUM_LIMIT_TEXT_BYTES
        except (NoteReadError, TrilliumError) as exc:
            st.error(f"Cannot read this upload: {exc}")
        else:
            pid = st.text_input("Patient id (optional)", key="upload-patient") or None
            note = structurer().structure(Note(note_id=upload.name.rsplit(".", 1)[0], text=text, patient_id=pid,
                                               source=f"upload:{upload.name}"))
            st.caption(f"{len(note.sections)} sections, {len(note.sentences)} sentences, "
                       f"{len(note.entities)} entities (read as {encoding})")
            show_note(note.text, [e.to_dict() for e in note.entities], "upload")
            if st.button("Store this note", key="store-upload"):
                from trillium.medical.store import store_notes

                store_notes([note], db=db, source=f"upload:{upload.name}")
                db.audit("medical.note.upload", target=note.note_id, actor=user.name, origin=origin(),
                         patient=note.patient_id or "", entities=len(note.entities))
                st.success(f"Stored {note.note_id} with {len(note.entities)} entities.")
