"""``RecordStructurer``: the public API that turns a clinical note into sections, sentences
and entities with their attributes.

A structured note is plain data (``to_dict`` gives JSON), so batch jobs, the database and the
dashboard read the same thing; character spans always refer to the original text.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from trillium.medical.records.context import DEFAULT_RULES, ConTextRules
from trillium.medical.records.entities import Entity, EntityExtractor, concept_of
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
                            hypothetical=e.hypothetical, family=e.family) for e in self.entities)
        return sorted({c for c in found if c})

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for e in self.entities:
            counts[e.kind] = counts.get(e.kind, 0) + 1
        return {"note_id": self.note_id, "patient_id": self.patient_id, "n_sections": len(self.sections),
                "n_sentences": len(self.sentences), "entities": counts,
                "negated": sum(e.negated for e in self.entities)}

    def to_dict(self) -> dict[str, Any]:
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


class RecordStructurer:
    """Sections, sentences, entities and ConText attributes of clinical notes.

    Stateless after construction (the lexicons are compiled once), so one instance serves a
    batch job, a CLI call or the dashboard; it never reads or writes files itself.
    """

    def __init__(self, rules: ConTextRules = DEFAULT_RULES, extractor: EntityExtractor | None = None) -> None:
        self.rules = rules
        self.extractor = extractor or EntityExtractor(rules=rules)

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
