"""Training an inspector from a folder and registering it: what ``trillium manufacturing train`` runs.

Good images come from ``train/good`` of an MVTec-layout folder. Labelled defects for the
few-shot type classifier come either from a folder of ``<type>/`` sub-folders (a line's own
labelled examples) or, for evaluation on a public dataset, from ``shots`` examples per type
drawn from the dataset's test split; those are then left out of every evaluation figure. The
labelled defects also set the decision threshold (max Youden J against held-out good images).

With ``learn_share`` > 0 the segmenter also learns from that share of each type's labelled
defects (pixel masks where the dataset has them, the image label otherwise); only the rest set
the threshold, so that it is chosen on defects the network has not seen. The split is seeded,
so ``adopt`` rebuilds it from the same settings.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file

from trillium.core.errors import InputValidationError
from trillium.core.registry import ModelRecord, ModelRef, ModelRegistry, data_fingerprint
from trillium.manufacturing.defect_types import DefectTypeClassifier
from trillium.manufacturing.detector import DefectDetector
from trillium.manufacturing.evaluate import few_shot_split
from trillium.manufacturing.images import (
    ImageReadError,
    discover_images,
    discover_mvtec,
    load_batch,
    mask_index,
    mvtec_split,
    read_image,
    read_mask,
)
from trillium.manufacturing.memory_bank import check_settings
from trillium.manufacturing.pipeline import DEFAULT_NAME, Inspector
from trillium.manufacturing.train import NO_MASK

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    inspector: Inspector
    record: ModelRecord | None
    seconds: float
    quarantined: list[tuple[str, str]] = field(default_factory=list)


MASKS_FOLDER = "ground_truth"


def labelled_defects(folder: str | os.PathLike[str]) -> list[tuple[Path, str, Path | None]]:
    """(path, type, mask or None) of every image in ``folder/<type>/`` (types other than "good").

    Masks are optional and laid out as in MVTec AD: ``folder/ground_truth/<type>/<stem>_mask.png``.
    With ``--learn-share`` a defect with a mask is learnt pixel by pixel, one without by its label.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputValidationError(f"labelled defects folder not found: {root}")
    out: list[tuple[Path, str, Path | None]] = []
    for sub in sorted(root.iterdir()):
        if not sub.is_dir() or sub.name in ("good", MASKS_FOLDER) or sub.name.startswith("."):
            continue
        masks = mask_index(root / MASKS_FOLDER / sub.name)
        for p in discover_images(sub):
            out.append((p, sub.name, masks.get(p.stem.lower() + "_mask") or masks.get(p.stem.lower())))
    if not out:
        raise InputValidationError(f"{root} holds no images in <type>/ sub-folders")
    return out


@dataclass
class _LineData:
    """What a line's folder gives training: good images, labelled defects, what was unreadable."""

    good: np.ndarray
    defects: np.ndarray | None
    types: list[str]
    quarantined: list[tuple[str, str]]
    masks: np.ndarray | None = None  # (M, 1, H, W) of ``defects``; rows of NO_MASK where none is known
    learn: np.ndarray | None = None  # indices into ``defects`` the segmenter learns from

    def calibration_defects(self) -> np.ndarray | None:
        """The labelled defects that set the threshold: those the segmenter did not learn from."""
        if self.defects is None or self.learn is None:
            return self.defects
        keep = np.setdiff1d(np.arange(len(self.defects)), self.learn)
        return self.defects[keep] if len(keep) else None


def learning_split(types: list[str], share: float, seed: int) -> np.ndarray:
    """Indices of the labelled defects the segmenter learns from: ``share`` of each type (seeded),
    always leaving at least one image of every type to the threshold."""
    if not 0 <= share < 1:
        raise InputValidationError(f"learn share must be in [0, 1), got {share}")
    rng = np.random.default_rng(seed + 1)
    picked: list[int] = []
    for t in sorted(set(types)):
        rows = np.flatnonzero(np.array(types) == t)
        k = min(len(rows) - 1, round(share * len(rows)))
        picked.extend(rng.permutation(rows)[:k].tolist())
    return np.array(sorted(picked), dtype=int)


