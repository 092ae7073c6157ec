"""Nodule measurements in millimetres, and the Lung-RADS-style size category.

The boundary is taken at half the way from the local lung background to the nodule's own
level (the "half maximum" of a blurred edge), which is where a partial-volume edge truly sits,
so sizes do not depend on a fixed HU threshold that suits solid nodules and misses ground
glass. Vessels touching the nodule are cut off by a morphological opening scaled to the
nodule. The longest axial diameter is measured between voxel edges (centre distance plus one
pixel), as a reader's calliper is, and the volume counts partial voxels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

#: HU above which tissue counts as solid (the solid part of a part-solid nodule).
SOLID_HU = -300.0
#: Share of solid voxels at or above which a nodule is "solid", and below which it is "ground-glass".
SOLID_SHARE, GGO_SHARE = 0.8, 0.05


@dataclass
class Measurement:
    center_kji: list[float]
    diameter_mm: float  # longest axial diameter
    short_axis_mm: float  # longest diameter perpendicular to it, in the same slice
    mean_diameter_mm: float  # (long + short) / 2, what Lung-RADS grades
    volume_mm3: float
    mean_hu: float
    solid_share: float
    solid_diameter_mm: float
    type: str
    voxels: int
    elongation: float = 1.0  # smallest / largest principal extent of the region: 1 round, ~0 tube
    #: the segmented voxels: ``mask`` is the box starting at array index ``mask_origin``
    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), dtype=bool), repr=False)
    mask_origin: tuple[int, int, int] = (0, 0, 0)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("mask", "mask_origin")}

    def craniocaudal_mm(self, slice_spacing_mm: float) -> float:
        """Extent along the body axis (slices the segmentation spans, edge to edge)."""
        slices = np.flatnonzero(self.mask.any(axis=(1, 2))) if self.mask.size else np.zeros(0, int)
        return round(float((slices[-1] - slices[0] + 1) * slice_spacing_mm), 2) if len(slices) else 0.0

    def full_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """The segmentation on the whole CT grid."""
        out = np.zeros(shape, dtype=bool)
        k, j, i = self.mask_origin
        dk, dj, di = self.mask.shape
        out[k:k + dk, j:j + dj, i:i + di] = self.mask
        return out


#: A lesion whose longest diameter exceeds this is a mass, not a nodule (Fleischner glossary).
MASS_MM = 30.0


def lesion_kind(diameter_mm: float) -> str:
    """"mass" above ``MASS_MM`` (longest axial diameter), else "nodule"."""
    return "mass" if float(diameter_mm) > MASS_MM else "nodule"


def finding_category(nodule_type: str, diameter_mm: float, mean_diameter_mm: float,
                     solid_diameter_mm: float = 0.0) -> str:
    """The Lung-RADS-style category of a finding: a solid or part-solid mass is 4X (its size is a
    feature that raises the suspicion of cancer, as 4X asks), a nodule or a ground-glass mass
    takes :func:`lung_rads_category`'s size rule."""
    if lesion_kind(diameter_mm) == "mass" and nodule_type in ("solid", "part-solid"):
        return "4X"
    return lung_rads_category(nodule_type, mean_diameter_mm, solid_diameter_mm)


def lung_rads_category(nodule_type: str, mean_diameter_mm: float, solid_diameter_mm: float = 0.0) -> str:
    """Lung-RADS v2022 baseline-screening category from size and attenuation.

    Solid: <6 mm 2, 6-<8 3, 8-<15 4A, >=15 4B. Part-solid: total <6 2; solid part <6 3,
    6-<8 4A, >=8 4B. Ground glass: <30 mm 2, >=30 3. Sizes are mean diameters rounded to one
    decimal, as the lexicon asks. This is a size rule only; the radiologist's category also
    weighs growth and features this function does not see, hence "style".
    """
    d = round(float(mean_diameter_mm), 1)
    s = round(float(solid_diameter_mm), 1)
    if nodule_type == "ground-glass":
        return "2" if d < 30 else "3"
    if nodule_type == "part-solid":
        if d < 6:
            return "2"
        if s < 6:
            return "3"
        return "4A" if s < 8 else "4B"
    if d < 6:
        return "2"
    if d < 8:
        return "3"
    return "4A" if d < 15 else "4B"


