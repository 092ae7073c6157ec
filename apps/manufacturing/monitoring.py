"""Manufacturing's part of model monitoring: image statistics the camera and the line move.

A new lamp, a dirty lens or a new batch of material changes the images before it changes the
verdicts. The profile holds, per image as the network sees it (resized to its input size):
brightness (mean grey level), contrast (its standard deviation), sharpness (variance of the
Laplacian, which a defocused lens lowers), and the detector's anomaly score. The reference is
the good images the detector held out for its threshold (never trained on).

- ``reference_profile``: made by ``lifecycle._finish`` when an inspector is registered;
- ``monitor_job``: called by ``batch.inspect_folder`` after each job (one run per job: a lot).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd

from trillium.core.db import Database
from trillium.core.monitoring.drift import Thresholds
from trillium.core.monitoring.profile import build_profile
from trillium.core.monitoring.store import check_batch

if TYPE_CHECKING:
    from trillium.manufacturing.pipeline import Inspector

log = logging.getLogger(__name__)

STATS = ("brightness", "contrast", "sharpness")

#: chosen by ``benchmarks/monitoring.py`` on its calibration lines (seeds 11 and 12, never the
#: evaluation's): lots of 50 images against a few hundred reference images need a far stricter
#: false discovery rate than finance's days of thousands of rows (at 0.01: 10 false alarms in 60 lots)
THRESHOLDS = Thresholds(fdr=1e-6, psi_floor=0.01)


def image_stats(batch: np.ndarray) -> pd.DataFrame:
    """Brightness, contrast and sharpness of network inputs (N, C, H, W) in [0, 1]."""
    x = np.asarray(batch, np.float32)
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {x.shape}")
    grey = x.mean(axis=1)
    sharp = [float(cv2.Laplacian(g, cv2.CV_32F).var()) for g in grey]
    return pd.DataFrame({"brightness": grey.mean(axis=(1, 2)), "contrast": grey.std(axis=(1, 2)),
                         "sharpness": sharp})


def reference_profile(inspector: Inspector, good: np.ndarray, *, meta: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """The profile of held-out good network inputs ``good`` (N, C, H, W) and their anomaly scores."""
    scores = inspector.detector.predict(good).scores
    return build_profile(image_stats(good), np.asarray(scores, np.float64),
                         meta={"domain": "manufacturing", **(meta or {})})


def monitor_images(inspector: Inspector, images: Sequence[np.ndarray], scores: Sequence[float], *,
                   db: Database | None = None, job_id: int | None = None, label: str = "",
                   scope: str = "job") -> list[int]:
    """Check inspected images (H, W, C) in [0, 1] and their scores against the profile."""
    ref = inspector.registry_ref
    if ref is None:
        log.info("unregistered inspector: no reference profile, drift not checked")
        return []
    registry = ref.registry()
    batch = np.stack([inspector.prepare(im) for im in images])
    return check_batch(registry, registry.get(ref.name, ref.version), image_stats(batch), np.asarray(scores),
                       db=db or registry.db, job_id=job_id, label=label, scope=scope, thresholds=THRESHOLDS,
                       alerted=np.asarray([s >= inspector.threshold for s in scores]))


def monitor_job(inspector: Inspector, frame: pd.DataFrame, *, db: Database, job_id: int, label: str) -> list[int]:
    """After an inspection job: read its images again (``path``) and check them with their scores."""
    from trillium.manufacturing.images import read_image

    if inspector.registry_ref is None or frame.empty:
        return []
    images = [read_image(p) for p in frame["path"]]
    return monitor_images(inspector, images, frame["score"].to_numpy(float), db=db, job_id=job_id, label=label)


__all__ = ["STATS", "THRESHOLDS", "image_stats", "monitor_images", "monitor_job", "reference_profile"]
