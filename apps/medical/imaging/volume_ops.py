"""Volume filters in torch, equal to their ``scipy.ndimage`` counterparts: one code for CPU threads and CUDA.

Why: the blob detector's separable Gaussians, Laplacians and maximum filters were most of a chest
CT's analysis time (about 15 of 31 s on a 2-core CPU), and SciPy cannot use a GPU nor more than one
core for them. Written as 1-D convolutions and pooling on tensors, the same functions run on CPU
threads (``torch.set_num_threads``) and on a CUDA device.

Each function documents the SciPy call it stands for and its boundary handling; the tests compare
them on real volumes. Equality: max, erosion and block means are exact (up to float32 summation
order for the mean); the Gaussian uses the same kernel weights as ``ndimage.gaussian_filter``
(float32 accumulation here, float64 in SciPy), so values agree to about 1e-6 of the volume's
range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """The weights ``ndimage.gaussian_filter1d`` uses: radius ``int(truncate * sigma + 0.5)``,
    ``exp(-x^2 / 2 sigma^2)`` normalised to sum 1 (computed in float64, as SciPy does)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return w / w.sum()


def nearest_matrix(weights: torch.Tensor, length: int) -> torch.Tensor:
    """The [length, length] matrix ``M`` with ``y = x @ M`` equal to ``correlate1d(x, weights,
    mode="nearest")`` along a line: column ``j`` holds the weights of output ``j``, and a tap that
    falls off the line adds onto the edge sample (SciPy's "nearest" boundary). One dense product
    per axis: a GEMM on CPU threads and on CUDA, with no padded copy of the volume."""
    r = (len(weights) - 1) // 2
    j = torch.arange(length).repeat_interleave(len(weights))
    src = (j.view(length, -1) + torch.arange(len(weights)) - r).clamp(0, length - 1).reshape(-1)
    m = torch.zeros(length, length, dtype=torch.float64)
    m.index_put_((src, j), weights.double().repeat(length), accumulate=True)
    return m


def correlate1d_nearest(x: torch.Tensor, weights: torch.Tensor, axis: int) -> torch.Tensor:
    """``ndimage.correlate1d(x, weights, axis, mode="nearest")`` of a 3-D tensor (odd kernel)."""
    n = x.shape[axis]
    m = nearest_matrix(weights, n).to(device=x.device, dtype=x.dtype)
    if axis == 2:
        return (x.reshape(-1, n) @ m).reshape(x.shape)
    if axis == 1:
        return torch.matmul(m.T, x)
    return (m.T @ x.reshape(n, -1)).reshape(x.shape)


def gaussian_filter(x: torch.Tensor, sigma: list[float] | tuple[float, ...], truncate: float = 4.0) -> torch.Tensor:
    """``ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=truncate)`` of a 3-D float tensor.

    Runs with float32 GEMMs at full precision (no TF32 on CUDA: :func:`full_precision`)."""
    out = x
    with full_precision():
        for axis, s in enumerate(sigma):
            if s > 0:
                out = correlate1d_nearest(out, gaussian_kernel1d(s, truncate), axis)
    return out


class full_precision:
    """Context: float32 matrix products in full float32 (CUDA would otherwise be free to use TF32,
    whose 10-bit mantissa moves a Gaussian by about 1 HU)."""

    def __enter__(self) -> None:
        self._old = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc: object) -> None:
        torch.set_float32_matmul_precision(self._old)


def _replicate_pad(x: torch.Tensor, r: int, axis: int) -> torch.Tensor:
    n = x.shape[axis]
    reps = [r if a == axis else -1 for a in range(x.dim())]
    return torch.cat([x.narrow(axis, 0, 1).expand(*reps), x, x.narrow(axis, n - 1, 1).expand(*reps)], axis)


