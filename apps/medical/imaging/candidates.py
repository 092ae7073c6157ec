"""Nodule candidates: multi-scale blob detection inside the lungs.

A nodule is a bright roughly spherical blob in dark lung; a vessel is a bright tube. The
scale-normalised Laplacian of Gaussian peaks at the centre of a sphere of radius
``sigma * sqrt(3)``, so a stack of scales finds nodules from 4 to 30 mm and says how large each
is. Vessels answer too (a tube is a blob in two directions), so each peak also gets the Hessian
eigenvalues at its own scale: for a sphere all three are strongly negative, for a tube one is
near zero. The detector is deliberately generous (high sensitivity, many false candidates);
the 3D network that follows throws the false ones out.

Everything runs on a grid of about 1.2-1.5 mm: small nodules stay visible and the work on a
512 x 512 x 300 study drops fourfold.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from trillium.medical.imaging.lungs import block_mean, ct_threads, downsample_factors

#: LoG scales (mm); a sphere of diameter d answers best at sigma = d / (2 sqrt 3).
SCALES_MM = (1.2, 1.7, 2.4, 3.4, 4.8, 6.8, 9.0)
LUNG_FILL_HU = -860.0


@dataclass
class Candidate:
    center_kji: np.ndarray  # full-resolution array indices
    radius_mm: float  # from the answering scale
    response: float  # scale-normalised LoG (HU)
    blobness: float  # |lambda_3| / |lambda_1| of the Hessian at that scale: 1 sphere, 0 tube
    peak_hu: float


def _laplacian(g: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Sum over the axes of the central second difference ``(lo + hi - 2 mid) / s**2``, zero on
    the array's faces along each axis.

    The same float operations in the same order as the plain form
    (``tests/medical/ct_candidates_reference.py``), so the same result bit for bit, with two
    scratch buffers instead of a zeroed full-size array and three temporaries per axis."""
    out = np.zeros_like(g)
    a, b = np.empty_like(g), np.empty_like(g)
    for axis, s in enumerate(spacing):
        n = g.shape[axis]
        if n < 3:
            continue
        lo, mid, hi = (_axis_range(g, axis, k, k + n - 2) for k in (0, 1, 2))
        d2, twice = _axis_range(a, axis, 0, n - 2), _axis_range(b, axis, 0, n - 2)
        np.add(lo, hi, out=d2)
        np.multiply(mid, 2, out=twice)
        np.subtract(d2, twice, out=d2)
        np.divide(d2, s * s, out=d2)
        target = _axis_range(out, axis, 1, n - 1)
        np.add(target, d2, out=target)
    return out


def _axis_range(a: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, stop)
    return a[tuple(index)]


