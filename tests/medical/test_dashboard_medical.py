"""The medical page: empty database guidance, the patient view joining notes and CT findings,
the record viewer, similar cases, and uploads (good and bad)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.dashboard_login import logged_in
from trillium import dashboards
from trillium.core.db import connect
from trillium.medical.records.notes import Note
from trillium.medical.records.structurer import RecordStructurer
from trillium.medical.records.synth import synthetic_notes
from trillium.medical.store import store_ct_study, store_notes

PAGE = str(Path(dashboards.__file__).parent / "pages" / "2_Medical.py")


def page() -> AppTest:
    return logged_in(AppTest.from_file(PAGE, default_timeout=60))


def markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_empty_database_explains_what_to_do() -> None:
    at = page().run()
    assert not at.exception
    infos = " ".join(i.value for i in at.info)
    assert "No patients yet" in infos and "No notes yet" in infos and "at least two stored notes" in infos


def seed() -> list:
    s = RecordStructurer()
    notes = synthetic_notes(8, seed=2)
    store_notes([s.structure(Note(note_id=n.note_id, text=n.text, patient_id=n.patient_id)) for n in notes],
                db=connect())
    store_ct_study("1.2.840.99", [{"center_mm": [-70.0, 30.0, -110.0], "diameter_mm": 8.0, "malignancy": 0.2,
                                   "malignancy_std": 0.04, "type": "solid", "category": "3"}],
                   patient_id=notes[0].patient_id, db=connect())
    return notes


def test_patient_view_record_viewer_and_similar_cases() -> None:
    notes = seed()
    at = page().run()
    assert not at.exception
    at.selectbox(key="patient").set_value(notes[0].patient_id).run()
    assert not at.exception
    text = markdown(at)
    assert "**Active**" in text and "**Family history**" in text
    frames = [f.value for f in at.dataframe]
    ct = next(f for f in frames if "diameter (mm)" in f.columns)
    assert ct["malignancy"].tolist() == ["0.20 ± 0.04"]
    assert any("medication" in f.columns for f in frames)
    # record viewer: the first stored note is highlighted; negated entities are struck through
    at.selectbox(key="note").set_value(notes[1].note_id).run()
    html = markdown(at)
    assert "line-through" in html and "background:#dff0d8" in html
    # similar cases of a stored note
    at.selectbox(key="sim-note").set_value(notes[2].note_id).run()
    sim = next(f for f in (x.value for x in at.dataframe) if "score" in f.columns)
    assert notes[2].note_id not in sim["note"].tolist() and len(sim) == 3


def test_note_text_is_escaped() -> None:
    s = RecordStructurer()
    store_notes([s.structure(Note(note_id="x", text="HPI: <script>alert(1)</script> chest pain.", patient_id="P1"))],
                db=connect())
    at = page().run()
    html = markdown(at)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_ct_study_list_slice_viewer_and_findings(tmp_path: Path) -> None:
    """A stored study whose series is on disk: listed, its findings tabled, the slider moves the
    axial slice (the finding circled on its slices), window presets switch; a study whose files
    are gone says so instead of failing."""
    import numpy as np

    from trillium.medical.imaging.dicom_io import load_ct
    from trillium.medical.imaging.phantom import write_phantom

    folder = tmp_path / "ct"
    truth = write_phantom(folder, nodules=1, seed=7, shape=(30, 96, 96), spacing=(2.0, 2.5, 2.5), patient_id="P-CT")
    nod = truth["nodules"][0]
    ct_id = store_ct_study(truth["series_uid"], [{"id": 1, "center_mm": nod["center_mm"], "diameter_mm": nod["diameter_mm"],
                                          "malignancy": 0.8, "malignancy_std": 0.05, "type": nod["type"],
                                          "category": "4A"}],
                   patient_id="P-CT", study_date="20250101", source=str(folder), db=connect())
    gone_id = store_ct_study("1.2.3.gone", [], patient_id="P-GONE", source=str(tmp_path / "deleted"), db=connect())
    at = page().run()
    assert not at.exception, at.exception
    assert len(at.selectbox(key="ct-study").options) == 2
    at.selectbox(key="ct-study").set_value(ct_id).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["Lung-RADS"]) == ["4A"] and "0.80 ± 0.05" in list(table["malignancy"])
    slider = at.slider(key=f"ct-slice-{ct_id}")
    k_nodule = int(np.rint(load_ct(folder).patient_to_voxel(nod["center_mm"])[0]))
    assert slider.value == k_nodule  # opens on the first finding's slice
    slider.set_value(0).run()
    assert not at.exception and at.slider(key=f"ct-slice-{ct_id}").value == 0
    at.radio(key=f"ct-window-{ct_id}").set_value("mediastinum (40 / 400)").run()
    assert not at.exception
    at.selectbox(key="ct-study").set_value(gone_id).run()
    assert not at.exception
    assert any("no longer at" in w.value for w in at.warning)