def _axial_diameters(mask2d: np.ndarray, sy: float, sx: float, origin: tuple[int, int] = (0, 0)) -> tuple[float, float]:
    """Longest in-plane diameter and the longest extent perpendicular to it (edge to edge, mm).
    ``origin``: the index of ``mask2d``'s first pixel in the ROI the coordinates are taken in (the
    arithmetic on them, and so the last bits of the result, depends on where they start)."""
    pts = (np.argwhere(mask2d) + np.asarray(origin)).astype(float) * np.array([sy, sx])
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


#: directions of the widths that bound a slice's longest diameter (see ``_longest_axial``)
_BOUND_DIRECTIONS = 16


def _longest_axial(mask3d: np.ndarray, sy: float, sx: float, origin: tuple[int, int] = (0, 0), *,
                   short_axis: bool = True) -> tuple[float, float]:
    """``_axial_diameters`` of the slice whose longest diameter is largest (the first such slice
    along k when several tie), as a loop over every slice gives it, but evaluated on few slices.

    A slice's longest diameter D is at most its largest width over ``_BOUND_DIRECTIONS`` directions
    spread over 180 degrees divided by cos(half their spacing) (the direction nearest the diameter's
    is within that angle of it, and the width there is at least D times its cosine). Slices are taken
    in order of that bound, largest first, and the search stops once the bound falls below the best
    diameter found: the slices left cannot reach it. Without ``short_axis`` only the largest long
    axis is asked for (no tie rule needed).
    """
    ks = np.flatnonzero(mask3d.any(axis=(1, 2)))
    if not len(ks):
        return 0.0, 0.0
    m = mask3d[ks]
    rows = m.any(axis=2)  # [slice, row]: the extremes of each row span the slice's convex hull
    first = np.argmax(m, axis=2).astype(float) * sx
    last = (m.shape[2] - 1 - np.argmax(m[:, :, ::-1], axis=2)).astype(float) * sx
    y = (np.arange(m.shape[1], dtype=float) * sy)[None, :]
    angles = (np.arange(_BOUND_DIRECTIONS) * (np.pi / _BOUND_DIRECTIONS))[:, None, None]
    along = y * np.cos(angles)  # [direction, slice, row]
    p1, p2 = along + first * np.sin(angles), along + last * np.sin(angles)
    hi = np.where(rows, np.maximum(p1, p2), -np.inf).max(axis=2)
    lo = np.where(rows, np.minimum(p1, p2), np.inf).min(axis=2)
    width = (hi - lo).max(axis=0)
    pixel = (sy + sx) / 2
    # the margins cover rounding (about 1e-15 relative) many times over
    bound = width / np.cos(np.pi / (2 * _BOUND_DIRECTIONS)) * (1 + 1e-9) + pixel + 1e-9
    best, best_k = (0.0, 0.0), -1
    for n in np.argsort(-bound, kind="stable"):
        if bound[n] < best[0] or (not short_axis and bound[n] <= best[0]):
            break
        d = _axial_diameters(m[n], sy, sx, origin)
        if d[0] > best[0] or (d[0] == best[0] and ks[n] < best_k):
            best, best_k = d, ks[n]
    return best


def _bbox(mask: np.ndarray, grow: int = 0) -> tuple[slice, ...]:
    """The bounding box of a non-empty mask (what ``ndimage.find_objects`` gives), grown by
    ``grow`` voxels and clipped to the array."""
    out = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        out.append(slice(max(int(hit[0]) - grow, 0), min(int(hit[-1]) + 1 + grow, mask.shape[axis])))
    return tuple(out)


