"""Everyday clinical language: the words patients use and notes quote, British spellings,
participles, and a drug name inside a longer problem, each found and coded.

The sentences are written here for these tests from general clinical language; none comes from
the NegEx set the coverage figure is measured on.
"""

from __future__ import annotations

import pytest

from trillium.medical.records.structurer import RecordStructurer
from trillium.medical.records.terminology import default_index, normalize_token, variants


@pytest.fixture(scope="module")
def structurer() -> RecordStructurer:
    return RecordStructurer()


# sentence, written form, expected code (None: found, uncoded), negated
EVERYDAY = [
    ("Runny nose and sore throat since Monday.", "Runny nose", "HP:0031417", False),
    ("She has been feeling tired for weeks.", "feeling tired", "R53", False),
    ("Trouble sleeping since the move.", "Trouble sleeping", "G47.0", False),
    ("He passed out while standing in line.", "passed out", "R55", False),
    ("Patient fainted at home.", "fainted", "R55", False),
    ("Threw up twice this morning.", "Threw up", "R11.1", False),
    ("No blood in stool.", "blood in stool", "HP:0002573", True),
    ("Reports coughing up blood.", "coughing up blood", "R04.2", False),
    ("High blood sugars at home despite metformin.", "High blood sugars", "R73.9", False),
    ("Complains of ringing in the ears.", "ringing in the ears", "H93.1", False),
    ("Denies painful urination.", "painful urination", "R30.0", True),
    ("Frequent urination at night.", "Frequent urination", "R35.0", False),
    ("Poor appetite and weight loss.", "Poor appetite", "R63.0", False),
    ("Poor appetite and weight loss.", "weight loss", "R63.4", False),
    ("Itching all over, hives on the trunk.", "hives", "L50", False),
    ("Numbness in both feet.", "Numbness", "R20.0", False),
    ("Pins and needles in the left hand.", "Pins and needles", "HP:0003401", False),
    ("Difficulty hearing on the right.", "Difficulty hearing", "H91.90", False),
    ("Feels dizzy when standing.", "dizzy", "R42", False),
    ("Mother had breast cancer.", "breast cancer", "C50", False),
    ("Diabetic neuropathy, stable.", "Diabetic neuropathy", "E11.40", False),
    ("The patient is constipated and dehydrated.", "constipated", "K59.00", False),
    ("The patient is constipated and dehydrated.", "dehydrated", "E86.0", False),
    ("Appears jaundiced.", "jaundiced", "R17", False),
    ("Hemoglobin 8.2 from iron deficiency anemia.", "iron deficiency anemia", "D50", False),
    ("History of chickenpox; varicella as a child.", "varicella", "B01", False),
    ("History of chickenpox; varicella as a child.", "chickenpox", "B01", False),  # "Varicella [chickenpox]"
    ("Shingles on the left chest wall.", "Shingles", "B02", False),
    ("Stomach flu last week.", "Stomach flu", "A08.4", False),
    ("Kidney stones in the past.", "Kidney stones", "N20.0", False),
    ("Had the flu in March.", "the flu", "J11.1", False),
    ("Common cold for a week.", "Common cold", "J00", False),  # "Acute nasopharyngitis [common cold]"
    ("Croup as a toddler.", "Croup", "J05.0", False),  # "Acute obstructive laryngitis [croup]"
    ("Cold sores twice a year.", "Cold sores", "B00.1", False),
]


@pytest.mark.parametrize(("sentence", "written", "code", "negated"), EVERYDAY,
                         ids=[f"{w}" for _, w, _, _ in EVERYDAY])
def test_everyday_words_are_found_coded_and_negated(structurer, sentence, written, code, negated) -> None:
    by = {e.text: e for e in structurer.structure(sentence).entities}
    assert written in by, f"{written!r} not found in {sentence!r}: {sorted(by)}"
    e = by[written]
    assert e.code == code and e.negated is negated and e.kind == "problem"


