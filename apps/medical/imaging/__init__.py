"""trillium.medical.imaging: chest-CT nodule analysis (find, measure, classify, report).

The public API, importable from here (``from trillium.medical.imaging import StudyAnalyzer``):
the analyzer and its result, the batch job, the CT reader, de-identification, the DICOM SEG and
SR export, training and the evaluations (FROC on phantoms, NoduleMNIST3D), and the phantom
generator. Each name is imported on first use (``trillium.core.exports``), so importing the
package loads neither torch nor pydicom.
"""

from __future__ import annotations

from trillium.core.exports import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (trillium.core.exports)
if TYPE_CHECKING:
    from trillium.medical.imaging.analyzer import StudyAnalyzer, StudyResult, analyze_upload
    from trillium.medical.imaging.batch import AnalyzeJobResult, analyze_folder, read_summary
    from trillium.medical.imaging.deid import Deidentifier, DeidReport, deidentify_tree
    from trillium.medical.imaging.dicom_export import export_findings
    from trillium.medical.imaging.dicom_io import CTVolume, DicomInputError, list_series, load_ct
    from trillium.medical.imaging.nodule_eval import evaluate_nodule_npz, write_synthetic_npz
    from trillium.medical.imaging.phantom import PhantomNodule, make_phantom, write_phantom
    from trillium.medical.imaging.phantom_training import TrainReport, evaluate_detection, train_nodule_model

__all__ = [
    "AnalyzeJobResult",
    "CTVolume",
    "DeidReport",
    "Deidentifier",
    "DicomInputError",
    "PhantomNodule",
    "StudyAnalyzer",
    "StudyResult",
    "TrainReport",
    "analyze_folder",
    "analyze_upload",
    "deidentify_tree",
    "evaluate_detection",
    "evaluate_nodule_npz",
    "export_findings",
    "list_series",
    "load_ct",
    "make_phantom",
    "read_summary",
    "train_nodule_model",
    "write_phantom",
    "write_synthetic_npz",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "trillium.medical.imaging.analyzer": ("StudyAnalyzer", "StudyResult", "analyze_upload"),
    "trillium.medical.imaging.batch": ("AnalyzeJobResult", "analyze_folder", "read_summary"),
    "trillium.medical.imaging.deid": ("DeidReport", "Deidentifier", "deidentify_tree"),
    "trillium.medical.imaging.dicom_export": ("export_findings",),
    "trillium.medical.imaging.dicom_io": ("CTVolume", "DicomInputError", "list_series", "load_ct"),
    "trillium.medical.imaging.nodule_eval": ("evaluate_nodule_npz", "write_synthetic_npz"),
    "trillium.medical.imaging.phantom": ("PhantomNodule", "make_phantom", "write_phantom"),
    "trillium.medical.imaging.phantom_training": ("TrainReport", "evaluate_detection", "train_nodule_model"),
})
