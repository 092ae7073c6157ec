"""The chest-CT measurement as it was before the findings stage was made faster (commit 05882ee,
``measure.py`` and ``analyzer.recentre_measurement`` copied verbatim): the reference that
``test_ct_measure_equality.py`` and ``benchmarks/medical_imaging_findings.py`` hold the optimised code
to. Do not edit it to follow the code under test; it is what the code under test must equal."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from trillium.medical.imaging.measure import GGO_SHARE, SOLID_HU, SOLID_SHARE, Measurement


def _axial_diameters(mask2d: np.ndarray, sy: float, sx: float) -> tuple[float, float]:
    """Longest in-plane diameter and the longest extent perpendicular to it (edge to edge, mm)."""
    pts = np.argwhere(mask2d).astype(float) * np.array([sy, sx])
    if len(pts) == 0:
        return 0.0, 0.0
    if len(pts) >= 4:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:
            pass
    diff = pts[:, None, :] - pts[None, :, :]
    dist = np.sqrt((diff ** 2).sum(-1))
    a, b = np.unravel_index(np.argmax(dist), dist.shape)
    pixel = (sy + sx) / 2
    long_axis = float(dist[a, b]) + pixel
    direction = pts[b] - pts[a]
    norm = np.linalg.norm(direction)
    if norm == 0:
        return pixel, pixel
    perp = np.array([-direction[1], direction[0]]) / norm
    proj = pts @ perp
    return long_axis, float(proj.max() - proj.min()) + pixel


def _nodule_mask(mask: np.ndarray, within: np.ndarray, radius_mm: float,
                 spacing: tuple[float, float, float]) -> np.ndarray | None:
    """Thresholded tissue near the candidate, with attached vessels cut off: an opening by a
    ball of half the nodule radius removes tubes thinner than that."""
    mask = mask & within
    r_open = 0.5 * radius_mm
    if r_open >= 0.8 * min(spacing) and mask.any():
        # Opening by a ball through two distance transforms (the centres where the ball fits,
        # then everything within a ball's reach of them): linear in the voxels, where a
        # structuring-element opening grows with the ball's volume (30 mm nodules on 0.7 mm
        # pixels made that the slowest step of a study).
        # Both transforms run on the mask's bounding box only (about half the ROI's voxels, and
        # they were three quarters of the findings step): the nearest background of a voxel in
        # the mask is in the box grown by one, every centre lies in the mask, and the dilation
        # below is cut to the mask, so the result is the same as on the whole ROI.
        box = ndimage.find_objects(mask.astype(np.uint8))[0]
        sub = mask[box]
        inside = ndimage.distance_transform_edt(np.pad(sub, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
        centres = inside > r_open
        if centres.any():
            opened = ndimage.distance_transform_edt(~centres, sampling=spacing) <= r_open
            # one voxel back into the thresholded tissue restores the outline the ball rounded
            # off, without regrowing the vessel stubs the opening cut
            kept = np.zeros_like(mask)
            kept[box] = opened & sub
            mask = ndimage.binary_dilation(kept) & mask
    return mask if mask.any() else None


def measure_nodule(hu: np.ndarray, center_kji: np.ndarray, radius_mm: float,
                   spacing: tuple[float, float, float], lungs: np.ndarray | None = None) -> Measurement | None:
    """Measure the nodule around ``center_kji``; None when no nodule-like region is there."""
    sz, sy, sx = spacing
    reach = max(2.2 * radius_mm, 10.0)
    c = np.round(center_kji).astype(int)
    lo = [max(0, int(c[a] - reach / spacing[a]) - 1) for a in range(3)]
    hi = [min(hu.shape[a], int(c[a] + reach / spacing[a]) + 2) for a in range(3)]
    box = tuple(slice(lo[a], hi[a]) for a in range(3))
    roi = ndimage.gaussian_filter(hu[box].astype(np.float32), sigma=[0.5 * min(spacing) / s for s in spacing])
    cc = c - np.array(lo)
    if np.any(cc < 0) or np.any(cc >= roi.shape):
        return None
    zz, yy, xx = np.ogrid[: roi.shape[0], : roi.shape[1], : roi.shape[2]]
    dist = np.sqrt(((zz - cc[0]) * sz) ** 2 + ((yy - cc[1]) * sy) ** 2 + ((xx - cc[2]) * sx) ** 2)
    core = dist <= max(0.5 * radius_mm, 1.2 * max(spacing))
    shell = (dist >= 1.6 * radius_mm + 2) & (dist <= 2.2 * radius_mm + 4)
    if lungs is not None:
        shell &= lungs[box]
    background = float(np.median(roi[shell])) if shell.sum() > 20 else -850.0
    background = min(background, -700.0)  # a shell full of vessels must not lift the lung level
    level = float(np.percentile(roi[core], 75))
    if level - background < 120:
        return None
    within = dist <= 1.6 * radius_mm + 3.0
    from trillium.medical.imaging import measure as current  # not verbatim: the confinement of the
    if current.MEASURE_IN_LUNGS and lungs is not None:  # outline to the lungs, as measure.py does it
        within &= lungs[box]
    mask = _nodule_mask(roi > (background + level) / 2, within, radius_mm, spacing)
    if level > background + 400 and mask is not None and mask[tuple(cc)]:
        # A solid core may sit in a ground-glass halo (part-solid): its outer edge is the halo's,
        # so look at the faint tissue around the core and take the halo's own half-way level.
        faint = _nodule_mask(roi > background + 100, within, radius_mm, spacing)
        if faint is not None and faint[tuple(cc)]:
            def eq(m: np.ndarray) -> float:
                return float((6 * m.sum() * sz * sy * sx / np.pi) ** (1 / 3))
            if eq(faint) > eq(mask) + max(1.2, 0.2 * eq(mask)):
                ring = faint & ~ndimage.binary_dilation(mask, iterations=2)
                if ring.sum() > 10:
                    halo = float(np.median(roi[ring]))
                    mask = _nodule_mask(roi > (background + halo) / 2, within, radius_mm, spacing)
    if mask is None:
        return None
    labels, _ = ndimage.label(mask)
    lab = labels[tuple(cc)]
    if lab == 0:
        near = np.argwhere(mask & (dist <= max(radius_mm, 2 * max(spacing))))
        if not len(near):
            return None
        lab = labels[tuple(near[np.argmin([dist[tuple(p)] for p in near])])]
    region = labels == lab
    if region.sum() < 3:
        return None
    weight = np.clip((roi - background) / max(level - background, 1.0), 0.0, 1.0)
    # partial-volume volume: weighted voxels in the region grown by one voxel
    grown = ndimage.binary_dilation(region)
    vox = sz * sy * sx
    volume = float((weight * grown).sum() * vox)
    w = weight * region
    total = float(w.sum())
    centroid = [float((w * g).sum() / total) + lo[a] for a, g in enumerate(np.broadcast_arrays(zz, yy, xx))]
    # longest axial diameter over the slices
    best = (0.0, 0.0)
    for k in np.flatnonzero(region.any(axis=(1, 2))):
        d = _axial_diameters(region[k], sy, sx)
        if d[0] > best[0]:
            best = d
    solid = region & (roi > SOLID_HU)
    solid_share = float(solid.sum() / region.sum())
    solid_d = 0.0
    for k in np.flatnonzero(solid.any(axis=(1, 2))):
        solid_d = max(solid_d, _axial_diameters(solid[k], sy, sx)[0])
    if solid_share >= SOLID_SHARE:
        kind = "solid"
    elif solid_share < GGO_SHARE or solid_d < 2.0:
        kind, solid_d = "ground-glass", 0.0
    else:
        kind = "part-solid"
    long_axis, short_axis = best
    coords = np.argwhere(region) * np.array(spacing)
    if len(coords) >= 4:
        ev = np.linalg.eigvalsh(np.cov(coords.T))
        elongation = float(np.sqrt(max(ev[0], 0.0) / max(ev[-1], 1e-9)))
    else:
        elongation = 1.0
    return Measurement(
        center_kji=centroid, diameter_mm=round(long_axis, 2), short_axis_mm=round(short_axis, 2),
        mean_diameter_mm=round((long_axis + short_axis) / 2, 2), volume_mm3=round(volume, 1),
        mean_hu=round(float(roi[region].mean()), 1), solid_share=round(solid_share, 3),
        solid_diameter_mm=round(solid_d if kind != "solid" else long_axis, 2), type=kind, voxels=int(region.sum()), elongation=round(elongation, 4),
        mask=region, mask_origin=(lo[0], lo[1], lo[2]),
    )


def measure_consistent(hu: np.ndarray, center_kji: np.ndarray, radius_mm: float,
                       spacing: tuple[float, float, float], lungs: np.ndarray | None = None) -> Measurement | None:
    """Measure at a few radii up to the candidate's and keep the self-consistent one.

    A blob scale that is too large for the nodule (it merged with nearby vessels) lets vessels
    into the measurement; the radius whose measurement comes back at about that same size is the
    one that describes the nodule alone.
    """
    best, best_err = None, np.inf
    for factor in (1.0, 0.7, 0.5, 0.35):
        r = radius_mm * factor
        if r < 1.8 and best is not None:
            break
        m = measure_nodule(hu, center_kji, max(r, 1.8), spacing, lungs)
        if m is None:
            continue
        err = abs(np.log(max(m.diameter_mm, 0.1) / (2 * max(r, 1.8))))
        if err < best_err:
            best, best_err = m, err
    return best


#: smallest / largest principal extent above which a grown outline counts as one round nodule
ROUND_ENOUGH = 0.6


def recentre_measurement(hu: np.ndarray, m: Measurement | None, spacing: tuple[float, float, float],
                         lungs: np.ndarray, rounds: int = 3) -> Measurement | None:
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
        again = measure_consistent(hu, np.array(m.center_kji), max(m.diameter_mm / 2, 2.0), spacing, lungs)
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
