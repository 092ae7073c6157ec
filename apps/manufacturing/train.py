"""Training of the anomaly segmenter on good images with synthetic defects (kept apart from the module).

One step: draw a batch of good images, apply normal-preserving jitter (flips, small brightness
and contrast changes), paste synthetic defects onto part of the batch (``augment.py``), and
minimise focal loss plus soft Dice against the pasted masks. Focal loss keeps the rare defect
pixels from being swamped by the background; Dice keeps thin cracks from being ignored.

When a line has a few labelled real defects, they can join the synthetic ones
(``real_defects``): a share of each batch is then drawn from them, with the same crops and
jitter. A real defect with a pixel mask is learnt pixel by pixel like a synthetic one; one with
only an image label teaches through its strongest pixels (multiple-instance learning: the top
``IMAGE_LABEL_TOP`` share of the logits must say "defect"), because where the defect lies is
unknown.
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
    real_defect_fraction: float = 0.25  # share of each batch drawn from labelled real defects, when given

    def __post_init__(self) -> None:
        if not 0 <= self.real_defect_fraction < 1:
            raise ValueError(f"real_defect_fraction must be in [0, 1), got {self.real_defect_fraction}")


IMAGE_LABEL_TOP = 0.01  # share of pixels whose logits carry an image-level label (no mask)
NO_MASK = -1.0  # fill of a target row whose defect has an image label only


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


def _flip(x: torch.Tensor, rng: np.random.Generator, flips: bool, *others: torch.Tensor
          ) -> tuple[torch.Tensor, ...]:
    """The batch mirrored (left-right, up-down at random), and ``others`` (its masks) alike."""
    out = (x, *others)
    if flips:
        if rng.random() < 0.5:
            out = tuple(t.flip(3) for t in out)
        if rng.random() < 0.5:
            out = tuple(t.flip(2) for t in out)
    return out


def _jitter(x: torch.Tensor, rng: np.random.Generator, flips: bool) -> torch.Tensor:
    (x,) = _flip(x, rng, flips)
    return _gain(x, rng)


def _gain(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    b = x.shape[0]
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, (b, 1, 1, 1))).float()
    bias = torch.from_numpy(rng.uniform(-0.04, 0.04, (b, 1, 1, 1))).float()
    return (x * gain + bias).clamp(0, 1)


def _real_batch(defects: torch.Tensor, masks: torch.Tensor, idx: np.ndarray, rng: np.random.Generator,
                config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled real defects ``idx`` cropped and jittered like the good images, with their targets.

    A defect with a mask is cropped together with it. One without (target row ``NO_MASK``) is
    shrunk to the crop instead of cut, so that the defect its label speaks of stays in view.
    """
    x, y = defects[idx], masks[idx]
    size = config.crop
    if size is not None and size < max(x.shape[-2:]):
        weak = y.flatten(1)[:, 0] == NO_MASK
        whole = x[weak]
        pair = _crop(torch.cat([x, y], dim=1), rng, size)
        x, y = pair[:, :-1], pair[:, -1:]
        if len(whole):
            x[weak] = F.interpolate(whole, size=x.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
            y[weak] = NO_MASK
    x, y = _flip(x, rng, config.flips, y)
    return _gain(x, rng), y


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Focal + Dice on rows with a pixel target; image-level BCE on the top logits of rows
    whose target is ``NO_MASK`` (a labelled defect without a mask)."""
    weak = target.flatten(1)[:, 0] == NO_MASK
    if not bool(weak.any()):
        return focal_dice_loss(logits, target)
    loss = focal_dice_loss(logits[~weak], target[~weak]) if bool((~weak).any()) else logits.sum() * 0
    flat = logits[weak].flatten(1)
    k = max(1, round(IMAGE_LABEL_TOP * flat.shape[1]))
    top = flat.topk(k, dim=1).values.mean(dim=1)
    return loss + F.binary_cross_entropy_with_logits(top, torch.ones_like(top))


def fit_segmenter(model: nn.Module, images: torch.Tensor, config: TrainConfig = TrainConfig(),
                  *, real_defects: torch.Tensor | None = None, real_masks: torch.Tensor | None = None,
                  log_every: int = 100) -> list[float]:
    """Train ``model`` in place on good ``images`` (N, C, H, W) in [0, 1]; returns the loss curve.

    ``real_defects`` (M, C, H, W): labelled defect images that join the synthetic ones
    (``config.real_defect_fraction`` of each batch); ``real_masks`` (M, 1, H, W) their pixel
    masks in {0, 1}, a row filled with ``NO_MASK`` where only the image label is known, or None
    when no defect has a mask.

    The model's ``mean``/``std`` buffers are set from the good images first, so that inference
    takes raw pixels.
    """
    if config.steps < 1:
        raise ValueError(f"steps must be at least 1, got {config.steps}")
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"need at least 2 good images as (N, C, H, W), got shape {tuple(images.shape)}")
    n_real = 0
    if real_defects is not None and len(real_defects):
        if real_defects.ndim != 4 or real_defects.shape[1:] != images.shape[1:]:
            raise ValueError(f"real defects must be (M, {', '.join(map(str, images.shape[1:]))}) like the good "
                             f"images, got shape {tuple(real_defects.shape)}")
        if real_masks is None:
            real_masks = torch.full((real_defects.shape[0], 1, *images.shape[-2:]), NO_MASK)
        if real_masks.shape != (real_defects.shape[0], 1, *images.shape[-2:]):
            raise ValueError(f"real defect masks must be (M, 1, H, W) matching the images, got {tuple(real_masks.shape)}")
        rows = min(config.batch_size, images.shape[0])  # at least one good row stays in every batch
        n_real = min(rows - 1, max(1, round(config.real_defect_fraction * rows))) if config.real_defect_fraction else 0
        if n_real == 0:  # the defects would be given and silently never learnt
            raise ValueError(f"real defects were given but none would join a batch of {rows} (real_defect_fraction "
                             f"{config.real_defect_fraction:g}); use a fraction above 0 and batches of 2 or more")
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
        if n_real:
            rx, ry = _real_batch(real_defects, real_masks, rng.integers(0, len(real_defects), n_real), rng, config)
            x, y = torch.cat([x[:len(x) - n_real], rx]), torch.cat([y[:len(y) - n_real], ry])
        logits = model(x.to(device))
        loss = segmentation_loss(logits, y.to(device))
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