def _hessian_at(g: np.ndarray, p: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Hessian by central differences at interior voxel ``p`` of the smoothed volume ``g``."""
    k, j, i = (int(v) for v in p)
    h = np.zeros((3, 3))
    idx = np.array([k, j, i])
    for a in range(3):
        for b in range(a, 3):
            if a == b:
                e = np.eye(3, dtype=int)[a]
                v = (g[tuple(idx + e)] + g[tuple(idx - e)] - 2 * g[tuple(idx)]) / spacing[a] ** 2
            else:
                ea, eb = np.eye(3, dtype=int)[a], np.eye(3, dtype=int)[b]
                v = (g[tuple(idx + ea + eb)] - g[tuple(idx + ea - eb)] - g[tuple(idx - ea + eb)]
                     + g[tuple(idx - ea - eb)]) / (4 * spacing[a] * spacing[b])
            h[a, b] = h[b, a] = v
    return h


#: Backends of the filters: "scipy" (``scipy.ndimage`` on one CPU core, the reference) and "torch"
#: (``volume_ops``: CPU threads or CUDA, the same candidates within the tolerance the tests state).
BACKENDS = ("scipy", "torch")
#: "auto": torch where CUDA is present, else SciPy (on the 2-core CPU the two were measured
#: within noise of each other; see docs/medical-imaging.md, "Chest CT on torch").
DEFAULT_BACKEND = "auto"


def resolve_backend(backend: str | None) -> str:
    """``None``/"auto" -> "torch" when CUDA is present, else "scipy"; a name is checked."""
    backend = backend or DEFAULT_BACKEND
    if backend == "auto":
        import torch

        return "torch" if torch.cuda.is_available() else "scipy"
    if backend not in BACKENDS:
        raise ValueError(f"chest CT: backend {backend!r} is not one of {BACKENDS} or 'auto'")
    return backend

_Peak = tuple[np.ndarray, float, float, float, float]


def find_candidates(
    hu: np.ndarray,
    lungs: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    scales_mm: tuple[float, ...] = SCALES_MM,
    min_response: float = 120.0,
    min_blobness: float = 0.45,
    max_candidates: int = 2000,
    backend: str | None = None,
    device: str | None = None,
) -> list[Candidate]:
    """Blob centres inside ``lungs``, strongest first, merged across scales.

    ``backend`` "scipy", "torch" or "auto" (:func:`resolve_backend`); ``device`` is torch's
    ("cpu", "cuda"; None = CUDA when present).
    """
    backend = resolve_backend(backend)
    factors = downsample_factors(spacing, 1.2)
    sp = tuple(s * f for s, f in zip(spacing, factors, strict=True))
    peaks_fn = _peaks_torch if backend == "torch" else _peaks_scipy
    found = peaks_fn(hu, lungs, factors, sp, scales_mm, min_response, min_blobness, device)
    return _merge(found, factors, sp, max_candidates)


def _peaks_scipy(hu: np.ndarray, lungs: np.ndarray, factors: tuple[int, int, int], sp: tuple[float, float, float],
                 scales_mm: tuple[float, ...], min_response: float, min_blobness: float,
                 device: str | None = None) -> list[_Peak]:
    small = block_mean(np.clip(hu, -1000, 300), factors)
    mask_small = block_mean(lungs, factors) > 0.5
    # Outside the lungs' box (grown by the filters' reach) the work volume is the constant fill,
    # and the filters see the same values inside it whether the rest is there or not (mode
    # "nearest" repeats the fill at the box's faces): the box alone is filtered, with the same
    # candidates bit for bit (``tests/medical/test_ct_candidates_speed.py``), as the torch path does.
    extent = _lung_extent(mask_small)
    if extent is None:
        return []
    box = _grown(extent, mask_small.shape, sp, scales_mm)
    origin = np.array([b.start for b in box])
    upper = np.array(small.shape) - 1
    small, mask_small = small[box], mask_small[box]
    # Outside the lungs the chest wall would answer everywhere; paint it as lung.
    work = np.where(mask_small, small, LUNG_FILL_HU).astype(np.float32)
    inner = ndimage.binary_erosion(mask_small, iterations=1)

    def one_scale(sigma: float) -> list[_Peak]:
        size = [max(3, round(1.2 * sigma / s) * 2 + 1) for s in sp]
        # the maximum filter reads the response within half its size of a lung voxel, and the
        # response reads the smoothed volume one voxel further: only that box is computed
        need = tuple(slice(max(0, lo - h - 1 - o), min(n, hi + h + 2) - o)
                     for (lo, hi), h, o, n in zip(extent, (z // 2 for z in size), origin, upper + 1, strict=True))
        at = origin + [b.start for b in need]
        g = _smoothed(work, need, [sigma / s for s in sp])
        resp = _laplacian(g, sp)
        resp *= -sigma * sigma
        peaks = (resp == ndimage.maximum_filter(resp, size=size, mode="nearest")) & (resp > min_response) & inner[need]
        level = small[need]
        found: list[_Peak] = []
        for p in np.argwhere(peaks):
            if np.any(p + at < 1) or np.any(p + at >= upper):
                continue
            ev = np.sort(np.linalg.eigvalsh(_hessian_at(g, p, sp)))  # most negative first
            if ev[0] >= 0:
                continue
            blob = float(max(0.0, -ev[2]) / -ev[0])
            if blob < min_blobness:
                continue
            found.append((p + at, sigma, float(resp[tuple(p)]), blob, float(level[tuple(p)])))
        return found

    # the scales are independent and SciPy's filters release the GIL: on 2 cores two threads took
    # the stage from 3.2 to about 2 s (docs/medical-imaging.md); the peaks keep the scales' order
    workers = min(ct_threads(), len(scales_mm))  # one scale a thread
    if workers <= 1:
        return [p for sigma in scales_mm for p in one_scale(sigma)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ct-log") as pool:
        return [p for found in pool.map(one_scale, scales_mm) for p in found]


def _smoothed(work: np.ndarray, need: tuple[slice, ...], sigmas: list[float], truncate: float = 3.0) -> np.ndarray:
    """``ndimage.gaussian_filter(work, sigmas, mode="nearest", truncate=truncate)[need]``, bit for
    bit, with each axis's 1-D pass run only on the lines the later passes read.

    SciPy's filter is three 1-D passes, axis after axis, each on every line of the array. A pass
    along one axis treats each line on its own, so cutting the array across the lines changes no
    value; before each pass the array keeps, along that axis, ``need`` grown by the pass's radius
    (the faces of ``work`` still repeat as "nearest" wants), and after it only ``need``."""
    radius = [int(truncate * float(s) + 0.5) for s in sigmas]  # gaussian_filter1d's own radius
    grown = tuple(slice(max(0, b.start - r), min(n, b.stop + r))
                  for b, r, n in zip(need, radius, work.shape, strict=True))
    x = work[grown]
    for axis, sigma in enumerate(sigmas):
        if sigma <= 1e-15:
            continue  # gaussian_filter skips it too
        x = ndimage.gaussian_filter1d(x, sigma, axis=axis, mode="nearest", truncate=truncate)
        keep = [slice(None)] * 3
        keep[axis] = slice(need[axis].start - grown[axis].start, need[axis].stop - grown[axis].start)
        x = x[tuple(keep)]
    return x


def _peaks_torch(hu: np.ndarray, lungs: np.ndarray, factors: tuple[int, int, int], sp: tuple[float, float, float],
                 scales_mm: tuple[float, ...], min_response: float, min_blobness: float,
                 device: str | None = None) -> list[_Peak]:
    """The same detector as :func:`_peaks_scipy` on tensors; only the peaks come back to numpy."""
    import torch

    from trillium.medical.imaging import volume_ops as vo

    dev = vo.resolve_device(device)
    with torch.inference_mode():
        hu_t = torch.from_numpy(np.ascontiguousarray(hu)).to(dev)
        small = vo.block_mean(hu_t.clamp(-1000, 300), factors)
        del hu_t
        mask_small = vo.block_mean(torch.from_numpy(np.ascontiguousarray(lungs)).to(dev), factors) > 0.5
        # Outside the lungs' box (and a margin as wide as the widest Gaussian and maximum filter)
        # the work volume is the constant fill: no peak can be there and the filters inside the box
        # see the same values, so the box alone is filtered (the SciPy path filters everything).
        box = _lung_box(mask_small, sp, scales_mm)
        if box is None:
            return []
        origin = torch.tensor([b.start for b in box], device=dev)
        upper = torch.tensor(small.shape, device=dev) - 1
        small, mask_small = small[box], mask_small[box]
        work = torch.where(mask_small, small, torch.tensor(LUNG_FILL_HU, device=dev))
        inner = vo.binary_erosion(mask_small)
        del mask_small
        found: list[_Peak] = []
        for sigma in scales_mm:
            g = vo.gaussian_filter(work, [sigma / s for s in sp], truncate=3.0)
            resp = vo.laplacian(g, sp).mul_(-sigma * sigma)
            size = [max(3, round(1.2 * sigma / s) * 2 + 1) for s in sp]
            peaks = (resp == vo.maximum_filter(resp, size)) & (resp > min_response) & inner
            idx = peaks.nonzero()
            idx = idx[((idx + origin >= 1) & (idx + origin < upper)).all(dim=1)]
            if not len(idx):
                continue
            hess = vo.hessians_at(g, idx, sp).cpu().numpy()
            values = resp[idx[:, 0], idx[:, 1], idx[:, 2]].cpu().numpy()
            levels = small[idx[:, 0], idx[:, 1], idx[:, 2]].cpu().numpy()
            idx_np = (idx + origin).cpu().numpy()
            ev = np.linalg.eigvalsh(hess)  # ascending: most negative first
            for n in range(len(idx_np)):
                if ev[n, 0] >= 0:
                    continue
                blob = float(max(0.0, -ev[n, 2]) / -ev[n, 0])
                if blob < min_blobness:
                    continue
                found.append((idx_np[n], sigma, float(values[n]), blob, float(levels[n])))
    return found


def _lung_box(mask_small: object, sp: tuple[float, float, float], scales_mm: tuple[float, ...]
              ) -> tuple[slice, slice, slice] | None:
    """The lungs' bounding box on the detector grid, grown by the reach of the widest Gaussian
    (truncate 3) plus the widest maximum filter plus two voxels, clipped to the grid (a NumPy
    array or a tensor)."""
    extent = _lung_extent(mask_small)
    return None if extent is None else _grown(extent, tuple(mask_small.shape), sp, scales_mm)


def _lung_extent(mask: object) -> list[tuple[int, int]] | None:
    """First and last index holding lung along each axis (None: no lung)."""
    if not bool(mask.any()):
        return None
    out = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        line = mask.any(others[1]).any(others[0])
        hit = np.flatnonzero(line.cpu().numpy() if hasattr(line, "cpu") else line)
        out.append((int(hit.min()), int(hit.max())))
    return out


def _grown(extent: list[tuple[int, int]], shape: tuple[int, ...], sp: tuple[float, float, float],
           scales_mm: tuple[float, ...]) -> tuple[slice, slice, slice]:
    """``extent`` grown by the reach of the scales' Gaussians and maximum filters plus two voxels."""
    box = []
    for axis, s in enumerate(sp):
        margin = max(int(3.0 * sigma / s + 0.5) + round(1.2 * sigma / s) + 1 for sigma in scales_mm) + 2
        lo, hi = extent[axis]
        box.append(slice(max(0, lo - margin), min(shape[axis], hi + 1 + margin)))
    return tuple(box)  # type: ignore[return-value]


def _merge(found: list[_Peak], factors: tuple[int, int, int], sp: tuple[float, float, float],
           max_candidates: int) -> list[Candidate]:
    """Strongest first; a peak inside an already kept candidate's radius is the same blob."""
    found.sort(key=lambda f: -f[2] * (0.5 + f[3]))
    kept: list[Candidate] = []
    kept_mm: list[np.ndarray] = []
    for p, sigma, response, blob, peak in found:
        radius = sigma * np.sqrt(3)
        pos = p * np.array(sp)
        if any(np.linalg.norm(pos - q) < min(radius, c.radius_mm) for q, c in zip(kept_mm, kept, strict=True)):
            continue
        full = p * np.array(factors) + (np.array(factors) - 1) / 2.0
        kept.append(Candidate(center_kji=full.astype(float), radius_mm=float(radius), response=response,
                              blobness=blob, peak_hu=peak))
        kept_mm.append(pos)
        if len(kept) >= max_candidates:
            break
    return kept
