"""Defects drawn on a clean synthetic image: scratch, crack, spot, hole and contamination.

Each drawer returns the image with the defect (``target``), the region it may change and its
polarity; ``commit_defect`` applies the target inside the region only, so that every defect
pixel changes by at least ``MIN_CHANGE`` before noise (masks are whole regions, and faint
defects stay faint). The contrast of each defect is drawn from a range that includes subtle
ones. ``synth`` adds the same sensor noise to the image with and without the defect and takes
the mask where the two 8-bit images differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from trillium.manufacturing.synth_line import LineLook, smooth_field

__all__ = ["DEFECTS", "DEFECT_DRAWERS", "MIN_CHANGE", "DefectFn", "commit_defect"]

DEFECTS: tuple[str, ...] = ("scratch", "crack", "spot", "hole", "contamination")
# Smallest change (fraction of full scale, ~8 grey levels) of a defect pixel before noise:
# enough to survive 8-bit rounding, small enough that faint defects stay faint.
MIN_CHANGE = 0.03

# A defect draws (target image, region it may change, polarity) on a clean image.
_Drawn = tuple[np.ndarray, np.ndarray, float]
DefectFn = Callable[[np.ndarray, np.ndarray, np.random.Generator, LineLook], _Drawn]


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
    f = smooth_field(rng, n, n, 6)
    return (low + (1.0 - low) / (1.0 + np.exp(-1.5 * f))).astype(np.float32)


def _scratch(clean: np.ndarray, room: np.ndarray, rng: np.random.Generator, line: LineLook) -> _Drawn:
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


def _crack(clean: np.ndarray, room: np.ndarray, rng: np.random.Generator, line: LineLook) -> _Drawn:
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


def _spot(clean: np.ndarray, room: np.ndarray, rng: np.random.Generator, line: LineLook) -> _Drawn:
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


def _hole(clean: np.ndarray, room: np.ndarray, rng: np.random.Generator, line: LineLook) -> _Drawn:
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


def _contamination(clean: np.ndarray, room: np.ndarray, rng: np.random.Generator, line: LineLook) -> _Drawn:
    """An irregular, smooth-edged stain (oil, coolant, rust) of its own texture and colour."""
    n, s = line.size, line.scale
    radius = rng.uniform(0.06, 0.14) * n
    cx, cy = _pick_centre(room, radius * 0.8, rng)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    t = rng.uniform(0.0, math.pi)
    aspect = rng.uniform(0.55, 1.0)
    u = ((xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)) / radius
    v = (-(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)) / (radius * aspect)
    level = (1.0 - (u**2 + v**2)) + 0.45 * smooth_field(rng, n, n, int(np.clip(round(n / radius), 4, 20)))
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


DEFECT_DRAWERS: dict[str, DefectFn] = {
    "scratch": _scratch,
    "crack": _crack,
    "spot": _spot,
    "hole": _hole,
    "contamination": _contamination,
}


def commit_defect(clean: np.ndarray, target: np.ndarray, region: np.ndarray, sign: float) -> np.ndarray:
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
