"""Manufacturing's part of model monitoring: image statistics the camera and the line move.

A new lamp, a dirty lens or a new batch of material changes the images before it changes the
verdicts. The profile holds, per image as the network sees it (resized to its input size):
brightness (mean grey level), contrast (its standard deviation), sharpness (variance of the
Laplacian, which a defocused lens lowers), the first four principal components of the
detector's pooled features (the axes fitted on the reference, stored in the profile), and the
detector's anomaly score. The reference is
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
import torch

from trillium.core.db import Database
from trillium.core.monitoring.drift import Thresholds
from trillium.core.monitoring.profile import build_profile
from trillium.core.monitoring.store import check_batch, load_profile

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


EMBEDDING_COMPONENTS = 4
"""Principal components of the detector's pooled features kept in the profile: what the network
itself sees moving (a new material, a new part variant) that grey-level statistics may not."""


@torch.no_grad()
def embeddings(inspector: Inspector, batch: np.ndarray, block: int = 32) -> np.ndarray:
    """(N, D) features of network inputs (N, C, H, W), pooled over the image (the net's ``embed``)."""
    det = inspector.detector
    det._fitted()
    x = torch.as_tensor(np.ascontiguousarray(batch, np.float32))
    return torch.cat([det.net_.embed(x[i:i + block]) for i in range(0, len(x), block)]).numpy().astype(np.float64)


def fit_projection(emb: np.ndarray, k: int = EMBEDDING_COMPONENTS) -> dict[str, Any] | None:
    """The reference embeddings' centre and first ``k`` principal axes (plain JSON lists), or
    None when there are too few images to estimate them (fewer than 4 k)."""
    if len(emb) < 4 * k:
        return None
    centre = emb.mean(axis=0)
    _, _, vt = np.linalg.svd(emb - centre, full_matrices=False)
    return {"centre": centre.round(8).tolist(), "axes": vt[:k].round(8).tolist()}


def embedding_frame(emb: np.ndarray, projection: dict[str, Any]) -> pd.DataFrame:
    axes = np.asarray(projection["axes"], np.float64)
    z = (emb - np.asarray(projection["centre"], np.float64)) @ axes.T
    return pd.DataFrame(z, columns=[f"embedding_pc{i + 1}" for i in range(axes.shape[0])])


def image_frame(inspector: Inspector, batch: np.ndarray, projection: dict[str, Any] | None) -> pd.DataFrame:
    """The profile's columns for network inputs: image statistics, plus the embedding's
    components when the profile has a projection."""
    frame = image_stats(batch)
    if projection is not None:
        frame = pd.concat([frame, embedding_frame(embeddings(inspector, batch), projection)], axis=1)
    return frame


def reference_profile(inspector: Inspector, good: np.ndarray, *, meta: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """The profile of held-out good network inputs ``good`` (N, C, H, W) and their anomaly scores
    (with the embedding's principal components when there are enough images to fit them)."""
    scores = inspector.detector.predict(good).scores
    projection = fit_projection(embeddings(inspector, good))
    return build_profile(image_frame(inspector, good, projection), np.asarray(scores, np.float64),
                         meta={"domain": "manufacturing", "embedding": projection, **(meta or {})})


def monitor_images(inspector: Inspector, images: Sequence[np.ndarray], scores: Sequence[float], *,
                   db: Database | None = None, job_id: int | None = None, label: str = "",
                   scope: str = "job") -> list[int]:
    """Check inspected images (H, W, C) in [0, 1] and their scores against the profile."""
    ref = inspector.registry_ref
    if ref is None:
        log.info("unregistered inspector: no reference profile, drift not checked")
        return []
    registry = ref.registry()
    record = registry.get(ref.name, ref.version)
    profile = load_profile(registry, record)
    batch = np.stack([inspector.prepare(im) for im in images])
    projection = (profile or {}).get("meta", {}).get("embedding")
    return check_batch(registry, record, image_frame(inspector, batch, projection), np.asarray(scores),
                       db=db or registry.db, job_id=job_id, label=label, scope=scope, thresholds=THRESHOLDS,
                       alerted=np.asarray([s >= inspector.threshold for s in scores]))


def monitor_job(inspector: Inspector, frame: pd.DataFrame, *, db: Database, job_id: int, label: str) -> list[int]:
    """After an inspection job: read its images again (``path``) and check them with their scores."""
    from trillium.manufacturing.images import read_image

    if inspector.registry_ref is None or frame.empty:
        return []
    images = [read_image(p) for p in frame["path"]]
    return monitor_images(inspector, images, frame["score"].to_numpy(float), db=db, job_id=job_id, label=label)


__all__ = ["EMBEDDING_COMPONENTS", "STATS", "THRESHOLDS", "embedding_frame", "embeddings", "fit_projection",
           "image_frame", "image_stats", "monitor_images", "monitor_job", "reference_profile"]
