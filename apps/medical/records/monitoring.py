"""Notes' part of model monitoring: what a batch of notes looks like to the structurer.

The structurer is rules and lexicons, not a trained network, but it degrades the same way when
its input moves: notes from a department it was never checked on use words, sections and
concepts its lexicons do not know, and it silently finds fewer entities. The profile therefore
describes notes as the structurer reads them, one row per note:

- ``words``, ``n_sections``, ``n_sentences``: length and layout;
- ``oov``: the share of the note's words outside the reference vocabulary;
- ``unseen_sections``: the share of its sections whose canonical name the reference never had;
- ``unseen_concepts``: the share of its affirmed concepts the reference never had;
- ``<kind>_per_100_words`` for every entity kind, and ``negated_share``: what it extracts.

The reference vocabulary, section names and concepts are learnt from one half of the reference
notes and the profile is made on the other half, so the reference's own ``oov`` is what an
unseen note of the same departments scores (not zero, which any new batch would exceed).

- ``reference_profile`` / ``register_reference``: a version of the ``note-structurer`` entry in
  the registry (its structurer digest, vocabulary and profile; no weights), ``production`` alias;
- ``monitor_notes`` / ``monitor_job``: called by ``batch.structure_folder`` after each job.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trillium.core.db import Database
from trillium.core.errors import InputValidationError, RegistryError
from trillium.core.monitoring.drift import Thresholds
from trillium.core.monitoring.profile import build_profile
from trillium.core.monitoring.store import check_batch
from trillium.core.registry import ModelRecord, ModelRegistry
from trillium.medical.records.entities import KINDS

if TYPE_CHECKING:
    from trillium.medical.records.structurer import RecordStructurer, StructuredNote

log = logging.getLogger(__name__)

MODEL_NAME = "note-structurer"
KIND = "note-structurer"
REFERENCE_FILE = "structurer_reference.json"
_WORD = re.compile(r"[a-z]{3,}")
MIN_NOTES = 40
"""Fewer reference notes than this give a vocabulary too thin to judge a new note by."""

#: chosen by ``benchmarks/monitoring.py`` on its calibration notes (seeds 11 and 12, never the
#: evaluation's 101): the most sensitive (fdr, PSI floor) with no false alarm on their batches
THRESHOLDS = Thresholds(fdr=0.01, psi_floor=0.01)


@dataclass(frozen=True)
class NotesReference:
    """What a batch's notes are judged against: the words, section names and concepts of the
    reference half (a word must appear in two reference notes to count, so that typos and
    identifiers do not become vocabulary)."""

    vocabulary: frozenset[str]
    sections: frozenset[str]
    concepts: frozenset[str]

    def as_dict(self) -> dict[str, Any]:
        return {"vocabulary": sorted(self.vocabulary), "sections": sorted(self.sections),
                "concepts": sorted(self.concepts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = REFERENCE_FILE) -> NotesReference:
        try:
            return cls(frozenset(map(str, data["vocabulary"])), frozenset(map(str, data["sections"])),
                       frozenset(map(str, data["concepts"])))
        except (KeyError, TypeError) as exc:
            raise InputValidationError(f"{source} is not a notes reference (needs vocabulary, sections, "
                                       f"concepts): {exc}") from exc

    @classmethod
    def learn(cls, notes: Sequence[StructuredNote]) -> NotesReference:
        df: Counter[str] = Counter()
        for n in notes:
            df.update(set(_WORD.findall(n.text.lower())))
        return cls(frozenset(w for w, c in df.items() if c >= 2),
                   frozenset(s.name for n in notes for s in n.sections),
                   frozenset(c for n in notes for c in n.concepts()))


#: the profile's columns, one row per note (see the module docstring)
COLUMNS: tuple[str, ...] = ("words", "n_sections", "n_sentences", "oov", "unseen_sections", "unseen_concepts",
                            "negated_share", *[f"{k}_per_100_words" for k in KINDS])


def note_row(note: StructuredNote, reference: NotesReference) -> list[float]:
    """One note's values of ``COLUMNS``."""
    words = _WORD.findall(note.text.lower())
    n_words = max(len(words), 1)
    names = [s.name for s in note.sections]
    concepts = note.concepts()
    kinds = Counter(e.kind for e in note.entities)
    return [float(len(words)), float(len(note.sections)), float(len(note.sentences)),
            sum(w not in reference.vocabulary for w in words) / n_words,
            sum(s not in reference.sections for s in names) / max(len(names), 1),
            sum(c not in reference.concepts for c in concepts) / max(len(concepts), 1),
            sum(e.negated for e in note.entities) / max(len(note.entities), 1),
            *[100.0 * kinds.get(k, 0) / n_words for k in KINDS]]


def note_stats(notes: Iterable[StructuredNote], reference: NotesReference) -> pd.DataFrame:
    """One row per note: the profile's ``COLUMNS``."""
    return pd.DataFrame([note_row(n, reference) for n in notes], columns=list(COLUMNS))


