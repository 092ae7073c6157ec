"""The lung mask of ``lungs.segment_lungs`` on torch tensors: the same mask, voxel for voxel, on
a CUDA device (or CPU threads).

Why: on the GPU host the lung mask was one of the stages left on its CPU (1.5 s of a 6.8 s study on
the lent H100, ``benchmarks/results/medical_imaging_gpu_h100_fast.json``): SciPy's labelling, hole
filling and closings run on one core per slab. Here each step is written with tensor operations
that a GPU runs over the whole volume at once:

- **connected components** by label propagation: every voxel starts with its own flat index;
  a sweep gives each voxel the smallest label of its run of mask voxels along each axis in turn (a
  segmented minimum by one ``cummax`` scan per direction, so a label crosses a whole lung in one
  step), then follows its label's label (pointer jumping); sweeps repeat until one changes
  nothing, a few per mask. At that fixed point each component holds the smallest index of its voxels. The neighbours are the 6-connected cross in 3-D
  or the 4-connected cross within the slice, SciPy's default structures in ``segment_lungs``;
- **hole filling and the outside air** from those components: a component of background (or of
  air) that touches the slice's border is outside, the rest is a hole (``binary_fill_holes``);
- **closings with a disc** as two convolutions of the mask with the disc (a dilation: any hit; an
  erosion: all hits, outside the padded slice counting as empty, as SciPy's border value 0 does).
  The counts are small whole numbers, so the comparisons use half-integer margins and stay exact
  even under a GPU's Winograd or TF32 convolution;
- **the rolling ball** of ``take_in_juxtapleural`` closes each lung of each slice on its own: the
  components of one slice are ranked, and all slices' components of one rank are closed together
  (one batched convolution per rank, a handful of ranks per study).

Equality with the SciPy path is tested on phantoms and on both kernels of a real series
(``tests/medical/test_ct_lungs_torch.py``). On CPU threads the SciPy path is far faster (the disc
convolutions are dense; 100 s against 0.8 s for LIDC-IDRI-0003 here), so ``analyzer.lung_mask``
takes this path only with the torch backend on a CUDA device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from trillium.medical.imaging.lungs import (
    AIR_THRESHOLD_HU,
    JUXTA_MM,
    MIN_LUNG_ML,
    MIN_LUNG_SHARE,
    block_mean,
    downsample_factors,
    upsample_mask,
)

__all__ = ["components", "segment_lungs_torch"]


def _run_min(labels: torch.Tensor, mask: torch.Tensor, axis: int, big: int) -> torch.Tensor:
    """Each voxel of ``mask`` gets the smallest label of its run: the contiguous stretch of mask
    voxels along ``axis`` it lies in (labels elsewhere are ``big``).

    A segmented minimum by one scan in each direction: the run's number along the line (a running
    count of run starts) times a stride above every label, plus ``big - label``, is largest for
    the current run's smallest label, so a running maximum (``torch.cummax``) carries that label
    along the run and never across a gap into the next run."""
    n = mask.shape[axis]
    best = torch.zeros(labels.shape, dtype=torch.int64, device=labels.device)
    for flip in (False, True):
        m, lab = (mask.flip(axis), labels.flip(axis)) if flip else (mask, labels)
        starts = m.clone()
        starts.narrow(axis, 1, n - 1).logical_and_(~m.narrow(axis, 0, n - 1))
        key = torch.cumsum(starts, dim=axis, dtype=torch.int64).mul_(big + 1)
        key.add_(torch.where(m, big - lab, 0))
        run = torch.cummax(key, dim=axis).values.remainder_(big + 1)
        best = torch.maximum(best, run.flip(axis) if flip else run)
    return torch.where(mask, big - best, big)


def components(mask: torch.Tensor, axes: tuple[int, ...] = (0, 1, 2)) -> torch.Tensor:
    """Connected components of a boolean 3-D ``mask`` under the cross connectivity along ``axes``
    ((0, 1, 2): SciPy's default 3-D structure; (1, 2): each slice on its own, 4-connected).

    Returns int64 labels: the smallest flat index of the component's voxels, or -1 outside the
    mask. Two voxels share a label exactly when SciPy's ``ndimage.label`` puts them together."""
    n = mask.numel()
    big = n  # larger than any flat index
    flat_index = torch.arange(n, device=mask.device, dtype=torch.int64).view(mask.shape)
    labels = torch.where(mask, flat_index, torch.full_like(flat_index, big))
    inside = mask.reshape(-1)
    while True:
        before = labels
        for axis in axes:
            if mask.shape[axis] > 1:
                labels = _run_min(labels, mask, axis, big)
        # pointer jumping: a voxel's label is a voxel of the same component with a smaller or equal
        # index, so its label's label is one too: labels that improved elsewhere travel at once
        flat = labels.reshape(-1)
        flat = torch.where(inside, flat[flat.clamp(max=n - 1)], flat)
        labels = flat.view(mask.shape)
        if torch.equal(labels, before):  # a sweep that changed nothing: the fixed point
            break
    return torch.where(mask, labels, -1)


def _touching_border(labels: torch.Tensor) -> torch.Tensor:
    """Which voxels belong to a component (of ``components(..., axes=(1, 2))``) that reaches the
    in-plane border of its slice."""
    edge = torch.zeros(labels.shape[1:], dtype=torch.bool, device=labels.device)
    edge[0, :] = edge[-1, :] = True
    edge[:, 0] = edge[:, -1] = True
    at_edge = labels[:, edge].reshape(-1)
    at_edge = at_edge[at_edge >= 0]
    marked = torch.zeros(labels.numel(), dtype=torch.bool, device=labels.device)
    marked[at_edge] = True
    return _lookup(marked, labels)


def _lookup(marked: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``marked[label]`` per voxel, False where the label is -1."""
    return torch.where(labels >= 0, marked[labels.clamp(min=0)], torch.zeros((), dtype=torch.bool,
                                                                              device=labels.device))


def _disc(r: int, device: torch.device) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    return (yy ** 2 + xx ** 2 <= r * r).to(device=device, dtype=torch.float32)[None, None]


def _dilate(mask: torch.Tensor, disc: torch.Tensor) -> torch.Tensor:
    """In-plane dilation of [Z, Y, X] by ``disc`` (the result has the input's shape)."""
    r = disc.shape[-1] // 2
    return F.conv2d(mask[:, None].float(), disc, padding=r)[:, 0] > 0.5


def _erode(mask: torch.Tensor, disc: torch.Tensor) -> torch.Tensor:
    """In-plane erosion of [Z, Y, X] by ``disc``, outside the array counting as False."""
    r = disc.shape[-1] // 2
    return F.conv2d(mask[:, None].float(), disc, padding=r)[:, 0] > float(disc.sum()) - 0.5


def _closing(mask: torch.Tensor, r: int, disc: torch.Tensor) -> torch.Tensor:
    """``ndimage.binary_closing`` of each slice of ``mask`` padded by ``r`` with ``disc``, cut back."""
    padded = F.pad(mask, (r, r, r, r))
    closed = _erode(_dilate(padded, disc), disc)
    return closed[:, r:-r, r:-r] if r else closed


def _fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """``ndimage.binary_fill_holes`` of each slice with the 4-connected cross."""
    background = components(~mask, axes=(1, 2))
    return mask | ((background >= 0) & ~_touching_border(background))


def _block_mean(hu: torch.Tensor, factors: tuple[int, int, int]) -> torch.Tensor:
    """``lungs.block_mean`` of whole numbers: strided sums in float32 (exact below 2**24), one division,
    as that function does, so the means match it bit for bit (``volume_ops.block_mean``'s average
    pooling leaves the rounding of the division to the kernel)."""
    if factors == (1, 1, 1):
        return hu.float()
    fz, fy, fx = factors
    nz, ny, nx = (s // f * f for s, f in zip(hu.shape, factors, strict=True))
    acc = torch.zeros((nz // fz, ny // fy, nx // fx), dtype=torch.float32, device=hu.device)
    for a in range(fz):
        for b in range(fy):
            for c in range(fx):
                acc += hu[a:nz:fz, b:ny:fy, c:nx:fx]
    return acc / float(fz * fy * fx)


def segment_lungs_torch(hu: np.ndarray, spacing: tuple[float, float, float], *,
                        close_mm: float = 4.0, juxta_mm: float | None = None,
                        device: str | torch.device | None = None) -> np.ndarray:
    """``lungs.segment_lungs(hu, spacing, close_mm=..., juxta_mm=...)`` computed with tensors on
    ``device`` (None: CUDA when present): the same boolean mask on the grid of ``hu``.

    ``hu``: the study's HU values as ``segment_lungs`` takes them. 16-bit whole numbers (DICOM's
    usual rescale) are averaged on the device, exactly; a fractional (float) volume is averaged by
    NumPy's ``block_mean`` on the host, whose float32 rounding the device would not repeat."""
    from trillium.medical.imaging.volume_ops import resolve_device

    juxta_mm = JUXTA_MM if juxta_mm is None else juxta_mm
    dev = resolve_device(device)
    shape = tuple(hu.shape)
    factors = downsample_factors(spacing, 1.5)
    sp = tuple(float(s) * f for s, f in zip(spacing, factors, strict=True))
    with torch.inference_mode():
        hu = np.asarray(hu)
        if hu.dtype.kind in "iub" and hu.dtype.itemsize <= 2:
            small = _block_mean(torch.from_numpy(np.ascontiguousarray(hu)).to(dev), factors)
        else:  # fractional HU: NumPy's own means, so a value at the threshold falls the same way
            small = torch.from_numpy(block_mean(hu, factors)).to(dev)
        air = small < AIR_THRESHOLD_HU
        outside = _touching_border(components(air, axes=(1, 2)))
        inside = air & ~outside
        labels = components(inside)
        kept = labels[labels >= 0]
        if not kept.numel():
            return np.zeros(shape, dtype=bool)
        roots, sizes = torch.unique(kept, return_counts=True)
        voxel_ml = math.prod(sp) / 1000.0
        sizes_f = sizes.double()
        keep_roots = roots[(sizes_f >= MIN_LUNG_SHARE * sizes_f.max()) & (sizes_f * voxel_ml >= MIN_LUNG_ML)]
        marked = torch.zeros(labels.numel(), dtype=torch.bool, device=dev)
        marked[keep_roots] = True
        lungs = _lookup(marked, labels)
        if not bool(lungs.any()):
            return np.zeros(shape, dtype=bool)
        r = max(1, round(close_mm / min(sp[1], sp[2]))) if close_mm > 0 else 0
        if r:
            lungs = _closing(lungs, r, _disc(r, dev))
        lungs = _fill_holes(lungs)
        if juxta_mm > 0:
            lungs = _take_in_juxtapleural(lungs, small > AIR_THRESHOLD_HU, sp, juxta_mm)
        out = lungs.cpu().numpy()
    return upsample_mask(out, factors, shape)


def _take_in_juxtapleural(lungs: torch.Tensor, dense: torch.Tensor, sp: tuple[float, float, float],
                          radius_mm: float) -> torch.Tensor:
    """``lungs.take_in_juxtapleural`` on its own grid (``step_mm`` 0): each 4-connected lung
    component of each slice, closed by the disc on its own, adds its bays' dense pixels."""
    r = max(1, round(radius_mm / min(sp[1], sp[2])))
    labels = components(lungs, axes=(1, 2))
    roots, counts = torch.unique(labels[labels >= 0], return_counts=True)
    if not roots.numel():
        return lungs
    # slivers (apex, base) have no bays to fill: as the SciPy path, by the component's area
    big_enough = counts.double() * sp[1] * sp[2] >= math.pi * radius_mm ** 2
    plane = lungs.shape[1] * lungs.shape[2]
    slice_of = roots // plane
    # rank of each component within its slice (roots are sorted, so a slice's components are adjacent)
    first = torch.searchsorted(slice_of, slice_of)
    rank = torch.arange(roots.numel(), device=lungs.device) - first
    rank = torch.where(big_enough, rank, -1)
    rank_of_root = torch.full((lungs.numel(),), -1, dtype=torch.int64, device=lungs.device)
    rank_of_root[roots] = rank
    voxel_rank = torch.where(labels >= 0, rank_of_root[labels.clamp(min=0)], -1)
    out = lungs.clone()
    disc = _disc(r, lungs.device)
    for k in range(int(rank.max()) + 1 if bool((rank >= 0).any()) else 0):
        one = voxel_rank == k
        bay = _closing(one, r, disc) & ~one
        out |= bay & dense
    return out
