"""Training an inspector from a folder and registering it: what ``trillium manufacturing train`` runs.

Good images come from ``train/good`` of an MVTec-layout folder. Labelled defects for the
few-shot type classifier come either from a folder of ``<type>/`` sub-folders (a line's own
labelled examples) or, for evaluation on a public dataset, from ``shots`` examples per type
drawn from the dataset's test split; those are then left out of every evaluation figure. The
labelled defects also set the decision threshold (max Youden J against held-out good images).
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
from trillium.core.registry import ModelRecord, ModelRegistry, data_fingerprint
from trillium.manufacturing.classify import DefectTypeClassifier
from trillium.manufacturing.detector import DefectDetector
from trillium.manufacturing.evaluate import few_shot_split
from trillium.manufacturing.images import (
    discover_images,
    discover_mvtec,
    load_batch,
    mvtec_split,
    read_image,
)
from trillium.manufacturing.pipeline import DEFAULT_NAME, Inspector

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    inspector: Inspector
    record: ModelRecord | None
    seconds: float
    quarantined: list[tuple[str, str]] = field(default_factory=list)


def labelled_defects(folder: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """(path, type) of every image in ``folder/<type>/`` (types other than "good")."""
    root = Path(folder)
    if not root.is_dir():
        raise InputValidationError(f"labelled defects folder not found: {root}")
    out = [(p, sub.name) for sub in sorted(root.iterdir()) if sub.is_dir() and sub.name != "good"
           for p in discover_images(sub)]
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


def _load_line(data: str | os.PathLike[str], size: int, channels: int | None,
               defects: str | os.PathLike[str] | None, shots: int | None, seed: int) -> tuple[_LineData, int]:
    samples = discover_mvtec(data)
    good = [s.path for s in mvtec_split(samples, "train") if not s.is_defect]
    if len(good) < 4:
        raise InputValidationError(f"{data}: train/good holds {len(good)} images; at least 4 are needed")
    if channels is None:
        channels = read_image(good[0]).shape[2]
    x, bad = load_batch(good, (size, size), channels)
    for path, reason in bad:
        log.warning("quarantined training image %s: %s", path, reason)
    labelled: list[tuple[Path, str]] = []
    if defects is not None:
        labelled = labelled_defects(defects)
    elif shots:
        picked, _ = few_shot_split(mvtec_split(samples, "test"), shots, seed)
        labelled = [(s.path, s.label) for s in picked]
    xd = None
    types: list[str] = []
    if labelled:
        xd, bad_d = load_batch([p for p, _ in labelled], (size, size), channels)
        bad.extend(bad_d)
        unreadable = {str(p) for p, _ in bad_d}
        types = [t for p, t in labelled if str(p) not in unreadable]
    return _LineData(x, xd, types, bad), channels


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
        record = inspector.register(registry, name, metrics=metrics, data_fingerprint=data_fingerprint(line.good))
        inspector.record = record
    return TrainResult(inspector, record, time.perf_counter() - started, line.quarantined)


def train_inspector(data: str | os.PathLike[str], *, size: int = 256, channels: int | None = None,
                    steps: int = 1500, batch_size: int = 16, lr: float = 1e-3, crop: int | None = None,
                    width: int = 16, flips: int = 1, device: str = "cpu", seed: int = 0, false_alarm_rate: float = 0.01,
                    defects: str | os.PathLike[str] | None = None, shots: int | None = None,
                    name: str = DEFAULT_NAME, register: bool = True, autotune: bool = True,
                    registry: ModelRegistry | None = None) -> TrainResult:
    """Fit detector (+ classifier when labelled defects are given), autotune, register as production."""
    started = time.perf_counter()
    line, channels = _load_line(data, size, channels, defects, shots, seed)
    detector = DefectDetector(size=size, channels=channels, width=width, steps=steps, batch_size=batch_size, lr=lr,
                              crop=crop, flips=flips, device=device, seed=seed,
                              false_alarm_rate=false_alarm_rate)
    # The labelled defects, when there are any, also set the threshold (max Youden J with held-out good).
    detector.fit(line.good, val_defects=line.defects)
    return _finish(detector, line, name=name, register=register, autotune=autotune, registry=registry,
                   started=started)


def adopt_weights(weights: str | os.PathLike[str], data: str | os.PathLike[str], *, size: int = 256,
                  channels: int | None = None, width: int = 16, flips: int = 1, seed: int = 0,
                  false_alarm_rate: float = 0.01, defects: str | os.PathLike[str] | None = None,
                  shots: int | None = None, trained: dict[str, Any] | None = None, name: str = DEFAULT_NAME,
                  register: bool = True, autotune: bool = True, registry: ModelRegistry | None = None
                  ) -> TrainResult:
    """Everything ``train_inspector`` does after training, for segmenter weights trained elsewhere
    (e.g. ``train --device cuda`` on a GPU machine): the same held-out good images (same seed),
    the same labelled draw, threshold, classifier, autotune and registration."""
    started = time.perf_counter()
    line, channels = _load_line(data, size, channels, defects, shots, seed)
    detector = DefectDetector(size=size, channels=channels, width=width, flips=flips, seed=seed,
                              false_alarm_rate=false_alarm_rate, **(trained or {}))
    detector.load_weights(load_file(str(weights)))
    _, val_idx = detector.validation_split(len(line.good))
    detector.n_train_ = len(line.good) - len(val_idx)
    detector.calibrate(line.good[val_idx], line.defects)
    return _finish(detector, line, name=name, register=register, autotune=autotune, registry=registry,
                   started=started, extra_metrics={"weights": str(weights)})


def _p99(values: list[float]) -> float | None:
    return float(np.quantile(values, 0.99)) if values else None


def describe(record: ModelRecord) -> dict[str, Any]:
    """A short JSON view of a registered inspector (for the CLI)."""
    return {"name": record.name, "version": record.version, "aliases": list(record.aliases),
            "threshold": record.extra.get("threshold"), "threshold_rule": record.extra.get("threshold_rule"),
            "classes": (record.extra.get("classifier") or {}).get("classes"),
            "backends": record.autotune.get("choice") if record.autotune else None}
