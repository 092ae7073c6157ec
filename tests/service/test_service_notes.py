"""``/v1/medical/notes/structure`` and ``/similar`` over HTTP against a real ``trillium serve``.

Oracles: the in-process ``RecordStructurer`` for the same text, and a ``SimilarCaseIndex``
fitted here on the notes stored in the seeded database (the seed stored them through
``store_notes``); the audit log read from that database.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from trillium.core import db as dbmod

STRUCTURE = "/v1/medical/notes/structure"
SIMILAR = "/v1/medical/notes/similar"
FHIR = "/v1/medical/notes/structure/fhir"
NOTE = """CC: Chest pain.

HPI: 62-year-old man who denies chest pain at rest and has no fever. History of hypertension.
Possible pneumonia. His mother had breast cancer. Return if shortness of breath.

MEDICATIONS:
Metformin 500 mg PO BID.
Albuterol inhaler 2 puffs q4-6h prn wheezing.

VITAL SIGNS: BP 130/80, HR 72, Temp 37.1 C, SpO2 97% on room air.
"""
ENTITY_KEYS = ("kind", "text", "start", "end", "normalized", "section", "sentence", "negated", "uncertain",
               "hypothetical", "historical", "family", "values", "evidence", "code_system", "code")


def headers(service_home: dict, who: str) -> dict[str, str]:
    """The API key of a role of the seeded home (as the harness's ``headers``)."""
    return {"X-API-Key": service_home["keys"][who]}


def seeded_db(service_home: dict) -> dbmod.Database:
    return dbmod.connect(f"sqlite:///{service_home['home'] / 'trillium.db'}")


@pytest.fixture(scope="module")
def structurer() -> Any:
    from trillium.medical.records.structurer import RecordStructurer

    return RecordStructurer()


def structure(service: Any, service_home: dict, body: dict, who: str = "medical") -> httpx.Response:
    return httpx.post(service.url + STRUCTURE, json=body, headers=headers(service_home, who), timeout=60)


def similar(service: Any, service_home: dict, body: dict, who: str = "medical") -> httpx.Response:
    return httpx.post(service.url + SIMILAR, json=body, headers=headers(service_home, who), timeout=60)


def audit_rows(service_home: dict, action: str, target: str) -> list[Any]:
    from trillium.core.db import AuditEvent

    with seeded_db(service_home).session() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action, AuditEvent.target == target)
                              .order_by(AuditEvent.id)))


# --------------------------------------------------------------------------- structure


def test_structure_is_the_in_process_structurer_with_spans_and_context(service, service_home, structurer) -> None:
    note_id = f"t-{uuid.uuid4().hex[:8]}"
    r = structure(service, service_home, {"text": NOTE, "note_id": note_id, "patient_id": "P-77"})
    assert r.status_code == 200, r.text
    body = r.json()
    want = structurer.structure(NOTE, note_id=note_id, patient_id="P-77").to_dict()
    assert body["note_id"] == note_id and body["patient_id"] == "P-77" and body["stored"] is False
    assert body["model"] == "record-structurer" and body["model_version"] == structurer.version
    assert body["sections"] == want["sections"] and body["sentences"] == want["sentences"]
    assert [{k: e[k] for k in ENTITY_KEYS} for e in body["entities"]] == want["entities"]
    for e in body["entities"]:
        assert NOTE[e["start"]:e["end"]] == e["text"]
    by_text = {e["text"]: e for e in body["entities"]}  # "Chest pain" (the complaint) is another mention
    assert by_text["chest pain"]["negated"] is True and by_text["chest pain"]["concept"] is None
    assert by_text["fever"]["negated"] is True
    assert by_text["hypertension"]["historical"] is True
    # concepts are terminology codes where one exists (issue 23): hypertension is ICD-10-CM I10
    assert (by_text["hypertension"]["code_system"], by_text["hypertension"]["code"]) == ("ICD-10-CM", "I10")
    assert by_text["hypertension"]["concept"] == "problem:ICD-10-CM:I10"
    assert by_text["pneumonia"]["uncertain"] is True
    assert by_text["breast cancer"]["family"] is True
    assert by_text["shortness of breath"]["hypothetical"] is True
    meds = {m["name"]: m for m in body["medications"]}
    assert meds["metformin"]["dose"] == 500 and meds["metformin"]["unit"] == "mg"
    assert meds["metformin"]["route"] == "oral" and meds["metformin"]["frequency"] == "BID"
    assert meds["albuterol"]["as_needed"] is True
    vitals = {v["name"]: v for v in body["vitals"]}
    assert (vitals["blood_pressure"]["systolic"], vitals["blood_pressure"]["diastolic"]) == (130, 80)
    assert vitals["heart_rate"]["value"] == 72 and vitals["temperature"]["unit"] == "C"
    assert body["concepts"] == structurer.structure(NOTE).concepts()
    # audited with the key's owner, without the text
    rows = audit_rows(service_home, "medical.note.structure", note_id)
    assert len(rows) == 1
    assert rows[0].actor == "medical-caller" and rows[0].details["patient_id"] == "P-77"
    assert rows[0].details["route"] == STRUCTURE and "denies" not in str(rows[0].details)


