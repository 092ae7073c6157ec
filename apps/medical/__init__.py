"""trillium.medical: chest-CT nodule analysis and clinical-note structuring, one vertical (see DESIGN.md).

The headline API, importable from here (``from trillium.medical import StudyAnalyzer,
RecordStructurer``): the two predictors and their results, the CT batch job, the similar-case
index, the note readers and the store both halves write to and the dashboard reads. The rest of
each half (training, evaluations, synthetic data, DICOM export, de-identification) is exported by
``trillium.medical.imaging`` and ``trillium.medical.records``. Each name is imported on first
use (``trillium.core.exports``), so ``import trillium.medical`` loads no model code.
"""

from __future__ import annotations

from trillium.core.exports import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (trillium.core.exports)
if TYPE_CHECKING:
    from trillium.medical.imaging.analyzer import StudyAnalyzer, StudyResult
    from trillium.medical.imaging.batch import analyze_folder, read_summary
    from trillium.medical.records.notes import Note, load_notes, read_note
    from trillium.medical.records.retrieval import SimilarCaseIndex
    from trillium.medical.records.structurer import RecordStructurer, StructuredNote
    from trillium.medical.store import (
        indexable_notes,
        list_ct_studies,
        list_patients,
        load_note,
        patient_view,
        recent_notes,
        store_ct_study,
        store_notes,
    )

__all__ = [
    "Note",
    "RecordStructurer",
    "SimilarCaseIndex",
    "StructuredNote",
    "StudyAnalyzer",
    "StudyResult",
    "analyze_folder",
    "indexable_notes",
    "list_ct_studies",
    "list_patients",
    "load_note",
    "load_notes",
    "patient_view",
    "read_note",
    "read_summary",
    "recent_notes",
    "store_ct_study",
    "store_notes",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "trillium.medical.imaging.analyzer": ("StudyAnalyzer", "StudyResult"),
    "trillium.medical.imaging.batch": ("analyze_folder", "read_summary"),
    "trillium.medical.records.notes": ("Note", "load_notes", "read_note"),
    "trillium.medical.records.retrieval": ("SimilarCaseIndex",),
    "trillium.medical.records.structurer": ("RecordStructurer", "StructuredNote"),
    "trillium.medical.store": (
        "indexable_notes", "list_ct_studies", "list_patients", "load_note", "patient_view", "recent_notes",
        "store_ct_study", "store_notes",
    ),
})
