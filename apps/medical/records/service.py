"""The clinical-notes routes of the HTTP service: ``/v1/medical/notes/structure`` and ``/similar``.

- ``structure``: a note's text -> sections, sentences, entities with character spans and ConText
  attributes, medications with dose / route / frequency, vital signs, concepts; optionally stored.
  It is ``RecordStructurer`` and its own serialisation (``StructuredNote.to_dict``), run in a
  thread of the request (pure Python CPU work must not hold the event loop).
- ``similar``: the stored notes most like a text or a stored note (``SimilarCaseIndex`` over the
  database's notes, see ``StoredNotesIndex``).

Both read or write patient data, so every call goes to the audit log with the key's owner.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from trillium.core.access import KeyInfo
from trillium.core.db import Database
from trillium.core.errors import InputValidationError
from trillium.core.service.context import ServiceContext
from trillium.core.service.errors import ERROR_RESPONSES, error_response
from trillium.core.untrusted import LimitExceededError, Limits

__all__ = [
    "SimilarRequest",
    "SimilarResponse",
    "StoredNotesIndex",
    "StructureRequest",
    "StructureResponse",
    "notes_router",
    "structure_text",
]

log = logging.getLogger(__name__)

_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # printable: ids end up in the database, the audit log and file names
MODEL_NAME = "record-structurer"


# --------------------------------------------------------------------------- request / response models


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class StructureRequest(BaseModel):
    """A note to structure (and, with ``store``, to keep)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=1, pattern=r"\S", description="The note's text (UTF-8, at most "
                      "TRILLIUM_LIMIT_TEXT_BYTES bytes, 2,000,000 by default). Spans in the answer refer to it.")
    note_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=_ID_PATTERN,
                                description="The note's id; default: one made here (`api-<hex>`). Storing a note "
                                            "under an id already stored replaces it.")
    patient_id: str | None = Field(default=None, min_length=1, max_length=100, pattern=_ID_PATTERN,
                                   description="The patient's id, kept with a stored note.")
    store: bool = Field(default=False, description="Store the structured note (needs medical:write); the similar "
                                                   "route finds it within a few seconds.")


class SectionOut(BaseModel):
    name: str = Field(description="Canonical section name (`medications`, `history_present_illness`, ...).")
    header: str = Field(description="The header as written (empty for the preamble).")
    start: int = Field(ge=0, description="Where the header begins.")
    body_start: int = Field(ge=0, description="The first character after the header.")
    end: int = Field(ge=0, description="Where the section ends (exclusive).")


class EntityOut(BaseModel):
    kind: Literal["problem", "medication", "allergy", "vital", "lab", "procedure", "finding"]
    text: str = Field(description="The mention as written: `text[start:end]` of the request's text.")
    start: int = Field(ge=0, description="Character offset of the mention's first character.")
    end: int = Field(ge=0, description="Character offset after its last character.")
    normalized: str = Field(description="The canonical name (`chest pain`, `metformin`, `blood_pressure`).")
    concept: str | None = Field(description="The concept the note asserts of the patient (`problem:hypertension`); "
                                            "null when the mention is negated, uncertain, hypothetical, a "
                                            "relative's, or a measurement.")
    section: str = Field(description="The section the mention is in.")
    sentence: int = Field(description="Index of its sentence in `sentences` (-1: none).")
    negated: bool = Field(description="ConText: ruled out (`denies chest pain`).")
    uncertain: bool = Field(description="ConText: possible, not certain (`possible pneumonia`).")
    hypothetical: bool = Field(description="ConText: conditional or future (`return if chest pain`).")
    historical: bool = Field(description="ConText: in the past (`history of`, past medical history).")
    family: bool = Field(description="ConText: the experiencer is a relative, not the patient.")
    values: dict[str, Any] = Field(description="Measured values: dose, unit, route, frequency for medications; "
                                               "value and unit (systolic, diastolic) for vitals and labs.")
    evidence: list[list[str]] = Field(description="`[attribute, trigger phrase]` pairs that set the attributes.")
    code_system: str | None = Field(default=None, description="`ICD-10-CM` or `HPO` where the mention is coded.")
    code: str | None = Field(default=None, description="The concept's code in `code_system` (`I10`, `HP:0030830`).")


class MedicationOut(BaseModel):
    name: str = Field(description="The drug's canonical name.")
    text: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    dose: float | list[float] | None = Field(description="The dose (a list for a range such as `1-2`).")
    unit: str | None
    route: str | None = Field(description="`oral`, `intravenous`, ...")
    frequency: str | None = Field(description="`BID`, `Q6H`, `daily`, ...")
    as_needed: bool = Field(description="PRN.")
    indication: str | None = Field(description="What a PRN medication is for, when written.")
    negated: bool
    historical: bool


