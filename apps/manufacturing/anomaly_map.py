"""From the segmenter's logits to the anomaly map and the image score (no learning here).

The map is the per-pixel defect probability, lightly smoothed so that one noisy pixel does not
decide a verdict. The image score is the maximum of the map after a box filter of
``pool`` pixels: a small defect scores as high as a large one with the same certainty, and
isolated single-pixel responses are averaged away.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trillium.manufacturing.models import AnomalySegmenter


class AnomalyMapGenerator(nn.Module):
    """logits (B, 1, H, W) -> (anomaly map (B, 1, H, W) in [0, 1], image score (B,))."""

    def __init__(self, pool: int = 9) -> None:
        super().__init__()
        if pool < 1 or pool % 2 == 0:
            raise ValueError(f"pool must be a positive odd number of pixels, got {pool}")
        self.pool = pool

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prob = torch.sigmoid(logits)
        if self.pool > 1:
            pooled = F.avg_pool2d(prob, self.pool, stride=1, padding=self.pool // 2, count_include_pad=False)
        else:
            pooled = prob
        return prob, pooled.flatten(1).amax(dim=1)


class InspectionNet(nn.Module):
    """Segmenter and map generator in one graph: what the core runtime autotunes and exports.

    Built from plain keyword arguments (those of ``AnomalySegmenter`` plus ``pool``) so that the
    registry can rebuild it from JSON without pickling anything.

    ``flips``: test-time augmentation; the logits are averaged over the image and its
    horizontal (and, with 3, vertical) mirror, which the training's flips make equally valid.
    It costs that many forward passes.
    """

    def __init__(self, pool: int = 9, flips: int = 1, **segmenter_kwargs: Any) -> None:
        super().__init__()
        if flips not in (1, 2, 3):
            raise ValueError(f"flips must be 1, 2 or 3, got {flips}")
        self.segmenter = AnomalySegmenter(**segmenter_kwargs)
        self.maps = AnomalyMapGenerator(pool)
        self.flips = flips

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.segmenter(x)
        if self.flips > 1:
            logits = logits + self.segmenter(x.flip(3)).flip(3)
            if self.flips > 2:
                logits = logits + self.segmenter(x.flip(2)).flip(2)
            logits = logits / self.flips
        return self.maps(logits)

    # ---------------------------------------------------------------- defect-type descriptors
    def descriptor_map(self, x: torch.Tensor) -> torch.Tensor:
        """The map that weights the type descriptor: the segmenter's probabilities (one pass)."""
        return torch.sigmoid(self.segmenter(x))

    def embed(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return self.segmenter.embed(x, weight=weight)