def test_british_spellings_take_the_american_terms_codes(structurer) -> None:
    pairs = [("anaemia", "anemia"), ("oedema", "edema"), ("haemoptysis", "hemoptysis"), ("diarrhoea", "diarrhea"),
             ("coeliac disease", "celiac disease"), ("oesophagitis", "esophagitis"), ("leukaemia", "leukemia")]
    for british, american in pairs:
        b = structurer.structure(f"Known {british}.").entities
        a = structurer.structure(f"Known {american}.").entities
        assert [e.text for e in b] == [british]
        assert (b[0].code_system, b[0].code) == (a[0].code_system, a[0].code) and a[0].code, british
    # ordinary words with "oe"/"ae" are unchanged or changed alike on both sides: no new match
    assert list(structurer.structure("He does not wear shoes; aerobic exercise daily.").entities) == []
    assert normalize_token("aerobic") == "aerobic" and normalize_token("coexist") == "coexist"


def test_a_drug_name_inside_a_longer_problem_is_the_problem_and_alone_a_drug(structurer) -> None:
    n = structurer.structure("Iron deficiency anemia. Started ferrous sulfate; iron 325 mg daily.")
    kinds = {e.text: e.kind for e in n.entities}
    assert kinds["Iron deficiency anemia"] == "problem" and kinds["iron"] == "medication"
    med = next(e for e in n.entities if e.text == "iron")
    assert med.values.get("dose") == 325.0
    # at equal length the drug still wins ("Lasix" is never a problem)
    assert [e.kind for e in structurer.structure("Lasix 40 mg PO daily.").entities] == ["medication"]


def test_descriptions_joined_by_and_name_each_word_but_a_word_keeps_its_own_code() -> None:
    idx = default_index()
    assert idx.lookup("dizziness")[1] == "R42"  # "Dizziness and giddiness"
    assert idx.lookup("syncope")[1] == "R55"  # "Syncope and collapse", before HPO's Syncope
    assert idx.lookup("nausea")[1] == "R11.0"  # its own code, not "Nausea and vomiting"
    assert {"Dizziness", "giddiness"} <= set(variants("Dizziness and giddiness"))
    assert {"breast cancer", "cancer of the breast"} <= set(variants("Malignant neoplasm of breast"))


def test_one_word_inclusion_terms_are_kept_except_under_a_residual_code(monkeypatch) -> None:
    import simple_icd_10_cm as icd

    from trillium.medical.records.terminology import TermIndex, icd10cm_terms

    # the two codes alone: "Varicella NOS" (was dropped by a rank bug) and T14.8's "Wound NOS"
    monkeypatch.setattr(icd, "get_all_codes", lambda with_dots=True: ["B01.9", "T14.8"])
    small = TermIndex(icd10cm_terms())
    assert small.lookup("varicella")[1] == "B01.9"
    # "Wound NOS" is one of the injuries "Other injury of unspecified body region" gathers
    assert small.lookup("wound") is None and small.lookup("fracture") is None
    idx = default_index()
    assert idx.lookup("fainting")[:2] == ("ICD-10-CM", "R55") and idx.lookup("fainting")[2] == "Fainting"
    assert idx.lookup("wound") is None and idx.lookup("fracture") is None


def test_square_brackets_give_a_synonym_but_not_an_abbreviation_or_qualifier() -> None:
    assert {"Acute nasopharyngitis", "common cold"} <= set(variants("Acute nasopharyngitis [common cold]"))
    assert set(variants("Postural orthostatic tachycardia syndrome [POTS]")) == {
        "Postural orthostatic tachycardia syndrome"}
    assert "any part" not in set(variants("Burn of third degree of scalp [any part]"))


def test_a_route_before_the_drug_and_an_and_between_orders(structurer) -> None:
    n = structurer.structure("Started prednisone 40 mg and nebulized albuterol. Given IV vancomycin 1 g q12h.")
    values = {e.text: e.values for e in n.entities if e.kind == "medication"}
    assert "route" not in values["prednisone"] and values["prednisone"]["dose"] == 40.0
    assert values["albuterol"]["route"] == "inhaled"
    assert values["vancomycin"]["route"] == "intravenous" and values["vancomycin"]["dose"] == 1.0
