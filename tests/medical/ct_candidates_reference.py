"""The chest-CT CPU path as it was before this release's speed-ups (the last release): the
candidate detector's SciPy filters on the whole grid and the lung mask with whole-slice closings.
``test_ct_candidates_speed.py`` compares the current code with these, bit for bit, and
``benchmarks/medical_imaging.py --paths before`` times them. Not used by the product."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from trillium.medical.imaging.candidates import LUNG_FILL_HU, _hessian_at, _Peak
from trillium.medical.imaging.lungs import (
    AIR_THRESHOLD_HU,
    JUXTA_MM,
    MIN_LUNG_ML,
    MIN_LUNG_SHARE,
    block_mean,
    downsample_factors,
    upsample_mask,
)


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


def segment_lungs(hu: np.ndarray, spacing: tuple[float, float, float], *, close_mm: float = 4.0,
                  juxta_mm: float | None = None) -> np.ndarray:
    """Boolean lung mask on the grid of ``hu`` (vessels and nodules inside the lungs included;
    with ``juxta_mm``, nodules against the pleura too: ``take_in_juxtapleural``)."""
    juxta_mm = JUXTA_MM if juxta_mm is None else juxta_mm
    factors = downsample_factors(spacing, 1.5)
    small = block_mean(hu, factors)
    sp = tuple(s * f for s, f in zip(spacing, factors, strict=True))
    air = small < AIR_THRESHOLD_HU
    inplane = np.zeros((3, 3, 3), dtype=bool)
    inplane[1] = ndimage.generate_binary_structure(2, 1)
    labels, _ = ndimage.label(air, structure=inplane)
    border = np.unique(np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    inside = air & ~np.isin(labels, border[border > 0])
    labels, n = ndimage.label(inside)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = ndimage.sum_labels(np.ones_like(labels, dtype=np.int32), labels, index=np.arange(1, n + 1))
    voxel_ml = float(np.prod(sp)) / 1000.0
    keep = np.flatnonzero((sizes >= MIN_LUNG_SHARE * sizes.max()) & (sizes * voxel_ml >= MIN_LUNG_ML)) + 1
    lungs = np.isin(labels, keep)
    if close_mm > 0:
        r = max(1, round(close_mm / min(sp[1], sp[2])))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disc = np.zeros((1, 2 * r + 1, 2 * r + 1), dtype=bool)
        disc[0] = yy ** 2 + xx ** 2 <= r * r
        lungs = ndimage.binary_closing(np.pad(lungs, ((0, 0), (r, r), (r, r))), structure=disc)[:, r:-r, r:-r]
    lungs = ndimage.binary_fill_holes(lungs, structure=inplane)
    if juxta_mm > 0:
        lungs = take_in_juxtapleural(lungs, small > AIR_THRESHOLD_HU, sp, juxta_mm)
    return upsample_mask(lungs, factors, hu.shape)


def take_in_juxtapleural(lungs: np.ndarray, dense: np.ndarray, sp: tuple[float, float, float],
                         radius_mm: float, step_mm: float = 0.0) -> np.ndarray:
    """Slice by slice and lung by lung, a rolling ball of ``radius_mm`` along the lung's outline
    takes in the dense bumps that press into it: a nodule against the chest wall or the
    mediastinum is not air, so the air mask leaves a bay where it sits, and the detector (which
    sees nothing outside the mask) would see half a nodule or none. Each lung is closed on its
    own, so the mediastinum between the two lungs is never bridged; only dense voxels are added.

    ``step_mm`` > 0 rolls the ball on a coarser grid of about that pitch: 3 mm took the added
    lungs time of a 512 x 512 x 300 study from about 2.5 s to 0.3 s on this 2-core CPU but found
    fewer pleural nodules (0.17 against 0.26 of 47, ``benchmarks/results/ct_juxtapleural*.json``),
    so the default keeps the mask's own grid."""
    f = max(1, int(step_mm // min(sp[1], sp[2])))
    r = max(1, round(radius_mm / (min(sp[1], sp[2]) * f)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = (yy ** 2 + xx ** 2 <= r * r)
    out = lungs.copy()
    ny, nx = lungs.shape[1:]
    for k in range(lungs.shape[0]):
        coarse = lungs[k] if f == 1 else lungs[k][: ny // f * f, : nx // f * f].reshape(ny // f, f, nx // f, f).any(
            axis=(1, 3))
        labels, n = ndimage.label(coarse)
        if n == 0:
            continue
        for obj, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            one = np.pad(labels[box] == obj, r)
            if one.sum() * (sp[1] * f) * (sp[2] * f) < np.pi * radius_mm ** 2:
                continue  # a sliver of lung (apex, base) has no bays to fill
            bay = ndimage.binary_closing(one, structure=disc) & ~one
            if not bay.any():
                continue
            y0, x0 = (box[0].start - r) * f, (box[1].start - r) * f
            full = bay if f == 1 else np.repeat(np.repeat(bay, f, axis=0), f, axis=1)
            ya, xa = max(0, y0), max(0, x0)
            yb, xb = min(ny, y0 + full.shape[0]), min(nx, x0 + full.shape[1])
            out[k, ya:yb, xa:xb] |= full[ya - y0:yb - y0, xa - x0:xb - x0] & dense[k, ya:yb, xa:xb]
    return out


def extract_patches(hu: np.ndarray, centers_kji: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """``classifier.extract_patches`` as it was: every cube from a float32 copy of the whole study."""
    from trillium.medical.imaging.classifier import PATCH_SIZE, PATCH_VOXEL_MM, normalise_hu

    centers = np.atleast_2d(np.asarray(centers_kji, dtype=float))
    offs = (np.arange(PATCH_SIZE) - (PATCH_SIZE - 1) / 2.0) * PATCH_VOXEL_MM
    out = np.empty((len(centers), 1, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE), dtype=np.float32)
    src = hu if hu.dtype == np.float32 else hu.astype(np.float32)
    for n, c in enumerate(centers):
        grid = np.meshgrid(*[c[a] + offs / spacing[a] for a in range(3)], indexing="ij")
        out[n, 0] = normalise_hu(ndimage.map_coordinates(src, grid, order=1, mode="constant", cval=-1000.0))
    return out
