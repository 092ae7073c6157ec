"""How the chest-CT analysis behaves with slice thickness and reconstruction kernel, on phantoms.

Real scanners reconstruct the same acquisition at 0.6 to 8 mm: a thick slice is the average of
the thin ones it covers, so a small nodule is diluted into the lung around it (partial volume)
and its edges blur along z, while the noise drops with the square root of the slices averaged.
Sharper kernels (B70f, "lung") give stronger, less correlated noise. A detector trained at 1.5 mm
can fail quietly on either: the lungs may split, candidates vanish or multiply, diameters grow.

``thick_phantom`` makes that case the way a scanner does: a phantom at a fine slice spacing
(``base_mm``), averaged over blocks of slices into the requested thickness (slice spacing equal
to the thickness, as in most thick reconstructions), with the truth nodules kept in patient
millimetres. ``evaluate_thickness`` analyses such studies with a trained analyzer and reports,
per (thickness, kernel): sensitivity at the analyzer's threshold for nodules of at least
``min_diameter_mm``, false findings per scan, centre and diameter errors, and the lung volume
against the thin reconstruction of the same phantom. ``benchmarks/ct_slice_thickness.py`` runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trillium.core.metrics import nearest_hit
from trillium.medical.imaging.dicom_io import CTVolume
from trillium.medical.imaging.phantom import PHANTOM_KERNEL, PhantomNodule, make_phantom
from trillium.medical.imaging.phantom_training import MIN_HIT_RADIUS_MM

#: kernel name -> the phantom's noise options (``make_phantom``): the soft kernel the phantoms are
#: made with, and a sharp one (stronger, less correlated noise), as in the monitoring evaluation
KERNELS: dict[str, dict[str, float]] = {
    PHANTOM_KERNEL: {},
    "B70f": {"noise_sigma": 0.35, "noise_hu": 35.0},
}


def thick_phantom(n_nodules: int, seed: int, *, thickness_mm: float, base_mm: float = 1.25,
                  extent_mm: float = 210.0, size: int = 256, pixel_mm: float = 1.4,
                  kernel: str = PHANTOM_KERNEL) -> tuple[CTVolume, list[PhantomNodule], list[np.ndarray]]:
    """A phantom reconstructed at ``thickness_mm``: made at ``base_mm`` slices over ``extent_mm``
    and averaged over blocks of ``round(thickness / base)`` slices. Returns the volume, the truth
    nodules and each nodule's centre in patient mm (LPS, the volume's frame)."""
    factor = max(1, round(thickness_mm / base_mm))
    nz = round(extent_mm / base_mm) // factor * factor
    hu, nodules = make_phantom(n_nodules, seed, shape=(nz, size, size), spacing=(base_mm, pixel_mm, pixel_mm),
                               **KERNELS[kernel])
    thick = hu.astype(np.float32).reshape(nz // factor, factor, size, size).mean(axis=1)
    slice_mm = base_mm * factor
    # slice k' averages base slices k'f .. k'f + f - 1: its centre lies at (k'f + (f - 1) / 2) * base
    affine = np.diag([pixel_mm, pixel_mm, slice_mm, 1.0])
    affine[2, 3] = (factor - 1) / 2 * base_mm
    volume = CTVolume(hu=np.rint(thick).astype(np.int16), affine=affine, series_uid=f"thick-{seed}-{slice_mm:g}",
                      acquisition={"kernel": kernel, "slice_thickness": slice_mm, "manufacturer": ""})
    centres = [np.array([n.center_kji[2] * pixel_mm, n.center_kji[1] * pixel_mm, n.center_kji[0] * base_mm])
               for n in nodules]
    return volume, nodules, centres


def evaluate_thickness(analyzer: Any, *, thicknesses: Sequence[float] = (1.25, 2.5, 5.0, 7.5),
                       kernels: Sequence[str] = tuple(KERNELS), studies: int = 4, nodules: int = 6,
                       seed: int = 970_000, min_diameter_mm: float = 5.0,
                       log_fn: Callable[[str], Any] | None = None, **phantom: Any) -> dict[str, Any]:
    """Detection and measurement per (thickness, kernel) on the same ``studies`` phantoms (seeds
    ``seed`` ..), each reconstructed at every thickness with every kernel's noise."""
    rows: list[dict[str, Any]] = []
    thin_lungs: dict[tuple[int, str], float] = {}
    for kernel in kernels:
        for thickness in thicknesses:
            tp = fp = n_truth = 0
            centre_err: list[float] = []
            diam_err: list[float] = []
            lung_ratio: list[float] = []
            seconds: list[float] = []
            missed: list[float] = []
            for s in range(studies):
                vol, truth, centres = thick_phantom(nodules, seed + s, thickness_mm=thickness, kernel=kernel, **phantom)
                t0 = time.perf_counter()
                result = analyzer.analyze_volume(vol)
                seconds.append(time.perf_counter() - t0)
                if thickness == thicknesses[0]:
                    thin_lungs[(s, kernel)] = result.lung_volume_ml
                base_lung = thin_lungs.get((s, kernel))
                if base_lung:
                    lung_ratio.append(result.lung_volume_ml / base_lung)
                radii = [max(n.diameter_mm / 2, MIN_HIT_RADIUS_MM) for n in truth]
                counted = {i for i, n in enumerate(truth) if n.diameter_mm >= min_diameter_mm}
                n_truth += len(counted)
                hit: set[int] = set()
                for f in result.findings:
                    best, dist = nearest_hit(f["center_mm"], centres, radii)
                    if best is None:
                        fp += 1
                        continue
                    if best not in counted or best in hit:
                        continue  # a small nodule found, or a second finding on one: neither counts
                    hit.add(best)
                    tp += 1
                    centre_err.append(dist)
                    diam_err.append((f["diameter_mm"] - truth[best].diameter_mm) / truth[best].diameter_mm)
                missed.extend(round(truth[i].diameter_mm, 1) for i in sorted(counted - hit))
            row = {"thickness_mm": thickness, "kernel": kernel, "studies": studies, "nodules_counted": n_truth,
                   "sensitivity": round(tp / n_truth, 4) if n_truth else None,
                   "false_findings_per_scan": round(fp / studies, 3),
                   "centre_error_mm_median": _median(centre_err),
                   "diameter_error_median": _median(diam_err),
                   "diameter_within_20pct": round(float(np.mean(np.abs(diam_err) <= 0.2)), 4) if diam_err else None,
                   "lung_volume_vs_thin": _median(lung_ratio),
                   "missed_diameters_mm": sorted(missed),
                   "seconds_per_study": _median(seconds)}
            rows.append(row)
            if log_fn:
                log_fn(f"{kernel} {thickness:g} mm: {row}")
    return {"min_diameter_mm": min_diameter_mm, "seeds": [seed, seed + studies - 1],
            "threshold": getattr(analyzer, "threshold", None), "rows": rows}


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if values else None


__all__ = ["KERNELS", "evaluate_thickness", "thick_phantom"]