def test_spans_refer_to_the_text_as_sent_crlf_and_bom_included(service, service_home, structurer) -> None:
    sent = "\ufeff" + NOTE.replace("\n", "\r\n")
    r = structure(service, service_home, {"text": sent})
    assert r.status_code == 200, r.text
    body = r.json()
    want = structurer.structure(NOTE).to_dict()["entities"]
    assert len(body["entities"]) == len(want)
    for got, exp in zip(body["entities"], want, strict=True):
        assert sent[got["start"]:got["end"]] == got["text"]
        assert got["text"].replace("\r\n", "\n") == exp["text"]
        assert {k: got[k] for k in ("kind", "normalized", "negated", "historical", "family")} == \
            {k: exp[k] for k in ("kind", "normalized", "negated", "historical", "family")}
    for a, b in body["sentences"]:
        assert sent[a:b].replace("\r\n", "\n").strip() != ""
    assert sent[body["sections"][1]["start"]:].startswith("HPI:")


def test_concurrent_structuring_is_each_right(service, service_home, structurer) -> None:
    from trillium.medical.records.synth import synthetic_notes

    notes = synthetic_notes(16, seed=31)
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda n: structure(service, service_home, {"text": n.text, "note_id": n.note_id}),
                                  notes))
    for note, r in zip(notes, responses, strict=True):
        assert r.status_code == 200, r.text
        got = [{k: e[k] for k in ENTITY_KEYS} for e in r.json()["entities"]]
        assert got == structurer.structure(note.text, note_id=note.note_id).to_dict()["entities"]


def test_store_needs_write_and_stores_the_whole_note(service, service_home, structurer) -> None:
    from trillium.medical.store import load_note
    from trillium.medical.tables import ClinicalNote

    note_id, patient = f"stored-{uuid.uuid4().hex[:8]}", f"P-{uuid.uuid4().hex[:6]}"
    text = NOTE + f"\nPlan: follow up for {patient}.\n"
    r = structure(service, service_home, {"text": text, "note_id": note_id, "store": True}, who="viewer")
    assert r.status_code == 403 and "medical:write" in r.json()["message"], r.text
    assert load_note(note_id, db=seeded_db(service_home)) is None
    try:
        r = structure(service, service_home, {"text": text, "note_id": note_id, "patient_id": patient, "store": True})
        assert r.status_code == 200 and r.json()["stored"] is True, r.text
        stored = load_note(note_id, db=seeded_db(service_home))
        assert stored is not None and stored["text"] == text and stored["patient_id"] == patient
        want = structurer.structure(text).entities
        assert [(e["kind"], e["start"], e["end"], e["negated"]) for e in stored["entities"]] == \
            sorted([(e.kind, e.start, e.end, e.negated) for e in want], key=lambda x: x[1])
        rows = audit_rows(service_home, "medical.note.store", note_id)
        assert [row.actor for row in rows] == ["medical-caller"] and rows[0].details["stored"] is True
        # the similar route finds it: at once in the worker that stored it, within seconds in the other
        deadline, hits = time.monotonic() + 15, []
        while time.monotonic() < deadline:
            r = similar(service, service_home, {"text": text, "k": 3})
            hits = r.json()["hits"]
            if hits and hits[0]["note_id"] == note_id:
                break
            time.sleep(0.5)
        assert hits[0]["note_id"] == note_id and hits[0]["patient_id"] == patient, hits
    finally:
        with seeded_db(service_home).session() as s:
            for row in s.scalars(select(ClinicalNote).where(ClinicalNote.note_id == note_id)):
                s.delete(row)


