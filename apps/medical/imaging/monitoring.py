"""Chest CT's part of model monitoring: what a new scanner, kernel or protocol moves.

A nodule classifier trained on one reconstruction kernel and slice thickness sees other noise,
other partial-volume blur and other HU distributions when a site changes its protocol, long
before anyone notices its findings are worse. Per study, the profile holds:

- the geometry: slice spacing (from the slice positions, as the loader stacks them) and pixel
  spacing (numeric; the pixel spacing follows the patient's size through the field of view);
- the protocol: ConvolutionKernel, SliceThickness (in mm, as text: a protocol has a few fixed
  thicknesses, 1, 1.25, 2.5, 5 mm, so a new one is a new category, not a point in a
  continuous range) and Manufacturer, categorical and "unknown" when absent, so one series of an
  unseen kernel or thickness is an ``unseen_category`` alert on its own. As numbers, a reference
  where every study has 2.5 mm slices cannot call 5 mm ones significant on a batch of four (the
  out-of-range test assumes a continuous column: measured, the thicker-slice shift was missed);
- the lungs' HU: mean, 5th and 95th percentile of the voxels inside the lung mask;
- noise: the robust spread (MAD) of a high-pass residual (a voxel minus the mean of its four
  in-plane neighbours) inside the eroded lungs, where the parenchyma is nearly flat, so what is
  left is the scanner's noise; a sharper kernel or a lower dose raises it. The same figure in
  the air outside the body is kept beside it (``air_noise_hu``): scanners clip air at -1024 HU,
  which biases it, but it does not depend on the lung segmentation;
- the lung volume and the number of candidates the detector proposed;
- the score: the mean nodule probability of the study's candidates (before the threshold). Not
  the highest: on phantoms, as on a screening population with nodules, the highest saturates
  near 1 in every study (measured: 0.9986 to 0.9996), so it says nothing about a shift, while
  the mean follows how the classifier sees the whole candidate population (more noise, more
  false candidates that look like nodules or not). A study with no candidate scores 0.

The statistics use at most ``MAX_SLICES`` slices spread over the lungs (the analyzer's lung mask,
already computed), so they cost a small fraction of the analysis
(``benchmarks/monitoring.py --only ct`` measures the added seconds per study).

- ``study_statistics``: called by ``StudyAnalyzer.analyze_volume`` (its result carries them in
  ``monitoring``, and the findings JSON too);
- ``reference_profile``: made by ``phantom_training.train_nodule_model`` on fresh phantom studies
  the classifier never trained on and that did not choose its threshold;
- ``monitor_job``: called by ``batch.analyze_folder`` after each job (one run per job).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import ndimage

from trillium.core.db import Database
from trillium.core.errors import InputValidationError
from trillium.core.monitoring.drift import Thresholds
from trillium.core.monitoring.profile import build_profile
from trillium.core.monitoring.store import check_batch

if TYPE_CHECKING:
    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.dicom_io import CTVolume

log = logging.getLogger(__name__)

NUMERIC = ("slice_spacing_mm", "pixel_spacing_mm", "lung_hu_mean", "lung_hu_p05",
           "lung_hu_p95", "lung_noise_hu", "air_noise_hu", "lung_volume_ml", "n_candidates")
CATEGORICAL = ("kernel", "slice_thickness", "manufacturer")
COLUMNS = NUMERIC + CATEGORICAL
SCORE_KEY = "mean_nodule_probability"
UNKNOWN = "unknown"
#: slices the HU and noise statistics read, spread evenly over the slices that hold lung
MAX_SLICES = 16
#: MAD to standard deviation of a normal variable
MAD_TO_SD = 1.4826
#: a residual x - mean(4 neighbours) of white noise of s.d. s has s.d. s * sqrt(1 + 4/16)
RESIDUAL_GAIN = float(np.sqrt(1.25))

#: CT batches are small (a few to tens of studies). ``fdr`` and ``psi_floor`` are what
#: ``benchmarks/monitoring.py --only ct`` chose on its calibration studies (classifier and phantoms of
#: seed 11, never the evaluation's 101): the most sensitive pair of its grid with no false alarm on
#: the calibration's 8 unshifted batches of 4 studies (every pair of the grid flagged its 4 shifts
#: and raised none, so the most permissive was taken). On the evaluation's 30 unshifted batches
#: they raised 2 false alarms (``out_of_range`` on the lungs' HU mean and 95th percentile): 8
#: calibration batches were too few to see them (see docs/monitoring.md). ``min_rows`` 3: fewer
#: studies are not tested for drift (the quality rules, an unseen kernel among them, still apply).
THRESHOLDS = Thresholds(fdr=0.01, psi_floor=0.05, min_rows=3)


def _residual_mad(img: np.ndarray, mask: np.ndarray) -> float:
    """Robust noise s.d. (HU) from the 4-neighbour high-pass residual at the voxels of ``mask``."""
    x = img.astype(np.float32)
    res = x[1:-1, 1:-1] - 0.25 * (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:])
    r = res[mask[1:-1, 1:-1]]
    if r.size < 50:
        return float("nan")
    return float(MAD_TO_SD * np.median(np.abs(r - np.median(r))) / RESIDUAL_GAIN)


def study_statistics(volume: CTVolume, lungs: np.ndarray, n_candidates: int,
                     nodule_probability: Sequence[float] | np.ndarray, *, max_slices: int = MAX_SLICES
                     ) -> dict[str, Any]:
    """The monitored statistics of one analysed study (JSON-ready: floats, strings, None)."""
    hu, spacing = volume.hu, volume.spacing
    if lungs.shape != hu.shape:
        raise InputValidationError(f"series {volume.series_uid}: the lung mask's shape {lungs.shape} "
                                   f"is not the volume's {hu.shape}")
    acq = volume.acquisition or {}
    thickness = acq.get("slice_thickness")
    probs = np.asarray(nodule_probability, np.float64)
    out: dict[str, Any] = {
        "slice_spacing_mm": round(float(spacing[0]), 4),
        "slice_thickness": UNKNOWN if thickness is None else f"{round(float(thickness), 2):g}",
        "pixel_spacing_mm": round(float(spacing[1]), 4),
        "kernel": str(acq.get("kernel") or UNKNOWN), "manufacturer": str(acq.get("manufacturer") or UNKNOWN),
        "lung_volume_ml": round(float(lungs.sum() * np.prod(spacing) / 1000.0), 1),
        "n_candidates": int(n_candidates),
        SCORE_KEY: round(float(probs.mean()), 6) if probs.size else 0.0,
        "lung_hu_mean": None, "lung_hu_p05": None, "lung_hu_p95": None, "lung_noise_hu": None, "air_noise_hu": None,
    }
    with_lung = np.flatnonzero(lungs.any(axis=(1, 2)))
    ks = (with_lung[np.unique(np.linspace(0, len(with_lung) - 1, min(max_slices, len(with_lung))).round().astype(int))]
          if len(with_lung) else np.unique(np.linspace(0, hu.shape[0] - 1, min(max_slices, hu.shape[0])).astype(int)))
    if len(with_lung):
        values = hu[ks][lungs[ks]].astype(np.float32)
        p05, p95 = np.percentile(values, (5, 95))
        out.update(lung_hu_mean=round(float(values.mean()), 2), lung_hu_p05=round(float(p05), 2),
                   lung_hu_p95=round(float(p95), 2))
        # away from the lung wall (2 mm), where the residual is only the parenchyma's noise
        r = max(1, round(2.0 / min(spacing[1], spacing[2])))
        inner = ndimage.binary_erosion(lungs[ks], structure=np.ones((1, 3, 3), bool), iterations=r)
        noise = [v for v in (_residual_mad(hu[k], m) for k, m in zip(ks, inner, strict=True)) if np.isfinite(v)]
        if noise:
            out["lung_noise_hu"] = round(float(np.median(noise)), 3)
    # the air outside the body: below -900 HU and touching the image border, away from the body (4 mm)
    air = [_outside_air(hu[k], spacing) for k in ks]
    air_noise = [v for v in (_residual_mad(hu[k], m) for k, m in zip(ks, air, strict=True) if m is not None)
                 if np.isfinite(v)]
    if air_noise:
        out["air_noise_hu"] = round(float(np.median(air_noise)), 3)
    return out


def _outside_air(img: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray | None:
    body = ndimage.binary_fill_holes(img > -500)
    if not body.any():
        return None
    r = max(1, round(4.0 / min(spacing[1], spacing[2])))
    return ~ndimage.binary_dilation(body, iterations=r)


def study_frame(stats: Iterable[Mapping[str, Any]]) -> tuple[pd.DataFrame, np.ndarray]:
    """The model-input frame (``COLUMNS``) and the scores of many studies' statistics."""
    rows = list(stats)
    for i, r in enumerate(rows):
        if SCORE_KEY not in r:
            raise InputValidationError(f"study {i}: its statistics lack {SCORE_KEY!r} (analysed before "
                                       "monitoring existed? analyse it again)")
    frame = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], columns=list(COLUMNS))
    for c in NUMERIC:
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(np.float64)
    for c in CATEGORICAL:
        frame[c] = frame[c].fillna(UNKNOWN).astype(str)
    return frame, np.array([float(r[SCORE_KEY]) for r in rows], np.float64)