class VitalOut(BaseModel):
    name: str = Field(description="`blood_pressure`, `heart_rate`, `temperature`, `oxygen_saturation`, ...")
    text: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    value: float | None = Field(description="The value (null for blood pressure: see systolic and diastolic).")
    unit: str | None
    systolic: int | None
    diastolic: int | None


class StructureResponse(BaseModel):
    """``StructuredNote.to_dict()`` with spans over the request's text, plus derived views."""

    schema_version: int = Field(description="The structured note's schema version.")
    note_id: str
    patient_id: str | None
    model: str = Field(description=f"`{MODEL_NAME}`: rules and lexicons, no registered model.")
    model_version: str = Field(description="A digest of the rules and lexicons (`lexicon-<hex>`): the same "
                                           "digest gives the same entities.")
    no_known_allergies: bool
    sections: list[SectionOut]
    sentences: list[list[int]] = Field(description="`[start, end]` of each sentence.")
    entities: list[EntityOut]
    medications: list[MedicationOut] = Field(description="The medication entities with their values.")
    vitals: list[VitalOut] = Field(description="The vital-sign entities with their values.")
    concepts: list[str] = Field(description="The note's affirmed concepts (what similar-case retrieval uses).")
    stored: bool = Field(description="Whether the note was stored.")


class SimilarRequest(BaseModel):
    """A query: a text, or the id of a stored note (exactly one of them)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "oneOf": [{"required": ["text"]}, {"required": ["note_id"]}]})

    # absent (None), never null: the schema says "a string when given", and exactly one of the two is given
    text: str = Field(default=None, min_length=1, pattern=r"\S", json_schema_extra=_no_default,
                      description="A note's text to find similar stored notes for.")
    note_id: str = Field(default=None, min_length=1, max_length=200, pattern=_ID_PATTERN,
                         json_schema_extra=_no_default,
                         description="A stored note's id: its neighbours, itself left out.")
    k: int = Field(default=5, ge=1, le=100, description="How many notes to return.")

    @field_validator("k", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        return int(value) if isinstance(value, float) and value.is_integer() else value  # JSON's 5.0 is 5

    @model_validator(mode="after")
    def _one_query(self) -> SimilarRequest:
        if (self.text is None) == (self.note_id is None):
            raise ValueError("give exactly one of text or note_id")
        return self


class SimilarHit(BaseModel):
    note_id: str
    patient_id: str | None
    score: float = Field(ge=0.0, le=1.0, description="Similarity in [0, 1], higher is more similar.")
    rank: int = Field(ge=1, description="1 for the most similar.")


class SimilarResponse(BaseModel):
    hits: list[SimilarHit] = Field(description="Best first; fewer than k when fewer notes are stored.")
    indexed_notes: int = Field(ge=0, description="How many stored notes the index held.")
    method: str = Field(description="The index's scoring method.")


# --------------------------------------------------------------------------- structuring


def _invalid(message: str, field: str) -> InputValidationError:
    exc = InputValidationError(message)
    exc.fields = [field]  # type: ignore[attr-defined]  # the error handler lists them
    return exc


@dataclass(frozen=True)
class _Offsets:
    """Maps offsets of the normalised text (what the structurer reads) back to the request's text.

    ``decode_text`` drops a leading byte-order mark and turns CRLF into LF (one character fewer
    per pair), as every note reader does, so that sections and sentences are found the same way
    whatever system wrote the note. Offset ``i`` of the normalised text is offset
    ``i + bom + (CRLF pairs before i)`` of the original: a span then covers whole line ends.
    """

    bom: int
    pairs: tuple[int, ...]  # normalised offsets of the LFs that were CRLF

    def __call__(self, i: int) -> int:
        return i + self.bom + bisect.bisect_left(self.pairs, i)

    @property
    def identity(self) -> bool:
        return not self.bom and not self.pairs

    @classmethod
    def of(cls, original: str, normalised: str) -> _Offsets:
        """The map from ``normalised`` (``decode_text`` of ``original``) back to ``original``."""
        crlf = []
        at = original.find("\r\n")
        while at >= 0:
            crlf.append(at)
            at = original.find("\r\n", at + 2)
        bom = len(original) - len(normalised) - len(crlf)  # leading byte-order marks dropped (one or two)
        return cls(bom, tuple(p - bom - j for j, p in enumerate(crlf)))


def structure_text(structurer: Any, text: str, note_id: str, patient_id: str | None,
                   lim: Limits) -> tuple[Any, dict[str, Any]]:
    """(the ``StructuredNote`` of the normalised text, the response's dict with spans over ``text``).

    Refusals name the field ``text``: past ``text_bytes`` a ``LimitExceededError`` (413), binary
    data or an empty note an ``InputValidationError`` (422).
    """
    from trillium.medical.records.entities import concept_of
    from trillium.medical.records.notes import Note, NoteReadError, decode_text

    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _invalid(f"text: not valid Unicode ({exc.reason} at character {exc.start})", "text") from None
    if len(data) > lim.text_bytes:
        raise LimitExceededError("text", "the note's size in UTF-8 bytes", len(data), "text_bytes", lim.text_bytes)
    try:
        normalised, _ = decode_text(data, "text", max_bytes=lim.text_bytes)
    except NoteReadError as exc:
        raise _invalid(str(exc), "text") from None
    note = structurer.structure(Note(note_id=note_id, text=normalised, patient_id=patient_id, source="api"))
    at = _Offsets.of(text, normalised)
    out = note.to_dict()
    for s in out["sections"]:
        s["start"], s["body_start"], s["end"] = at(s["start"]), at(s["body_start"]), at(s["end"])
    out["sentences"] = [[at(a), at(b)] for a, b in out["sentences"]]
    medications, vitals = [], []
    for e in out["entities"]:
        e["start"], e["end"] = at(e["start"]), at(e["end"])
        if not at.identity:
            e["text"] = text[e["start"]:e["end"]]
        e["concept"] = concept_of(e["kind"], e["normalized"], negated=e["negated"], uncertain=e["uncertain"],
                                  hypothetical=e["hypothetical"], family=e["family"],
                                  code_system=e.get("code_system"), code=e.get("code"))
        v = e["values"]
        span = {"text": e["text"], "start": e["start"], "end": e["end"]}
        if e["kind"] == "medication":
            medications.append({"name": e["normalized"], **span, "dose": v.get("dose"), "unit": v.get("unit"),
                                "route": v.get("route"), "frequency": v.get("frequency"),
                                "as_needed": bool(v.get("as_needed", False)), "indication": v.get("indication"),
                                "negated": e["negated"], "historical": e["historical"]})
        elif e["kind"] == "vital":
            vitals.append({"name": e["normalized"], **span, "value": v.get("value"), "unit": v.get("unit"),
                           "systolic": v.get("systolic"), "diastolic": v.get("diastolic")})
    out.update(medications=medications, vitals=vitals, concepts=note.concepts(), model=MODEL_NAME,
               model_version=structurer.version)
    for dropped in ("source", "metadata"):
        out.pop(dropped, None)
    return note, out


# --------------------------------------------------------------------------- the similar-case index


@dataclass
class _Snapshot:
    fingerprint: tuple[int, int]
    index: Any  # a fitted SimilarCaseIndex, or None when no note can be indexed
    patients: dict[str, str | None] = field(default_factory=dict)
    built_at: float = 0.0
    ids: frozenset[str] = frozenset()  # the indexed note ids

    @property
    def size(self) -> int:
        return len(self.ids)


class StoredNotesIndex:
    """A ``SimilarCaseIndex`` over the notes stored in the database, kept up to date.

    Chosen: built in the background at startup (so the first query rarely waits), then checked
    lazily: a query more than ``check_seconds`` (5 s) after the last check reads the notes'
    fingerprint, their count and largest row id (one indexed aggregate query; storing a note,
    replacing one or deleting one changes it), and rebuilds the index when it changed. A query
    that finds a rebuild already running is answered by the previous index rather than waiting;
    a query with no index yet waits for the first build. A note stored through this worker marks
    the index stale, so this worker's next query sees it; other workers see it within
    ``check_seconds``.
    """

    def __init__(self, db: Database, structurer: Any, *, check_seconds: float = 5.0, method: str = "hybrid") -> None:
        self.db = db
        self.structurer = structurer
        self.check_seconds = float(check_seconds)
        self.method = method
        self._snap: _Snapshot | None = None
        self._checked = 0.0
        self._stale = True
        self._build_lock = threading.Lock()

    def mark_stale(self) -> None:
        self._stale = True

    def _due(self) -> bool:
        return self._stale or time.monotonic() - self._checked >= self.check_seconds

    def fingerprint(self) -> tuple[int, int]:
        from trillium.medical.tables import ClinicalNote

        with self.db.session() as s:
            count, top = s.execute(select(func.count(ClinicalNote.id), func.max(ClinicalNote.id))).one()
        return int(count or 0), int(top or 0)

    def current(self) -> _Snapshot:
        """The index to answer with now (blocking: call it from a worker thread)."""
        snap = self._snap
        if snap is not None and not self._due():
            return snap
        if not self._build_lock.acquire(blocking=snap is None):
            return snap  # type: ignore[return-value]  # another thread rebuilds; serve the previous index
        try:
            snap = self._snap
            if snap is not None and not self._due():
                return snap
            self._stale = False
            fp = self.fingerprint()  # read before the notes: a note stored meanwhile triggers another build
            self._checked = time.monotonic()
            if snap is None or fp != snap.fingerprint:
                snap = self._build(fp)
                self._snap = snap
            return snap
        finally:
            self._build_lock.release()

    def _build(self, fp: tuple[int, int]) -> _Snapshot:
        from trillium.medical.records.index_files import RetrievalError
        from trillium.medical.records.retrieval import SimilarCaseIndex
        from trillium.medical.store import indexable_notes
        from trillium.medical.tables import ClinicalNote

        t0 = time.perf_counter()
        texts, ids, concepts = indexable_notes(db=self.db)
        with self.db.session() as s:
            patients = dict(s.execute(select(ClinicalNote.note_id, ClinicalNote.patient_id)).all())
        index = None
        if texts:
            try:
                index = SimilarCaseIndex(method=self.method).fit(texts, ids, concepts)
            except RetrievalError as exc:
                log.warning("similar-case index: the %d stored notes cannot be indexed: %s", len(texts), exc)
        log.info("similar-case index over %d stored notes built in %.2f s", len(texts), time.perf_counter() - t0)
        indexed = frozenset(index.note_ids_) if index is not None else frozenset()
        return _Snapshot(fp, index, patients, time.time(), indexed)

    def warm(self) -> None:
        try:
            self.current()
        except Exception:  # a query builds it again; the service must start regardless
            log.exception("similar-case index: the startup build failed")

    def similar(self, text: str | None, note_id: str | None, k: int) -> tuple[_Snapshot, list[Any]]:
        """(the index used, its hits) for a text or a stored note's id; unknown id: 404."""
        from trillium.medical.store import load_note

        snap = self.current()
        if note_id is not None:
            if note_id in snap.ids:
                return snap, snap.index.neighbours(note_id, k=k)
            stored = load_note(note_id, db=self.db)  # stored after this index was built, or unknown
            if stored is None:
                raise NoteNotFoundError(note_id)
            text = stored["text"]
        if snap.index is None:
            return snap, []
        concepts = self.structurer.structure(text).concepts() if self.method == "hybrid" else None
        return snap, snap.index.query(text, k=k, concepts=concepts, exclude=[note_id] if note_id else [])


class NoteNotFoundError(InputValidationError):
    def __init__(self, note_id: str) -> None:
        self.note_id = note_id
        super().__init__(f"note_id: no stored note {note_id!r}")


# --------------------------------------------------------------------------- routes


def notes_router(ctx: ServiceContext) -> APIRouter:
    """``/notes/structure``, ``/notes/structure/fhir`` and ``/notes/similar`` (under ``/v1/medical``)."""
    from trillium.medical.records.structurer import RecordStructurer
    from trillium.medical.store import store_notes

    structurer = RecordStructurer()
    index = StoredNotesIndex(ctx.db, structurer)
    ctx.on_startup(lambda: threading.Thread(target=index.warm, name="notes-index", daemon=True).start())
    api = APIRouter(prefix="/notes")
    online: dict[str, Any] = {}

    def start_sampling() -> None:
        from trillium.core.monitoring.online import service_collector
        from trillium.medical.records.monitoring import COLUMNS, MODEL_NAME, THRESHOLDS, OnlineNotesSampler

        # the notes this worker structures, sampled per day (server clock, UTC) and checked against
        # the registered notes reference like a batch job's; the structurer gives no probability
        collector = service_collector(ctx, MODEL_NAME, names=COLUMNS, thresholds=THRESHOLDS, performance=False)
        if collector is not None:
            online["sampler"] = OnlineNotesSampler(collector, ctx.registry)

    ctx.on_startup(start_sampling)

    def structure_and_store(request: Request, key: KeyInfo, body: StructureRequest,
                            **audit: Any) -> tuple[Any, dict[str, Any]]:
        """Both structure routes' work (in a worker thread): the write scope checked first when
        storing, the note structured, stored when asked (the index marked stale), audited."""
        if body.store:
            key.require("medical:write")
        note_id = body.note_id or f"api-{uuid.uuid4().hex[:16]}"
        note, out = structure_text(structurer, body.text, note_id, body.patient_id, ctx.limits)
        sampler = online.get("sampler")
        if sampler is not None:
            sampler.observe(note)
        if body.store:
            store_notes([note], db=ctx.db, source=f"api:{key.owner}")
            index.mark_stale()
        ctx.audit(request, key, "medical.note.store" if body.store else "medical.note.structure",
                  target=note_id, patient_id=body.patient_id, entities=len(note.entities), stored=body.store,
                  **audit)
        return note, out

    @api.post("/structure", response_model=StructureResponse, responses=ERROR_RESPONSES,
              summary="Structure a clinical note: sections, entities with spans and ConText attributes")
    async def structure(body: StructureRequest, request: Request,
                        key: KeyInfo = ctx.require("medical:read")) -> Any:
        """Structure a note's text with the rules and lexicons of `RecordStructurer`.

        Scope: `medical:read`; with `store: true`, `medical:write` (checked before anything is
        done). Line ends are normalised (CRLF to LF) before structuring, as for every note the
        product reads; spans in the answer are mapped back, so `text[start:end]` of the request's
        own text is each entity's `text`. Audited (`medical.note.structure`, or
        `medical.note.store` when stored) with the key's owner: the text is patient data.
        """
        def work() -> dict[str, Any]:
            _, out = structure_and_store(request, key, body)
            out["stored"] = body.store
            return out

        try:
            return await run_in_threadpool(work)
        except LimitExceededError as exc:
            return error_response(413, "too_large", str(exc), ["text", exc.limit_name])

    @api.post("/structure/fhir", response_model=dict[str, Any], responses=ERROR_RESPONSES,
              summary="Structure a clinical note and answer a FHIR R4 Bundle")
    async def structure_fhir(body: StructureRequest, request: Request,
                             key: KeyInfo = ctx.require("medical:read")) -> Any:
        """The note of `/structure` as a FHIR R4 `collection` Bundle: Condition (ICD-10-CM or HPO
        coded), Observation (vital signs with LOINC codes, labs, exam/report findings),
        MedicationStatement, AllergyIntolerance; validated by `fhir.resources` before it is sent.
        Scopes, storing and auditing as `/structure`.
        """
        from trillium.medical.records.fhir import to_fhir_bundle

        def work() -> dict[str, Any]:
            note, _ = structure_and_store(request, key, body, format="fhir")
            return to_fhir_bundle(note)

        try:
            return await run_in_threadpool(work)
        except LimitExceededError as exc:
            return error_response(413, "too_large", str(exc), ["text", exc.limit_name])

    @api.post("/similar", response_model=SimilarResponse, responses=ERROR_RESPONSES,
              summary="The stored notes most similar to a text or a stored note")
    async def similar(body: SimilarRequest, request: Request,
                      key: KeyInfo = ctx.require("medical:read")) -> Any:
        """Top-k stored notes by similar-case retrieval (hybrid: BM25 text and concepts).

        Scope: `medical:read`. The index covers the stored notes as of a few seconds ago (see
        `StoredNotesIndex`). Audited (`medical.note.similar`, with the returned note ids) with the
        key's owner, since it reveals which patients' notes match.
        """
        if body.text is not None:
            size = len(body.text.encode("utf-8", "surrogatepass"))
            if size > ctx.limits.text_bytes:
                exc = LimitExceededError("text", "the query's size in UTF-8 bytes", size, "text_bytes",
                                         ctx.limits.text_bytes)
                return error_response(413, "too_large", str(exc), ["text", exc.limit_name])

        def work() -> dict[str, Any]:
            try:
                snap, hits = index.similar(body.text, body.note_id, body.k)
            except NoteNotFoundError as exc:
                ctx.audit(request, key, "medical.note.similar", target=exc.note_id, found=False)
                raise
            rows = [{"note_id": h.note_id, "patient_id": snap.patients.get(h.note_id), "score": h.score,
                     "rank": h.rank} for h in hits]
            ctx.audit(request, key, "medical.note.similar", target=body.note_id or "", k=body.k,
                      notes=[r["note_id"] for r in rows],
                      patients=sorted({r["patient_id"] for r in rows if r["patient_id"]}))
            return {"hits": rows, "indexed_notes": snap.size, "method": index.method}

        try:
            return await run_in_threadpool(work)
        except NoteNotFoundError as exc:
            return error_response(404, "not_found", str(exc), ["note_id"])

    return api
