"""The structurer on a realistic admission note: sections, sentences, entities, attributes."""

from pathlib import Path

import pytest

from trillium.medical.records.notes import read_note
from trillium.medical.records.structurer import RecordStructurer
from trillium.medical.records.text import find_sections, split_sentences

NOTE = Path(__file__).with_name("admission_note.txt")


@pytest.fixture(scope="module")
def note():
    return RecordStructurer().structure(read_note(NOTE, patient_id="P1"))


def find(note, kind, text):
    hits = [e for e in note.entities if e.kind == kind and e.text == text]
    assert hits, f"no {kind} {text!r} in {[(e.kind, e.text) for e in note.entities]}"
    return hits[0]


def test_spans_point_into_the_original_text(note) -> None:
    for e in note.entities:
        assert note.text[e.start:e.end] == e.text
    for s in note.sentences:
        assert note.text[s.start:s.end].strip() == note.text[s.start:s.end]


def test_sections(note) -> None:
    names = [s.name for s in note.sections]
    for expected in ("chief_complaint", "history_present_illness", "past_medical_history", "medications",
                     "allergies", "family_history", "social_history", "physical_exam", "vital_signs", "laboratory",
                     "assessment_and_plan"):
        assert expected in names


def test_problems_and_attributes(note) -> None:
    assert find(note, "problem", "HTN").normalized == "hypertension"
    assert find(note, "problem", "HTN").historical
    assert find(note, "problem", "DM2").normalized == "type 2 diabetes mellitus"
    assert find(note, "problem", "shortness of breath").negated
    assert find(note, "problem", "nausea").negated
    assert find(note, "problem", "pneumonia").uncertain
    assert not find(note, "problem", "substernal chest pain").negated
    assert find(note, "problem", "Hyperlipidemia").historical
    assert find(note, "problem", "breast cancer").family
    assert find(note, "problem", "MI").family
    fever = [e for e in note.entities if e.text == "fever"]
    assert fever[0].negated and fever[-1].hypothetical
    assert "problem:chest pain" in note.concepts() and "problem:fever" not in note.concepts()


def test_medications(note) -> None:
    metformin = find(note, "medication", "Metformin")
    assert metformin.values == {"dose": 500.0, "unit": "mg", "route": "oral", "frequency": "BID", "as_needed": False}
    assert find(note, "medication", "Lisinopril").values["frequency"] == "daily"
    assert find(note, "medication", "Atorvastatin").values["frequency"] == "QHS"
    albuterol = find(note, "medication", "Albuterol inhaler")
    assert albuterol.values["as_needed"] and albuterol.values["frequency"] == "Q4-6H"
    assert albuterol.values["route"] == "inhaled" and not albuterol.uncertain
    assert find(note, "medication", "Insulin glargine").values["unit"] == "units"


def test_allergies_vitals_labs(note) -> None:
    assert find(note, "allergy", "Penicillin").values["reaction"] == "rash"
    assert find(note, "allergy", "sulfa drugs")
    assert not [e for e in note.entities if e.kind == "medication" and e.section == "allergies"]
    bp = find(note, "vital", "BP 142/88 mmHg")
    assert bp.values == {"systolic": 142, "diastolic": 88, "unit": "mmHg"}
    assert find(note, "vital", "Temp 98.6 F").values == {"value": 98.6, "unit": "F"}
    assert find(note, "vital", "SpO2 96% on room air").values["on"] == "room air"
    assert find(note, "lab", "creatinine 1.3 mg/dL").values == {"value": 1.3, "unit": "mg/dL"}
    assert find(note, "lab", "K 4.1").normalized == "potassium"
    assert find(note, "lab", "HbA1c 8.2%").values["unit"] == "%"
    assert find(note, "procedure", "Cardiac catheterization").normalized == "cardiac catheterization"


def test_no_known_allergies_and_short_abbreviations() -> None:
    s = RecordStructurer()
    n = s.structure("ALLERGIES: NKDA.\nHPI: Ms. Smith has MS and was seen by Dr. Lee.")
    assert n.no_known_allergies
    assert [e.normalized for e in n.entities if e.kind == "problem"] == ["multiple sclerosis"]
    assert not s.structure("She went to see us as planned.").entities  # "us", "as" are words, not terms


def test_sentences_respect_clinical_abbreviations() -> None:
    text = "Metformin 500 mg p.o. b.i.d. for diabetes. Seen by Dr. Smith today.\n1. Hypertension\n2. Gout"
    spans = [text[s.start:s.end] for s in split_sentences(text)]
    assert spans == ["Metformin 500 mg p.o. b.i.d. for diabetes.", "Seen by Dr. Smith today.", "1. Hypertension",
                     "2. Gout"]


def test_inline_mtsamples_headers() -> None:
    text = "SUBJECTIVE:,  This 23-year-old presents with a rash. PAST MEDICAL HISTORY:,  Asthma. MEDICATIONS:, None."
    names = [s.name for s in find_sections(text)]
    assert names == ["subjective", "past_medical_history", "medications"]
    n = RecordStructurer().structure(text)
    asthma = next(e for e in n.entities if e.normalized == "asthma")
    assert asthma.historical and asthma.section == "past_medical_history"


def test_to_dict_is_json(note) -> None:
    import json

    d = json.loads(json.dumps(note.to_dict()))
    assert d["patient_id"] == "P1" and len(d["entities"]) == len(note.entities)
