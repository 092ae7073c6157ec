"""A chest-CT study from DICOM to nodule findings: the per-domain API behind ``medical analyze``.

load (``dicom_io``) -> lungs (``lungs``) -> candidates (``candidates``) -> nodule and
malignancy probabilities with MC-dropout spread (``classifier``) -> measurements and
Lung-RADS-style category (``measure``) -> optional heatmaps (``explain``) and DICOM SEG/SR.
Each step is timed, so a slow study says which step was slow.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trillium.core.contract import Predictor
from trillium.core.registry import ModelRecord, ModelRef, ModelRegistry
from trillium.medical.imaging import measure as measure_module
from trillium.medical.imaging.candidates import Candidate, find_candidates, resolve_backend
from trillium.medical.imaging.classifier import (
    DEFAULT_MODEL_NAME,
    FEATURES,
    NoduleClassifier,
    candidate_features,
    extract_patches,
)
from trillium.medical.imaging.dicom_io import CTVolume, load_ct
from trillium.medical.imaging.lungs import segment_lungs
from trillium.medical.imaging.lungs_torch import segment_lungs_torch
from trillium.medical.imaging.measure import Measurement, finding_category, lesion_kind, measure_consistent
from trillium.medical.imaging.parallel import measure_all, recentre_all

log = logging.getLogger(__name__)

#: Findings smaller than this are not reported (Lung-RADS starts counting at about 4 mm).
MIN_DIAMETER_MM = 3.0
#: Lung-RADS-style categories from least to most suspicious ("" = no finding).
CATEGORY_ORDER = ["", "2", "3", "4A", "4B", "4X"]


@dataclass
class StudyResult:
    series_uid: str
    study_uid: str
    patient_id: str | None
    study_date: str | None
    source: str
    findings: list[dict[str, Any]]
    n_candidates: int
    timings: dict[str, float]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    model: str = ""
    threshold: float = 0.5
    warnings: list[str] = field(default_factory=list)
    volume: CTVolume | None = field(default=None, repr=False)
    measurements: list[Measurement] = field(default_factory=list, repr=False)
    patches: np.ndarray | None = field(default=None, repr=False)
    lung_volume_ml: float = 0.0
    model_version_id: int | None = None
    heatmap_dir: str | None = None  # set when heatmaps were written, so viewers can find them
    monitoring: dict[str, Any] = field(default_factory=dict)  # the study's statistics (imaging.monitoring)

    def as_json(self) -> dict[str, Any]:
        return {
            "series_uid": self.series_uid, "study_uid": self.study_uid, "patient_id": self.patient_id,
            "study_date": self.study_date, "source": self.source, "model": self.model,
            "threshold": self.threshold, "shape": list(self.shape), "spacing_mm": list(self.spacing),
            "lung_volume_ml": round(self.lung_volume_ml, 1), "n_candidates": self.n_candidates,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()}, "warnings": self.warnings,
            "findings": self.findings, "model_version_id": self.model_version_id, "heatmap_dir": self.heatmap_dir,
            "monitoring": self.monitoring,
        }

    def to_rows(self) -> list[dict[str, Any]]:
        """One summary row per study, as a batch job writes it (the findings go to its JSON)."""
        cats = [f["category"] for f in self.findings]
        return [{
            "series_uid": self.series_uid, "study_uid": self.study_uid, "patient_id": self.patient_id or "",
            "n_findings": len(self.findings), "max_category": max(cats, key=CATEGORY_ORDER.index, default=""),
            "max_malignancy": max((f["malignancy"] for f in self.findings), default=0.0),
            "n_candidates": self.n_candidates, "seconds": round(self.timings.get("total", 0.0), 3),
        }]


class StudyAnalyzer(Predictor):
    """Runs the pipeline with one trained ``NoduleClassifier`` and its operating threshold (the
    chest-CT ``Predictor``: the threshold is its decision step and travels with a batch job)."""

    def __init__(self, classifier: NoduleClassifier, *, threshold: float = 0.5, record: ModelRecord | None = None,
                 min_diameter_mm: float = MIN_DIAMETER_MM, recentre: bool = True, backend: str | None = None,
                 device: str | None = None) -> None:
        self.classifier = classifier
        #: filters of the candidate detector: "scipy", "torch" or None/"auto" (``candidates.resolve_backend``)
        self.backend = backend
        self.device = device
        self.recentre = recentre
        self.threshold = threshold
        self.record = record
        self.min_diameter_mm = min_diameter_mm
        self.registry_ref: ModelRef | None = None  # where it was loaded from (Ray workers load it there)

    @classmethod
    def from_registry(cls, name: str = DEFAULT_MODEL_NAME, ref: int | str = "production", *,
                      registry: ModelRegistry | None = None, backend: str | None = None,
                      device: str | None = None) -> StudyAnalyzer:
        registry = registry or ModelRegistry()
        clf, record = NoduleClassifier.load(registry, name, ref)
        if not record.extra.get("measure_in_lungs", False) and measure_module.MEASURE_IN_LUNGS:
            log.warning("%s:v%s was trained before nodule outlines were kept inside the lungs: its figures "
                        "were measured otherwise; retrain it (trillium medical train)", record.name, record.version)
        analyzer = cls(clf, threshold=float(record.extra.get("threshold", 0.5)), record=record, backend=backend,
                       device=device)
        analyzer.registry_ref = ModelRef.of(registry, record)
        return analyzer

    @property
    def model_label(self) -> str:
        return f"{self.record.name}:v{self.record.version}" if self.record is not None else "unregistered"

    def analyze(self, source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                series_uid: str | None = None, interpolate_missing: bool = False) -> StudyResult:
        t0 = time.perf_counter()
        volume = load_ct(source, series_uid=series_uid, interpolate_missing=interpolate_missing)
        load_s = time.perf_counter() - t0
        where = str(Path(source).expanduser().resolve()) if isinstance(source, (str, os.PathLike)) else ""
        result = self.analyze_volume(volume, source=where)
        result.timings = {"load": load_s, **result.timings}
        result.timings["total"] = time.perf_counter() - t0
        return result

    def analyze_volume(self, volume: CTVolume, *, source: str = "") -> StudyResult:
        timings: dict[str, float] = {}
        spacing = volume.spacing
        t = time.perf_counter()
        # measure_consistent's answers for this volume: candidates on one nodule re-centre
        # through the same calls
        cache: dict[tuple[Any, ...], Measurement | None] = {}
        cands, cand_measurements, lungs = detect_candidates(volume, timings, backend=self.backend,
                                                            device=self.device, cache=cache)
        t = time.perf_counter()
        if resolve_backend(self.backend) == "torch":
            from trillium.medical.imaging.volume_ops import resolve_device

            self.classifier.to_device(resolve_device(self.device))  # no-op once there
        centers = np.array([c.center_kji for c in cands]).reshape(-1, 3)
        patches = extract_patches(volume.hu, centers, spacing)
        features = (np.stack([candidate_features(c, m) for c, m in zip(cands, cand_measurements, strict=True)])
                    if cands else np.zeros((0, len(FEATURES)), np.float32))
        pred = self.classifier.predict(patches, features)
        timings["classify"] = time.perf_counter() - t
        t = time.perf_counter()
        from trillium.medical.imaging.monitoring import study_statistics  # what monitoring compares per study

        monitoring = study_statistics(volume, lungs, len(cands), pred.nodule_probability)
        timings["monitor"] = time.perf_counter() - t
        t = time.perf_counter()
        order = [int(n) for n in np.argsort(-pred.nodule_probability) if pred.nodule_probability[n] >= self.threshold]
        above = [cand_measurements[n] for n in order]
        if self.recentre:  # every candidate above the threshold, on the host's cores (``parallel``)
            above = recentre_all(volume.hu, above, spacing, lungs, cache=cache)
        findings: list[dict[str, Any]] = []
        measurements: list[Measurement] = []
        kept_patches: list[int] = []
        for n, m in zip(order, above, strict=True):
            if m is None or m.diameter_mm < self.min_diameter_mm:
                continue
            pos = np.array(m.center_kji) * np.array(spacing)
            if any(np.linalg.norm(pos - np.array(o.center_kji) * np.array(spacing)) < max(o.diameter_mm, m.diameter_mm) / 2
                   for o in measurements):
                continue  # a second candidate inside a nodule already reported
            measurements.append(m)
            kept_patches.append(int(n))
            center_mm = volume.voxel_to_patient(m.center_kji)
            findings.append({
                "id": len(findings) + 1,
                "center_mm": [round(float(v), 2) for v in center_mm],
                "center_kji": [round(float(v), 2) for v in m.center_kji],
                "kind": lesion_kind(m.diameter_mm),  # a mass above 30 mm, measured from its own outline
                "diameter_mm": m.diameter_mm, "short_axis_mm": m.short_axis_mm,
                "craniocaudal_mm": m.craniocaudal_mm(spacing[0]),
                "mean_diameter_mm": m.mean_diameter_mm, "volume_mm3": m.volume_mm3,
                "solid_diameter_mm": m.solid_diameter_mm, "mean_hu": m.mean_hu,
                "type": m.type,
                "category": finding_category(m.type, m.diameter_mm, m.mean_diameter_mm, m.solid_diameter_mm),
                "malignancy": round(float(pred.malignancy[n]), 4),
                "malignancy_std": round(float(pred.malignancy_std[n]), 4),
                "nodule_probability": round(float(pred.nodule_probability[n]), 4),
                "nodule_probability_std": round(float(pred.nodule_std[n]), 4),
            })
        timings["findings"] = time.perf_counter() - t
        return StudyResult(
            series_uid=volume.series_uid, study_uid=volume.study_uid, patient_id=volume.patient_id,
            study_date=volume.study_date, source=source, findings=findings, n_candidates=len(cands),
            timings=timings, shape=volume.shape, spacing=spacing, model=self.model_label, threshold=self.threshold,
            warnings=list(volume.warnings), volume=volume, measurements=measurements,
            patches=patches[kept_patches] if kept_patches else None,
            lung_volume_ml=float(lungs.sum() * np.prod(spacing) / 1000.0),
            model_version_id=self.record.id if self.record is not None else None, monitoring=monitoring,
        )


#: smallest / largest principal extent above which a grown outline counts as one round nodule
ROUND_ENOUGH = 0.6


def recentre_measurement(hu: np.ndarray, m: Measurement | None, spacing: tuple[float, float, float],
                         lungs: np.ndarray, rounds: int = 3, *,
                         cache: dict[tuple[Any, ...], Measurement | None] | None = None) -> Measurement | None:
    """Measure again from the segmented centre at the segmented size.

    A large nodule answers at several blob scales, some off its centre; the candidate the
    classifier ranks first may sit on a lobe, and a measurement from there sees part of the
    nodule. Re-measuring from the segmentation's centroid at its own size converges on the whole
    nodule in a round or two. A jump in size is kept only when the new outline is still round
    (a lobe of a large nodule grows into the whole nodule); an elongated one took in a vessel or
    a neighbour, and the earlier outline is kept.
    """
    for _ in range(rounds):
        if m is None:
            return None
        again = measure_consistent(hu, np.array(m.center_kji), max(m.diameter_mm / 2, 2.0), spacing, lungs,
                                   cache=cache)
        if again is None:
            return m
        ratio = again.diameter_mm / max(m.diameter_mm, 1e-3)
        if ratio < 0.75 or (ratio > 1.6 and again.elongation < ROUND_ENOUGH):
            return m
        moved = np.linalg.norm((np.array(again.center_kji) - np.array(m.center_kji)) * np.array(spacing))
        m = again
        if moved < 0.5:
            break
    return m


def lung_mask(hu: np.ndarray, spacing: tuple[float, float, float], *, backend: str | None = None,
              device: str | None = None) -> np.ndarray:
    """The lung mask, on the GPU with the torch backend on a CUDA device (``lungs_torch``: the
    same mask, voxel for voxel), else SciPy's: on CPU threads the torch mask is far slower (its
    disc convolutions are dense, and label propagation repeats whole-volume scans; 100 s against
    0.8 s for LIDC-IDRI-0003 on this 2-core CPU, ``benchmarks/medical_imaging_equality.py``)."""
    if resolve_backend(backend) == "torch":
        from trillium.medical.imaging.volume_ops import resolve_device

        if resolve_device(device).type != "cpu":
            return segment_lungs_torch(hu, spacing, device=device)
    return segment_lungs(hu, spacing)


def detect_candidates(volume: CTVolume, timings: dict[str, float] | None = None, *, backend: str | None = None,
                      device: str | None = None, cache: dict[tuple[Any, ...], Measurement | None] | None = None,
                      ) -> tuple[list[Candidate], list[Measurement | None], np.ndarray]:
    """Lungs, blob candidates and each candidate's measurement: the part before any model.
    ``backend``/``device``: the candidate filters' (``candidates.find_candidates``); ``cache``:
    ``measure_consistent``'s for this volume."""
    timings = timings if timings is not None else {}
    spacing = volume.spacing
    t = time.perf_counter()
    lungs = lung_mask(volume.hu, spacing, backend=backend, device=device)
    timings["lungs"] = time.perf_counter() - t
    t = time.perf_counter()
    cands = find_candidates(volume.hu, lungs, spacing, backend=backend, device=device) if lungs.any() else []
    timings["candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    measurements = measure_all(volume.hu, [c.center_kji for c in cands], [c.radius_mm for c in cands], spacing,
                               lungs, cache=cache)
    timings["measure"] = time.perf_counter() - t
    return cands, measurements, lungs


