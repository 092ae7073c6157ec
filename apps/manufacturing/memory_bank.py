"""Filling ``PatchCoreNet``'s memory: greedy coreset selection over good-part patches.

Keeping every patch of every good image would make each inspection compare ~1,000 patches with
~700,000 (256 px, 700 images): too slow for a line. A random 1 % forgets the rare normal
patches (edges, chamfers), which then look anomalous. The greedy k-centre coreset keeps the 1 %
that covers the others best: each pick is the patch farthest from everything picked so far.
Measured on Magnetic Tile (256 px, blocks 6 and 13, same memory size): image AUROC 0.857 with a random 1 % and
0.952 with the coreset.

To keep fitting within seconds-to-a-minute on 2 cores, the distances of the selection run on a
seeded random projection to 64 dimensions (Johnson-Lindenstrauss keeps them close), over a seeded
random tenth of the patches (at most ``max_candidates``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from trillium.manufacturing import backbone
from trillium.manufacturing.backbone import tap_channels
from trillium.manufacturing.patchcore import DEFAULT_TAPS, PatchCoreNet, PatchFeatures


@torch.no_grad()
def candidate_patches(features: PatchFeatures, good: torch.Tensor, *, presample: float = 0.1,
                      max_candidates: int = 200_000, seed: int = 0, block: int = 16) -> torch.Tensor:
    """(M, D) patch descriptors: a seeded random share of every good image's patches."""
    if not 0 < presample <= 1:
        raise ValueError(f"presample must be in (0, 1], got {presample}")
    gen = torch.Generator().manual_seed(seed)
    per_image: int | None = None
    out = []
    for start in range(0, good.shape[0], block):
        f = features(good[start:start + block])
        b, d, h, w = f.shape
        if per_image is None:
            per_image = max(1, min(h * w, math.ceil(presample * h * w), max_candidates // max(1, good.shape[0])))
        rows = f.permute(0, 2, 3, 1).reshape(b, h * w, d)
        pick = torch.argsort(torch.rand(b, h * w, generator=gen), dim=1)[:, :per_image]
        out.append(torch.gather(rows, 1, pick[..., None].expand(-1, -1, d)).reshape(-1, d))
    return torch.cat(out)


def greedy_coreset(patches: torch.Tensor, size: int, *, projection_dim: int = 64, seed: int = 0) -> torch.Tensor:
    """Indices of ``size`` rows chosen by greedy k-centre (farthest-point) selection."""
    n, d = patches.shape
    if not 1 <= size <= n:
        raise ValueError(f"coreset size must be in 1..{n}, got {size}")
    gen = torch.Generator().manual_seed(seed)
    if projection_dim < d:
        z = patches @ (torch.randn(d, projection_dim, generator=gen) / math.sqrt(projection_dim))
    else:
        z = patches
    z_sq = (z * z).sum(1)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=gen))
    nearest = torch.full((n,), float("inf"))
    for k in range(1, size):
        last = z[chosen[k - 1]]
        nearest = torch.minimum(nearest, z_sq - 2 * (z @ last) + z_sq[chosen[k - 1]])
        chosen[k] = int(nearest.argmax())
    return chosen


def check_settings(fraction: float, dims: int | None, taps: tuple[int, ...] = DEFAULT_TAPS) -> None:
    """Refuse a coreset share or a number of components that cannot work, before any image is read."""
    if not 0 < fraction <= 1:
        raise ValueError(f"coreset fraction must be in (0, 1], got {fraction}")
    total = sum(tap_channels(taps))
    if dims is not None and not 1 <= dims <= total:
        raise ValueError(f"patch dims must be in 1..{total} (the patch features), got {dims}")


def coreset_size(n_images: int, patches_per_image: int, fraction: float) -> int:
    """Memory rows for ``fraction`` of all patches of the good images (at least 1)."""
    check_settings(fraction, None)
    return max(1, round(n_images * patches_per_image * fraction))


@torch.no_grad()
def principal_axes(patches: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre (D,), basis (D, dims)): the mean and the top ``dims`` principal axes of ``patches``."""
    centre = patches.mean(0)
    x = (patches - centre).double()
    _, vectors = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues
    return centre, vectors[:, -dims:].flip(1).float().contiguous()


@torch.no_grad()
def fit_patchcore(good: torch.Tensor, *, fraction: float = 0.01, taps: tuple[int, ...] | None = None,
                  sigma: float = 4.0, dims: int | None = None, seed: int = 0, scale_images: int = 64) -> PatchCoreNet:
    """A ``PatchCoreNet`` whose memory is the coreset of ``good`` (N, C, H, W) in [0, 1].

    The distance scale is the median, over up to ``scale_images`` of the good images, of each
    image's largest smoothed distance (most of their patches are not in the coreset, so their
    distances are those of typical good patches). ``dims``: see ``PatchCoreNet``; the axes are
    those of the candidate patches.
    """
    taps = tuple(taps) if taps is not None else DEFAULT_TAPS
    check_settings(fraction, dims, taps)
    probe = PatchFeatures(taps, backbone=backbone.load_pretrained(taps))
    h, w = (math.ceil(good.shape[-2] / 8), math.ceil(good.shape[-1] / 8))
    size = coreset_size(good.shape[0], h * w, fraction)
    candidates = candidate_patches(probe, good, seed=seed)
    size = min(size, candidates.shape[0])
    net = PatchCoreNet(size, probe.backbone.taps, sigma=sigma, dims=dims)
    net.features = probe
    if dims is not None:
        net.set_projection(*principal_axes(candidates, dims))
        candidates = net.project(candidates)
    memory = candidates[greedy_coreset(candidates, size, seed=seed)]
    net.set_memory(memory, 1.0)
    rng = np.random.default_rng(seed)
    sample = torch.from_numpy(np.sort(rng.choice(good.shape[0], min(scale_images, good.shape[0]), replace=False)))
    peaks = torch.cat([net.smooth(net.distances(good[sample[i:i + 16]]), tuple(good.shape[-2:])).flatten(1).amax(1)
                       for i in range(0, len(sample), 16)])
    net.set_memory(memory, float(peaks.median().clamp_min(1e-6)))
    return net.eval()
