"""Training of the anomaly segmenter on good images with synthetic defects (kept apart from the module).

One step: draw a batch of good images, apply normal-preserving jitter (flips, small brightness
and contrast changes), paste synthetic defects onto part of the batch (``augment.py``), and
minimise focal loss plus soft Dice against the pasted masks. Focal loss keeps the rare defect
pixels from being swamped by the background; Dice keeps thin cracks from being ignored.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trillium.manufacturing.augment import SyntheticDefects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of ``fit_segmenter`` (defaults measured on this CPU; see README).

    ``crop``: the network is fully convolutional, so it can learn on random crops and still
    infer on whole images; a 128-pixel crop of a 256-pixel image costs a quarter of the compute
    per step and keeps full resolution, which small defects need.
    """

    steps: int = 1500
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    flips: bool = True
    crop: int | None = None  # train on random crops of this size (None: whole images)
    defects: SyntheticDefects = field(default_factory=SyntheticDefects)


def focal_dice_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    pt = p * target + (1 - p) * (1 - target)
    focal = ((1 - pt) ** gamma * bce).mean()
    inter = (p * target).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + target.sum() + 1)
    return focal * 10 + dice


def warmup_cosine(steps: int, warmup: float = 0.1) -> Callable[[int], float]:
    """LR factor per step for short runs: linear warm-up over ``warmup`` of the run (at least one
    step), then cosine decay to 1 % (one-cycle in shape, and defined for runs of any length)."""
    w = max(1, round(warmup * steps))

    def factor(step: int) -> float:
        if step < w:
            return (step + 1) / w
        t = min(1.0, (step - w) / max(1, steps - w))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def _crop(x: torch.Tensor, rng: np.random.Generator, size: int | None) -> torch.Tensor:
    h, w = x.shape[-2:]
    if size is None or (size >= h and size >= w):
        return x
    out = torch.empty(x.shape[0], x.shape[1], min(size, h), min(size, w))
    for i in range(x.shape[0]):
        top = int(rng.integers(0, h - out.shape[2] + 1))
        left = int(rng.integers(0, w - out.shape[3] + 1))
        out[i] = x[i, :, top:top + out.shape[2], left:left + out.shape[3]]
    return out


def _jitter(x: torch.Tensor, rng: np.random.Generator, flips: bool) -> torch.Tensor:
    b = x.shape[0]
    if flips:
        if rng.random() < 0.5:
            x = x.flip(3)
        if rng.random() < 0.5:
            x = x.flip(2)
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, (b, 1, 1, 1))).float()
    bias = torch.from_numpy(rng.uniform(-0.04, 0.04, (b, 1, 1, 1))).float()
    return (x * gain + bias).clamp(0, 1)


def fit_segmenter(model: nn.Module, images: torch.Tensor, config: TrainConfig = TrainConfig(),
                  *, log_every: int = 100) -> list[float]:
    """Train ``model`` in place on good ``images`` (N, C, H, W) in [0, 1]; returns the loss curve.

    The model's ``mean``/``std`` buffers are set from the images first, so that inference takes
    raw pixels.
    """
    if config.steps < 1:
        raise ValueError(f"steps must be at least 1, got {config.steps}")
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"need at least 2 good images as (N, C, H, W), got shape {tuple(images.shape)}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        model.mean.copy_(images.mean(dim=(0, 2, 3), keepdim=True))
        model.std.copy_(images.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3))
    device = torch.device(config.device)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.steps >= 30:
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    else:  # OneCycleLR divides by its warm-up length, which rounds to zero on very short runs
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(config.steps))
    n = images.shape[0]
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(config.steps):
        idx = torch.from_numpy(rng.integers(0, n, min(config.batch_size, n)))
        batch = _jitter(_crop(images[idx], rng, config.crop), rng, config.flips)
        x, y = config.defects(batch, gen, rng)
        logits = model(x.to(device))
        loss = focal_dice_loss(logits, y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            log.info("step %d/%d loss %.4f (%.1f s)", step + 1, config.steps,
                     float(np.mean(losses[-log_every:])), time.perf_counter() - started)
    model.eval().to("cpu")
    return losses
