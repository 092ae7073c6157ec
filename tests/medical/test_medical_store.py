"""Stored notes and CT findings, and the patient view that joins them (SQLite and PostgreSQL)."""

import pytest
from sqlalchemy import func, select

from trillium.core import db as dbmod
from trillium.core.errors import InputValidationError
from trillium.medical.records.notes import Note
from trillium.medical.records.structurer import RecordStructurer
from trillium.medical.store import (
    indexable_notes,
    list_patients,
    load_note,
    patient_view,
    recent_notes,
    store_ct_study,
    store_notes,
)
from trillium.medical.tables import ClinicalNote, ImagingFinding, NoteEntity

CLINIC = """HPI: 61-year-old with cough. He denies fever. History of hypertension.
MEDICATIONS: Lisinopril 20 mg PO daily.
ALLERGIES: Penicillin (hives).
FAMILY HISTORY: Father had lung cancer.
VITAL SIGNS: BP 150/90, HR 78.
ASSESSMENT: Pulmonary nodule on CT. Possible sarcoidosis versus lymphoma."""

FOLLOW_UP = """HPI: Follow-up. Cough improved. No fever.
MEDICATIONS: Lisinopril 40 mg PO daily.
VITAL SIGNS: BP 132/84."""

FINDINGS = [
    {"center_mm": [-80.5, 40.0, -120.0], "diameter_mm": 9.5, "malignancy": 0.31, "malignancy_std": 0.05,
     "type": "solid", "category": "3", "volume_mm3": 449.0},
    {"center_mm": [60.0, 20.0, -150.0], "diameter_mm": 4.2, "malignancy": 0.05, "malignancy_std": 0.02,
     "type": "ground-glass", "category": "2"},
]


def structured(note_id: str, text: str, patient: str):
    return RecordStructurer().structure(Note(note_id=note_id, text=text, patient_id=patient,
                                             source=f"/notes/{note_id}.txt"))


def counts(database: dbmod.Database) -> tuple[int, int, int]:
    with database.session() as s:
        return (s.scalar(select(func.count()).select_from(ClinicalNote)),
                s.scalar(select(func.count()).select_from(NoteEntity)),
                s.scalar(select(func.count()).select_from(ImagingFinding)))


def test_patient_view_joins_notes_and_ct(database: dbmod.Database) -> None:
    store_notes([structured("n1", CLINIC, "P7"), structured("other", "HPI: Asthma.", "P8")], db=database)
    store_notes([structured("n2", FOLLOW_UP, "P7")], db=database)
    store_ct_study("1.2.3.4", FINDINGS, patient_id="P7", study_uid="1.2.3", study_date="20261101", db=database)

    view = patient_view("P7", db=database)
    assert [n["note_id"] for n in view["notes"]] == ["n1", "n2"]
    problems = {g: [p["problem"] for p in ps] for g, ps in view["problems"].items()}
    assert "cough" in problems["active"]
    assert "hypertension" in problems["past"]
    assert problems["ruled_out"] == ["fever"]
    assert "lung cancer" in problems["family_history"] and "lung cancer" not in problems["active"]
    assert "lymphoma" in problems["uncertain"]
    meds = {m["normalized"]: m for m in view["medications"]}
    assert meds["lisinopril"]["values"]["dose"] == 40.0 and meds["lisinopril"]["note_id"] == "n2"  # latest note
    assert [v["values"]["systolic"] for v in view["vitals"] if v["normalized"] == "blood_pressure"] == [132]
    assert view["allergies"][0]["normalized"] == "penicillin"
    (study,) = view["ct_studies"]
    assert study["series_uid"] == "1.2.3.4" and study["study_date"] == "20261101"
    assert study["findings"][0]["center_mm"] == [-80.5, 40.0, -120.0]
    assert study["findings"][0]["volume_mm3"] == 449.0  # extra keys survive in details
    assert view["summary"] == {"notes": 2, "ct_studies": 1, "ct_findings": 2, "largest_nodule_mm": 9.5}

    assert list_patients(db=database) == [{"patient_id": "P7", "notes": 2, "ct_studies": 1},
                                          {"patient_id": "P8", "notes": 1, "ct_studies": 0}]
    stored = load_note("n1", db=database)
    assert stored is not None and stored["text"] == CLINIC and stored["source"] == "/notes/n1.txt"
    assert all(CLINIC[e["start"]:e["end"]] == e["text"] for e in stored["entities"])
    assert {r["note_id"] for r in recent_notes(db=database)} == {"n1", "n2", "other"}


def test_storing_again_replaces_rather_than_duplicates(database: dbmod.Database) -> None:
    note = structured("n1", CLINIC, "P7")
    store_notes([note], db=database)
    store_ct_study("1.2.3.4", FINDINGS, patient_id="P7", db=database)
    first = counts(database)
    store_notes([note], db=database)
    store_ct_study("1.2.3.4", FINDINGS, patient_id="P7", db=database)
    assert counts(database) == first
    store_ct_study("1.2.3.4", FINDINGS[:1], patient_id="P7", db=database)
    assert counts(database)[2] == 1


def test_unknown_patient_and_bad_findings(database: dbmod.Database) -> None:
    view = patient_view("nobody", db=database)
    assert view["notes"] == [] and view["ct_studies"] == [] and view["summary"]["largest_nodule_mm"] is None
    assert load_note("missing", db=database) is None
    with pytest.raises(InputValidationError, match="finding 0 of series 9.9"):
        store_ct_study("9.9", [{"diameter_mm": 5}], patient_id="P1", db=database)
    with pytest.raises(InputValidationError, match="series_uid"):
        store_ct_study("", FINDINGS, patient_id="P1", db=database)
    assert counts(database) == (0, 0, 0)


def test_stored_notes_give_the_same_concepts_as_fresh_ones(database: dbmod.Database) -> None:
    fresh = [structured("n1", CLINIC, "P7"), structured("n2", FOLLOW_UP, "P7")]
    store_notes(fresh, db=database)
    texts, ids, concepts = indexable_notes(db=database)
    assert ids == ["n1", "n2"] and texts == [CLINIC, FOLLOW_UP]
    assert concepts == [n.concepts() for n in fresh]
    assert "problem:fever" not in concepts[0] and "problem:lung cancer" not in concepts[0]


def test_stored_codes_group_the_patient_view_and_feed_the_index(database: dbmod.Database) -> None:
    # issue 23: "HTN" and "essential hypertension" are one problem (ICD-10-CM I10) across notes, and
    # the stored notes' concepts are the codes a fresh structuring gives
    store_notes([structured("c1", "HPI: HTN, stable.", "P9"),
                 structured("c2", "ASSESSMENT: Essential hypertension. No pleural effusion.", "P9")], db=database)
    view = patient_view("P9", db=database)
    (htn,) = [p for p in view["problems"]["active"] if p["code"] == "I10"]
    assert htn["code_system"] == "ICD-10-CM" and htn["mentions"] == 2 and htn["notes"] == ["c1", "c2"]
    assert [(p["code_system"], p["code"]) for p in view["problems"]["ruled_out"]] == [("ICD-10-CM", "J90")]
    texts, ids, concepts = indexable_notes(db=database)
    fresh = {i: structured(i, t, "P9").concepts() for i, t in zip(ids, texts, strict=True)}
    assert dict(zip(ids, concepts, strict=True)) == fresh
    assert "problem:ICD-10-CM:I10" in fresh["c1"] and "problem:ICD-10-CM:I10" in fresh["c2"]
