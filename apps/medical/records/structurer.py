"""``RecordStructurer``: the public API that turns a clinical note into sections, sentences
and entities with their attributes.

A structured note is plain data (``to_dict`` gives JSON, ``from_dict`` reads it back), so batch
jobs, the database and the dashboard read the same thing; character spans always refer to the
original text.

``RecordStructurer`` is the records vertical's ``trillium.core.contract.Predictor``: it has no
registered model (rules and lexicons written in this package), so a batch job's workers build it
from the caller's rules and extractor rather than from the registry, and ``version`` (a digest
of those rules and lexicons) is what a job records in place of a model version.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trillium.core.contract import Predictor
from trillium.core.errors import InputValidationError, RegistryError
from trillium.core.registry import ModelRef, ModelRegistry
from trillium.medical.records import lexicon
from trillium.medical.records.context import DEFAULT_RULES, ConTextRules
from trillium.medical.records.entities import KINDS, Entity, EntityExtractor, concept_of
from trillium.medical.records.notes import Note
from trillium.medical.records.text import Section, Span, find_sections, split_sentences

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StructuredNote:
    note_id: str
    patient_id: str | None
    text: str
    sections: tuple[Section, ...]
    sentences: tuple[Span, ...]
    entities: tuple[Entity, ...]
    no_known_allergies: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where the note was read from (file path, "file.csv:row 3", "upload:...")

    def of_kind(self, kind: str, *, affirmed_only: bool = False) -> list[Entity]:
        return [e for e in self.entities if e.kind == kind and (e.affirmed or not affirmed_only)]

    @property
    def problems(self) -> list[Entity]:
        return self.of_kind("problem")

    @property
    def medications(self) -> list[Entity]:
        return self.of_kind("medication")

    def concepts(self) -> list[str]:
        """Affirmed concepts ("problem:hypertension", past history included): the note's clinical
        content for similar-case retrieval, without the conditions it rules out."""
        found = (concept_of(e.kind, e.normalized, negated=e.negated, uncertain=e.uncertain,
                            hypothetical=e.hypothetical, family=e.family, code_system=e.code_system, code=e.code)
                 for e in self.entities)
        return sorted({c for c in found if c})

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for e in self.entities:
            counts[e.kind] = counts.get(e.kind, 0) + 1
        return {"note_id": self.note_id, "patient_id": self.patient_id, "n_sections": len(self.sections),
                "n_sentences": len(self.sentences), "entities": counts,
                "negated": sum(e.negated for e in self.entities)}

    def to_rows(self) -> list[dict[str, Any]]:
        """One summary row (``trillium.core.contract.Result``): ids, where the note came from,
        its size and encoding, its sections, and its entity counts by kind."""
        counts = dict.fromkeys(KINDS, 0)
        for e in self.entities:
            counts[e.kind] = counts.get(e.kind, 0) + 1
        return [{
            "note_id": self.note_id, "patient_id": self.patient_id or "", "source": self.source,
            "chars": len(self.text), "encoding": str(self.metadata.get("encoding", "")),
            "n_sections": len(self.sections), "sections": ";".join(s.name for s in self.sections),
            "n_sentences": len(self.sentences), "n_entities": len(self.entities),
            **{f"n_{kind}": n for kind, n in counts.items()},
            "n_negated": sum(e.negated for e in self.entities), "no_known_allergies": self.no_known_allergies,
        }]

    def to_fhir(self, *, validate: bool = True) -> dict[str, Any]:
        """The note as a FHIR R4 Bundle (``trillium.medical.records.fhir.to_fhir_bundle``)."""
        from trillium.medical.records.fhir import to_fhir_bundle

        return to_fhir_bundle(self, validate=validate)

    def to_dict(self, *, with_text: bool = False) -> dict[str, Any]:
        """The note as JSON-ready data; ``with_text`` adds the text, so ``from_dict`` can rebuild it."""
        out = self._as_dict()
        if with_text:
            out["text"] = self.text
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StructuredNote:
        """The note ``to_dict(with_text=True)`` wrote (a batch job's output), ready to store."""
        if data.get("schema_version") != SCHEMA_VERSION or "text" not in data:
            raise InputValidationError(
                f"structured note {data.get('note_id')!r}: expected schema_version {SCHEMA_VERSION} with its text, "
                f"got schema_version {data.get('schema_version')!r}{'' if 'text' in data else ' without text'}")
        return cls(
            note_id=data["note_id"], patient_id=data.get("patient_id"), text=data["text"],
            sections=tuple(Section(**x) for x in data["sections"]),
            sentences=tuple(Span(a, b) for a, b in data["sentences"]),
            entities=tuple(Entity(**{**e, "evidence": tuple(tuple(x) for x in e.get("evidence", ()))})
                           for e in data["entities"]),
            no_known_allergies=bool(data.get("no_known_allergies", False)),
            metadata=dict(data.get("metadata") or {}), source=data.get("source", ""),
        )

    def _as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "note_id": self.note_id,
            "patient_id": self.patient_id,
            "source": self.source,
            "metadata": self.metadata,
            "no_known_allergies": self.no_known_allergies,
            "sections": [{"name": s.name, "header": s.header, "start": s.start, "body_start": s.body_start,
                          "end": s.end} for s in self.sections],
            "sentences": [[s.start, s.end] for s in self.sentences],
            "entities": [e.to_dict() for e in self.entities],
        }


