"""Real chest CT as training material for the candidate classifier, the way the field uses a
few annotated series when labels are scarce.

A classifier trained on phantoms only has never seen what a real chest puts in front of the
candidate detector (vessel branchings of real calibre, bronchial walls, fissures, scars, the
heart's and diaphragm's edges) and calls many of them nodules. From each real series with
readers' marks this module takes:

- **real negatives**: the detector's own candidates on the real anatomy, away from every mark of
  every reader (``MARK_MARGIN_MM`` beyond the mark's radius; single-reader marks and sub-3 mm
  points included), so that nothing a reader thought worth marking is taught as a false candidate;
- **synthetic nodules in real lungs**: the phantom's nodules (solid, part-solid, ground glass,
  lobulated; 4-30 mm, ``phantom._draw_nodules``) drawn into copies of the real volume, inside its
  lungs (``lungs.segment_lungs``) and away from every mark. They are drawn on a grid of about
  1 mm slices and averaged back to the series' slices (the partial volume of a thick slice), and
  each carries noise at the series' own level (the spread of its lung's high-pass residual), so
  a nodule looks as noisy as its surroundings whatever the kernel;
- **the readers' lesions** (at least ``min_readers`` readers and 3 mm, or boxes of record) as
  positives where a candidate hits them; malignancy from the LIDC readers' median rating
  (4-5 malignant), and malignant for Lung-PET-CT-Dx boxes (that collection's lesions are
  biopsy-confirmed lung cancers). Candidates near a mark that do not hit a counted lesion
  are left out (neither label is safe).

Every row carries the series' patient as its group, so the classifier's cross-fitting stays
patient-wise, and any figure on a real series must come from a model that did not train on that
patient (``benchmarks/ct_real_cv.py`` runs the folds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from trillium.core.metrics import nearest_hit
from trillium.medical.imaging.analyzer import detect_candidates
from trillium.medical.imaging.annotations import Lesion, annotation_source, keep, marks_for
from trillium.medical.imaging.classifier import candidate_features, extract_patches
from trillium.medical.imaging.dicom_io import CTVolume, load_ct
from trillium.medical.imaging.lungs import segment_lungs
from trillium.medical.imaging.phantom import PhantomNodule, _draw_nodules, _Grid

log = logging.getLogger(__name__)

__all__ = ["MARK_MARGIN_MM", "RealSeries", "check_real_series", "insert_nodules", "load_real_series", "real_candidate_set"]

#: A candidate this far beyond a mark's radius is safe to call a false candidate.
MARK_MARGIN_MM = 10.0
#: Synthetic nodules are drawn on slices about this thick, then averaged to the series' slices.
FINE_SLICE_MM = 1.0
#: A candidate hits a lesion within its radius, and at least this close (as ``real_eval``).
MIN_HIT_RADIUS_MM = 5.0


@dataclass
class RealSeries:
    """One annotated real series: its volume, lung mask, every mark and the lesions that count."""

    path: Path
    patient: str
    volume: CTVolume
    lungs: np.ndarray
    marks: list[tuple[np.ndarray, float]]  # (centre LPS mm, radius mm) of every mark, counted or not
    counted: list[Lesion]
    malignant: list[bool]  # per counted lesion


def check_real_series(series_dirs: Sequence[str | Path]) -> None:
    """Refuse, before any training work, a folder that is missing or carries no marks (naming it)."""
    from trillium.core.errors import InputValidationError

    for d in map(Path, series_dirs):
        if not d.is_dir():
            raise InputValidationError(f"{d}: real series folder not found")
        if annotation_source(d) is None:
            raise InputValidationError(f"{d}: no readers' marks (an LIDC XML in the folder, or a VOC 'annotations' "
                                       f"folder in it or beside it); a series without marks cannot be labelled")


def _malignant(lesion: Lesion, fmt: str) -> bool:
    if fmt == "voc":  # Lung-PET-CT-Dx: boxes drawn on biopsy-confirmed lung cancers
        return True
    ratings = [m.malignancy for m in lesion.marks if m.malignancy is not None]
    return bool(ratings) and float(np.median(ratings)) >= 4


def load_real_series(series_dir: str | Path, *, min_readers: int = 2) -> RealSeries:
    """Read a series folder and its marks (LIDC XML inside, or VOC boxes beside it)."""
    series_dir = Path(series_dir)
    volume = load_ct(series_dir)
    lesions, fmt, points = marks_for(series_dir, volume)
    counted = keep(lesions, min_readers=min_readers)
    marks = [(les.centre_mm, les.diameter_mm / 2) for les in lesions] + [(p, 0.0) for p in points]
    patient = volume.patient_id or series_dir.parent.name
    return RealSeries(series_dir, patient, volume, segment_lungs(volume.hu, volume.spacing), marks, counted,
                      [_malignant(les, fmt) for les in counted])


def _away_from_marks(series: RealSeries, mask: np.ndarray, margin_mm: float) -> np.ndarray:
    """``mask`` with a ball of (radius + margin) around every mark removed."""
    out = mask.copy()
    sp = np.array(series.volume.spacing)
    for centre, radius in series.marks:
        c = series.volume.patient_to_voxel(centre)
        reach = (radius + margin_mm) / sp
        lo = np.maximum(np.floor(c - reach).astype(int), 0)
        hi = np.minimum(np.ceil(c + reach).astype(int) + 1, mask.shape)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        d2 = ((zz - c[0]) * sp[0]) ** 2 + ((yy - c[1]) * sp[1]) ** 2 + ((xx - c[2]) * sp[2]) ** 2
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] &= d2 > (radius + margin_mm) ** 2
    return out


def _lung_noise(hu: np.ndarray, lungs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise at the series' own level: correlated Gaussian noise scaled to the robust spread
    (MAD) of the lung's high-pass residual, which a sharp kernel or a low dose makes larger.

    Why not the residual itself, shifted: at the edges of ribs and vessels it carries lines of
    structure, which a drawn nodule would inherit (seen on LIDC-IDRI-0003)."""
    smooth = ndimage.uniform_filter(hu.astype(np.float32), size=(1, 5, 5))
    sample = (hu.astype(np.float32) - smooth)[lungs]
    sigma = 1.4826 * float(np.median(np.abs(sample - np.median(sample)))) if sample.size else 0.0
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), sigma=(0, 0.7, 0.7))
    return noise * (sigma / max(float(noise.std()), 1e-6))