def _mask_rows(paths: list[Path | None], size: int) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Masks (M, 1, size, size); rows of NO_MASK where there is none or it cannot be read (those
    come back as (path, reason): the defect is then learnt from its label, and training goes on)."""
    out = np.full((len(paths), 1, size, size), NO_MASK, np.float32)
    bad: list[tuple[Path, str]] = []
    for i, path in enumerate(paths):
        if path is None:
            continue
        try:
            out[i, 0] = read_mask(path, (size, size))
        except ImageReadError as exc:
            log.warning("unreadable mask %s (its defect is learnt from the label only): %s", path, exc.reason)
            bad.append((path, f"mask: {exc.reason}"))
    return out, bad


def _load_line(data: str | os.PathLike[str], size: int, channels: int | None,
               defects: str | os.PathLike[str] | None, shots: int | None, seed: int,
               learn_share: float = 0.0) -> tuple[_LineData, int]:
    if not 0 <= learn_share < 1:  # before reading a folder of images
        raise InputValidationError(f"learn share must be in [0, 1), got {learn_share}")
    samples = discover_mvtec(data)
    good = [s.path for s in mvtec_split(samples, "train") if not s.is_defect]
    if len(good) < 4:
        raise InputValidationError(f"{data}: train/good holds {len(good)} images; at least 4 are needed")
    if channels is None:
        channels = read_image(good[0]).shape[2]
    x, bad = load_batch(good, (size, size), channels)
    for path, reason in bad:
        log.warning("quarantined training image %s: %s", path, reason)
    labelled: list[tuple[Path, str, Path | None]] = []
    if defects is not None:
        labelled = labelled_defects(defects)
    elif shots:
        picked, _ = few_shot_split(mvtec_split(samples, "test"), shots, seed)
        labelled = [(s.path, s.label, s.mask_path) for s in picked]
    if learn_share and not labelled:
        raise InputValidationError("learning from labelled defects needs some: give --defects or --shots")
    line = _LineData(x, None, [], bad)
    if labelled:
        line.defects, bad_d = load_batch([p for p, _, _ in labelled], (size, size), channels)
        bad.extend(bad_d)
        unreadable = {str(p) for p, _ in bad_d}
        kept = [item for item in labelled if str(item[0]) not in unreadable]
        line.types = [t for _, t, _ in kept]
        if learn_share:
            line.learn = learning_split(line.types, learn_share, seed)
            line.masks, bad_m = _mask_rows([m for _, _, m in kept], size)
            bad.extend(bad_m)
    return line, channels


def _finish(detector: DefectDetector, line: _LineData, *, name: str, register: bool, autotune: bool,
            registry: ModelRegistry | None, started: float, extra_metrics: dict[str, Any] | None = None
            ) -> TrainResult:
    """After the segmenter's weights exist: type classifier, runtime, registry (one path for all)."""
    classifier = DefectTypeClassifier(seed=detector.seed).fit(detector, line.defects, line.types) if (
        line.defects is not None and len(set(line.types)) >= 2) else None
    if autotune:
        detector.use_runtime()
    inspector = Inspector(detector, classifier)
    record = None
    if register:
        metrics = {"n_train_good": detector.n_train_, "threshold": detector.threshold_,
                   "validation_good_p99": _p99(detector.validation_scores_["good"]), **(extra_metrics or {})}
        registry = registry or ModelRegistry()
        record = inspector.register(registry, name, metrics=metrics, data_fingerprint=data_fingerprint(line.good),
                                    profile=_reference_profile(inspector, line.good))
        inspector.record = record
        # where it is registered: its jobs then find its monitoring profile (and a cluster can load it)
        inspector.registry_ref = ModelRef.of(registry, record)
    return TrainResult(inspector, record, time.perf_counter() - started, line.quarantined)


def _reference_profile(inspector: Inspector, good: np.ndarray) -> dict[str, Any]:
    """The monitoring reference: the good images the detector held out for its threshold (their
    scores are out of sample); with fewer than 20 of them, every good image's statistics and no
    score (scores of training images are lower than production's and would read as drift)."""
    from trillium.core.monitoring.profile import build_profile
    from trillium.manufacturing.monitoring import image_stats, reference_profile

    try:
        _, held = inspector.detector.validation_split(len(good))
    except ValueError:
        held = np.zeros(0, np.int64)
    if len(held) >= 20:
        return reference_profile(inspector, good[held], meta={"reference": "held-out good images"})
    return build_profile(image_stats(good), meta={"domain": "manufacturing", "reference": "all good images"})