def _terminology_version() -> str:
    from trillium.medical.records.terminology import _sources_version

    return _sources_version()


class RecordStructurer(Predictor):
    """Sections, sentences, entities and ConText attributes of clinical notes.

    Stateless after construction (the lexicons are compiled once), so one instance serves a
    batch job, a CLI call or the dashboard; it never reads or writes files itself.

    As a ``Predictor`` it has no registered model and no threshold: what decides is its ConText
    rules and its extractor's lexicons, so those are the settings that travel with a batch job
    (``decision_fields``) and a cluster worker rebuilds the same structurer from them
    (``rebuild``); ``from_registry`` refuses.
    """

    registry_free: ClassVar[bool] = True
    decision_fields: ClassVar[tuple[str, ...]] = ("rules", "extractor")

    def __init__(self, rules: ConTextRules = DEFAULT_RULES, extractor: EntityExtractor | None = None) -> None:
        self.rules = rules
        self.extractor = extractor or EntityExtractor(rules=rules)
        self._version: str | None = None

    @classmethod
    def from_registry(cls, name: str, ref: int | str = "production", *,
                      registry: ModelRegistry | None = None) -> RecordStructurer:
        """Always a ``RegistryError``: the structurer is rules and lexicons, never a registered model."""
        raise RegistryError(f"RecordStructurer has no registered model (asked for {name!r} at {ref!r}): it is rules "
                            "and lexicons; build it with RecordStructurer()")

    @classmethod
    def rebuild(cls, model: ModelRef | None, settings: dict[str, Any]) -> RecordStructurer:
        """The caller's structurer in another process: the same rules and extractor (``model`` is None)."""
        return cls(rules=settings.get("rules", DEFAULT_RULES), extractor=settings.get("extractor"))

    def apply_decision_settings(self, settings: dict[str, Any]) -> None:
        super().apply_decision_settings(settings)
        self._version = None

    @property
    def version(self) -> str:
        """``lexicon-<digest>``: a digest of the rules, lexicons and output schema, recorded with
        every structured note in place of a model version (same digest, same entities)."""
        if self._version is None:
            ex, rules = self.extractor, self.extractor.rules
            spec = {
                "schema_version": SCHEMA_VERSION,
                "lexicons": {"problems": ex.problems, "medications": ex.medications, "procedures": ex.procedures,
                             "labs": lexicon.LABS, "vitals": lexicon.VITAL_NAMES, "routes": lexicon.ROUTES,
                             "frequencies": lexicon.FREQUENCIES, "as_needed": lexicon.AS_NEEDED,
                             "dose_units": lexicon.DOSE_UNITS},
                "triggers": sorted([t.phrase, str(t.category), str(t.direction), sorted(map(str, t.blocks))]
                                   for t in rules.triggers),
                "max_scope": rules.max_scope,
                "category_scope": sorted([str(k), v] for k, v in rules.category_scope.items()),
                "disabled": sorted(map(str, rules.disabled)),
                "terminology": _terminology_version() if getattr(ex, "terminology", False) else None,
            }
            text = json.dumps(spec, sort_keys=True, default=list)
            self._version = "lexicon-" + hashlib.sha256(text.encode()).hexdigest()[:12]
        return self._version

    def structure(self, note: Note | str, note_id: str | None = None, patient_id: str | None = None) -> StructuredNote:
        if isinstance(note, str):
            note = Note(note_id=note_id or "note", text=note, patient_id=patient_id)
        text = note.text
        sections = find_sections(text)
        sentences: list[tuple[Span, Section]] = []
        for sec in sections:
            sentences.extend((span, sec) for span in split_sentences(text, sec.body_start, sec.end))
        entities, nka = self.extractor.extract(text, sentences)
        return StructuredNote(
            note_id=note.note_id, patient_id=note.patient_id if patient_id is None else patient_id, text=text,
            sections=tuple(sections), sentences=tuple(s for s, _ in sentences), entities=tuple(entities),
            no_known_allergies=nka, metadata=dict(note.metadata), source=note.source,
        )

    def structure_many(self, notes: Iterable[Note]) -> Iterator[StructuredNote]:
        for note in notes:
            yield self.structure(note)

    def throughput(self, notes: list[Note], repeat: int = 1) -> float:
        """Notes per second over ``notes`` (used by the benchmark and the CLI's report)."""
        t0 = time.perf_counter()
        for _ in range(repeat):
            for note in notes:
                self.structure(note)
        return repeat * len(notes) / (time.perf_counter() - t0)