# --------------------------------------------------------------------------- similar


def _oracle(service_home: dict) -> Any:
    from trillium.medical.records.retrieval import SimilarCaseIndex
    from trillium.medical.store import indexable_notes

    texts, ids, concepts = indexable_notes(db=seeded_db(service_home))
    return SimilarCaseIndex(method="hybrid").fit(texts, ids, concepts), dict(zip(ids, texts, strict=True))


def _similar_over(service: Any, service_home: dict, body: dict, n_notes: int) -> dict:
    """The answer of an index over ``n_notes`` notes (a worker rebuilds within seconds of a change)."""
    deadline = time.monotonic() + 15
    while True:
        r = similar(service, service_home, body)
        assert r.status_code == 200, r.text
        if r.json()["indexed_notes"] == n_notes or time.monotonic() > deadline:
            return r.json()
        time.sleep(0.5)


def test_similar_finds_the_stored_note_first_as_the_in_process_index_does(service, service_home,
                                                                           structurer) -> None:
    from trillium.medical.store import load_note

    index, texts = _oracle(service_home)
    seeded = service_home["seed"]["medical"]["notes"]
    assert set(seeded) <= set(texts)
    for note_id in seeded[:4]:
        body = _similar_over(service, service_home, {"text": texts[note_id], "k": 5}, len(texts))
        assert body["indexed_notes"] == len(texts) and body["method"] == "hybrid"
        want = index.query(texts[note_id], k=5, concepts=structurer.structure(texts[note_id]).concepts())
        assert [h["note_id"] for h in body["hits"]] == [h.note_id for h in want]
        assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in want], abs=1e-9)
        assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5]
        first = body["hits"][0]
        assert first["note_id"] == note_id and first["score"] == pytest.approx(1.0)
        assert first["patient_id"] == load_note(note_id, db=seeded_db(service_home))["patient_id"]
        # by id: its neighbours, itself left out
        by_id = _similar_over(service, service_home, {"note_id": note_id, "k": 3}, len(texts))
        assert [h["note_id"] for h in by_id["hits"]] == [h.note_id for h in index.neighbours(note_id, k=3)]
        rows = audit_rows(service_home, "medical.note.similar", note_id)
        assert rows and rows[-1].actor == "medical-caller"
        assert rows[-1].details["notes"] == [h["note_id"] for h in by_id["hits"]]