def train_inspector(data: str | os.PathLike[str], *, model: str = "segmenter", coreset: float = 0.01,
                    patch_dims: int | None = 64, size: int = 256, channels: int | None = None,
                    steps: int = 1500, batch_size: int = 16, lr: float = 1e-3, crop: int | None = None,
                    width: int = 16, flips: int = 1, device: str = "cpu", seed: int = 0, false_alarm_rate: float = 0.01,
                    defects: str | os.PathLike[str] | None = None, shots: int | None = None,
                    learn_share: float = 0.0, real_defect_fraction: float = 0.25,
                    name: str = DEFAULT_NAME, register: bool = True, autotune: bool = True,
                    registry: ModelRegistry | None = None) -> TrainResult:
    """Fit detector (+ classifier when labelled defects are given), autotune, register as production.

    ``model``/``coreset``: see ``DefectDetector``. ``learn_share``: share of each type's labelled
    defects the segmenter also learns from (0: good images only); ``real_defect_fraction``: their
    share of each training batch.
    """
    if model not in DefectDetector.MODELS:  # before reading a folder of images
        raise InputValidationError(f"model must be one of {', '.join(DefectDetector.MODELS)}, got {model!r}")
    if model == "patchcore":
        try:
            check_settings(coreset, patch_dims)
        except ValueError as exc:
            raise InputValidationError(str(exc)) from None
    if model != "segmenter" and learn_share:
        raise InputValidationError(f"--learn-share needs the segmenter detector; {model} remembers good parts only")
    started = time.perf_counter()
    line, channels = _load_line(data, size, channels, defects, shots, seed, learn_share)
    detector = DefectDetector(model=model, coreset=coreset, patch_dims=patch_dims, size=size, channels=channels, width=width, steps=steps, batch_size=batch_size, lr=lr,
                              crop=crop, flips=flips, device=device, seed=seed,
                              false_alarm_rate=false_alarm_rate, real_defect_fraction=real_defect_fraction)
    learn = masks = None
    if line.learn is not None and len(line.learn):
        learn, masks = line.defects[line.learn], line.masks[line.learn]
    # The labelled defects the segmenter did not learn from set the threshold (max Youden J with held-out good).
    detector.fit(line.good, val_defects=line.calibration_defects(), learn_defects=learn, learn_masks=masks)
    return _finish(detector, line, name=name, register=register, autotune=autotune, registry=registry,
                   started=started, extra_metrics={"model": model, "learn_share": learn_share,
                                                   "n_learnt_defects": detector.n_learnt_defects_})


def adopt_weights(weights: str | os.PathLike[str], data: str | os.PathLike[str], *, size: int = 256,
                  channels: int | None = None, width: int = 16, flips: int = 1, seed: int = 0,
                  false_alarm_rate: float = 0.01, defects: str | os.PathLike[str] | None = None,
                  shots: int | None = None, learn_share: float = 0.0, trained: dict[str, Any] | None = None,
                  name: str = DEFAULT_NAME,
                  register: bool = True, autotune: bool = True, registry: ModelRegistry | None = None
                  ) -> TrainResult:
    """Everything ``train_inspector`` does after training, for segmenter weights trained elsewhere
    (e.g. ``train --device cuda`` on a GPU machine): the same held-out good images (same seed),
    the same labelled draw, threshold, classifier, autotune and registration. ``learn_share`` must
    be the training's, so that the threshold is set on the defects the weights did not learn from."""
    started = time.perf_counter()
    line, channels = _load_line(data, size, channels, defects, shots, seed, learn_share)
    detector = DefectDetector(size=size, channels=channels, width=width, flips=flips, seed=seed,
                              false_alarm_rate=false_alarm_rate, **(trained or {}))
    detector.load_weights(load_file(str(weights)))
    _, val_idx = detector.validation_split(len(line.good))
    detector.n_train_ = len(line.good) - len(val_idx)
    detector.calibrate(line.good[val_idx], line.calibration_defects())
    return _finish(detector, line, name=name, register=register, autotune=autotune, registry=registry,
                   started=started, extra_metrics={"weights": str(weights), "learn_share": learn_share})


def _p99(values: list[float]) -> float | None:
    return float(np.quantile(values, 0.99)) if values else None


def describe(record: ModelRecord) -> dict[str, Any]:
    """A short JSON view of a registered inspector (for the CLI)."""
    return {"name": record.name, "version": record.version, "aliases": list(record.aliases),
            "detector": record.extra.get("detector_params", {}).get("model", "segmenter"),
            "threshold": record.extra.get("threshold"), "threshold_rule": record.extra.get("threshold_rule"),
            "classes": (record.extra.get("classifier") or {}).get("classes"),
            "backends": record.autotune.get("choice") if record.autotune else None}
