"""``PatchCoreNet``: a memory of good-part patches and the nearest-neighbour anomaly map.

The PatchCore recipe (Roth et al., CVPR 2022) with the one pretrained backbone available here
without a download (``backbone.py``): every image is cut into overlapping patches described by
mid-level ImageNet features; the memory holds a coreset of the patches of good parts; a patch's
anomaly is its distance to the nearest remembered patch. Nothing is trained, so fitting takes
seconds on a CPU, and a defect the synthetic generator of ``augment.py`` never draws is still
far from every good patch.

Pure torch and exportable (the distance is written as matrix products, not ``cdist``); the
coreset selection that fills the memory is in ``memory_bank.py``, kept apart as anomalib keeps
a model from its fitting code.

The raw distance ``d`` is mapped to ``d / (d + scale)``, in [0, 1) and monotone, so thresholds,
overlays and the dashboard treat both detectors alike; ``scale`` is a typical good image's
largest distance, which puts good parts near 0.5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trillium.manufacturing.backbone import MobileNetV2Features

#: Blocks of MobileNetV2 whose outputs describe a patch: strides 8 (32 ch), 16 (96 ch) and 32 (160 ch),
#: chosen on Magnetic Tile validation (manufacturing_selection_magnetic_tile.json, "patchcore").
DEFAULT_TAPS = (6, 13, 16)


class PatchFeatures(nn.Module):
    """Image (B, C, H, W) in [0, 1] -> patch descriptors (B, D, H/8, W/8).

    Each tap's map is averaged over its 3x3 neighbourhood (a patch sees its surroundings, as
    PatchCore's local aggregation does), then brought to the stride-8 grid: finer maps are
    average-pooled down, coarser ones bilinearly upsampled, and all are concatenated.
    """

    def __init__(self, taps: tuple[int, ...] = DEFAULT_TAPS, backbone: MobileNetV2Features | None = None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else MobileNetV2Features(tuple(taps))
        self.dim = sum(self.backbone.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [F.avg_pool2d(f, 3, stride=1, padding=1) for f in self.backbone(x)]
        grid = (math.ceil(x.shape[-2] / 8), math.ceil(x.shape[-1] / 8))
        out = []
        for f in maps:
            if f.shape[-2:] == grid:
                out.append(f)
            elif f.shape[-1] > grid[-1]:
                out.append(F.adaptive_avg_pool2d(f, grid))
            else:
                out.append(F.interpolate(f, size=grid, mode="bilinear", align_corners=False))
        return torch.cat(out, dim=1)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius 3 sigma."""
    radius = max(1, int(3 * sigma))
    k = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(k**2) / (2 * sigma**2))
    return g / g.sum()


class PatchCoreNet(nn.Module):
    """Image (B, C, H, W) in [0, 1] -> (anomaly map (B, 1, H, W) in [0, 1), image score (B,)).

    Args:
        memory_size: rows of the memory (set by the coreset; the registry rebuilds from it).
        taps: MobileNetV2 blocks whose features describe a patch.
        sigma: Gaussian smoothing of the map at input resolution, in pixels (PatchCore's 4).
        chunk: memory rows compared at once; bounds the distance matrix's memory per image.
        dims: compare patches on their first ``dims`` principal components (of the good patches)
            instead of all features; the search's cost is proportional to it. None: all.
    """

    def __init__(self, memory_size: int, taps: tuple[int, ...] | list[int] = DEFAULT_TAPS,
                 sigma: float = 4.0, chunk: int = 4096, dims: int | None = None) -> None:
        super().__init__()
        if memory_size < 1:
            raise ValueError(f"memory_size must be >= 1, got {memory_size}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.features = PatchFeatures(tuple(taps))
        if dims is not None and not 1 <= dims <= self.features.dim:
            raise ValueError(f"dims must be in 1..{self.features.dim}, got {dims}")
        self.dims = dims
        self.sigma = sigma
        if dims is not None:
            self.register_buffer("centre", torch.zeros(self.features.dim))
            self.register_buffer("basis", torch.zeros(self.features.dim, dims))
        self.register_buffer("memory", torch.zeros(memory_size, dims or self.features.dim))
        self.register_buffer("memory_sq", torch.zeros(memory_size))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("kernel", gaussian_kernel(sigma))
        self.chunk = chunk

    def set_projection(self, centre: torch.Tensor, basis: torch.Tensor) -> PatchCoreNet:
        """Install the principal axes (D,) and (D, dims) the memory and queries are compared on."""
        if self.dims is None:
            raise ValueError("this PatchCoreNet compares all features (dims=None)")
        self.centre.copy_(centre)
        self.basis.copy_(basis)
        return self

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """Patch descriptors (..., D) in the space the memory lives in."""
        return rows if self.dims is None else (rows - self.centre) @ self.basis

    def set_memory(self, memory: torch.Tensor, scale: float) -> PatchCoreNet:
        """Install the coreset (K, D) and the distance scale (a typical good image's maximum)."""
        if memory.shape != self.memory.shape:
            raise ValueError(f"memory must be {tuple(self.memory.shape)}, got {tuple(memory.shape)}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.memory.copy_(memory)
        self.memory_sq.copy_((memory * memory).sum(1))
        self.scale.fill_(float(scale))
        return self

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Each patch's distance to its nearest remembered patch, (B, 1, H/8, W/8)."""
        f = self.features(x)
        b, d, h, w = f.shape
        q = self.project(f.permute(0, 2, 3, 1).reshape(b, h * w, d))
        q_sq = (q * q).sum(-1, keepdim=True)
        nearest = None
        for start in range(0, self.memory.shape[0], self.chunk):
            m = self.memory[start:start + self.chunk]
            d2 = q_sq - 2 * q @ m.T + self.memory_sq[start:start + self.chunk]
            part = d2.amin(dim=-1)
            nearest = part if nearest is None else torch.minimum(nearest, part)
        return nearest.clamp_min(0).sqrt().reshape(b, 1, h, w)

    def smooth(self, dist: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Upsample to the input size and smooth with the separable Gaussian."""
        m = F.interpolate(dist, size=size, mode="bilinear", align_corners=False)
        r = self.kernel.numel() // 2
        m = F.conv2d(F.pad(m, (r, r, 0, 0), mode="reflect"), self.kernel.view(1, 1, 1, -1))
        return F.conv2d(F.pad(m, (0, 0, r, r), mode="reflect"), self.kernel.view(1, 1, -1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.smooth(self.distances(x), (x.shape[-2], x.shape[-1]))
        amap = raw / (raw + self.scale)
        return amap, amap.flatten(1).amax(dim=1)

    # ---------------------------------------------------------------- defect-type descriptors
    def descriptor_map(self, x: torch.Tensor) -> torch.Tensor:
        """The map that weights the descriptor (B, 1, H, W): the anomaly map itself."""
        return self(x)[0]

    def embed(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) patch features pooled under ``weight`` (or averaged), for the type classifier."""
        f = self.features(x)
        if weight is None:
            return f.mean(dim=(2, 3))
        w = F.adaptive_avg_pool2d(weight, f.shape[-2:])
        w = w / w.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        return (f * w).sum(dim=(2, 3))
