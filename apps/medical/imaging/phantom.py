"""Synthetic chest CT with known nodules: the ground truth no real series here can give.

No chest-CT series is staged on this project's machines, so detection, measurement and the
whole DICOM path are checked on phantoms whose every nodule is known to the voxel. The phantom
has what a detector must cope with on a real scan: a body with a fat layer, two lungs that
narrow towards apex and base, a trachea (air inside the body that is not lung), a spine and
ribs, branching vessels that grow thinner towards the periphery (the classic false positives),
and nodules of 4-30 mm that are solid, part-solid or ground glass, some lobulated. Edges carry
partial-volume blur and the image carries correlated noise, so sizes are not read off exactly.

Malignancy follows the appearance on purpose (lobulated outline, larger size, a solid part in
a ground-glass nodule), so a network that learns it has learned something about the image,
not about the random generator.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from trillium.medical.imaging.dicom_write import SeriesInfo, write_ct_series
from trillium.medical.imaging.measure import _axial_diameters

AIR, LUNG, FAT, SOFT, BONE = -1000.0, -860.0, -100.0, 40.0, 650.0
SOLID_HU, GGO_HU = 30.0, -560.0
NODULE_TYPES = ("solid", "part-solid", "ground-glass")
#: the reconstruction kernel phantoms are written with (ConvolutionKernel): a soft-tissue kernel,
#: whose noise is correlated over neighbouring voxels (``noise_sigma``); monitoring's reference
#: profile sees this tag, so a series of another kernel reads as an unseen category
PHANTOM_KERNEL = "B30f"
NOISE_SIGMA = 0.7


@dataclass
class PhantomNodule:
    id: int
    center_kji: list[float]  # array indices (slice, row, column), occupancy-weighted centroid
    diameter_mm: float  # longest axial diameter of the noise-free nodule (voxel edge to edge)
    type: str
    malignant: bool
    solid_diameter_mm: float  # diameter of the solid part (0 for ground glass)
    lobulated: bool
    volume_mm3: float
    center_mm: list[float] | None = None  # LPS, filled in once the series geometry is known


def _occupancy(dist_inside: np.ndarray, edge_mm: float = 0.5) -> np.ndarray:
    """Fraction of a voxel inside an object, from the signed distance to its surface (mm, + inside)."""
    return np.clip(dist_inside / (2 * edge_mm) + 0.5, 0.0, 1.0)


def _lung_profile(t: np.ndarray) -> np.ndarray:
    """Lung cross-section scale along the body axis (0 = base, 1 = apex): domes at both ends."""
    inside = (t > 0) & (t < 1)
    out = np.zeros_like(t)
    out[inside] = np.sqrt(1 - (2 * t[inside] - 1) ** 6) * (0.55 + 0.45 * (1 - t[inside]))
    return out


class _Grid:
    """Millimetre coordinates of the voxel centres; boxes keep per-object work local."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
        self.shape, self.spacing = shape, spacing

    def box(self, center_mm: np.ndarray, radius_mm: float) -> tuple[tuple[slice, ...], list[np.ndarray]]:
        sl, axes = [], []
        for c, r, s, n in zip(center_mm, (radius_mm,) * 3, self.spacing, self.shape, strict=True):
            lo = min(n, max(0, int(np.floor((c - r) / s)) - 1))
            hi = max(lo, min(n, int(np.ceil((c + r) / s)) + 2))
            sl.append(slice(lo, hi))
            axes.append((np.arange(lo, hi) * s).astype(np.float32))
        return tuple(sl), [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]