def _edt_at(features_absent: np.ndarray, flat: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """``ndimage.distance_transform_edt(features_absent, sampling=spacing).ravel()[flat]``, bit for
    bit, computed at the voxels ``flat`` (flat indices into ``features_absent``) only.

    SciPy's transform is the C feature transform (the nearest zero of the input per voxel)
    followed by NumPy arithmetic on the whole array: (feature - index) in int32, as float64, times
    the spacing, squared, summed over the axes in order, square root. The feature transform runs
    here as it is; the arithmetic, the same operations in the same order, only where the caller
    reads the distance (a mask's voxels, a fraction of its box).
    """
    ft = ndimage.distance_transform_edt(features_absent, sampling=spacing, return_distances=False,
                                        return_indices=True)
    nearest = ft.reshape(len(spacing), -1)[:, flat]
    index = np.unravel_index(flat, features_absent.shape)
    total = None
    for axis, s in enumerate(np.asarray(spacing, dtype=np.float64)):
        t = (nearest[axis] - index[axis].astype(np.int32)).astype(np.float64)
        t *= s
        t *= t
        total = t if total is None else total + t
    return np.sqrt(total)


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
        box = _bbox(mask)
        sub = mask[box]
        # Distances are needed at the mask's voxels only (elsewhere they are 0 or never read):
        # ``_edt_at`` gives SciPy's values there, bit for bit, without the whole-box arithmetic.
        padded = np.pad(sub, 1)
        fg = np.flatnonzero(padded)
        deep = np.zeros(padded.shape, dtype=bool)
        deep.reshape(-1)[fg] = _edt_at(padded, fg, spacing) > r_open
        centres = deep[1:-1, 1:-1, 1:-1]
        if centres.any():
            # Within a ball's reach of a centre: the second transform needs only the centres' box
            # grown by more than the ball's reach on each axis (farther voxels are farther than
            # r_open along that axis alone), and SciPy's feature transform gives the same nearest
            # centre on that crop (its arithmetic is on coordinate differences, and the rows it
            # drops hold no centre). Centres themselves are at distance 0.
            reach = [int(r_open / s) + 2 for s in spacing]
            crop = tuple(slice(max(b.start - g, 0), min(b.stop + g, n))
                         for b, g, n in zip(_bbox(centres), reach, sub.shape, strict=True))
            opened = centres.copy()
            ask = np.flatnonzero(sub[crop] & ~centres[crop])
            if len(ask):
                reached = centres[crop].copy()
                reached.reshape(-1)[ask[_edt_at(~centres[crop], ask, spacing) <= r_open]] = True
                opened[crop] = reached
            # one voxel back into the thresholded tissue restores the outline the ball rounded
            # off, without regrowing the vessel stubs the opening cut (the result lies in the
            # box, and the dilation with a zero border on the box is the dilation there)
            out = np.zeros_like(mask)
            out[box] = ndimage.binary_dilation(opened & sub) & sub
            mask = out
    return mask if mask.any() else None


#: Confine a nodule's outline to the lung mask, whose rolling ball (``lungs.take_in_juxtapleural``)
#: takes in the bays where nodules press against the chest wall or the mediastinum. Without it, the
#: half-way threshold between lung and nodule also passes the wall's soft tissue, so a nodule
#: against the pleura grew into the wall: measured from their true centres, such phantom nodules
#: came out at a median 8 times their diameter, 22 mm off centre; confined, within 6 % and 1 mm,
#: with interior nodules unchanged (``benchmarks/ct_lung_bound.py``, docs/medical-imaging.md).
MEASURE_IN_LUNGS = True


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
    if MEASURE_IN_LUNGS and lungs is not None:
        within &= lungs[box]  # the outline stays in the lungs (and the bays the rolling ball took in)
    mask = _nodule_mask(roi > (background + level) / 2, within, radius_mm, spacing)

    def eq(m: np.ndarray) -> float:  # equivalent-sphere diameter of a mask (mm)
        return float((6 * m.sum() * sz * sy * sx / np.pi) ** (1 / 3))

    if level > background + 400 and mask is not None and mask[tuple(cc)]:
        # A solid core may sit in a ground-glass halo (part-solid): its outer edge is the halo's,
        # so look at the faint tissue around the core and take the halo's own half-way level.
        faint_tissue = (roi > background + 100) & within
        wider = eq(mask) + max(1.2, 0.2 * eq(mask))
        # The opening only removes voxels: when the faint tissue before it is not wider than that
        # (a margin of 1e-9 over rounding), the halo test below fails whatever the opening leaves,
        # and the faint mask's two distance transforms are skipped.
        faint = (_nodule_mask(faint_tissue, within, radius_mm, spacing)
                 if eq(faint_tissue) * (1 + 1e-9) > wider else None)
        if faint is not None and faint[tuple(cc)] and eq(faint) > wider:
            near_mask = np.zeros_like(mask)
            dbox = _bbox(mask, grow=2)
            near_mask[dbox] = ndimage.binary_dilation(mask[dbox], iterations=2)
            ring = faint & ~near_mask
            if ring.sum() > 10:
                halo = float(np.median(roi[ring]))
                mask = _nodule_mask(roi > (background + halo) / 2, within, radius_mm, spacing)
    if mask is None:
        return None
    # the components, the region and its dilation on boxes (the same sets as on the whole ROI)
    mbox = _bbox(mask)
    labels, _ = ndimage.label(mask[mbox])
    inner = tuple(c - b.start for c, b in zip(cc, mbox, strict=True))
    lab = labels[inner] if all(0 <= v < b.stop - b.start for v, b in zip(inner, mbox, strict=True)) else 0
    if lab == 0:
        near = np.argwhere(mask & (dist <= max(radius_mm, 2 * max(spacing))))
        if not len(near):
            return None
        first = near[np.argmin(dist[tuple(near.T)])]
        lab = labels[tuple(first - [b.start for b in mbox])]
    region = np.zeros_like(mask)
    region[mbox] = labels == lab
    if region.sum() < 3:
        return None
    weight = np.clip((roi - background) / max(level - background, 1.0), 0.0, 1.0)
    # partial-volume volume: weighted voxels in the region grown by one voxel
    rbox = _bbox(region)
    gbox = _bbox(region, grow=1)
    grown = np.zeros_like(region)
    grown[gbox] = ndimage.binary_dilation(region[gbox])
    vox = sz * sy * sx
    volume = float((weight * grown).sum() * vox)
    w = weight * region
    total = float(w.sum())
    centroid = [float((w * g).sum() / total) + lo[a] for a, g in enumerate(np.broadcast_arrays(zz, yy, xx))]
    # longest axial diameter over the slices
    plane = (rbox[1].start, rbox[2].start)  # the slices' pixels keep their ROI coordinates
    best = _longest_axial(region[rbox], sy, sx, plane)
    solid = region[rbox] & (roi[rbox] > SOLID_HU)
    solid_share = float(solid.sum() / region.sum())
    solid_d = _longest_axial(solid, sy, sx, plane, short_axis=False)[0]
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
                       spacing: tuple[float, float, float], lungs: np.ndarray | None = None, *,
                       cache: dict[tuple[Any, ...], Measurement | None] | None = None) -> Measurement | None:
    """Measure at a few radii up to the candidate's and keep the self-consistent one.

    A blob scale that is too large for the nodule (it merged with nearby vessels) lets vessels
    into the measurement; the radius whose measurement comes back at about that same size is the
    one that describes the nodule alone.

    ``cache``: a dict kept for one volume (the same ``hu``, ``spacing`` and ``lungs``), where a
    call asked again returns the measurement it gave before (the same object, not a copy). The
    result depends on the centre only through its nearest voxel, so that voxel and the radius are
    the key: two candidates on one nodule often re-centre through the same calls.
    """
    key = (tuple(int(v) for v in np.round(center_kji)), float(radius_mm))
    if cache is not None and key in cache:
        return cache[key]
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
    if cache is not None:
        cache[key] = best
    return best
