"""``Inspector``: the public API of the manufacturing vertical.

An inspector is a fitted ``DefectDetector`` (verdict, score, anomaly map) plus, optionally, a
few-shot ``DefectTypeClassifier`` (defect type of the parts it rejects). It reads images in any
supported format, returns one ``Inspection`` per image with an overlay PNG of the anomaly map,
and is stored in the model registry as safetensors weights plus JSON (threshold, parameters,
class names, the autotuned runtime's choice), never as a pickle.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from trillium.core.contract import Predictor, expect_model
from trillium.core.registry import ModelRecord, ModelRef, ModelRegistry
from trillium.manufacturing.anomaly_map import InspectionNet
from trillium.manufacturing.defect_types import DefectTypeClassifier, defect_descriptors
from trillium.manufacturing.detector import DefectDetector
from trillium.manufacturing.images import ImageReadError, read_image, resize, to_channels
from trillium.manufacturing.patchcore import PatchCoreNet

log = logging.getLogger(__name__)

DEFAULT_NAME = "inspector"
CLASSIFIER_FILE = "classifier.safetensors"


@dataclass
class Inspection:
    """The result for one image."""

    image_id: str
    verdict: str  # "defect" | "good"
    score: float
    threshold: float
    defect_type: str | None = None
    type_confidence: float | None = None
    overlay: str | None = None
    anomaly_map: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("anomaly_map")
        return d

    def to_rows(self) -> list[dict[str, Any]]:
        """One row per image, as a batch job writes it (the anomaly map stays out)."""
        return [self.as_dict()]


def overlay_png(image: np.ndarray, anomaly_map: np.ndarray, *, alpha: float = 0.45) -> bytes:
    """PNG bytes: the image (H, W, C) in [0, 1] with the anomaly map (any size) as a heat overlay.

    The map is resized to the image, coloured with a perceptual colormap where it is above 0.1
    (so good areas stay readable), and blended.
    """
    h, w = image.shape[:2]
    rgb = to_channels(image, 3)
    heat = cv2.resize(anomaly_map.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    a = (alpha * np.clip((heat - 0.1) / 0.9, 0, 1))[..., None]
    blended = (1 - a) * rgb + a * colour
    ok, buf = cv2.imencode(".png", cv2.cvtColor((blended * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always encodes an 8-bit RGB array
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


class Inspector(Predictor):
    """Verdict, score, defect type and anomaly overlay per image (the manufacturing ``Predictor``).

    The decision step is the detector's ``threshold`` (set on validation data when fitting, or
    moved by a quality engineer); it travels with a batch job to its workers.

    Args:
        detector: a fitted ``DefectDetector``.
        classifier: a fitted ``DefectTypeClassifier`` or None (defects are then "unspecified").
        record: the registry record it was loaded from, if any (its version goes into the DB).
    """

    def __init__(self, detector: DefectDetector, classifier: DefectTypeClassifier | None = None,
                 record: ModelRecord | None = None) -> None:
        self.detector = detector
        self.classifier = classifier
        self.record = record
        self.registry_ref: ModelRef | None = None  # where it was loaded from (Ray workers load it there)

    @property
    def size(self) -> tuple[int, int]:
        return (self.detector.size, self.detector.size)

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold_)

    def runtimes(self) -> dict[str, Any]:
        """The detector network's core runtime, if it runs on one."""
        rt = getattr(self.detector, "runtime_", None)
        return {"detector": rt} if rt is not None else {}

    def apply_decision_settings(self, settings: dict[str, Any]) -> None:
        """Decide at another process's threshold (the detector holds it)."""
        if "threshold" in settings and float(settings["threshold"]) != self.threshold:
            self.detector.set_threshold(float(settings["threshold"]))

    # ------------------------------------------------------------------ preparing input
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) float image in [0, 1] -> (C, size, size) network input."""
        x = resize(to_channels(image, self.detector.channels), self.size)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)

    # ------------------------------------------------------------------ inspecting
    def inspect_arrays(self, images: Sequence[np.ndarray], ids: Sequence[str] | None = None, *,
                       overlay_dir: str | os.PathLike[str] | None = None, keep_maps: bool = False,
                       inputs: np.ndarray | None = None) -> list[Inspection]:
        """Inspect in-memory images (H, W, C) in [0, 1]; overlays are written when a folder is given.
        ``inputs``: the images already ``prepare``d (N, C, H, W), when the caller needs them too
        (the service samples their statistics), so they are not prepared twice."""
        if not len(images):
            return []
        ids = list(ids) if ids is not None else [f"image-{i}" for i in range(len(images))]
        batch = inputs if inputs is not None else np.stack([self.prepare(im) for im in images])
        if len(batch) != len(images):
            raise ValueError(f"inputs has {len(batch)} prepared images for {len(images)} images")
        det = self.detector.predict(batch)
        types: list[str | None] = [None] * len(images)
        conf: list[float | None] = [None] * len(images)
        bad = np.flatnonzero(det.defective)
        if self.classifier is not None and len(bad):
            pred = self.classifier.predict_descriptors(defect_descriptors(self.detector, batch[bad]))
            for j, i in enumerate(bad):
                types[i], conf[i] = pred.labels[j], float(pred.confidence[j])
        out_dir = Path(overlay_dir) if overlay_dir is not None else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        results = []
        for i, image in enumerate(images):
            overlay = None
            if out_dir is not None:
                path = out_dir / f"{_safe_stem(ids[i])}.overlay.png"
                path.write_bytes(overlay_png(image, det.maps[i]))
                overlay = str(path)
            results.append(Inspection(
                image_id=ids[i], verdict="defect" if det.defective[i] else "good", score=float(det.scores[i]),
                threshold=self.threshold, defect_type=types[i] if det.defective[i] else None,
                type_confidence=conf[i], overlay=overlay, anomaly_map=det.maps[i] if keep_maps else None,
            ))
        return results

    def inspect(self, path: str | os.PathLike[str], *, overlay_dir: str | os.PathLike[str] | None = None,
                keep_maps: bool = True) -> Inspection:
        """Inspect one image file (raises ``ImageReadError`` naming it when it cannot be read)."""
        image = read_image(path)
        return self.inspect_arrays([image], [str(path)], overlay_dir=overlay_dir, keep_maps=keep_maps)[0]

    def inspect_files(self, paths: Sequence[str | os.PathLike[str]], *,
                      overlay_dir: str | os.PathLike[str] | None = None
                      ) -> tuple[list[Inspection], list[tuple[str, str]]]:
        """Inspect many files; unreadable ones come back as (path, reason) and the rest go on."""
        images, ids, bad = [], [], []
        for p in paths:
            try:
                images.append(read_image(p))
                ids.append(str(p))
            except ImageReadError as exc:
                bad.append((str(p), str(exc)))
        return self.inspect_arrays(images, ids, overlay_dir=overlay_dir), bad

    # ------------------------------------------------------------------ registry
    def register(self, registry: ModelRegistry | None = None, name: str = DEFAULT_NAME, *,
                 metrics: dict[str, Any] | None = None, aliases: Sequence[str] = ("production",),
                 data_fingerprint: str | None = None, profile: dict[str, Any] | None = None) -> ModelRecord:
        """Store the inspector as the next version of ``name`` (weights, classifier, threshold);
        ``profile``: its monitoring reference (``manufacturing.monitoring.reference_profile``)."""
        registry = registry or ModelRegistry()
        det = self.detector
        det._fitted()
        extra_files: dict[str, bytes] = {}
        extra: dict[str, Any] = {
            "detector_params": det.get_params(), "threshold": det.threshold_,
            "threshold_rule": det.threshold_rule_, "validation_scores": det.validation_scores_,
            "n_train": det.n_train_,
        }
        if self.classifier is not None:
            extra_files[CLASSIFIER_FILE] = st_save(self.classifier.to_arrays())
            extra["classifier"] = {"classes": self.classifier.classes_, "n_per_type": self.classifier.n_per_type_,
                                   "C": self.classifier.C, "max_per_type": self.classifier.max_per_type}
        runtime = getattr(det, "runtime_", None)
        example = torch.rand(2, det.channels, det.size, det.size)
        return registry.register_torch(
            name, det.net_, example, init_kwargs=det.net_kwargs_, extra_files=extra_files,
            metrics=metrics or {}, autotune=runtime.report if runtime is not None else {},
            extra=extra, aliases=aliases, data_fingerprint=data_fingerprint, profile=profile,
            description="anomaly segmenter + few-shot defect-type classifier",
        )

    @classmethod
    def from_registry(cls, name: str = DEFAULT_NAME, ref: int | str = "production", *,
                      registry: ModelRegistry | None = None, runtime: bool = True, device: str | None = None
                      ) -> Inspector:
        """Load a registered inspector (sha256 checked); with ``runtime`` use its autotuned backends.

        ``device``: where the network runs (default: the ``TRILLIUM_DEVICE`` environment variable,
        else the CPU). Off the CPU it always runs on the core runtime: the stored choice if it was
        measured on that device, else eager fp32 there. The defect-type classifier's descriptors
        stay on the CPU.
        """
        from trillium.core.runtime import inference_device

        device = inference_device(device)
        registry = registry or ModelRegistry()
        net, record = registry.load_torch(name, ref)
        expect_model(net, (InspectionNet, PatchCoreNet), record, "an inspector")
        det = DefectDetector(**record.extra["detector_params"])
        det.net_ = net
        det.net_kwargs_ = dict(record.init_kwargs)
        det.threshold_ = float(record.extra["threshold"])
        det.threshold_rule_ = record.extra.get("threshold_rule", "")
        det.validation_scores_ = record.extra.get("validation_scores", {"good": [], "defect": []})
        det.n_train_ = record.extra.get("n_train", 0)
        if (runtime and record.autotune) or device != "cpu":
            det.use_runtime(report=(record.autotune if runtime else None) or None, device=device, autotune=False)
        clf = None
        if CLASSIFIER_FILE in record.files:
            meta = record.extra["classifier"]
            arrays = st_load(registry.read_file(record, CLASSIFIER_FILE))
            clf = DefectTypeClassifier.from_arrays(arrays, meta["classes"], C=meta["C"],
                                                   max_per_type=meta["max_per_type"])
            clf.n_per_type_ = meta.get("n_per_type", {})
        inspector = cls(det, clf, record)
        inspector.registry_ref = ModelRef.of(registry, record)
        return inspector


def _safe_stem(image_id: str) -> str:
    """A readable, unique file stem per image id: parent folder, stem and a short hash of the id
    (two folders may both hold a ``000.png``)."""
    stem = Path(image_id).stem or "image"
    parent = Path(image_id).parent.name
    name = f"{parent}_{stem}" if parent else stem
    digest = hashlib.sha1(image_id.encode(), usedforsecurity=False).hexdigest()[:8]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100] + f"_{digest}"


def png_bytes_to_array(data: bytes) -> np.ndarray:
    """Decode PNG bytes (e.g. an overlay) to uint8 RGB; for tests and the dashboard."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
