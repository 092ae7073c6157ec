"""trillium.medical.records: free-text clinical notes structured into sections and entities.

Rules and lexicons written here, and the ICD-10-CM and HPO terminologies that ship inside their
packages (no download at run time): sections, sentences, entities with character spans and codes,
exam/report findings, FHIR R4 Bundles, ConText attributes (negated, uncertain, hypothetical, historical, family),
and a persisted similar-case index. Imaging lives beside it in ``trillium.medical``.

The public API, importable from here (``from trillium.medical.records import RecordStructurer``):
the note readers, the structurer and its result, the batch job, the similar-case index, the
evaluations and the synthetic notes. Each name is imported on first use (``trillium.core.exports``), so
importing the package loads neither pandas nor scikit-learn.
"""

from __future__ import annotations

from trillium.core.exports import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (trillium.core.exports)
if TYPE_CHECKING:
    from trillium.medical.records.batch import StructureJobResult, structure_folder
    from trillium.medical.records.entities import Entity
    from trillium.medical.records.evaluate import entity_eval, negex_eval, specialty_eval
    from trillium.medical.records.index_files import RetrievalError
    from trillium.medical.records.notes import Note, NoteReadError, RejectedNote, load_notes, read_note
    from trillium.medical.records.retrieval import Hit, SimilarCaseIndex
    from trillium.medical.records.structurer import RecordStructurer, StructuredNote
    from trillium.medical.records.synth import SyntheticNote, synthetic_notes, write_notes_folder

__all__ = [
    "Entity",
    "Hit",
    "Note",
    "NoteReadError",
    "RecordStructurer",
    "RejectedNote",
    "RetrievalError",
    "SimilarCaseIndex",
    "StructureJobResult",
    "StructuredNote",
    "SyntheticNote",
    "entity_eval",
    "load_notes",
    "negex_eval",
    "read_note",
    "specialty_eval",
    "structure_folder",
    "synthetic_notes",
    "write_notes_folder",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "trillium.medical.records.batch": ("StructureJobResult", "structure_folder"),
    "trillium.medical.records.entities": ("Entity",),
    "trillium.medical.records.evaluate": ("entity_eval", "negex_eval", "specialty_eval"),
    "trillium.medical.records.index_files": ("RetrievalError",),
    "trillium.medical.records.notes": ("Note", "NoteReadError", "RejectedNote", "load_notes", "read_note"),
    "trillium.medical.records.retrieval": ("Hit", "SimilarCaseIndex"),
    "trillium.medical.records.structurer": ("RecordStructurer", "StructuredNote"),
    "trillium.medical.records.synth": ("SyntheticNote", "synthetic_notes", "write_notes_folder"),
})
