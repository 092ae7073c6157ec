"""ConText rules on sentences whose answers a clinician would not argue about."""

import pytest

from trillium.medical.records.context import ConTextRules, assert_in_sentence
from trillium.medical.records.evaluate import NEGEX_BASELINE_RULES, locate


def attrs(sentence: str, target: str, rules: ConTextRules | None = None) -> dict[str, bool]:
    start = sentence.index(target)
    kwargs = {"rules": rules} if rules else {}
    return assert_in_sentence(sentence, (start, start + len(target)), **kwargs).as_dict()


@pytest.mark.parametrize(("sentence", "target"), [
    ("He denies fever, chills or night sweats.", "night sweats"),
    ("No evidence of pneumonia.", "pneumonia"),
    ("The chest x-ray does not demonstrate any evidence of pulmonary edema.", "pulmonary edema"),
    ("Negative for chest pain and palpitations.", "palpitations"),
    ("Pulmonary embolism was ruled out.", "Pulmonary embolism"),
    ("In no acute distress.", "acute distress"),
    ("Extremities: without clubbing, cyanosis or edema.", "edema"),
])
def test_negated(sentence: str, target: str) -> None:
    assert attrs(sentence, target)["negated"]


@pytest.mark.parametrize(("sentence", "target"), [
    ("No fever but she reports a productive cough.", "productive cough"),  # "but" ends the scope
    ("There is no change in the left lower lobe consolidation.", "consolidation"),  # pseudo-trigger
    ("Gram negative rods grew in the blood culture.", "Gram negative rods"),  # trigger inside the target
    ("Patient has chest pain.", "chest pain"),
    ("The patient was not only febrile but also hypotensive.", "hypotensive"),
])
def test_not_negated(sentence: str, target: str) -> None:
    assert not attrs(sentence, target)["negated"]


def test_other_categories() -> None:
    assert attrs("Findings are suspicious for pneumonia.", "pneumonia")["uncertain"]
    assert attrs("Cannot rule out appendicitis.", "appendicitis")["uncertain"]
    assert not attrs("Cannot rule out appendicitis.", "appendicitis")["negated"]
    assert attrs("Return to the clinic if fever develops.", "fever")["hypothetical"]
    assert attrs("She has a history of breast cancer.", "breast cancer")["historical"]
    assert not attrs("She has a two-day history of fever.", "fever")["historical"]
    assert attrs("Her mother had breast cancer.", "breast cancer")["family"]
    long_sentence = "She came in with her husband and today reports severe abdominal pain after eating."
    assert not attrs(long_sentence, "abdominal pain")["family"]  # relatives reach only a few tokens


def test_baseline_window_is_shorter() -> None:
    sentence = "No history in the past several years of any recurrent pneumonia."
    assert attrs(sentence, "pneumonia")["negated"]
    assert not attrs(sentence, "pneumonia", NEGEX_BASELINE_RULES)["negated"]


def test_locate_handles_annotator_spacing() -> None:
    sentence = "There  are no ACUTE FRACTURES IDENTIFIED IN THE REMAINDER OF THE PELVIS."
    a, b = locate("acute fractures identified in the remainder of the pelvis", sentence)
    assert sentence[a:b].startswith("ACUTE FRACTURES") and sentence[a:b].endswith("PELVIS")
    a, b = locate("bilateral acute fractures of ribs", "Old fractures of ribs.")
    assert "fractures of ribs" in "Old fractures of ribs."[a:b]
    assert locate("zzz", "abc def") == (0, 7)