def store_result(result: StudyResult, *, db: Any = None) -> int:
    """Put the study and its findings into the database (re-analysis replaces them)."""
    return store_study_json(result.as_json(), db=db)


def store_study_json(payload: dict[str, Any], *, db: Any = None) -> int:
    """Store a study from its findings JSON (:meth:`StudyResult.as_json`, as ``write_json`` and a batch
    job write it): a job stores its studies from its output after it ends, like every vertical."""
    from trillium.medical.store import store_ct_study

    return store_ct_study(
        payload["series_uid"], payload["findings"], patient_id=payload.get("patient_id"),
        study_uid=payload.get("study_uid", ""), study_date=payload.get("study_date"), source=payload.get("source", ""),
        model_version_id=payload.get("model_version_id"),
        details={"n_candidates": payload.get("n_candidates", 0), "timings_s": payload.get("timings_s", {}),
                 "model": payload.get("model", ""), "shape": payload.get("shape", []),
                 "spacing_mm": payload.get("spacing_mm", []), "lung_volume_ml": payload.get("lung_volume_ml", 0.0),
                 "heatmap_dir": payload.get("heatmap_dir")},
        db=db,
    )


def write_json(result: StudyResult, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.as_json(), indent=2))
    return out


def check_study_upload(data: bytes, label: str) -> None:
    """Refuse a zipped DICOM upload before anything is written or any model is loaded: its size,
    and the archive's member count, names and declared sizes (``trillium.core.untrusted``)."""
    from trillium.core.untrusted import check_size, list_archive

    check_size(label, "the upload", len(data), "upload_bytes")
    list_archive(bytes(data), source=label)


