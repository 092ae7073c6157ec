"""Statements of imaging reports and examinations: structures described together, what is said
of a structure as a noun, grades, report summary statements, and common report terms that had no
entry (issue 23's "findings of examinations and reports").

The sentences are written here for these tests from general knowledge of report and exam
templates; none comes from the NegEx set the coverage figure is measured on.
"""

from __future__ import annotations

import pytest

from trillium.medical.records.findings import FindingMatcher, qualifier_length
from trillium.medical.records.structurer import RecordStructurer
from trillium.medical.records.terminology import default_index, variants


@pytest.fixture(scope="module")
def structurer() -> RecordStructurer:
    return RecordStructurer()


def _one(structurer: RecordStructurer, sentence: str, text: str):
    by = {e.text: e for e in structurer.structure(sentence, note_id="t").entities}
    assert text in by, (sentence, sorted(by))
    return by[text]


# sentence, the finding's text, structure, qualifiers, negated
FINDINGS = [
    # structures described together: one finding, the others under "also"
    ("The kidneys, ureters and bladder are unremarkable.", "kidneys, ureters and bladder are unremarkable",
     "kidneys", ["unremarkable"], False),
    ("Esophagus and gastroesophageal-junction were normal.", "Esophagus and gastroesophageal-junction were normal",
     "esophagus", ["normal"], False),
    # what of a structure is described, before it
    ("Size of the left atrium is normal.", "Size of the left atrium is normal", "left atrium", ["normal"], False),
    # grades and a three-word qualifier
    ("Reflexes are 2+ and symmetric.", "Reflexes are 2+ and symmetric", "reflexes", ["2+", "symmetric"], False),
    ("Strength is 5/5 throughout.", "Strength is 5/5", "motor strength", ["5/5"], False),
    ("Heart size within normal limits.", "Heart size within normal limits", "heart", ["within normal limits"], False),
    # the copula ":" of exam templates and the new qualifiers
    ("Gait: antalgic.", "Gait: antalgic", "gait", ["antalgic"], False),
    ("Thought process is linear and goal-directed.", "Thought process is linear and goal-directed",
     "thought process", ["linear", "goal-directed"], False),
    # a noun of change after the structure or before it
    ("Mild pancreatic duct dilation.", "pancreatic duct dilation", "pancreatic duct", ["dilation"], False),
    ("Thickening of the gallbladder wall.", "Thickening of the gallbladder wall", "gallbladder", ["thickening"], False),
    ("No calcification within the right kidney.", "calcification within the right kidney", "kidneys",
     ["calcification"], True),
    # a site named by ICD-10-CM's injury and neoplasm codes, not in the hand list
    ("The pancreatic duct is not dilated.", "pancreatic duct is not dilated", None, None, None),
    ("The thymus is unremarkable.", "thymus is unremarkable", "thymus", ["unremarkable"], False),
    # report summary statements
    ("No acute intracranial abnormality.", "acute intracranial abnormality", "brain",
     ["acute intracranial abnormality"], True),
    ("Degenerative changes of the lumbar spine.", "Degenerative changes", "general", ["degenerative changes"], False),
    ("No focal motor or sensory deficits.", "focal motor or sensory deficits", "motor strength",
     ["focal motor or sensory deficits"], True),
]


@pytest.mark.parametrize(("sentence", "text", "structure", "qualifiers", "negated"), FINDINGS)
def test_report_and_exam_statements_are_findings(structurer, sentence, text, structure, qualifiers, negated) -> None:
    if structure is None:  # "is not dilated": the qualifier does not follow the copula; no finding
        assert all(e.kind != "finding" for e in structurer.structure(sentence, note_id="t").entities)
        return
    e = _one(structurer, sentence, text)
    assert e.kind == "finding"
    assert e.values["structure"] == structure and e.values["qualifiers"] == qualifiers
    assert e.negated is negated


def test_structures_described_together_name_the_others() -> None:
    from trillium.medical.records.text import tokenize

    found = FindingMatcher().find(tokenize("The kidneys, ureters and bladder are unremarkable."))
    assert [v.get("also") for *_, v in found] == [["ureter", "bladder"]]


def test_general_heads_need_a_system_or_a_degree_word(structurer) -> None:
    # "other findings", "new changes", "the disease": words of a sentence, not a statement of one
    for sentence in ("Other findings include a small cyst.", "New changes were discussed.",
                     "The disease was explained to the family."):
        assert all(e.kind != "finding" for e in structurer.structure(sentence, note_id="t").entities), sentence


def test_qualifier_lengths() -> None:
    assert qualifier_length(["within", "normal", "limits"], 0) == 3
    assert qualifier_length(["2", "+"], 0) == 2
    assert qualifier_length(["5", "/", "5"], 0) == 3
    assert qualifier_length(["6", "/", "5"], 0) == 0  # not a strength grade
    assert qualifier_length(["7", "+"], 0) == 0
    assert qualifier_length(["normal"], 0) == 1 and qualifier_length(["normal"], 1) == 0


