"""Similar-case index: retrieval quality on a small three-specialty corpus, scores, persistence."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from trillium.medical.records.hit_rates import hit_rate_by_label, top_k_label_hit_rate
from trillium.medical.records.index_files import RetrievalError
from trillium.medical.records.retrieval import METHODS, Hit, SimilarCaseIndex
from trillium.medical.records.terms import analyze

CARDIO = [
    (
        "Patient presents with substernal chest pain radiating to the left arm. Troponin elevated. "
        "ECG shows ST elevation in the inferior leads; taken for cardiac catheterization and stent."
    ),
    (
        "Chest pressure on exertion for two weeks, relieved by rest. Stress test positive for ischemia. "
        "Coronary angiography planned."
    ),
    (
        "Acute myocardial infarction. Troponin I peaked at 12. Drug-eluting stent placed in the LAD. "
        "Started on aspirin, clopidogrel and atorvastatin."
    ),
    (
        "Known coronary artery disease with prior stent, now with recurrent angina and dyspnea. "
        "Troponin negative times two. Echocardiogram shows ejection fraction of 45 percent."
    ),
    (
        "Palpitations and atrial fibrillation with rapid ventricular response. Rate control with metoprolol, "
        "anticoagulation with apixaban. Echocardiogram without valvular disease."
    ),
    (
        "Congestive heart failure exacerbation: orthopnea, leg edema, elevated BNP. Diuresed with furosemide. "
        "Ejection fraction 30 percent on echocardiogram."
    ),
    (
        "Follow-up after coronary stent placement. No further chest pain. Continue dual antiplatelet therapy "
        "and statin. Blood pressure well controlled."
    ),
    (
        "Unstable angina with dynamic ECG changes and a mildly elevated troponin. Heparin drip started, "
        "cardiology consulted for catheterization."
    ),
    (
        "Hypertension and hyperlipidemia, referred for chest discomfort. Exercise treadmill ECG without ischemic "
        "changes. Coronary calcium score elevated."
    ),
    (
        "Syncope with bradycardia and complete heart block on ECG. Pacemaker implanted without complication. "
        "Troponin normal."
    ),
]
ORTHO = [
    (
        "Right knee pain after a twisting injury playing soccer. MRI shows a medial meniscus tear. "
        "Arthroscopy with partial meniscectomy recommended."
    ),
    (
        "Fall on outstretched hand with a displaced distal radius fracture. Closed reduction and casting; "
        "orthopedic follow-up in one week with repeat x-ray."
    ),
    (
        "Chronic left knee osteoarthritis with joint space narrowing on x-ray. Failed injections and "
        "physical therapy. Scheduled for total knee arthroplasty."
    ),
    (
        "Ankle fracture, bimalleolar, after a fall down stairs. Open reduction internal fixation with plate "
        "and screws. Non weight bearing for six weeks."
    ),
    (
        "Anterior cruciate ligament rupture of the right knee with instability. Arthroscopic ACL "
        "reconstruction using hamstring autograft."
    ),
    (
        "Hip fracture, intertrochanteric, in an elderly woman after a fall. Treated with intramedullary nail. "
        "Physical therapy for gait training."
    ),
    (
        "Shoulder pain with weakness on abduction; MRI shows a rotator cuff tear. Arthroscopic rotator cuff "
        "repair performed."
    ),
    (
        "Postoperative visit after knee arthroscopy. Incisions healed, range of motion improving, quadriceps "
        "strengthening with physical therapy."
    ),
    (
        "Tibial shaft fracture from a motorcycle accident. Intramedullary nailing of the tibia; x-ray shows "
        "good alignment of the fracture."
    ),
    (
        "Lumbar strain after lifting. No fracture on x-ray. Back pain managed with physical therapy and "
        "anti-inflammatory medication; knee and hip exam normal."
    ),
]
DERM = [
    (
        "Pruritic erythematous rash on both forearms after gardening, consistent with contact dermatitis. "
        "Topical corticosteroid prescribed."
    ),
    (
        "Pigmented lesion on the back with irregular borders and color variation. Shave biopsy performed "
        "to rule out melanoma."
    ),
    "Biopsy of the scalp lesion shows basal cell carcinoma. Referred for Mohs surgery.",
    (
        "Scaly plaques on elbows and knees with nail pitting, consistent with psoriasis. Started topical "
        "calcipotriene and steroid ointment."
    ),
    ("Itchy vesicular rash in a dermatomal distribution on the left flank, herpes zoster. Started valacyclovir."),
    (
        "Acne vulgaris with comedones and inflammatory papules on the face. Topical retinoid and benzoyl "
        "peroxide; consider isotretinoin."
    ),
    "Chronic eczema with lichenified skin in the flexural folds. Emollients and topical tacrolimus.",
    (
        "Dermatology follow-up: excision of melanoma in situ with clear margins on pathology. Full skin exam "
        "without new suspicious lesions."
    ),
    "Urticaria with widespread wheals after a new antibiotic. Antihistamines and the rash resolved.",
    "Punch biopsy of a rash on the shins shows erythema nodosum. Skin lesions tender, no ulceration.",
]
TEXTS = CARDIO + ORTHO + DERM
LABELS = ["cardio"] * len(CARDIO) + ["ortho"] * len(ORTHO) + ["derm"] * len(DERM)
IDS = [f"{lab}-{i:02d}" for i, lab in enumerate(LABELS)]
NEW_CARDIO = (
    "Sixty year old man with crushing chest pain and diaphoresis. Troponin rising, ST elevation on ECG. "
    "Emergent cardiac catheterization with stent to the right coronary artery."
)


@pytest.fixture(scope="module", params=METHODS)
def fitted(request: pytest.FixtureRequest) -> SimilarCaseIndex:
    return SimilarCaseIndex(method=request.param).fit(TEXTS, IDS)


# ---------------------------------------------------------------------- retrieval quality


def test_top1_neighbour_is_same_topic_for_most_notes(fitted: SimilarCaseIndex) -> None:
    nb = fitted.neighbours_all(k=1)
    assert nb.shape == (len(TEXTS), 1)
    rate = top_k_label_hit_rate(nb, LABELS, k=1)
    assert rate >= 0.8, f"{fitted.method}: top-1 same-topic rate {rate:.2f}"
    assert top_k_label_hit_rate(fitted.neighbours_all(k=3), LABELS, k=3) >= rate


def test_query_of_new_cardiology_note_returns_cardiology_first(fitted: SimilarCaseIndex) -> None:
    hits = fitted.query(NEW_CARDIO, k=3)
    assert hits[0].note_id.startswith("cardio-")
    assert [h.rank for h in hits] == [1, 2, 3]


def test_scores_in_unit_interval_and_sorted(fitted: SimilarCaseIndex) -> None:
    for text in (NEW_CARDIO, ORTHO[0], "rash and knee pain"):
        hits = fitted.query(text, k=len(TEXTS))
        assert len(hits) == len(TEXTS)
        assert all(isinstance(h, Hit) and 0.0 <= h.score <= 1.0 for h in hits)
        assert [(-h.score, h.note_id) for h in hits] == sorted((-h.score, h.note_id) for h in hits)
        assert [h.rank for h in hits] == list(range(1, len(TEXTS) + 1))


def test_exact_duplicate_scores_one_at_rank_one(fitted: SimilarCaseIndex) -> None:
    for i in (0, 14, 27):
        top = fitted.query(TEXTS[i], k=2)
        assert top[0].note_id == IDS[i]
        assert top[0].score == pytest.approx(1.0, abs=1e-9)
        assert top[1].score < top[0].score


def test_exclude_drops_notes_without_changing_other_scores(fitted: SimilarCaseIndex) -> None:
    full = {h.note_id: h.score for h in fitted.query(TEXTS[3], k=len(TEXTS))}
    hits = fitted.query(TEXTS[3], k=len(TEXTS), exclude=[IDS[3], "not-indexed"])
    assert len(hits) == len(TEXTS) - 1 and IDS[3] not in {h.note_id for h in hits}
    assert all(full[h.note_id] == h.score for h in hits)


def test_neighbours_excludes_itself_and_matches_query_with_exclude(fitted: SimilarCaseIndex) -> None:
    nb = fitted.neighbours(IDS[5], k=4)
    assert IDS[5] not in {h.note_id for h in nb}
    via_query = fitted.query(TEXTS[5], k=4, exclude=[IDS[5]])
    assert [h.note_id for h in nb] == [h.note_id for h in via_query]
    np.testing.assert_allclose([h.score for h in nb], [h.score for h in via_query], rtol=1e-12, atol=1e-12)


def test_neighbours_all_equals_per_item_neighbours(fitted: SimilarCaseIndex) -> None:
    k = 4
    nb = fitted.neighbours_all(k, block_rows=7)  # several blocks, one partial
    assert nb.shape == (len(TEXTS), k) and nb.dtype == np.int64
    for i, nid in enumerate(IDS):
        assert [IDS[j] for j in nb[i]] == [h.note_id for h in fitted.neighbours(nid, k=k)]
    np.testing.assert_array_equal(nb, fitted.neighbours_all(k))


def test_ties_are_broken_by_note_id() -> None:
    texts = ["knee fracture cast", "knee fracture cast", "knee fracture cast", "rash biopsy"]
    for method in METHODS:
        idx = SimilarCaseIndex(method=method).fit(texts, ["c", "a", "b", "d"])
        assert [h.note_id for h in idx.query("knee fracture cast", k=3)] == ["a", "b", "c"]
        assert [h.note_id for h in idx.neighbours("c", k=2)] == ["a", "b"]
        np.testing.assert_array_equal(idx.neighbours_all(2)[2], [1, 0])  # note "c": a (row 1), b (row 0)


def test_tfidf_is_the_plain_sklearn_baseline() -> None:
    idx = SimilarCaseIndex(method="tfidf").fit(TEXTS, IDS)
    vec = TfidfVectorizer(sublinear_tf=False)
    expected = cosine_similarity(vec.fit_transform(TEXTS), vec.transform([NEW_CARDIO])).ravel()
    got = {h.note_id: h.score for h in idx.query(NEW_CARDIO, k=len(TEXTS))}
    np.testing.assert_allclose([got[i] for i in IDS], expected, atol=1e-12)


def test_hybrid_note_to_note_similarity_is_symmetric() -> None:
    idx = SimilarCaseIndex(method="hybrid").fit(TEXTS, IDS)
    sim = {(a, h.note_id): h.score for a in IDS for h in idx.neighbours(a, k=len(IDS))}
    assert all(sim[a, b] == pytest.approx(sim[b, a], abs=1e-12) for a, b in sim)


def test_analyze_drops_boilerplate_keeps_clinical_words_and_bigrams() -> None:
    terms = analyze("The patient denies chest pain. History: metformin 500 mg")
    assert "the" not in terms and "patient" not in terms
    for kept in ("denies", "chest", "pain", "chest pain", "history", "metformin", "500", "mg", "500 mg"):
        assert kept in terms
    assert "pain history" not in terms  # no bigram across a sentence break


# ---------------------------------------------------------------------- concepts


def test_concepts_decide_between_otherwise_equal_candidates() -> None:
    text = "Follow-up visit for blood pressure and blood sugar management, labs reviewed."
    texts = [text, text, ORTHO[0], DERM[0]]
    ids = ["a-diabetes", "b-hypertension", "ortho", "derm"]
    concepts = [
        ["problem:diabetes", "medication:metformin"],
        ["problem:hypertension", "medication:lisinopril"],
        ["problem:meniscus tear"],
        [],
    ]
    idx = SimilarCaseIndex(method="hybrid", concept_weight=0.5).fit(texts, ids, concepts=concepts)
    # Text alone ties the two candidates; the note id breaks the tie.
    assert [h.note_id for h in idx.query(text, k=2)] == ["a-diabetes", "b-hypertension"]
    hits = idx.query(text, k=2, concepts=["Problem:Hypertension ", "medication:lisinopril"])
    assert [h.note_id for h in hits] == ["b-hypertension", "a-diabetes"]
    assert hits[0].score == pytest.approx(1.0) and hits[1].score == pytest.approx(0.5)
    # A stored note's own concepts steer its neighbours too.
    texts2 = texts + [text]
    idx2 = SimilarCaseIndex(method="hybrid").fit(
        texts2, ids + ["z-query"], concepts=concepts + [["problem:hypertension"]]
    )
    assert idx2.neighbours("z-query", k=1)[0].note_id == "b-hypertension"


def test_concepts_are_ignored_by_text_only_methods(caplog: pytest.LogCaptureFixture) -> None:
    idx = SimilarCaseIndex(method="bm25").fit(TEXTS, IDS, concepts=[["x"]] * len(TEXTS))
    assert idx.concept_matrix_ is None and "ignores concepts" in caplog.text
    assert idx.query(NEW_CARDIO, k=1, concepts=["x"]) == idx.query(NEW_CARDIO, k=1)


# ---------------------------------------------------------------------- persistence


def _concepts_for(texts: list[str]) -> list[list[str]]:
    return [[f"specialty:{lab}", f"note:{i % 3}"] for i, lab in enumerate(LABELS[: len(texts)])]


@pytest.mark.parametrize("method", METHODS)
def test_save_load_round_trip_gives_identical_hits(method: str, tmp_path: Path) -> None:
    concepts = _concepts_for(TEXTS) if method == "hybrid" else None
    idx = SimilarCaseIndex(method=method, k1=1.2, b=0.6, concept_weight=0.3).fit(TEXTS, IDS, concepts=concepts)
    out = idx.save(tmp_path / "index")
    assert out == tmp_path / "index" and (out / "manifest.json").is_file()
    loaded = SimilarCaseIndex.load(out)
    assert loaded.get_params() == idx.get_params()
    assert loaded.note_ids_ == idx.note_ids_ and loaded.vocabulary_ == idx.vocabulary_
    qc = ["specialty:cardio"] if method == "hybrid" else None
    for text in (NEW_CARDIO, ORTHO[2], "itchy rash on the arm"):
        assert loaded.query(text, k=5, concepts=qc) == idx.query(text, k=5, concepts=qc)
    assert loaded.neighbours(IDS[7], k=5) == idx.neighbours(IDS[7], k=5)
    np.testing.assert_array_equal(loaded.neighbours_all(3), idx.neighbours_all(3))


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    idx = SimilarCaseIndex(method="hybrid").fit(TEXTS, IDS, concepts=_concepts_for(TEXTS))
    return idx.save(tmp_path / "index")


@pytest.mark.parametrize(
    "name", ["doc_matrix.npz", "idf.npy", "note_ids.json", "vocabulary.json", "params.json", "concept_matrix.npz"]
)
def test_tampered_file_raises_naming_it(saved: Path, name: str) -> None:
    path = saved / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RetrievalError, match=name.replace(".", r"\.")):
        SimilarCaseIndex.load(saved)


def test_missing_file_raises_naming_it(saved: Path) -> None:
    (saved / "idf.npy").unlink()
    with pytest.raises(RetrievalError, match=r"idf\.npy.*missing"):
        SimilarCaseIndex.load(saved)


def test_missing_manifest_or_directory_raises(saved: Path, tmp_path: Path) -> None:
    (saved / "manifest.json").unlink()
    with pytest.raises(RetrievalError, match=r"manifest\.json"):
        SimilarCaseIndex.load(saved)
    with pytest.raises(RetrievalError, match=r"manifest\.json"):
        SimilarCaseIndex.load(tmp_path / "nowhere")


def test_manifest_naming_a_foreign_file_is_refused(saved: Path) -> None:
    manifest = (saved / "manifest.json").read_text()
    (saved / "manifest.json").write_text(manifest.replace('"idf.npy"', '"../idf.npy"'))
    with pytest.raises(RetrievalError, match="unexpected file name"):
        SimilarCaseIndex.load(saved)


def test_save_and_load_never_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used")

    for name in ("load", "loads", "dump", "dumps"):
        monkeypatch.setattr(pickle, name, refuse)
    idx = SimilarCaseIndex(method="hybrid").fit(TEXTS, IDS, concepts=_concepts_for(TEXTS))
    out = idx.save(tmp_path / "index")
    loaded = SimilarCaseIndex.load(out)
    assert loaded.query(NEW_CARDIO, k=3) == idx.query(NEW_CARDIO, k=3)
    assert {p.suffix for p in out.iterdir()} <= {".json", ".npy", ".npz"}


def test_resave_without_concepts_removes_stale_concept_files(saved: Path) -> None:
    SimilarCaseIndex(method="hybrid").fit(TEXTS, IDS).save(saved)
    assert not (saved / "concept_matrix.npz").exists()
    assert SimilarCaseIndex.load(saved).concept_matrix_ is None


# ---------------------------------------------------------------------- validation


def test_fit_validation_errors() -> None:
    with pytest.raises(RetrievalError, match="length mismatch"):
        SimilarCaseIndex().fit(TEXTS, IDS[:-1])
    with pytest.raises(RetrievalError, match="unique.*cardio-00"):
        SimilarCaseIndex().fit(TEXTS[:2], [IDS[0], IDS[0]])
    with pytest.raises(RetrievalError, match="unknown method 'lsa'"):
        SimilarCaseIndex(method="lsa").fit(TEXTS, IDS)
    with pytest.raises(RetrievalError, match="zero notes"):
        SimilarCaseIndex().fit([], [])
    with pytest.raises(RetrievalError, match="concept lists"):
        SimilarCaseIndex().fit(TEXTS, IDS, concepts=[["a"]])
    with pytest.raises(RetrievalError, match="note_ids"):
        SimilarCaseIndex().fit(TEXTS[:1], [1])  # type: ignore[list-item]
    with pytest.raises(RetrievalError, match="b must be"):
        SimilarCaseIndex(b=1.5).fit(TEXTS, IDS)
    with pytest.raises(RetrievalError, match="no terms"):
        SimilarCaseIndex(method="bm25").fit(["the patient was", "with the"], ["a", "b"])


def test_query_validation_errors() -> None:
    with pytest.raises(RetrievalError, match="not fitted"):
        SimilarCaseIndex().query("chest pain")
    idx = SimilarCaseIndex(method="bm25").fit(TEXTS, IDS)
    for bad_k in (0, -1, 1.5, True):
        with pytest.raises(RetrievalError, match="k must be"):
            idx.query("chest pain", k=bad_k)  # type: ignore[arg-type]
    with pytest.raises(RetrievalError, match="k must be"):
        idx.neighbours(IDS[0], k=0)
    with pytest.raises(RetrievalError, match="k must be"):
        idx.neighbours_all(0)
    with pytest.raises(RetrievalError, match="needs at least"):
        idx.neighbours_all(len(IDS))
    with pytest.raises(RetrievalError, match="'nope' is not in the index"):
        idx.neighbours("nope")
    with pytest.raises(RetrievalError, match="non-empty"):
        idx.query("   ")
    with pytest.raises(RetrievalError, match="single string"):
        idx.query("chest pain", exclude=IDS[0])


def test_sklearn_contract() -> None:
    idx = SimilarCaseIndex(method="bm25", k1=1.2)
    assert idx.get_params()["k1"] == 1.2 and not hasattr(idx, "vocabulary_")
    copy = clone(idx.fit(TEXTS, IDS))
    assert copy.get_params() == idx.get_params() and not hasattr(copy, "doc_matrix_")


# ---------------------------------------------------------------------- evaluation helpers


def test_top_k_label_hit_rate_matches_hand_computation() -> None:
    labels = ["a", "a", "b", "b", "c"]
    nb = np.array(
        [
            [2, 1, 3],  # a: hit at position 2
            [2, 3, 4],  # a: none
            [3, 0, 1],  # b: hit at position 1
            [0, 1, 2],  # b: hit at position 3 only
            [0, 1, 2],  # c: none (no other c)
        ]
    )
    assert top_k_label_hit_rate(nb, labels, k=1) == pytest.approx(1 / 5)
    assert top_k_label_hit_rate(nb, labels, k=2) == pytest.approx(2 / 5)
    assert top_k_label_hit_rate(nb, labels, k=3) == pytest.approx(3 / 5)
    assert hit_rate_by_label(nb, labels, k=3) == {"a": 0.5, "b": 1.0, "c": 0.0}
    with pytest.raises(RetrievalError, match="columns"):
        top_k_label_hit_rate(nb, labels, k=4)
    with pytest.raises(RetrievalError, match="length mismatch"):
        top_k_label_hit_rate(nb, labels[:-1], k=1)
    with pytest.raises(RetrievalError, match="must lie in"):
        top_k_label_hit_rate(nb + 1, labels, k=1)


@pytest.mark.parametrize("method", METHODS)
def test_min_df_and_max_features_prune_the_vocabulary(method: str, tmp_path: Path) -> None:
    full = SimilarCaseIndex(method=method).fit(TEXTS, IDS)
    pruned = SimilarCaseIndex(method=method, min_df=2).fit(TEXTS, IDS)
    assert 0 < len(pruned.vocabulary_) < len(full.vocabulary_)
    assert sorted(pruned.vocabulary_.values()) == list(range(len(pruned.vocabulary_)))
    assert pruned.doc_matrix_.shape == (len(TEXTS), len(pruned.vocabulary_))
    top5 = SimilarCaseIndex(method=method, max_features=5).fit(TEXTS, IDS)
    assert len(top5.vocabulary_) == 5
    loaded = SimilarCaseIndex.load(pruned.save(tmp_path / method))
    assert loaded.query(NEW_CARDIO, k=3) == pruned.query(NEW_CARDIO, k=3)
    assert pruned.query(NEW_CARDIO, k=1)[0].note_id.startswith("cardio-")