def insert_nodules(series: RealSeries, n: int, seed: int, *, diameter_range: tuple[float, float] = (4.0, 30.0),
                   margin_mm: float = MARK_MARGIN_MM) -> tuple[np.ndarray, list[PhantomNodule]]:
    """A copy of the series' HU with ``n`` phantom nodules drawn inside its lungs, away from every
    mark; returns (int16 HU, the nodules with ``center_kji`` on the series' grid)."""
    rng = np.random.default_rng(seed)
    vol = series.volume
    sz, sy, sx = vol.spacing
    up = max(1, round(sz / FINE_SLICE_MM))
    allowed = _away_from_marks(series, series.lungs, margin_mm)
    hu = vol.hu.astype(np.float32)
    if not allowed.any():
        return vol.hu.copy(), []
    # only the lungs' bounding box is drawn in (the distance transform and the placement scan
    # the whole box each time): a fraction of the volume
    lo = [int(i.min()) for i in np.nonzero(allowed)]
    hi = [int(i.max()) + 1 for i in np.nonzero(allowed)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    part = hu[box]
    fine = np.repeat(part, up, axis=0) if up > 1 else part.copy()
    before = fine.copy()
    fine_allowed = np.repeat(allowed[box], up, axis=0) if up > 1 else allowed[box]
    nodules = _draw_nodules(fine, fine_allowed, _Grid(fine.shape, (sz / up, sy, sx)), rng, n, diameter_range)
    drawn = np.abs(fine - before) > 0.5
    if up > 1:
        fine = fine.reshape(part.shape[0], up, *part.shape[1:]).mean(axis=1)
        drawn = drawn.reshape(part.shape[0], up, *part.shape[1:]).mean(axis=1)
    else:
        drawn = drawn.astype(np.float32)
    # the drawn part replaced noisy lung by a noise-free level: give it the series' own noise back
    fine += _lung_noise(part, series.lungs[box], rng) * drawn
    hu[box] = fine
    for nod in nodules:
        k = nod.center_kji[0]
        nod.center_kji = [(k + 0.5) / up - 0.5 + lo[0], nod.center_kji[1] + lo[1], nod.center_kji[2] + lo[2]]
        nod.center_mm = [float(v) for v in vol.voxel_to_patient(nod.center_kji)]
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), nodules