# sentence, written form, code (None: found, uncoded), negated
TERMS = [
    ("History of kidney transplant in 2012.", "kidney transplant", "Z94.0", False),
    ("Status post orthotopic heart transplantation.", "orthotopic heart transplantation", "Z94.1", False),
    ("Diverticula throughout the sigmoid colon.", "Diverticula", "K57.90", False),
    ("Admitted with a sickle cell crisis.", "sickle cell crisis", "D57.00", False),
    ("No bleeding at the puncture site.", "bleeding", "R58", True),
    ("Known aneurysm of the splenic artery.", "aneurysm", "I72.9", False),
    ("Denies sputum production.", "sputum production", "R09.3", True),
    ("She is deconditioned after the long stay.", "deconditioned", "R53.81", False),
    ("No pericardial tamponade.", "pericardial tamponade", "I31.4", True),
    ("Reports difficulty concentrating at work.", "difficulty concentrating", "R41.840", False),
    ("Clinically volume overloaded.", "volume overloaded", "E87.7", False),
    ("Degenerative disc disease at L4-L5.", "Degenerative disc disease", None, False),
    ("Mild neural foraminal narrowing.", "neural foraminal narrowing", None, False),
    ("ST elevations in the inferior leads.", "ST elevations", None, False),
    ("A thrombus in the left atrial appendage.", "thrombus", None, False),
    # a lumped entry split: hepatitis C and B have codes of their own, not hepatitis's K75.9
    ("Underlying diagnosis of hepatitis-C.", "hepatitis-C", "B19.20", False),
    ("Hep B carrier.", "Hep B", "B19.10", False),
    ("Admitted with mental status changes.", "mental status changes", "R41.82", False),
    # the code "not having achieved remission", not "in remission": a form that drops the state
    # its code is for ranks after one that does not
    ("No evidence of leukemia.", "leukemia", "C95.90", True),
]


@pytest.mark.parametrize(("sentence", "written", "code", "negated"), TERMS)
def test_common_report_terms_are_found_and_coded(structurer, sentence, written, code, negated) -> None:
    e = _one(structurer, sentence, written)
    assert e.code == code
    assert e.negated is negated


def test_a_hyphen_between_two_words_of_a_term_matches_the_term(structurer) -> None:
    plain = _one(structurer, "Chronic low back pain.", "low back pain")
    hyphen = _one(structurer, "Chronic low-back pain.", "low-back pain")
    assert (hyphen.normalized, hyphen.code) == (plain.normalized, plain.code)


def test_latin_plurals_are_forms_of_the_singular() -> None:
    assert "Renal calculi" in set(variants("Renal calculus"))
    assert "Meckel's diverticula" in set(variants("Meckel's diverticulum"))
    assert "metastases" in {v.lower() for v in variants("Metastasis")}
    assert "Esophageal varices" in set(variants("Esophageal varix"))
    assert not any(v.endswith("stati") for v in variants("Liver transplant status"))  # not every -us is Latin
    assert default_index().lookup("renal calculi") == default_index().lookup("renal calculus")


def test_icd_sites_are_anatomy_not_adjectives() -> None:
    sites = set(default_index().sites_)
    assert {"wrist", "pancreatic duct", "thymus", "esophagus", "optic nerve"} <= sites
    assert not sites & {"lumbar", "urinary", "ascending", "lymphoid", "right wrist"}


def test_a_section_titled_by_a_structure_gives_its_opening_qualifiers_that_structure(structurer) -> None:
    note = structurer.structure("PHYSICAL EXAM:\nABDOMEN:  Soft, nontender.\nSKIN: Warm and dry.\n"
                                "PAST MEDICAL HISTORY: Normal childhood.", note_id="t")
    found = {e.text: e.values for e in note.entities if e.kind == "finding"}
    assert found["Soft, nontender"] == {"structure": "abdomen", "qualifiers": ["soft", "nontender"]}
    assert found["Warm and dry"] == {"structure": "skin", "qualifiers": ["warm", "dry"]}
    assert "Normal" not in found  # a title that is not a structure describes nothing


def test_grades_before_a_structure_and_functional_status(structurer) -> None:
    note = structurer.structure("Sensation intact, 5/5 motor strength in both legs. Ambulating independently and "
                                "tolerating a regular diet.", note_id="t")
    found = {e.text: e.values for e in note.entities if e.kind == "finding"}
    assert found["Sensation intact"] == {"structure": "sensation", "qualifiers": ["intact"]}
    assert found["5/5 motor strength in both legs"] == {"structure": "motor strength", "qualifiers": ["5/5"],
                                                        "also": ["extremities"]}
    assert found["Ambulating independently"]["structure"] == "functional status"
    assert found["tolerating a regular diet"]["structure"] == "functional status"


def test_the_coverage_report_breaks_out_conditions_annotated_with_their_own_negation(tmp_path) -> None:
    from trillium.medical.records.evaluate import negex_coverage_eval

    rows = [
        (1, "No acute disease", "Chest X-ray: no acute disease.", "Affirmed"),  # the normal finding, affirmed
        (2, "pneumothorax", "There is no pneumothorax.", "Negated"),
        (3, "effusion", "Small left pleural effusion.", "Affirmed"),
        (4, "edema", "Legs without edema.", "Negated"),
    ]
    tsv = tmp_path / "negex.tsv"
    tsv.write_text("line\tcondition\tsentence\tnegation\ttemporality\texperiencer\n"
                   + "".join(f"{n}\t{c}\t{s}\t{neg}\tRecent\tPatient\n" for n, c, s, neg in rows), encoding="utf-8")
    report = negex_coverage_eval(tsv)["terminology"]["all"]
    assert report["found"] == 4 and report["found_with_cue_inside_condition"] == 1
    assert report["negation_on_found"]["fp"] == 1  # "acute disease" is negated, the annotation says affirmed
    outside = report["negation_on_found_cue_outside_condition"]
    assert (outside["n"], outside["fp"], outside["tp"], outside["tn"]) == (3, 0, 2, 1)


def test_exact_lookup_reads_the_derivation_of_the_rank() -> None:
    idx = default_index()
    # a code's own description is found exactly; a form derived from one ("paresthesia" of HPO's
    # "Paresthesia" is its own name, "leukemia" of "Leukemia, unspecified" is derived) is not
    assert idx.lookup("Cardiac tamponade", exact=True)[1] == "I31.4"
    assert idx.lookup("leukemia") is not None and idx.lookup("leukemia", exact=True) is None