def save_study_upload(data: bytes, label: str) -> Path:
    """Keep a zipped DICOM upload under ``$TRILLIUM_HOME/uploads/ct`` with a name of our own.

    ``label`` is the client's file name: a label for messages, never a path (an upload named
    ``../../trillium.db`` must not land there). The archive is judged in memory first
    (:func:`check_study_upload`), so a refused upload writes nothing; an accepted one is written
    atomically.
    """
    from trillium.core.config import home_dir
    from trillium.core.untrusted import save_upload

    check_study_upload(data, label)
    return save_upload(data, home_dir() / "uploads" / "ct", suffix=".zip", label=label)


def analyze_upload(data: bytes, label: str, analyzer: StudyAnalyzer | Callable[[], StudyAnalyzer], *,
                   db: Any = None) -> StudyResult:
    """A zipped DICOM series from a client, checked, analysed and stored: the dashboard's and the
    service's way in. ``analyzer`` may be a function that loads one, so that a refused upload
    costs no model load. The upload is kept (the slice viewer reads it) only when the analysis
    succeeds; any refusal or failure leaves no file behind."""
    path = save_study_upload(data, label)
    try:
        result = (analyzer if hasattr(analyzer, "analyze") else analyzer()).analyze(path)
        store_result(result, db=db)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return result
