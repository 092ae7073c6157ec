"""Training the candidate classifier on phantoms, and the detection evaluation (FROC).

No annotated chest-CT series is staged here, so the networks learn from phantom studies whose
nodules are known exactly (``phantom``). Candidates come from the same detector that runs at
analysis time, so the false candidates the network learns to reject are the real ones
(vessel branchings and crossings), not hand-made negatives. Validation studies are held out
by study, never by patch, and they choose the operating threshold: the highest sensitivity at
no more than ``max_fp_per_scan`` false positives per scan.

The evaluation runs the whole product path on fresh phantoms written as DICOM (seeds never
used for training): load, analyse, and compare each finding's ``center_mm`` in patient
coordinates with the truth, so the geometry is checked along with the detector.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trillium.core.metrics import auroc, cpm, fp_budget_threshold, froc_table, nearest_hit
from trillium.core.registry import ModelRecord, ModelRegistry
from trillium.medical.imaging.analyzer import StudyAnalyzer, detect_candidates
from trillium.medical.imaging.classifier import (
    DEFAULT_MODEL_NAME,
    NoduleClassifier,
    candidate_features,
    extract_patches,
)
from trillium.medical.imaging.dicom_io import CTVolume
from trillium.medical.imaging.phantom import PHANTOM_KERNEL, PhantomNodule, make_phantom, write_phantom

log = logging.getLogger(__name__)

TRAIN_SHAPE = (140, 256, 256)
TRAIN_SPACING = (1.5, 1.4, 1.4)
#: the monitoring reference's phantoms: seed * 10_000 + this + i (training and validation use + 0 .. studies)
PROFILE_SEED_OFFSET = 5_000
#: A finding hits a nodule when its centre lies within the nodule's radius, and at least this close (mm).
MIN_HIT_RADIUS_MM = 3.0
#: Share of training phantoms' nodules placed against the pleura (``phantom._draw_nodules``):
#: a real chest has many, and a classifier that never saw one rejects them (measured: 6 of 23
#: juxtapleural nodules found by the model trained on interior nodules only).
TRAIN_PLEURAL_SHARE = 0.3


def phantom_volume(n_nodules: int, seed: int, *, shape: tuple[int, int, int] = TRAIN_SHAPE,
                   spacing: tuple[float, float, float] = TRAIN_SPACING, kernel: str = PHANTOM_KERNEL,
                   **look: Any) -> tuple[CTVolume, list[PhantomNodule]]:
    """A phantom straight into memory (training does not need the DICOM round trip), with the
    acquisition tags ``write_phantom`` would write (``look``: ``make_phantom``'s noise options)."""
    hu, nodules = make_phantom(n_nodules, seed, shape=shape, spacing=spacing, **look)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    return CTVolume(hu=hu, affine=affine, series_uid=f"phantom-{seed}",
                    acquisition={"kernel": kernel, "slice_thickness": float(spacing[0]), "manufacturer": ""}), nodules


def _match(center_kji: np.ndarray, nodules: list[PhantomNodule], spacing: tuple[float, float, float]) -> int | None:
    """Index of the truth nodule whose body holds this point (within its radius, at least 3 mm)."""
    sp = np.array(spacing)
    best, _ = nearest_hit(np.asarray(center_kji) * sp, [np.array(nod.center_kji) * sp for nod in nodules],
                          [max(nod.diameter_mm / 2, MIN_HIT_RADIUS_MM) for nod in nodules])
    return best


def candidate_set(seeds: list[int], *, nodules_per_study: int = 8, shape: tuple[int, int, int] = TRAIN_SHAPE,
                  spacing: tuple[float, float, float] = TRAIN_SPACING, pleural_share: float = TRAIN_PLEURAL_SHARE,
                  log_fn: Callable[[str], Any] | None = None) -> dict[str, np.ndarray]:
    """Patches and features of every detector candidate on the phantoms of ``seeds``, labelled
    from the truth (the same candidates, measurements and features as at analysis time)."""
    patches, feats, is_nodule, malignant, groups = [], [], [], [], []
    for seed in seeds:
        t = time.perf_counter()
        vol, nodules = phantom_volume(nodules_per_study, seed, shape=shape, spacing=spacing,
                                      pleural_share=pleural_share)
        cands, measurements, _lungs = detect_candidates(vol)
        labels = [_match(c.center_kji, nodules, vol.spacing) for c in cands]
        if cands:
            patches.append(extract_patches(vol.hu, np.array([c.center_kji for c in cands]), vol.spacing))
            feats.append(np.stack([candidate_features(c, m) for c, m in zip(cands, measurements, strict=True)]))
        is_nodule.extend(lbl is not None for lbl in labels)
        malignant.extend(lbl is not None and nodules[lbl].malignant for lbl in labels)
        groups.extend([seed] * len(cands))
        if log_fn:
            log_fn(f"study {seed}: {len(cands)} candidates, {sum(lbl is not None for lbl in labels)} "
                   f"on nodules ({time.perf_counter() - t:.1f}s)")
    return {"patches": np.concatenate(patches), "features": np.concatenate(feats),
            "is_nodule": np.array(is_nodule, dtype=np.float32),
            "malignant": np.array(malignant, dtype=np.float32), "groups": np.array(groups)}


def join_candidate_sets(*sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Candidate sets end to end; groups become text so phantom seeds and real patients mix."""
    keys = ("patches", "features", "is_nodule", "malignant")
    out = {k: np.concatenate([s[k] for s in sets]) for k in keys}
    out["groups"] = np.concatenate([np.asarray(s["groups"]).astype(str) for s in sets])
    return out


def fit_with_threshold(data: dict[str, np.ndarray], val: dict[str, np.ndarray], *, width: int = 8, epochs: int = 10,
                       seed: int = 0, mc_samples: int = 8, max_fp_per_scan: float = 0.5,
                       log_fn: Callable[[str], Any] | None = None) -> tuple[NoduleClassifier, float, dict[str, Any]]:
    """Train both networks on ``data`` and choose the operating threshold on ``val`` (studies
    neither stage has seen): the highest sensitivity at ``max_fp_per_scan`` false candidates."""
    clf = NoduleClassifier(width=width, epochs=epochs, seed=seed, mc_samples=mc_samples)
    clf.fit(data["patches"], data["features"], data["is_nodule"], data["malignant"], data["groups"], log_fn=log_fn)
    pred = clf.predict(val["patches"], val["features"])
    y_val = val["is_nodule"]
    threshold = fp_budget_threshold(pred.nodule_probability, y_val, val["groups"], max_fp_per_group=max_fp_per_scan)
    pos = y_val > 0.5
    metrics: dict[str, Any] = {
        "candidates": len(data["is_nodule"]),
        "val_candidate_auc": auroc(y_val, pred.nodule_probability),
        "val_sensitivity_at_threshold": float((pred.nodule_probability[pos] >= threshold).mean()) if pos.any() else None,
        "threshold": threshold,
    }
    mal_auc = auroc(val["malignant"][pos], pred.malignancy[pos])
    if mal_auc is not None:
        metrics["val_malignancy_auc"] = mal_auc
    return clf, threshold, metrics


@dataclass
class TrainReport:
    classifier: NoduleClassifier
    threshold: float
    record: ModelRecord | None
    metrics: dict[str, Any]
    seconds: float


def train_nodule_model(*, studies: int = 16, val_studies: int = 4, seed: int = 0, epochs: int = 10, width: int = 8,
                       mc_samples: int = 8, profile_studies: int = 8,
                       max_fp_per_scan: float = 0.5, register: bool = True, registry: ModelRegistry | None = None,
                       name: str = DEFAULT_MODEL_NAME, shape: tuple[int, int, int] = TRAIN_SHAPE,
                       spacing: tuple[float, float, float] = TRAIN_SPACING,
                       pleural_share: float = TRAIN_PLEURAL_SHARE,
                       real_series: Sequence[str | Path] = (), real_copies: int = 2,
                       on_read: Callable[[str | None, str], Any] | None = None,
                       log_fn: Callable[[str], Any] | None = None) -> TrainReport:
    """Build the candidate set from ``studies`` phantoms, train both networks, pick the threshold.
    ``pleural_share``: the share of the phantoms' nodules placed against the pleura.

    ``real_series``: annotated real series (LIDC XML or VOC boxes) whose anatomy joins the
    training set (``real_training``: real false candidates, synthetic nodules drawn in their
    lungs, the readers' lesions), ``real_copies`` copies with synthetic nodules each. The
    threshold is still chosen on phantom studies of their own. ``on_read(patient, series UID)``
    is called for each real series read (the CLI audits it). The registered metrics carry the
    number of real series, not their paths (a folder name may identify a patient).

    With ``register``, the version is stored with its monitoring reference profile
    (``imaging.monitoring``): ``profile_studies`` fresh phantoms (seeds of their own, neither
    trained on nor used for the threshold) analysed by the trained classifier."""
    t0 = time.perf_counter()
    if real_series:
        from trillium.medical.imaging.real_training import check_real_series

        check_real_series(real_series)
    seeds = [seed * 10_000 + s for s in range(studies + val_studies)]
    data = candidate_set(seeds[:-val_studies], shape=shape, spacing=spacing, pleural_share=pleural_share,
                         log_fn=log_fn)
    real_counts = None
    if real_series:
        from trillium.medical.imaging.real_training import real_candidate_set

        real = real_candidate_set(real_series, copies=real_copies, seed=seed, on_read=on_read, log_fn=log_fn)
        real_counts = real.pop("counts")
        data = join_candidate_sets(data, real)
    val = candidate_set(seeds[-val_studies:], shape=shape, spacing=spacing, pleural_share=pleural_share,
                        log_fn=log_fn)
    clf, threshold, metrics = fit_with_threshold(data, val, width=width, epochs=epochs, seed=seed,
                                                 mc_samples=mc_samples, max_fp_per_scan=max_fp_per_scan,
                                                 log_fn=log_fn)
    metrics = {"train_studies": studies, **metrics}
    if real_counts is not None:
        metrics["real_series"] = len(real_series)
        metrics["real_candidates"] = real_counts
    record = None
    if register:
        profile = None
        if profile_studies > 0:
            from trillium.medical.imaging.monitoring import reference_profile

            analyzer = StudyAnalyzer(clf, threshold=threshold)
            profile_seeds = [seed * 10_000 + PROFILE_SEED_OFFSET + s for s in range(profile_studies)]
            profile = reference_profile(
                analyzer, (phantom_volume(6, s, shape=shape, spacing=spacing)[0] for s in profile_seeds),
                meta={"reference": f"{profile_studies} fresh phantom studies", "seeds": profile_seeds})
        record = clf.register(registry, name, threshold=threshold, metrics=metrics, profile=profile)
    return TrainReport(clf, threshold, record, metrics, time.perf_counter() - t0)


def evaluate_detection(analyzer: StudyAnalyzer, *, studies: int = 8, seed: int = 900_000, nodules: int = 6,
                       min_diameter_mm: float = 5.0, workdir: str | Path | None = None, pleural_share: float = 0.0,
                       shape: tuple[int, int, int] = TRAIN_SHAPE, spacing: tuple[float, float, float] = TRAIN_SPACING,
                       log_fn: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Sensitivity at each FP rate (FROC), centre and diameter errors, type and malignancy figures.

    Nodules smaller than ``min_diameter_mm`` neither count as misses nor, when found, as false
    positives (LUNA16 treats sub-threshold nodules the same way).
    """
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    root = Path(workdir) if workdir is not None else Path(tmp.name)  # type: ignore[union-attr]
    scored: list[tuple[float, bool]] = []  # (probability, is_tp) over all findings of all scans
    n_truth = 0
    centre_err, diam_err, type_ok, mal_true, mal_pred, per_study = [], [], [], [], [], []
    saved_threshold = analyzer.threshold
    analyzer.threshold = 0.02  # keep low-scoring findings so the whole FROC curve can be drawn
    try:
        for s in range(studies):
            folder = root / f"study-{s}"
            truth = write_phantom(folder, nodules=nodules, seed=seed + s, shape=shape, spacing=spacing,
                                  pleural_share=pleural_share)
            result = analyzer.analyze(folder)
            truth_n = truth["nodules"]
            counted = [n for n in truth_n if n["diameter_mm"] >= min_diameter_mm]
            n_truth += len(counted)
            hit: set[int] = set()
            fp = 0
            centres = [n["center_mm"] for n in truth_n]
            radii = [max(n["diameter_mm"] / 2, MIN_HIT_RADIUS_MM) for n in truth_n]
            for f in result.findings:
                best, best_d = nearest_hit(f["center_mm"], centres, radii)
                if best is None:
                    scored.append((f["nodule_probability"], False))
                    fp += f["nodule_probability"] >= saved_threshold
                    continue
                n = truth_n[best]
                if n["diameter_mm"] < min_diameter_mm or best in hit:
                    continue
                hit.add(best)
                scored.append((f["nodule_probability"], True))
                if f["nodule_probability"] >= saved_threshold:
                    centre_err.append(best_d)
                    diam_err.append(abs(f["diameter_mm"] - n["diameter_mm"]) / n["diameter_mm"])
                    type_ok.append(f["type"] == n["type"])
                    mal_true.append(bool(n["malignant"]))
                    mal_pred.append(f["malignancy"])
            per_study.append({"seed": seed + s, "nodules": len(counted), "findings_at_threshold":
                              sum(f["nodule_probability"] >= saved_threshold for f in result.findings),
                              "false_positives": int(fp), "seconds": round(result.timings.get("total", 0.0), 2)})
            if log_fn:
                log_fn(f"eval study {s}: {per_study[-1]}")
    finally:
        analyzer.threshold = saved_threshold
        if tmp is not None:
            tmp.cleanup()
    froc = froc_table(scored, n_truth, studies)
    at_thr = [p for p, tp in scored if p >= saved_threshold]
    tps = sum(tp for p, tp in scored if p >= saved_threshold)
    report: dict[str, Any] = {
        "studies": studies, "nodules_counted": n_truth, "min_diameter_mm": min_diameter_mm,
        "threshold": saved_threshold,
        "sensitivity": tps / n_truth if n_truth else None,
        "fp_per_scan": (len(at_thr) - tps) / studies,
        "froc": froc, "cpm": cpm(froc),
        "centre_error_mm": _stats(centre_err), "diameter_rel_error": _stats(diam_err),
        "diameter_within_20pct": float(np.mean(np.array(diam_err) <= 0.2)) if diam_err else None,
        "type_accuracy": float(np.mean(type_ok)) if type_ok else None,
        "malignancy_auc": auroc(mal_true, mal_pred),
        "per_study": per_study,
    }
    return report


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    return {"mean": round(float(a.mean()), 4), "median": round(float(np.median(a)), 4),
            "p95": round(float(np.percentile(a, 95)), 4), "max": round(float(a.max()), 4), "n": len(a)}