def test_similar_k_bounds_and_text_queries_are_audited(service, service_home) -> None:
    _, texts = _oracle(service_home)
    query = {"text": "shortness of breath and chest pain", "k": 100}
    _similar_over(service, service_home, query, len(texts))
    before = audit_rows(service_home, "medical.note.similar", "")
    r = similar(service, service_home, query, who="viewer")
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    # this request may reach the other worker, whose index can lag a note stored or deleted by
    # another test by up to its check interval: k is bounded by the index that answered
    indexed = r.json()["indexed_notes"]
    assert abs(indexed - len(texts)) <= 1
    assert len(hits) == min(100, indexed) and [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    after = audit_rows(service_home, "medical.note.similar", "")
    assert len(after) == len(before) + 1
    assert after[-1].actor == "viewer-caller" and after[-1].details["k"] == 100
    assert after[-1].details["notes"] == [h["note_id"] for h in hits]


def test_structure_fhir_is_a_valid_r4_bundle_of_the_same_note(service, service_home, structurer) -> None:
    from trillium.medical.records.fhir import to_fhir_bundle, validate_bundle

    note_id = f"t-{uuid.uuid4().hex[:8]}"
    r = httpx.post(service.url + FHIR, json={"text": NOTE, "note_id": note_id, "patient_id": "P-78"},
                   headers=headers(service_home, "medical"), timeout=60)
    assert r.status_code == 200, r.text
    bundle = r.json()
    validate_bundle(bundle)
    assert bundle == to_fhir_bundle(structurer.structure(NOTE, note_id=note_id, patient_id="P-78"))
    res = [e["resource"] for e in bundle["entry"]]
    conds = {c["code"]["text"]: c for c in res if c["resourceType"] == "Condition"}
    assert conds["hypertension"]["code"]["coding"][0]["code"] == "I10"
    assert conds["chest pain"]["verificationStatus"]["coding"][0]["code"] == "refuted"
    assert "breast cancer" not in conds  # a relative's condition is not the patient's
    assert {m["medicationCodeableConcept"]["text"] for m in res if m["resourceType"] == "MedicationStatement"} \
        == {"metformin", "albuterol"}
    assert all(x["subject"] == {"reference": "Patient/P-78"} for x in res if "subject" in x)
    assert len(audit_rows(service_home, "medical.note.structure", note_id)) == 1


# --------------------------------------------------------------------------- access and bad input


@pytest.mark.parametrize("path", [STRUCTURE, SIMILAR, FHIR])
def test_auth(service, service_home, path) -> None:
    body = {"text": "Denies fever.", "k": 1} if path == SIMILAR else {"text": "Denies fever."}
    r = httpx.post(service.url + path, json=body, timeout=30)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = httpx.post(service.url + path, json=body, headers=headers(service_home, "finance"), timeout=30)
    assert r.status_code == 403 and "medical:read" in r.json()["message"]
    r = httpx.post(service.url + path, json=body, headers=headers(service_home, "manufacturing"), timeout=30)
    assert r.status_code == 403
    for who in ("viewer", "medical", "admin"):
        r = httpx.post(service.url + path, json=body, headers=headers(service_home, who), timeout=30)
        assert r.status_code == 200, (who, r.text)


@pytest.mark.parametrize(("path", "body", "status", "fields"), [
    (STRUCTURE, {}, 422, ["body.text"]),
    (STRUCTURE, {"text": ""}, 422, ["body.text"]),
    (STRUCTURE, {"text": " \n\t "}, 422, ["body.text"]),
    (STRUCTURE, {"text": 42}, 422, ["body.text"]),
    (STRUCTURE, {"text": "fine", "stor": True}, 422, ["body.stor"]),
    (STRUCTURE, {"text": "fine", "note_id": "x" * 201}, 422, ["body.note_id"]),
    (STRUCTURE, {"text": "fine", "patient_id": "a\nb"}, 422, ["body.patient_id"]),
    (STRUCTURE, {"text": "fine", "store": "perhaps"}, 422, ["body.store"]),
    (STRUCTURE, {"text": "a\u0000b"}, 422, ["text"]),
    (STRUCTURE, {"text": "\u0001\u0002\u0003\u0004 abc"}, 422, ["text"]),
    (STRUCTURE, {"text": "x" * 2_000_001}, 413, ["text", "text_bytes"]),
    (STRUCTURE, {"text": "\u00e9" * 1_000_001}, 413, ["text", "text_bytes"]),  # bytes count, not characters
    (SIMILAR, {"k": 5}, 422, ["body"]),
    (SIMILAR, {"text": "chest pain", "note_id": "note-2-00000"}, 422, ["body"]),
    (SIMILAR, {"text": "chest pain", "k": 0}, 422, ["body.k"]),
    (SIMILAR, {"text": "chest pain", "k": 101}, 422, ["body.k"]),
    (SIMILAR, {"text": "chest pain", "k": "five"}, 422, ["body.k"]),
    (SIMILAR, {"text": "x" * 2_000_001}, 413, ["text", "text_bytes"]),
    (SIMILAR, {"note_id": "no-such-note"}, 404, ["note_id"]),
])
def test_bad_input_is_4xx_naming_the_field(service, service_home, path, body, status, fields) -> None:
    r = httpx.post(service.url + path, json=body, headers=headers(service_home, "medical"), timeout=60)
    assert r.status_code == status, r.text
    got = r.json()
    assert got["fields"] == fields, got
    if fields == ["body"]:
        assert "text" in got["message"] and "note_id" in got["message"]
    else:
        assert fields[0].removeprefix("body.") in got["message"]


@pytest.mark.parametrize("path", [STRUCTURE, SIMILAR])
def test_malformed_bodies_are_4xx(service, service_home, path) -> None:
    h = headers(service_home, "medical")
    for content, ctype in ((b'{"text": "unterminated', "application/json"), (b"text=denies fever", "text/plain"),
                           (b'{"text": "lone \\ud800 surrogate"}', "application/json"),
                           (b"\xff\xfe\x00garbage", "application/json")):
        r = httpx.post(service.url + path, content=content, headers={**h, "content-type": ctype}, timeout=30)
        assert 400 <= r.status_code < 500, (content, r.text)
        assert r.json()["error"] == "invalid_input" and r.json()["fields"], r.text


# --------------------------------------------------------------------------- online monitoring


def test_structured_notes_are_sampled_per_day_and_checked_for_drift(service, service_home, structurer, tmp_path,
                                                                     monkeypatch) -> None:
    """Each worker samples the notes it structures per day (server clock, UTC): the same columns
    a batch job's check computes against the registered notes reference, written at every
    request here (``TRILLIUM_MONITOR_FLUSH_SECONDS=0``) and at shutdown; the day is then checked
    against the reference's profile."""
    from datetime import UTC, datetime

    import numpy as np

    from tests.service.conftest import copy_home
    from trillium.core.monitoring import store
    from trillium.core.monitoring.online import check_days, read_day, sampled_columns
    from trillium.core.registry import ModelRegistry
    from trillium.medical.records.monitoring import COLUMNS, MODEL_NAME, load_reference, note_row, register_reference
    from trillium.medical.records.synth import synthetic_notes

    home = copy_home(service_home["home"], tmp_path / "home")
    monkeypatch.setenv("TRILLIUM_HOME", str(home))
    dbmod.reset_connections()
    registry = ModelRegistry(dbmod.connect())
    record = register_reference([structurer.structure(n.text) for n in synthetic_notes(60, seed=21)], structurer,
                                registry=registry)
    dbmod.reset_connections()
    texts = [NOTE, *(n.text for n in synthetic_notes(5, seed=22))]
    server = type(service)(home, workers=1, env={"TRILLIUM_MONITOR_FLUSH_SECONDS": "0"}).wait_ready()
    try:
        for i, text in enumerate(texts):
            r = httpx.post(server.url + STRUCTURE, json={"text": text, "note_id": f"online-{i}"},
                           headers=headers(service_home, "medical"), timeout=60)
            assert r.status_code == 200, r.text
    finally:
        server.stop()
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    folder = home / "monitoring" / "online" / MODEL_NAME / f"v{record.version}" / day
    x, _, _, seen = read_day(folder)
    assert seen == len(texts) and sampled_columns(folder) == list(COLUMNS)
    # the sampled rows are the in-process statistics of the same notes against the same reference
    dbmod.reset_connections()
    registry = ModelRegistry(dbmod.connect())
    reference = load_reference(registry, registry.get(MODEL_NAME, record.version))
    want = np.array([note_row(structurer.structure(t), reference) for t in texts])
    np.testing.assert_allclose(np.sort(x, axis=0), np.sort(want, axis=0), rtol=1e-6)  # stored as float32
    (run_id,) = check_days(MODEL_NAME, registry=registry, days=[(record.version, day)], performance=False)
    run = store.runs(MODEL_NAME, scope="day").set_index("run_id").loc[run_id]
    assert run["label"] == "online" and run["day"] == day and run["rows"] == len(texts)
    assert [c["name"] for c in run["columns"]] == list(COLUMNS)