class OnlineNotesSampler:
    """The notes a service worker structures, sampled per day against the production reference
    (the same columns as a batch job's check, through the core's online collector).

    The reference is looked up at most every ``refresh_seconds`` (a registry read), so a newly
    registered reference is used within that time without a restart; with none registered the
    notes are not sampled, as batch jobs are then not checked.
    """

    def __init__(self, collector: Any, registry: ModelRegistry, *, name: str = MODEL_NAME,
                 refresh_seconds: float = 30.0) -> None:
        self.collector, self.registry, self.name = collector, registry, name
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._checked = -float("inf")
        self._current: tuple[int, NotesReference] | None = None

    def reference(self) -> tuple[int, NotesReference] | None:
        """(version, reference) of the production reference, re-read after ``refresh_seconds``."""
        now = time.monotonic()
        if now - self._checked < self.refresh_seconds:
            return self._current
        with self._lock:
            if now - self._checked >= self.refresh_seconds:
                try:
                    record = production_reference(self.registry, self.name)
                    if record is None:
                        self._current = None
                    elif self._current is None or self._current[0] != record.version:
                        self._current = (record.version, load_reference(self.registry, record))
                except Exception:  # a broken reference must not fail the request: not sampled, logged
                    log.exception("notes reference of %s could not be read: online notes not sampled", self.name)
                    self._current = None
                self._checked = now
        return self._current

    def observe(self, note: StructuredNote) -> None:
        current = self.reference()
        if current is None:
            return
        version, reference = current
        self.collector.observe(version, np.array([note_row(note, reference)], np.float64), np.zeros(1),
                               np.zeros(1, bool), np.array([time.time()]))


def reference_profile(notes: Sequence[StructuredNote], *, seed: int = 0
                      ) -> tuple[NotesReference, dict[str, Any]]:
    """The reference (from every other note) and the profile (of the rest) of structured notes
    from the departments the structurer was checked on."""
    if len(notes) < MIN_NOTES:
        raise InputValidationError(f"a notes reference needs at least {MIN_NOTES} notes, got {len(notes)}")
    # a seeded random half, not every other note: sources list notes in some order (by specialty,
    # by date, round robin), and alternating halves would split that order instead of sampling it
    order = np.random.default_rng(seed).permutation(len(notes))
    learn, profiled = [notes[i] for i in order[0::2]], [notes[i] for i in order[1::2]]
    reference = NotesReference.learn(learn)
    profile = build_profile(note_stats(profiled, reference), seed=seed,
                            meta={"domain": "medical", "part": "notes", "reference_notes": len(notes)})
    return reference, profile


def register_reference(notes: Sequence[StructuredNote], structurer: RecordStructurer, *,
                       registry: ModelRegistry | None = None, name: str = MODEL_NAME,
                       description: str = "") -> ModelRecord:
    """Register the structurer's reference (its version digest, the learnt vocabulary, the
    profile) as the next version of ``name`` and point ``production`` at it."""
    registry = registry or ModelRegistry()
    reference, profile = reference_profile(notes)
    payload = {"structurer_version": structurer.version, **reference.as_dict()}
    return registry.register(
        name, {REFERENCE_FILE: json.dumps(payload, separators=(",", ":")).encode()}, kind=KIND,
        extra={"structurer_version": structurer.version}, profile=profile, aliases=("production",),
        metrics={"reference_notes": len(notes), "vocabulary": len(reference.vocabulary)},
        description=description or f"notes reference of {len(notes)} notes")


def load_reference(registry: ModelRegistry, record: ModelRecord) -> NotesReference:
    src = f"{record.name} v{record.version} {REFERENCE_FILE}"
    try:
        data = json.loads(registry.read_file(record, REFERENCE_FILE))
    except ValueError as exc:
        raise InputValidationError(f"{src} is not JSON: {exc}") from exc
    return NotesReference.from_dict(data, src)


def production_reference(registry: ModelRegistry, name: str = MODEL_NAME) -> ModelRecord | None:
    """The registered reference ``production`` points at, or None when notes are not monitored yet."""
    try:
        record = registry.get(name, "production")
    except RegistryError:
        return None
    return record if record.kind == KIND else None


def monitor_notes(notes: Iterable[StructuredNote], *, registry: ModelRegistry | None = None,
                  db: Database | None = None, job_id: int | None = None, label: str = "", scope: str = "job",
                  name: str = MODEL_NAME, structurer_version: str | None = None) -> list[int]:
    """Check structured notes (any iterable: a job's are streamed, one note in memory at a time)
    against the production reference; returns the stored run ids (none when no reference is
    registered: notes are then not monitored, said in the log)."""
    registry = registry or ModelRegistry(db)
    record = production_reference(registry, name)
    if record is None:
        log.info("no %s reference registered: notes drift not checked (trillium medical records reference)", name)
        return []
    frame = note_stats(notes, load_reference(registry, record))
    if frame.empty:
        return []
    made_with = record.extra.get("structurer_version")
    if structurer_version and structurer_version != made_with:
        log.warning("notes structured by %s are checked against a reference made with structurer %s",
                    structurer_version, made_with)
    return check_batch(registry, record, frame, [0.0] * len(frame), db=db or registry.db, job_id=job_id,
                       label=label, scope=scope, thresholds=THRESHOLDS)


def monitor_job(output: str, *, job_id: int, db: Database, label: str = "") -> list[int]:
    """After a note-structuring job: its structured notes, streamed back from the output, checked."""
    from trillium.medical.records.batch import iter_structured

    registry = ModelRegistry(db)
    if production_reference(registry) is None:
        return []
    versions: set[str] = set()

    def notes() -> Iterator[StructuredNote]:
        for note, version in iter_structured(output):
            versions.add(version)
            yield note

    record = production_reference(registry)
    runs = monitor_notes(notes(), registry=registry, db=db, job_id=job_id, label=label)
    made_with = record.extra.get("structurer_version") if record is not None else None
    if versions and versions != {made_with}:  # known once the notes were read
        log.warning("notes job %d structured by %s, checked against a reference made with structurer %s",
                    job_id, ", ".join(sorted(versions)), made_with)
    return runs


__all__ = ["COLUMNS", "MODEL_NAME", "THRESHOLDS", "NotesReference", "OnlineNotesSampler", "load_reference",
           "monitor_job", "monitor_notes", "note_row", "note_stats", "production_reference", "reference_profile",
           "register_reference"]
