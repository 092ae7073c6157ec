"""trillium.manufacturing: visual defect detection, one vertical on the shared core (see DESIGN.md).

The public API, importable from here (``from trillium.manufacturing import Inspector``): the
inspector and its result, the detector it wraps, the batch job, the line's store (inspections,
p-chart, control limits), training, the evaluation, the image reader and the synthetic line.
Each name is imported on first use (``trillium.core.exports``), so
``import trillium.manufacturing`` loads neither torch nor OpenCV.
"""

from __future__ import annotations

from trillium.core.exports import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (trillium.core.exports)
if TYPE_CHECKING:
    from trillium.manufacturing.batch import InspectJobResult, inspect_folder, read_inspections
    from trillium.manufacturing.detector import DefectDetector, Detection
    from trillium.manufacturing.evaluate import evaluate_inspector
    from trillium.manufacturing.images import ImageReadError, read_image
    from trillium.manufacturing.lifecycle import TrainResult, adopt_weights, train_inspector
    from trillium.manufacturing.linestats import (
        ControlLimits,
        PChart,
        control_limits,
        defect_rate_summary,
        p_chart,
        recent_inspections,
        set_control_limits,
        store_inspections,
    )
    from trillium.manufacturing.pipeline import Inspection, Inspector
    from trillium.manufacturing.synth import synthetic_images, write_synthetic_line

__all__ = [
    "ControlLimits",
    "DefectDetector",
    "Detection",
    "ImageReadError",
    "InspectJobResult",
    "Inspection",
    "Inspector",
    "PChart",
    "TrainResult",
    "adopt_weights",
    "control_limits",
    "defect_rate_summary",
    "evaluate_inspector",
    "inspect_folder",
    "p_chart",
    "read_image",
    "read_inspections",
    "recent_inspections",
    "set_control_limits",
    "store_inspections",
    "synthetic_images",
    "train_inspector",
    "write_synthetic_line",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "trillium.manufacturing.batch": ("InspectJobResult", "inspect_folder", "read_inspections"),
    "trillium.manufacturing.detector": ("DefectDetector", "Detection"),
    "trillium.manufacturing.evaluate": ("evaluate_inspector",),
    "trillium.manufacturing.images": ("ImageReadError", "read_image"),
    "trillium.manufacturing.lifecycle": ("TrainResult", "adopt_weights", "train_inspector"),
    "trillium.manufacturing.linestats": (
        "ControlLimits", "PChart", "control_limits", "defect_rate_summary", "p_chart", "recent_inspections",
        "set_control_limits", "store_inspections",
    ),
    "trillium.manufacturing.pipeline": ("Inspection", "Inspector"),
    "trillium.manufacturing.synth": ("synthetic_images", "write_synthetic_line"),
})
