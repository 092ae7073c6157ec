"""Lung segmentation by air threshold, outside-air removal and hole filling.

Why this classic recipe rather than a network: it needs no training data (none is staged here),
runs in about a second on a full chest CT, and its failure modes are plain to see. Air below
-400 HU is split into outside air (touching the in-plane image border, slice by slice), and
air inside the body; the large inside components are the lungs. Vessels and nodules are holes
in that air mask, so the holes are filled slice by slice and a small closing takes in nodules
that touch the pleura.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

AIR_THRESHOLD_HU = -400
#: Inside-body air components smaller than this share of the largest are not lung (trachea, bowel gas).
MIN_LUNG_SHARE = 0.08
#: Below this (mL) nothing is called lung: the series does not cover the chest.
MIN_LUNG_ML = 50.0


def downsample_factors(spacing: tuple[float, float, float], target_mm: float = 1.2) -> tuple[int, int, int]:
    """Integer block sizes that bring each axis nearest ``target_mm``: the analysis does not need
    sub-millimetre voxels, and the work drops with them (0.7 mm pixels become 1.4 mm blocks)."""
    return tuple(max(1, int(np.rint(target_mm / s))) for s in spacing)  # type: ignore[return-value]


def block_mean(vol: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Mean over ``factors``-sized blocks (the volume is cropped to whole blocks)."""
    if factors == (1, 1, 1):
        return vol.astype(np.float32, copy=False)
    fz, fy, fx = factors
    nz, ny, nx = (s // f * f for s, f in zip(vol.shape, factors, strict=True))
    v = vol[:nz, :ny, :nx].astype(np.float32)
    return v.reshape(nz // fz, fz, ny // fy, fy, nx // fx, fx).mean(axis=(1, 3, 5))


def segment_lungs(hu: np.ndarray, spacing: tuple[float, float, float], *, close_mm: float = 4.0) -> np.ndarray:
    """Boolean lung mask on the grid of ``hu`` (vessels and nodules inside the lungs included)."""
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
    return upsample_mask(lungs, factors, hu.shape)


def upsample_mask(mask: np.ndarray, factors: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour back to the full grid; the cropped edge copies its neighbour."""
    if factors == (1, 1, 1):
        return mask
    up = mask
    for axis, f in enumerate(factors):
        if f > 1:
            up = np.repeat(up, f, axis=axis)
    pad = [(0, max(0, s - u)) for s, u in zip(shape, up.shape, strict=True)]
    if any(p[1] for p in pad):
        up = np.pad(up, pad, mode="edge")
    return up[: shape[0], : shape[1], : shape[2]]
