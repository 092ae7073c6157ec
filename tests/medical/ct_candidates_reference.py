"""The candidate detector's SciPy filters as they were before they were cropped to the lungs'
box (release of stop 31): the reference ``test_ct_candidates_speed.py`` compares the current code
with, bit for bit. Not used by the product."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from trillium.medical.imaging.candidates import LUNG_FILL_HU, _hessian_at, _Peak
from trillium.medical.imaging.lungs import block_mean


def laplacian(g: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    out = np.zeros_like(g)
    for axis, s in enumerate(spacing):
        d2 = np.zeros_like(g)
        sl_mid = [slice(None)] * 3
        sl_lo = [slice(None)] * 3
        sl_hi = [slice(None)] * 3
        sl_mid[axis], sl_lo[axis], sl_hi[axis] = slice(1, -1), slice(0, -2), slice(2, None)
        d2[tuple(sl_mid)] = (g[tuple(sl_lo)] + g[tuple(sl_hi)] - 2 * g[tuple(sl_mid)]) / (s * s)
        out += d2
    return out


def peaks_scipy(hu: np.ndarray, lungs: np.ndarray, factors: tuple[int, int, int], sp: tuple[float, float, float],
                scales_mm: tuple[float, ...], min_response: float, min_blobness: float,
                device: str | None = None) -> list[_Peak]:
    small = block_mean(np.clip(hu, -1000, 300), factors)
    mask_small = block_mean(lungs.astype(np.float32), factors) > 0.5
    work = np.where(mask_small, small, LUNG_FILL_HU).astype(np.float32)
    inner = ndimage.binary_erosion(mask_small, iterations=1)
    found: list[_Peak] = []
    for sigma in scales_mm:
        g = ndimage.gaussian_filter(work, sigma=[sigma / s for s in sp], mode="nearest", truncate=3.0)
        resp = -sigma * sigma * laplacian(g, sp)
        size = [max(3, round(1.2 * sigma / s) * 2 + 1) for s in sp]
        peaks = (resp == ndimage.maximum_filter(resp, size=size, mode="nearest")) & (resp > min_response) & inner
        for p in np.argwhere(peaks):
            if np.any(p < 1) or np.any(p >= np.array(g.shape) - 1):
                continue
            ev = np.sort(np.linalg.eigvalsh(_hessian_at(g, p, sp)))
            if ev[0] >= 0:
                continue
            blob = float(max(0.0, -ev[2]) / -ev[0])
            if blob < min_blobness:
                continue
            found.append((p, sigma, float(resp[tuple(p)]), blob, float(small[tuple(p)])))
    return found