def _label(centres_mm: np.ndarray, targets: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Index of the target each centre hits (within max(radius, MIN_HIT_RADIUS_MM)), or -1."""
    radii = [max(r, MIN_HIT_RADIUS_MM) for _, r in targets]
    hits = (nearest_hit(c, [t for t, _ in targets], radii)[0] for c in centres_mm)
    return np.array([-1 if h is None else h for h in hits], dtype=int)


def real_candidate_set(series_dirs: Sequence[str | Path], *, copies: int = 2, nodules_per_copy: int = 10,
                       seed: int = 0, min_readers: int = 2, margin_mm: float = MARK_MARGIN_MM,
                       on_read: Callable[[str | None, str], Any] | None = None,
                       log_fn: Callable[[str], Any] | None = None) -> dict[str, np.ndarray]:
    """Patches and features of the detector's candidates on real series and on copies with
    synthetic nodules (see the module doc), in ``phantom_training.candidate_set``'s layout;
    ``groups`` is the series' patient. ``on_read(patient id, series UID)`` is called as each
    series is read, so that the caller can make the read of patient data attributable."""
    patches, feats, is_nodule, malignant, groups = [], [], [], [], []
    counts = {"negatives": 0, "lesion_hits": 0, "synthetic_hits": 0, "left_out": 0}
    for s_i, series_dir in enumerate(series_dirs):
        t0 = time.perf_counter()
        series = load_real_series(series_dir, min_readers=min_readers)
        vol = series.volume
        if on_read is not None:
            on_read(vol.patient_id, vol.series_uid)
        targets = [(les.centre_mm, les.diameter_mm / 2) for les in series.counted]
        for copy in range(copies + 1):
            synthetic: list[PhantomNodule] = []
            if copy == 0:
                work = vol
            else:
                hu, synthetic = insert_nodules(series, nodules_per_copy, seed * 1_000 + s_i * 100 + copy,
                                               margin_mm=margin_mm)
                work = CTVolume(hu=hu, affine=vol.affine, series_uid=f"{vol.series_uid}-synthetic-{copy}",
                                acquisition=vol.acquisition, sop_instance_uids=vol.sop_instance_uids)
            cands, measurements, _ = detect_candidates(work)
            if not cands:
                continue
            centres = vol.voxel_to_patient(np.array([c.center_kji for c in cands]))
            lesion_hit = _label(centres, targets)
            synth_hit = _label(centres, [(np.array(n.center_mm), n.diameter_mm / 2) for n in synthetic])
            near_mark = ~_away_from_marks_points(series, centres, margin_mm)
            rows, labels, malig = [], [], []
            for i in range(len(cands)):
                if synth_hit[i] >= 0:
                    rows.append(i)
                    labels.append(1.0)
                    malig.append(float(synthetic[synth_hit[i]].malignant))
                    counts["synthetic_hits"] += 1
                elif copy > 0:
                    continue  # the copies add nodules; their other candidates are copy 0's again
                elif lesion_hit[i] >= 0:
                    rows.append(i)
                    labels.append(1.0)
                    malig.append(float(series.malignant[lesion_hit[i]]))
                    counts["lesion_hits"] += 1
                elif near_mark[i]:
                    counts["left_out"] += 1
                else:
                    rows.append(i)
                    labels.append(0.0)
                    malig.append(0.0)
                    counts["negatives"] += 1
            if not rows:
                continue
            patches.append(extract_patches(work.hu, np.array([cands[i].center_kji for i in rows]), vol.spacing))
            feats.append(np.stack([candidate_features(cands[i], measurements[i]) for i in rows]))
            is_nodule.extend(labels)
            malignant.extend(malig)
            groups.extend([f"real:{series.patient}"] * len(rows))
        if log_fn:
            log_fn(f"real series {series_dir}: {time.perf_counter() - t0:.1f}s, so far {counts}")
    if not patches:
        from trillium.core.errors import InputValidationError

        raise InputValidationError(f"no detector candidate on the real series {', '.join(map(str, series_dirs))}: "
                                   f"is it a chest CT?")
    return {"patches": np.concatenate(patches), "features": np.concatenate(feats),
            "is_nodule": np.array(is_nodule, dtype=np.float32), "malignant": np.array(malignant, dtype=np.float32),
            "groups": np.array(groups), "counts": counts}


def _away_from_marks_points(series: RealSeries, centres_mm: np.ndarray, margin_mm: float) -> np.ndarray:
    """True for each centre beyond (radius + margin) of every mark."""
    ok = np.ones(len(centres_mm), dtype=bool)
    for centre, radius in series.marks:
        ok &= np.linalg.norm(centres_mm - centre, axis=1) > radius + margin_mm
    return ok