def reference_profile(analyzer: StudyAnalyzer, volumes: Iterable[CTVolume], *,
                      meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Analyse ``volumes`` (studies the classifier never trained on) and profile their statistics."""
    stats = [analyzer.analyze_volume(v).monitoring for v in volumes]
    if not stats:
        raise InputValidationError("a CT reference profile needs at least one study")
    frame, score = study_frame(stats)
    return build_profile(frame, score, categorical=CATEGORICAL,
                         meta={"domain": "medical-imaging", "studies": len(stats), **(meta or {})})


def read_job_statistics(json_paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The ``monitoring`` statistics of a job's findings JSONs (one per study)."""
    out = []
    for p in json_paths:
        payload = json.loads(Path(p).read_text())
        stats = payload.get("monitoring")
        if not isinstance(stats, dict):
            raise InputValidationError(f"{p}: the findings JSON has no 'monitoring' statistics")
        out.append(stats)
    return out


def monitor_job(analyzer: StudyAnalyzer, json_paths: Sequence[str | Path], *, db: Database, job_id: int | None,
                label: str, thresholds: Thresholds = THRESHOLDS) -> list[int]:
    """After a CT batch job: check its studies' statistics and scores against the version's profile
    (one run per job); nothing for an unregistered analyzer or an empty job."""
    ref = analyzer.registry_ref
    if ref is None or not json_paths:
        if ref is None:
            log.info("unregistered nodule classifier: no reference profile, drift not checked")
        return []
    t = time.perf_counter()
    frame, score = study_frame(read_job_statistics(json_paths))
    registry = ref.registry()
    ids = check_batch(registry, registry.get(ref.name, ref.version), frame, score, db=db, job_id=job_id,
                      label=label, thresholds=thresholds)
    log.info("CT job %s: %d studies checked against the reference profile (%.2f s)", label, len(frame),
             time.perf_counter() - t)
    return ids


def monitor_study(analyzer: StudyAnalyzer, payload: Mapping[str, Any], *, db: Database, job_id: int | None,
                  label: str = "ct-study") -> list[int]:
    """The service's check of one analysed study (a service CT study is one core job): the
    quality rules (an unseen kernel, a missing tag, values far outside the reference) apply to a
    single study; the drift tests need ``THRESHOLDS.min_rows`` studies and are left to batch jobs."""
    ref = analyzer.registry_ref
    stats = payload.get("monitoring")
    if ref is None or not isinstance(stats, dict):
        return []
    frame, score = study_frame([stats])
    registry = ref.registry()
    return check_batch(registry, registry.get(ref.name, ref.version), frame, score, db=db, job_id=job_id,
                       label=label, thresholds=THRESHOLDS)


__all__ = ["CATEGORICAL", "COLUMNS", "NUMERIC", "SCORE_KEY", "THRESHOLDS", "monitor_job", "monitor_study", "read_job_statistics",
           "reference_profile", "study_frame", "study_statistics"]
