"""Synthetic inspection images with exact ground truth, for the demo and the tests.

A "line" is one product seen by one camera: every image shares the line's material, lighting
and geometry (drawn once from the seed), and each image varies the way real parts do: a new
patch of brushed metal, a slightly different brushing angle, brightness, contrast, lighting
gradient, position and rotation, and sensor noise. So an anomaly detector has to learn what
"normal" looks like; it cannot memorise one image.

Defects (scratch, crack, spot, hole, contamination) are drawn on the clean image and the
same sensor noise is added to the image with and without the defect. The mask is where the
two 8-bit images differ, so it covers exactly the changed pixels. Every defect pixel changes
by at least ``MIN_CHANGE`` before noise, so masks are whole regions, and the contrast of each
defect is drawn from a range that includes subtle ones.

Images are written in the MVTec AD layout, which ``images.discover_mvtec`` reads back:
``train/good``, ``test/good``, ``test/<defect>``, ``ground_truth/<defect>/<stem>_mask.png``
(0/255), plus ``truth.json`` with every image's label and defect bounding box.

numpy and OpenCV only; deterministic for a seed (same seed, same bytes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from trillium.core.errors import InputValidationError

__all__ = ["DEFECTS", "KINDS", "MIN_CHANGE", "TRUTH_FILE", "synthetic_images", "write_synthetic_line"]

logger = logging.getLogger(__name__)

Kind = Literal["surface", "part"]
KINDS: tuple[str, ...] = ("surface", "part")
DEFECTS: tuple[str, ...] = ("scratch", "crack", "spot", "hole", "contamination")
TRUTH_FILE = "truth.json"
GENERATOR = "trillium.manufacturing.synth"
# Smallest change (fraction of full scale, ~8 grey levels) of a defect pixel before noise:
# enough to survive 8-bit rounding, small enough that faint defects stay faint.
MIN_CHANGE = 0.03
_MIN_SIZE = 32
_IN_MEMORY_STREAM = 7  # key of synthetic_images, apart from the written splits


# --------------------------------------------------------------------------- the line


@dataclass(frozen=True)
class _Line:
    """What every image of one line shares: the 'normal' that a detector has to learn."""

    kind: str
    size: int
    colour: bool
    brightness: float  # mean level of the metal
    contrast: float  # std of the brushing texture
    angle: float  # brushing direction, degrees
    light: float  # direction the light comes from, radians (bevels, hole walls)
    tint: np.ndarray  # (3,) colour gains of the metal (all 1 when grey)
    shape: str | None  # "washer" or "plate" for kind "part"
    background: float  # level of the belt under a part

    @property
    def scale(self) -> float:
        """Feature sizes are designed at 256 px and scale with the image."""
        return self.size / 256.0

    @property
    def channels(self) -> int:
        return 3 if self.colour else 1


def _make_line(kind: str, size: int, seed: int, colour: bool) -> _Line:
    rng = np.random.default_rng([seed, 0x11E])
    tint = np.ones(3, dtype=np.float32)
    if colour:  # steel is slightly blue, aluminium slightly warm
        tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0.0, 0.025, 3) + np.array([-0.02, 0.0, 0.03])
        tint = (tint / tint.mean()).astype(np.float32)
    return _Line(
        kind=kind,
        size=size,
        colour=colour,
        brightness=float(rng.uniform(0.45, 0.6)),
        contrast=float(rng.uniform(0.04, 0.06)),
        angle=float(rng.uniform(-20.0, 20.0)),
        light=float(rng.uniform(0.0, 2.0 * math.pi)),
        tint=tint,
        shape=None if kind == "surface" else ("washer" if rng.random() < 0.5 else "plate"),
        background=float(rng.uniform(0.08, 0.15)),
    )


# --------------------------------------------------------------------------- good images


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise (about ``cells`` bumps across), zero mean, unit std."""
    small = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    field = cv2.resize(small, (w + 2 * (w // cells), h + 2 * (h // cells)), interpolation=cv2.INTER_CUBIC)
    field = field[h // cells : h // cells + h, w // cells : w // cells + w]
    return (field - field.mean()) / (field.std() + 1e-6)


def _brushed(rng: np.random.Generator, h: int, w: int, angle: float, scale: float) -> np.ndarray:
    """Brushed/machined metal: noise stretched along one direction at three lengths, rotated."""
    side = math.ceil(math.hypot(h, w)) + 4
    tex = np.zeros((side, side), np.float32)
    for length, weight in ((5.0, 0.45), (22.0, 0.4), (90.0, 0.3)):
        step = max(2, round(length * scale))
        small = rng.standard_normal((side, side // step + 2)).astype(np.float32)
        tex += weight * cv2.resize(small, (side, side), interpolation=cv2.INTER_CUBIC)
    tex = cv2.GaussianBlur(tex, (1, 3), sigmaX=0, sigmaY=0.6)  # streaks are a bit wider than 1 px
    tex += 0.25 * rng.standard_normal((side, side)).astype(np.float32)  # machining grain
    rot = cv2.getRotationMatrix2D((side / 2.0, side / 2.0), angle, 1.0)
    tex = cv2.warpAffine(tex, rot, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    y0, x0 = (side - h) // 2, (side - w) // 2
    tex = tex[y0 : y0 + h, x0 : x0 + w]
    return (tex - tex.mean()) / (tex.std() + 1e-6)


def _lighting(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A mild linear gradient plus vignetting: no two images are lit quite the same."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx / max(w - 1, 1) - 0.5, yy / max(h - 1, 1) - 0.5
    phi = rng.uniform(0.0, 2.0 * math.pi)
    grad = rng.uniform(0.0, 0.07) * (xx * math.cos(phi) + yy * math.sin(phi))
    vignette = rng.uniform(0.0, 0.05) * (xx**2 + yy**2)
    return (grad - vignette).astype(np.float32)


def _metal(rng: np.random.Generator, line: _Line, h: int, w: int, extra_angle: float = 0.0) -> np.ndarray:
    """One patch of the line's metal (grey level map, H x W), with per-image jitter."""
    level = line.brightness + rng.normal(0.0, 0.015)
    contrast = line.contrast * (1.0 + rng.normal(0.0, 0.08))
    angle = line.angle + extra_angle + rng.normal(0.0, 1.5)
    tex = _brushed(rng, h, w, angle, line.scale)
    mottle = 0.012 * _smooth_field(rng, h, w, 5)
    return (level + contrast * tex + mottle + _lighting(rng, h, w)).astype(np.float32)


def _colourise(grey: np.ndarray, gains: np.ndarray, line: _Line) -> np.ndarray:
    if not line.colour:
        return grey[:, :, None]
    return grey[:, :, None] * gains.reshape(1, 1, 3).astype(np.float32)


def _white_balance(rng: np.random.Generator, line: _Line) -> np.ndarray:
    return (line.tint * (1.0 + rng.normal(0.0, 0.008, 3))).astype(np.float32)


def _good_surface(rng: np.random.Generator, line: _Line) -> tuple[np.ndarray, np.ndarray]:
    """A flat metal surface filling the frame; room for defects = distance to the border."""
    n = line.size
    img = _colourise(_metal(rng, line, n, n), _white_balance(rng, line), line)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    room = np.minimum.reduce([xx, yy, n - 1 - xx, n - 1 - yy])
    return img, room


def _part_sdf(line: _Line, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Signed distance (px, > 0 inside) of this image's part, and its rotation in degrees."""
    n, s = line.size, line.size / 256.0
    cx = n / 2.0 + np.clip(rng.normal(0.0, 0.015 * n), -0.04 * n, 0.04 * n)
    cy = n / 2.0 + np.clip(rng.normal(0.0, 0.015 * n), -0.04 * n, 0.04 * n)
    rot = float(np.clip(rng.normal(0.0, 3.0), -8.0, 8.0))
    zoom = 1.0 + float(np.clip(rng.normal(0.0, 0.01), -0.03, 0.03))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if line.shape == "washer":
        r = np.hypot(dx, dy)
        sdf = np.minimum(0.37 * n * zoom - r, r - 0.13 * n * zoom)
    else:
        t = math.radians(rot)
        u = dx * math.cos(t) + dy * math.sin(t)
        v = -dx * math.sin(t) + dy * math.cos(t)
        hx, hy, rr = 0.39 * n * zoom, 0.28 * n * zoom, 18.0 * s
        qx, qy = np.abs(u) - (hx - rr), np.abs(v) - (hy - rr)
        outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0) - rr
        hole = np.hypot(u - 0.2 * n * zoom, v) - 0.07 * n * zoom  # mounting hole off centre
        sdf = np.minimum(-outside, hole)
    return sdf.astype(np.float32), rot


def _good_part(rng: np.random.Generator, line: _Line) -> tuple[np.ndarray, np.ndarray]:
    """A washer or plate on a darker belt, with a bevelled edge and a soft shadow."""
    n, s = line.size, line.scale
    sdf, rot = _part_sdf(line, rng)
    alpha = np.clip(sdf + 0.5, 0.0, 1.0)  # 1-px anti-aliased edge
    face = _metal(rng, line, n, n, extra_angle=rot)
    gy, gx = np.gradient(sdf)
    facing = gx * math.cos(line.light) + gy * math.sin(line.light)  # edge normal towards the light
    bevel_w = max(1.5, 3.0 * s)
    face += 0.12 * facing * np.clip(1.0 - sdf / bevel_w, 0.0, 1.0)
    belt = line.background + 0.012 * cv2.GaussianBlur(rng.standard_normal((n, n)).astype(np.float32), (0, 0), 1.5)
    belt += 0.01 * _smooth_field(rng, n, n, 4) + 0.5 * _lighting(rng, n, n)
    shift = np.float32([[1, 0, 2.0 * s], [0, 1, 3.0 * s]])
    shadow = cv2.warpAffine(alpha, shift, (n, n), borderMode=cv2.BORDER_CONSTANT)
    belt *= 1.0 - 0.4 * cv2.GaussianBlur(shadow, (0, 0), max(1.0, 3.0 * s))
    wb = _white_balance(rng, line)
    belt_rgb = _colourise(belt, np.array([0.95, 1.0, 1.08], np.float32), line)
    img = alpha[:, :, None] * _colourise(face, wb, line) + (1.0 - alpha[:, :, None]) * belt_rgb
    return img.astype(np.float32), sdf - max(2.0, bevel_w)  # defects stay off the bevel


def _good(rng: np.random.Generator, line: _Line) -> tuple[np.ndarray, np.ndarray]:
    return _good_surface(rng, line) if line.kind == "surface" else _good_part(rng, line)


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal field; scaled per pixel by ``_noise_sigma`` (read + shot noise)."""
    return rng.standard_normal(shape).astype(np.float32)


def _noise_sigma(img: np.ndarray) -> np.ndarray:
    return np.sqrt(0.006**2 + 0.0002 * np.clip(img, 0.0, 1.0))


def _quantise(img: np.ndarray, unit_noise: np.ndarray) -> np.ndarray:
    noisy = img + unit_noise * _noise_sigma(img)
    return np.rint(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------- defects


# A defect draws (target image, region it may change, polarity) on a clean image.
_Drawn = tuple[np.ndarray, np.ndarray, float]
DefectFn = Callable[[np.ndarray, np.ndarray, np.random.Generator, _Line], _Drawn]


def _pick_centre(room: np.ndarray, need: float, rng: np.random.Generator) -> tuple[float, float]:
    """A random pixel with at least ``need`` px of room (the roomiest one if none has)."""
    ok = np.flatnonzero(room >= need)
    idx = int(rng.choice(ok)) if ok.size else int(np.argmax(room))
    y, x = divmod(idx, room.shape[1])
    return float(x), float(y)


def _draw(shape: tuple[int, int], paths: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
    """Rasterise polylines ((N, 2) float x/y points, thickness) into a bool mask."""
    canvas = np.zeros(shape, np.uint8)
    for pts, thickness in paths:
        fixed = np.rint(pts * 16.0).astype(np.int32).reshape(-1, 1, 2)  # 4 bits of sub-pixel precision
        cv2.polylines(canvas, [fixed], False, 255, thickness=thickness, lineType=cv2.LINE_8, shift=4)
    return canvas > 0


def _variation(rng: np.random.Generator, n: int, low: float) -> np.ndarray:
    """A smooth field in [low, 1]: a defect's strength wanders along it."""
    f = _smooth_field(rng, n, n, 6)
    return (low + (1.0 - low) / (1.0 + np.exp(-1.5 * f))).astype(np.float32)


def _scratch(clean: np.ndarray, room: np.ndarray, rng: np.random.Generator, line: _Line) -> _Drawn:
    """A thin straight or gently curved line, bright (tool mark) or dark (groove)."""
    n, s = line.size, line.scale
    length = rng.uniform(0.15, 0.5) * n
    cx, cy = _pick_centre(room, 0.12 * n, rng)
    theta = rng.uniform(0.0, math.pi)
    d = np.array([math.cos(theta), math.sin(theta)])
    perp = np.array([-d[1], d[0]])
    bend = rng.normal(0.0, 0.12) * length
    t = np.linspace(0.0, 1.0, max(8, int(length)))[:, None]
    p0 = np.array([cx, cy]) - d * length / 2
    p2 = np.array([cx, cy]) + d * length / 2
    p1 = np.array([cx, cy]) + perp * bend
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # quadratic Bezier
    thickness = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2])) if s >= 0.75 else 1
    region = _draw(room.shape, [(pts, thickness)])
    sign = 1.0 if rng.random() < 0.6 else -1.0
    amp = rng.uniform(0.07, 0.25)
    target = clean + (sign * amp * _variation(rng, n, 0.55))[:, :, None]
    return target, region, sign


def _crack(clean: np.ndarray, room: np.ndarray, rng: np.random.Generator, line: _Line) -> _Drawn:
    """A dark, jagged, branching line: a random walk with kinks and 1-3 side branches."""
    n, s = line.size, line.scale
    step = max(1.0, 2.0 * s)

    def walk(x: float, y: float, heading: float, length: float) -> tuple[np.ndarray, np.ndarray]:
        pts, heads, course = [(x, y)], [heading], heading
        for _ in range(max(3, int(length / step))):
            kink = rng.normal(0.0, 0.7) if rng.random() < 0.1 else 0.0
            heading += 0.15 * (course - heading) + rng.normal(0.0, 0.22) + kink  # jagged, yet keeps its course
            x, y = x + step * math.cos(heading), y + step * math.sin(heading)
            pts.append((x, y))
            heads.append(heading)
        return np.array(pts), np.array(heads)

    cx, cy = _pick_centre(room, 0.15 * n, rng)
    length = rng.uniform(0.2, 0.45) * n
    heading = rng.uniform(0.0, 2.0 * math.pi)
    # walk both ways from the centre so the crack is centred where there is room
    fwd, fh = walk(cx, cy, heading, length / 2)
    back, _ = walk(cx, cy, heading + math.pi, length / 2)
    main = np.concatenate([back[::-1], fwd[1:]])
    heads = np.concatenate([np.full(len(back) - 1, heading), fh])
    paths = [(main, 2 if s >= 0.75 and rng.random() < 0.5 else 1)]
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(len(main) // 5, max(len(main) // 5 + 1, 4 * len(main) // 5)))
        side = rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 0.9)
        branch, _ = walk(*main[i], heads[min(i, len(heads) - 1)] + side, rng.uniform(0.25, 0.6) * length / 2)
        paths.append((branch, 1))
    region = _draw(room.shape, paths)
    k = rng.uniform(0.25, 0.6)
    target = clean * (1.0 - k * _variation(rng, n, 0.6))[:, :, None]
    return target, region, -1.0


def _irregular_disc(
    n: int, cx: float, cy: float, radius: float, rng: np.random.Generator, wobble: float
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from (cx, cy) normalised by a wobbly radius (<= 1 inside), and the raw angle."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    ang = np.arctan2(dy, dx)
    r_eff = np.ones_like(ang)
    for k in (2, 3, 4):
        r_eff += rng.uniform(0.0, wobble) * np.cos(k * ang + rng.uniform(0.0, 2.0 * math.pi))
    return np.hypot(dx, dy) / (radius * r_eff), ang


def _spot(clean: np.ndarray, room: np.ndarray, rng: np.random.Generator, line: _Line) -> _Drawn:
    """A small dark or bright blob, 3-12 px across at 256 px, deepest in the middle."""
    n, s = line.size, max(line.scale, 0.5)
    radius = max(1.0, rng.uniform(1.5, 6.0) * s)
    cx, cy = _pick_centre(room, radius * 1.5 + 2.0, rng)
    rel, _ = _irregular_disc(n, cx, cy, radius, rng, 0.12)
    region = rel <= 1.0
    sign = 1.0 if rng.random() < 0.35 else -1.0
    amp = rng.uniform(0.08, 0.3)
    profile = 1.0 - 0.5 * np.clip(rel, 0.0, 1.0) ** 2
    target = clean + (sign * amp * profile)[:, :, None]
    return target, region, sign


def _hole(clean: np.ndarray, room: np.ndarray, rng: np.random.Generator, line: _Line) -> _Drawn:
    """A dark round hole, its wall lit on one side, ringed by a raised (bright) or worn rim."""
    n, s = line.size, max(line.scale, 0.5)
    radius = rng.uniform(3.0, 10.0) * s
    rim = rng.uniform(1.0, 2.5) * s
    cx, cy = _pick_centre(room, radius + rim + 2.0, rng)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    dist = np.hypot(dx, dy)
    inside = dist <= radius
    region = dist <= radius + rim
    wall = (dx * math.cos(line.light) + dy * math.sin(line.light)) / radius  # the far wall catches light
    depth = rng.uniform(0.02, 0.12) + 0.05 * np.clip(wall, -1.0, 1.0) * (dist / radius) ** 2
    rim_sign = 1.0 if rng.random() < 0.6 else -1.0
    rim_amp = rim_sign * rng.uniform(0.08, 0.2) * (1.0 - 0.5 * np.clip((dist - radius) / rim, 0.0, 1.0))
    grey_clean = clean.mean(axis=2, keepdims=True)
    target = np.where(inside[:, :, None], clean * (depth[:, :, None] / np.maximum(grey_clean, 1e-3)), clean)
    target = np.where((region & ~inside)[:, :, None], clean + rim_amp[:, :, None], target)
    return target, region, -1.0


def _contamination(clean: np.ndarray, room: np.ndarray, rng: np.random.Generator, line: _Line) -> _Drawn:
    """An irregular, smooth-edged stain (oil, coolant, rust) of its own texture and colour."""
    n, s = line.size, line.scale
    radius = rng.uniform(0.06, 0.14) * n
    cx, cy = _pick_centre(room, radius * 0.8, rng)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    t = rng.uniform(0.0, math.pi)
    aspect = rng.uniform(0.55, 1.0)
    u = ((xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)) / radius
    v = (-(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)) / (radius * aspect)
    level = (1.0 - (u**2 + v**2)) + 0.45 * _smooth_field(rng, n, n, int(np.clip(round(n / radius), 4, 20)))
    region = level > 0.0
    edge = np.clip(level / 0.35, 0.0, 1.0)
    alpha = rng.uniform(0.35, 0.8) * edge * edge * (3.0 - 2.0 * edge)  # smoothstep: soft rim
    base = float(clean.mean())
    sign = -1.0 if rng.random() < 0.7 else 1.0
    mottled = cv2.GaussianBlur(rng.standard_normal((n, n)).astype(np.float32), (0, 0), max(1.0, 2.0 * s))
    stain = base + sign * rng.uniform(0.08, 0.2) + 0.04 * mottled / (mottled.std() + 1e-6)
    if line.colour:
        hue = np.array([1.18, 0.92, 0.62]) if rng.random() < 0.5 else np.array([0.88, 0.97, 1.12])  # rust / oil
        stain_rgb = stain[:, :, None] * hue.reshape(1, 1, 3).astype(np.float32)
    else:
        stain_rgb = stain[:, :, None]
    target = (1.0 - alpha[:, :, None]) * clean + alpha[:, :, None] * stain_rgb
    return target, region, sign


_DEFECT_FNS: dict[str, DefectFn] = {
    "scratch": _scratch,
    "crack": _crack,
    "spot": _spot,
    "hole": _hole,
    "contamination": _contamination,
}


def _commit(clean: np.ndarray, target: np.ndarray, region: np.ndarray, sign: float) -> np.ndarray:
    """Apply ``target`` inside ``region`` only, each pixel changed by at least MIN_CHANGE."""
    target = np.clip(target, 0.0, 1.0)
    delta = (target - clean).mean(axis=2)
    weak = region & (np.abs(delta) < MIN_CHANGE)
    if weak.any():
        direction = np.where(np.abs(delta) > 1e-6, np.sign(delta), sign)
        pushed = clean.mean(axis=2) + direction * MIN_CHANGE
        direction = np.where((pushed < 0.0) | (pushed > 1.0), -direction, direction)  # no room: other way
        boost = direction * MIN_CHANGE - delta
        target = np.clip(np.where(weak[:, :, None], target + boost[:, :, None], target), 0.0, 1.0)
    return np.where(region[:, :, None], target, clean).astype(np.float32)


# --------------------------------------------------------------------------- one sample


def _render(line: _Line, key: Sequence[int], defect: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 H x W x C image, bool H x W mask) of one sample; the mask is where it differs from its twin."""
    clean, room = _good(np.random.default_rng([*key, 1]), line)
    noise = _sensor_noise(np.random.default_rng([*key, 2]), clean.shape)
    good = _quantise(clean, noise)
    if defect is None:
        return good, np.zeros(good.shape[:2], bool)
    fn = _DEFECT_FNS[defect]
    for attempt in range(8):  # a region clipped to nothing is redrawn; practically never needed
        rng = np.random.default_rng([*key, 3, _label_code(defect), attempt])
        target, region, sign = fn(clean, room, rng, line)
        region &= room >= 0.0
        if not region.any():
            continue
        bad = _quantise(_commit(clean, target, region, sign), noise)
        mask = (bad != good).any(axis=2)
        if mask.any():
            return bad, mask
    raise RuntimeError(f"could not place a {defect} defect on this {line.kind} after 8 attempts (key {list(key)})")


def _label_code(label: str) -> int:
    return zlib.crc32(label.encode("utf-8"))


def _bbox(mask: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(mask)
    if not ys.size:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


# --------------------------------------------------------------------------- public API


def _check(kind: str, size: int, seed: int, defects: Sequence[str], counts: dict[str, int]) -> None:
    if kind not in KINDS:
        raise InputValidationError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < _MIN_SIZE:
        raise InputValidationError(f"size must be an integer >= {_MIN_SIZE} (pixels), got {size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputValidationError(f"seed must be a non-negative integer, got {seed!r}")
    unknown = [d for d in defects if d not in _DEFECT_FNS]
    if unknown:
        raise InputValidationError(
            f"unknown defect type(s) {', '.join(map(repr, unknown))}; known: {', '.join(DEFECTS)}"
        )
    if len(set(defects)) != len(defects):
        raise InputValidationError(f"defect types repeat: {', '.join(defects)}")
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputValidationError(f"{name} must be a non-negative integer, got {value!r}")


def synthetic_images(
    n: int,
    *,
    kind: Kind = "surface",
    size: int = 256,
    seed: int = 0,
    defect: str | None = None,
    colour: bool = False,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images in memory: float32 (n, H, W, C) in [0, 1] (8-bit levels) and bool masks (n, H, W).

    ``defect=None`` gives good images (empty masks); a defect name puts one defect of that type
    on every image. The same seed with and without a defect gives the same parts, so the pair
    differs exactly inside the masks (what tests and benchmarks of localisation need). The seed
    also fixes the line's look, as in ``write_synthetic_line``: the same seed gives more parts of
    that line (never the written files themselves); ``start`` numbers the parts, so successive
    calls with growing ``start`` give new parts of the same line.
    """
    _check(kind, size, seed, [] if defect is None else [defect], {"n": n})
    line = _make_line(kind, size, seed, colour)
    images = np.empty((n, size, size, line.channels), np.float32)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        img, mask = _render(line, (seed, _IN_MEMORY_STREAM, 0, start + i), defect)
        images[i] = img.astype(np.float32) / 255.0
        masks[i] = mask
    return images, masks


def write_synthetic_line(
    out: str | os.PathLike[str],
    *,
    kind: Kind = "surface",
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_per_defect: int = 8,
    size: int = 256,
    seed: int = 0,
    defects: Sequence[str] = DEFECTS,
    colour: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write one synthetic line as an MVTec AD folder plus ``truth.json``; returns the counts.

    ``out`` must be empty or absent; ``overwrite=True`` replaces an earlier output of this
    generator (recognised by its truth.json) and refuses to delete anything else.
    """
    defects = tuple(defects)
    _check(
        kind,
        size,
        seed,
        defects,
        {"n_train": n_train, "n_test_good": n_test_good, "n_test_per_defect": n_test_per_defect},
    )
    root = Path(out)
    _prepare_out(root, overwrite)
    line = _make_line(kind, size, seed, colour)
    plan: list[tuple[str, str, int]] = [("train", "good", n_train), ("test", "good", n_test_good)]
    plan += [("test", d, n_test_per_defect) for d in defects]
    records: list[dict[str, Any]] = []
    for split_code, (split, label, count) in enumerate(plan):
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        width = max(3, len(str(max(count - 1, 0))))
        for i in range(count):
            stem = f"{i:0{width}d}"
            img, mask = _render(line, (seed, split_code, _label_code(label), i), None if label == "good" else label)
            rel = f"{split}/{label}/{stem}.png"
            _write_png(root / rel, img)
            rec: dict[str, Any] = {
                "path": rel,
                "split": split,
                "label": label,
                "mask": None,
                "bbox": None,
                "defect_pixels": 0,
            }
            if label != "good":
                mask_rel = f"ground_truth/{label}/{stem}_mask.png"
                (root / "ground_truth" / label).mkdir(parents=True, exist_ok=True)
                _write_png(root / mask_rel, mask.astype(np.uint8) * 255)
                rec.update(mask=mask_rel, bbox=_bbox(mask), defect_pixels=int(mask.sum()))
            records.append(rec)
    summary: dict[str, Any] = {
        "train_good": n_train,
        "test_good": n_test_good,
        "test_defects": {d: n_test_per_defect for d in defects},
        "images": len(records),
    }
    truth = {
        "generator": GENERATOR,
        "version": 1,
        "kind": kind,
        "part_shape": line.shape,
        "size": size,
        "colour": colour,
        "seed": seed,
        "bbox_format": "[x0, y0, x1, y1] in pixels, x1 and y1 exclusive",
        "counts": summary,
        "images": records,
    }
    (root / TRUTH_FILE).write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    logger.info(
        "wrote %d synthetic %s images (%d defective) to %s", len(records), kind, len(defects) * n_test_per_defect, root
    )
    return {
        "out": str(root),
        "kind": kind,
        "part_shape": line.shape,
        "size": size,
        "colour": colour,
        "seed": seed,
        **summary,
    }


def _prepare_out(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise InputValidationError(f"output {str(root)!r} exists and is not a folder")
    if not root.exists() or not any(root.iterdir()):
        root.mkdir(parents=True, exist_ok=True)
        return
    truth = root / TRUTH_FILE
    ours = False
    if truth.is_file():
        try:
            ours = json.loads(truth.read_text(encoding="utf-8")).get("generator") == GENERATOR
        except (ValueError, OSError, AttributeError):
            ours = False
    if not overwrite:
        hint = "pass overwrite=True (--overwrite) to replace it" if ours else "choose an empty or new folder"
        raise InputValidationError(f"output folder {str(root)!r} is not empty; {hint}")
    if not ours:
        raise InputValidationError(
            f"output folder {str(root)!r} is not empty and holds no {TRUTH_FILE} of this generator; "
            "refusing to delete it: choose an empty or new folder"
        )
    for name in ("train", "test", "ground_truth"):
        shutil.rmtree(root / name, ignore_errors=True)
    truth.unlink()


def _write_png(path: Path, img: np.ndarray) -> None:
    arr = img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[:, :, ::-1])  # OpenCV writes BGR
    if not cv2.imwrite(str(path), arr, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write {path} (disk full or folder not writable?)")
