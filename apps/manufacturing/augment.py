"""Synthetic defects pasted onto good images: the training signal of the anomaly segmenter.

Only good parts are available for training, so the network is shown good images with
artificial anomalies and asked to segment them (the DRAEM / CutPaste idea, with our own
generator and no external texture set). The generator covers the defect families of the
field at many scales and contrasts, never a specific test set's look:

- shapes: smooth random blobs (Perlin-like noise thresholded), thin random-walk lines
  (cracks, scratches), small ellipses (pores, spots, holes) and large regions cut by a
  jagged boundary (shading, chipped edges);
- contents: another good image's texture (shifted and flipped, so the material is real but
  out of place), a brightness/contrast change, smoothed noise, and a dark or bright fill.

Everything is batched in torch except the line rasterisation (OpenCV); a seeded
``torch.Generator`` and ``numpy`` generator make a run reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

SHAPES = ("blob", "line", "spot", "region")
CONTENTS = ("texture", "intensity", "noise", "fill")


def _smooth_noise(n: int, size: tuple[int, int], scale: int, gen: torch.Generator) -> torch.Tensor:
    """Band-limited noise (n, 1, H, W): random values on a coarse grid, upsampled bicubically."""
    h, w = size
    coarse = torch.randn(n, 1, max(2, h // scale), max(2, w // scale), generator=gen)
    return F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def _blob_mask(size: tuple[int, int], gen: torch.Generator, rng: np.random.Generator) -> torch.Tensor:
    scale = int(rng.choice([4, 8, 16, 32]))
    noise = _smooth_noise(1, size, scale, gen)[0, 0]
    # Keep only the top few percent: one or a few blobs, size set by the noise scale.
    q = float(rng.uniform(0.93, 0.995))
    return (noise > torch.quantile(noise.flatten()[::7], q)).float()


def _line_mask(size: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    h, w = size
    canvas = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, 2 * math.pi)
        steps = int(rng.integers(4, 24))
        step = rng.uniform(3, 10) * max(h, w) / 256
        wiggle = rng.uniform(0.05, 0.6)
        pts = [(x, y)]
        for _ in range(steps):
            angle += rng.normal(0, wiggle)
            x += step * math.cos(angle)
            y += step * math.sin(angle)
            pts.append((x, y))
        thickness = int(rng.integers(1, 4))
        cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, 1, thickness, lineType=cv2.LINE_8)
    return torch.from_numpy(canvas.astype(np.float32))


def _spot_mask(size: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    h, w = size
    canvas = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.integers(2, 10) * w / 256) + 1, int(rng.integers(2, 10) * h / 256) + 1)
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return torch.from_numpy(canvas.astype(np.float32))


def _region_mask(size: tuple[int, int], gen: torch.Generator, rng: np.random.Generator) -> torch.Tensor:
    h, w = size
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    angle = float(rng.uniform(0, 2 * math.pi))
    plane = math.cos(angle) * xx + math.sin(angle) * yy
    jag = _smooth_noise(1, size, int(rng.choice([8, 16, 32])), gen)[0, 0] * float(rng.uniform(0.02, 0.15))
    # Offset so that the region covers 3-35 % of the image, from one side.
    offset = float(np.quantile(plane.numpy(), 1 - rng.uniform(0.03, 0.35)))
    return ((plane + jag) > offset).float()


@dataclass(frozen=True)
class SyntheticDefects:
    """Pastes synthetic defects onto a batch of good images.

    Args:
        probability: share of the batch that receives a defect (the rest stay good, target 0).
        min_opacity: the lowest blend factor; faint defects teach fine contrast, but below
            about 0.2 they are indistinguishable from normal variation.
        shapes / contents: the families drawn from, uniformly.
    """

    probability: float = 0.6
    min_opacity: float = 0.25
    shapes: tuple[str, ...] = SHAPES
    contents: tuple[str, ...] = CONTENTS

    def __call__(self, images: torch.Tensor, gen: torch.Generator, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) in [0, 1] -> (augmented images, target masks (B, 1, H, W))."""
        b, _c, h, w = images.shape
        size = (h, w)
        out = images.clone()
        target = torch.zeros(b, 1, h, w)
        for i in range(b):
            if rng.random() >= self.probability:
                continue
            shape = self.shapes[int(rng.integers(len(self.shapes)))]
            if shape == "blob":
                mask = _blob_mask(size, gen, rng)
            elif shape == "line":
                mask = _line_mask(size, rng)
            elif shape == "spot":
                mask = _spot_mask(size, rng)
            else:
                mask = _region_mask(size, gen, rng)
            if mask.sum() < 4:
                continue
            content = self._content(images, i, gen, rng)
            opacity = float(rng.uniform(self.min_opacity, 1.0))
            soft = mask[None, None]
            if shape in ("blob", "region") and rng.random() < 0.5:
                soft = F.avg_pool2d(soft, 3, stride=1, padding=1)
            alpha = (soft[0] * opacity).clamp(0, 1)
            out[i] = (1 - alpha) * images[i] + alpha * content
            target[i, 0] = mask
        return out.clamp(0, 1), target

    def _content(self, images: torch.Tensor, i: int, gen: torch.Generator, rng: np.random.Generator) -> torch.Tensor:
        b, c, h, w = images.shape
        kind = self.contents[int(rng.integers(len(self.contents)))]
        base = images[i]
        if kind == "texture":
            other = images[int(rng.integers(b))]
            other = torch.roll(other, (int(rng.integers(h)), int(rng.integers(w))), dims=(1, 2))
            if rng.random() < 0.5:
                other = other.transpose(1, 2) if h == w else other.flip(1)
            if rng.random() < 0.5:
                other = other.flip(2)
            return (other * float(rng.uniform(0.6, 1.4))).clamp(0, 1)
        if kind == "intensity":
            gain = float(rng.uniform(0.4, 1.6))
            bias = float(rng.uniform(-0.25, 0.25))
            mean = base.mean()
            return ((base - mean) * float(rng.uniform(0.5, 2.0)) + mean * gain + bias).clamp(0, 1)
        if kind == "noise":
            noise = _normalise(_smooth_noise(1, (h, w), int(rng.choice([1, 2, 4, 8])), gen))[0]
            return noise.expand(c, h, w) * float(rng.uniform(0.3, 1.0))
        level = float(rng.choice([rng.uniform(0.0, 0.15), rng.uniform(0.6, 1.0)]))
        colour = torch.full((c, 1, 1), level)
        if c == 3:
            colour = colour * torch.from_numpy(rng.uniform(0.6, 1.0, (3, 1, 1))).float()
        return colour.expand(c, h, w)