def make_phantom(
    n_nodules: int = 5,
    seed: int = 0,
    *,
    shape: tuple[int, int, int] = (140, 256, 256),
    spacing: tuple[float, float, float] = (1.5, 1.4, 1.4),
    noise_hu: float = 20.0,
    diameter_range: tuple[float, float] = (4.0, 30.0),
    vessels: bool = True,
    noise_sigma: float = NOISE_SIGMA,
    pleural_share: float = 0.0,
) -> tuple[np.ndarray, list[PhantomNodule]]:
    """A chest CT volume ``[k, j, i]`` in HU (int16) and its nodules.

    ``noise_hu`` and ``noise_sigma`` (voxels; the Gaussian that correlates the noise) stand for
    the dose and the reconstruction kernel: a sharper kernel has stronger, less correlated noise."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    sz, sy, sx = spacing
    fov_y, fov_x, fov_z = ny * sy, nx * sx, nz * sz
    grid = _Grid(shape, spacing)
    vol = np.full(shape, AIR, dtype=np.float32)
    lungs = np.zeros(shape, dtype=bool)

    y = (np.arange(ny) * sy)[:, None]
    x = (np.arange(nx) * sx)[None, :]
    cy, cx = fov_y * 0.5, fov_x * 0.5
    body_a, body_b = fov_x * 0.44, fov_y * 0.33
    lung_dx = fov_x * (0.2 + rng.uniform(-0.01, 0.01))
    lung_a, lung_b = fov_x * 0.16, fov_y * 0.235
    base, top = 0.04 * fov_z, 1.06 * fov_z  # the apex lies just above the scanned range
    spine_y = cy + body_b * 0.72
    for k in range(nz):
        z = k * sz
        r_body = np.sqrt(((x - cx) / body_a) ** 2 + ((y - cy) / body_b) ** 2)
        sl = vol[k]
        sl[r_body < 1.0] = FAT
        sl[r_body < 1.0 - 14.0 / body_b] = SOFT
        # ribs: a band of bone near the body wall every 28 mm along z
        if (z % 28.0) < 9.0:
            band = (r_body < 1.0 - 16.0 / body_b) & (r_body > 1.0 - 24.0 / body_b) & (y < spine_y)
            sl[band] = BONE * 0.8
        spine = (x - cx) ** 2 + (y - spine_y) ** 2
        sl[spine < 16.0 ** 2] = BONE
        sl[spine < 11.0 ** 2] = 250.0  # cancellous bone
        t = np.array([(z - base) / (top - base)])
        s = float(_lung_profile(t)[0])
        if s > 0.05:
            for side in (-1, 1):
                lcx = cx + side * lung_dx
                lcy = cy - 0.04 * fov_y
                r = ((x - lcx) / (lung_a * s)) ** 2 + ((y - lcy) / (lung_b * s)) ** 2
                # the mediastinal border is flatter than the lateral wall
                medial = (x - lcx) * side < 0
                r = np.where(medial, r * 1.25, r)
                inside = r < 1.0
                sl[inside] = LUNG
                lungs[k][inside] = True
        if z > 0.68 * fov_z:  # trachea
            sl[(x - cx) ** 2 + (y - (cy - 0.12 * fov_y)) ** 2 < 8.0 ** 2] = AIR + 20

    if vessels:
        _draw_vessels(vol, lungs, grid, rng, centre=(cx, cy), lung_dx=lung_dx, fov_z=fov_z)

    nodules = _draw_nodules(vol, lungs, grid, rng, n_nodules, diameter_range, pleural_share)

    noise = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=noise_sigma) if noise_sigma > 0 else noise
    noise *= noise_hu / max(float(noise.std()), 1e-6)
    vol += noise
    return np.clip(np.rint(vol), -1024, 3071).astype(np.int16), nodules


def _capsule(vol: np.ndarray, lungs: np.ndarray, grid: _Grid, a: np.ndarray, b: np.ndarray, radius: float) -> None:
    reach = float(np.linalg.norm(b - a)) / 2 + radius + 2
    box, (zz, yy, xx) = grid.box((a + b) / 2, reach)
    if 0 in (zz.size, yy.size, xx.size):
        return
    ab = b - a
    denom = float(ab @ ab) or 1.0
    t = ((zz - a[0]) * ab[0] + (yy - a[1]) * ab[1] + (xx - a[2]) * ab[2]) / denom
    t = np.clip(t, 0.0, 1.0)
    d = np.sqrt((zz - a[0] - t * ab[0]) ** 2 + (yy - a[1] - t * ab[1]) ** 2 + (xx - a[2] - t * ab[2]) ** 2)
    w = _occupancy(radius - d, edge_mm=0.45) * lungs[box]
    region = vol[box]
    np.maximum(region, region * (1 - w) + SOFT * w, out=region)


def _draw_vessels(vol: np.ndarray, lungs: np.ndarray, grid: _Grid, rng: np.random.Generator, *,
                  centre: tuple[float, float], lung_dx: float, fov_z: float) -> None:
    cx, cy = centre
    for side in (-1, 1):
        hilum = np.array([0.55 * fov_z, cy - 0.02 * grid.shape[1] * grid.spacing[1], cx + side * lung_dx * 0.45])
        stack = []
        for _ in range(5):
            direction = np.array([rng.uniform(-1, 1), rng.uniform(-0.6, 0.6), side * rng.uniform(0.4, 1.0)])
            stack.append((hilum, direction / np.linalg.norm(direction), 4.0, 0))
        while stack:
            start, direction, radius, depth = stack.pop()
            length = rng.uniform(18.0, 34.0) * (radius / 4.0) ** 0.3
            end = start + direction * length
            _capsule(vol, lungs, grid, start, end, radius)
            if radius > 0.9 and depth < 6:
                for _ in range(2):
                    turn = rng.normal(0, 0.45, 3)
                    new = direction + turn
                    stack.append((end, new / np.linalg.norm(new), radius * rng.uniform(0.68, 0.8), depth + 1))


def _draw_nodules(vol: np.ndarray, lungs: np.ndarray, grid: _Grid, rng: np.random.Generator,
                  n: int, diameter_range: tuple[float, float], pleural_share: float = 0.0) -> list[PhantomNodule]:
    """Nodules inside the lungs; with ``pleural_share`` > 0 that share of them is juxtapleural:
    centred 0.2-0.7 radii inside the lung wall, so part of the nodule lies in the chest wall (as
    soft tissue, it is invisible there) and the rest bulges into the lung. With 0 no extra random
    number is drawn, so the phantoms of every seed stay as they were."""
    sz, sy, sx = grid.spacing
    # distance to the lung wall, in mm, decides where a nodule of a given size fits
    wall = ndimage.distance_transform_edt(lungs, sampling=grid.spacing)
    placed: list[tuple[np.ndarray, float]] = []
    out: list[PhantomNodule] = []
    lo, hi = diameter_range
    attempts = 0
    while len(out) < n and attempts < 200 * max(n, 1):
        attempts += 1
        d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        r = d / 2
        if pleural_share > 0 and rng.random() < pleural_share:
            room = np.argwhere((wall > 0.2 * r) & (wall < 0.7 * r))
        else:
            room = np.argwhere(wall > r + 2.0)
        if not len(room):
            continue
        c = room[rng.integers(len(room))] * np.array(grid.spacing) + rng.uniform(-0.5, 0.5, 3) * np.array(grid.spacing)
        if any(np.linalg.norm(c - pc) < r + pr + 8.0 for pc, pr in placed):
            continue
        kind = rng.choice(NODULE_TYPES, p=[0.6, 0.2, 0.2])
        p_malignant = 1 / (1 + np.exp(-(-3.2 + 0.22 * d + (1.2 if kind == "part-solid" else 0.0))))
        malignant = bool(rng.random() < p_malignant)
        lobulated = malignant
        box, (zz, yy, xx) = grid.box(c, r + 2)
        dist = r - np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        if lobulated:
            # a smaller core with bumps that reach the envelope: a lobulated outline of the same size
            core = 0.78 * r - np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
            shape_dist = core
            for _ in range(int(rng.integers(4, 7))):
                u = rng.normal(size=3)
                u /= np.linalg.norm(u)
                bc = c + u * 0.6 * r
                bump = 0.4 * r - np.sqrt((zz - bc[0]) ** 2 + (yy - bc[1]) ** 2 + (xx - bc[2]) ** 2)
                shape_dist = np.maximum(shape_dist, bump)
            dist = np.minimum(shape_dist, dist)
        w = _occupancy(dist)
        if kind == "solid":
            level, solid_d = np.full_like(w, SOLID_HU), d
        elif kind == "ground-glass":
            level, solid_d = np.full_like(w, GGO_HU + rng.uniform(-60, 60)), 0.0
        else:
            solid_d = d * float(rng.uniform(0.35, 0.6))
            inner = _occupancy(solid_d / 2 - np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2))
            level = GGO_HU + (SOLID_HU - GGO_HU) * inner
        region = vol[box]
        blended = region * (1 - w) + level * w
        np.maximum(region, blended, out=region)
        vox = float(sz * sy * sx)
        # the truth diameter is what a calliper would read on the noise-free nodule
        inside = w > 0.5
        longest = max((_axial_diameters(inside[k], sy, sx)[0] for k in np.flatnonzero(inside.any(axis=(1, 2)))),
                      default=d)
        total = float(w.sum())
        centroid = [float((w * ax).sum() / total / s) for ax, s in
                    zip(np.broadcast_arrays(zz, yy, xx), grid.spacing, strict=True)]
        placed.append((c, r))
        out.append(PhantomNodule(id=len(out) + 1, center_kji=centroid, diameter_mm=round(longest, 2), type=str(kind),
                                 malignant=malignant, solid_diameter_mm=round(solid_d, 2), lobulated=lobulated,
                                 volume_mm3=round(total * vox, 1)))
    return out


def write_phantom(
    out_dir: str | os.PathLike[str],
    *,
    nodules: int = 5,
    seed: int = 0,
    shape: tuple[int, int, int] = (140, 256, 256),
    spacing: tuple[float, float, float] = (1.5, 1.4, 1.4),
    patient_id: str | None = None,
    compression: str | None = None,
    noise_hu: float = 20.0,
    noise_sigma: float = NOISE_SIGMA,
    kernel: str = PHANTOM_KERNEL,
    pleural_share: float = 0.0,
) -> dict[str, Any]:
    """Write a phantom as a DICOM CT series in ``out_dir`` with ``truth.json`` beside it.

    The origin is placed as a scanner would (the patient centred on x=y=0, z counting up from
    the table position), so the truth's ``center_mm`` are real LPS coordinates.
    """
    hu, found = make_phantom(nodules, seed, shape=shape, spacing=spacing, noise_hu=noise_hu, noise_sigma=noise_sigma,
                             pleural_share=pleural_share)
    out = Path(out_dir)
    info = SeriesInfo(patient_id=patient_id or f"PHANTOM-{seed:04d}", patient_name=f"Phantom^{seed}", kernel=kernel)
    origin = (-(shape[2] - 1) * spacing[2] / 2, -(shape[1] - 1) * spacing[1] / 2, -400.0)
    write_ct_series(hu, out, spacing=spacing, origin=origin, info=info, compression=compression)
    for n in found:
        k, j, i = n.center_kji
        n.center_mm = [round(origin[0] + i * spacing[2], 3), round(origin[1] + j * spacing[1], 3),
                       round(origin[2] + k * spacing[0], 3)]
    truth = {
        "series_uid": info.series_uid, "study_uid": info.study_uid, "patient_id": info.patient_id,
        "seed": seed, "shape": list(shape), "spacing_mm": list(spacing), "origin_mm": list(origin),
        "nodules": [asdict(n) for n in found],
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    return truth