def maximum_filter1d(x: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """``ndimage.maximum_filter1d(x, size, axis, mode="nearest")`` for odd ``size``: running
    maxima of windows 1, 2, 4, ... (log2(size) elementwise maxima of the whole volume, instead of
    ``size`` comparisons per voxel), then two overlapping windows cover ``size``. Exact."""
    if size <= 1:
        return x
    if size % 2 == 0:
        raise ValueError(f"maximum_filter1d: size {size} on axis {axis} must be odd")
    n = x.shape[axis]
    m = _replicate_pad(x, size // 2, axis)
    w = 1
    while 2 * w <= size:
        length = m.shape[axis] - w
        m = torch.maximum(m.narrow(axis, 0, length), m.narrow(axis, w, length))
        w *= 2
    return torch.maximum(m.narrow(axis, 0, n), m.narrow(axis, size - w, n))


def maximum_filter(x: torch.Tensor, size: list[int] | tuple[int, ...]) -> torch.Tensor:
    """``ndimage.maximum_filter(x, size=size, mode="nearest")`` for odd sizes (separable, exact)."""
    out = x
    for axis, k in enumerate(size):
        out = maximum_filter1d(out, int(k), axis)
    return out


def laplacian(g: torch.Tensor, spacing: tuple[float, float, float]) -> torch.Tensor:
    """Sum over axes of the central second difference / spacing^2; each axis's term is zero on
    that axis's first and last plane (the finite difference the SciPy path of ``candidates`` uses)."""
    out = torch.zeros_like(g)
    for axis, s in enumerate(spacing):
        n = g.shape[axis]
        if n < 3:
            continue
        mid, lo, hi = g.narrow(axis, 1, n - 2), g.narrow(axis, 0, n - 2), g.narrow(axis, 2, n - 2)
        d2 = torch.add(lo, hi).sub_(mid, alpha=2).div_(s * s)  # in place: four passes, one buffer
        out.narrow(axis, 1, n - 2).add_(d2)
    return out


def binary_erosion(mask: torch.Tensor) -> torch.Tensor:
    """``ndimage.binary_erosion(mask, iterations=1)``: the 6-connected cross, outside counts as False."""
    m = F.pad(mask[None, None].to(torch.uint8), (1, 1, 1, 1, 1, 1), value=0)[0, 0]
    out = m[1:-1, 1:-1, 1:-1].clone()
    for axis in range(3):
        n = m.shape[axis]
        for start in (0, 2):
            sl = m.narrow(axis, start, n - 2)
            others = [a for a in range(3) if a != axis]
            for a in others:
                sl = sl.narrow(a, 1, m.shape[a] - 2)
            out &= sl
    return out.bool()


def block_mean(x: torch.Tensor, factors: tuple[int, int, int]) -> torch.Tensor:
    """Mean over ``factors``-sized blocks, cropped to whole blocks (``lungs.block_mean``), as float32."""
    x = x.float()
    if tuple(factors) == (1, 1, 1):
        return x
    fz, fy, fx = factors
    nz, ny, nx = (s // f * f for s, f in zip(x.shape, factors, strict=True))
    v = x[:nz, :ny, :nx]
    if fz == 1:
        return F.avg_pool2d(v[:, None], (fy, fx))[:, 0]
    return F.avg_pool3d(v[None, None], (fz, fy, fx))[0, 0]


def hessians_at(g: torch.Tensor, points: torch.Tensor, spacing: tuple[float, float, float]) -> torch.Tensor:
    """Hessians [N, 3, 3] (float64) by central differences at interior voxels ``points`` [N, 3] of ``g``:
    the same stencils as the SciPy path's per-point ``_hessian_at``, gathered for all points at once."""
    p = points.long()
    shape = torch.tensor(g.shape, device=g.device)
    strides = torch.tensor([g.shape[1] * g.shape[2], g.shape[2], 1], device=g.device)
    flat = g.reshape(-1)

    def at(offset: tuple[int, int, int]) -> torch.Tensor:
        q = p + torch.tensor(offset, device=g.device)
        q = torch.minimum(torch.clamp(q, min=0), shape - 1)
        return flat[(q * strides).sum(1)].double()

    c = at((0, 0, 0))
    h = torch.zeros((len(p), 3, 3), dtype=torch.float64, device=g.device)
    for a in range(3):
        for b in range(a, 3):
            if a == b:
                e = [0, 0, 0]
                e[a] = 1
                v = (at(tuple(e)) + at(tuple(-t for t in e)) - 2 * c) / spacing[a] ** 2
            else:
                def off(sa: int, sb: int, a: int = a, b: int = b) -> tuple[int, int, int]:
                    o = [0, 0, 0]
                    o[a] += sa
                    o[b] += sb
                    return tuple(o)  # type: ignore[return-value]
                v = (at(off(1, 1)) - at(off(1, -1)) - at(off(-1, 1)) + at(off(-1, -1))) / (4 * spacing[a] * spacing[b])
            h[:, a, b] = v
            h[:, b, a] = v
    return h


__all__ = [
    "binary_erosion", "block_mean", "gaussian_filter", "gaussian_kernel1d", "hessians_at", "laplacian",
    "maximum_filter", "resolve_device",
]
