"""The look of a synthetic line and its good images: material, lighting, part and sensor.

A "line" is one product seen by one camera: every image shares the line's material, lighting
and geometry (``LineLook``, drawn once from the seed), and each image varies the way real parts
do: a new patch of brushed metal, a slightly different brushing angle, brightness, contrast,
lighting gradient, position and rotation, and sensor noise. So an anomaly detector has to learn
what "normal" looks like; it cannot memorise one image. A "surface" fills the frame with metal;
a "part" is a washer or a plate on a darker belt, with a bevelled edge and a soft shadow.

Images are float32 grey levels in [0, 1] until ``quantise`` adds the sensor noise and rounds
them to 8 bits. ``synth`` renders samples from these pieces and ``synth_defects`` draws defects
on them. numpy and OpenCV only; deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["LineLook", "good_image", "make_line", "quantise", "sensor_noise", "smooth_field"]


@dataclass(frozen=True)
class LineLook:
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


def make_line(kind: str, size: int, seed: int, colour: bool) -> LineLook:
    rng = np.random.default_rng([seed, 0x11E])
    tint = np.ones(3, dtype=np.float32)
    if colour:  # steel is slightly blue, aluminium slightly warm
        tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0.0, 0.025, 3) + np.array([-0.02, 0.0, 0.03])
        tint = (tint / tint.mean()).astype(np.float32)
    return LineLook(
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


def smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
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


def _metal(rng: np.random.Generator, line: LineLook, h: int, w: int, extra_angle: float = 0.0) -> np.ndarray:
    """One patch of the line's metal (grey level map, H x W), with per-image jitter."""
    level = line.brightness + rng.normal(0.0, 0.015)
    contrast = line.contrast * (1.0 + rng.normal(0.0, 0.08))
    angle = line.angle + extra_angle + rng.normal(0.0, 1.5)
    tex = _brushed(rng, h, w, angle, line.scale)
    mottle = 0.012 * smooth_field(rng, h, w, 5)
    return (level + contrast * tex + mottle + _lighting(rng, h, w)).astype(np.float32)


def _colourise(grey: np.ndarray, gains: np.ndarray, line: LineLook) -> np.ndarray:
    if not line.colour:
        return grey[:, :, None]
    return grey[:, :, None] * gains.reshape(1, 1, 3).astype(np.float32)


def _white_balance(rng: np.random.Generator, line: LineLook) -> np.ndarray:
    return (line.tint * (1.0 + rng.normal(0.0, 0.008, 3))).astype(np.float32)


def _good_surface(rng: np.random.Generator, line: LineLook) -> tuple[np.ndarray, np.ndarray]:
    """A flat metal surface filling the frame; room for defects = distance to the border."""
    n = line.size
    img = _colourise(_metal(rng, line, n, n), _white_balance(rng, line), line)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    room = np.minimum.reduce([xx, yy, n - 1 - xx, n - 1 - yy])
    return img, room


def _part_sdf(line: LineLook, rng: np.random.Generator) -> tuple[np.ndarray, float]:
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


def _good_part(rng: np.random.Generator, line: LineLook) -> tuple[np.ndarray, np.ndarray]:
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
    belt += 0.01 * smooth_field(rng, n, n, 4) + 0.5 * _lighting(rng, n, n)
    shift = np.float32([[1, 0, 2.0 * s], [0, 1, 3.0 * s]])
    shadow = cv2.warpAffine(alpha, shift, (n, n), borderMode=cv2.BORDER_CONSTANT)
    belt *= 1.0 - 0.4 * cv2.GaussianBlur(shadow, (0, 0), max(1.0, 3.0 * s))
    wb = _white_balance(rng, line)
    belt_rgb = _colourise(belt, np.array([0.95, 1.0, 1.08], np.float32), line)
    img = alpha[:, :, None] * _colourise(face, wb, line) + (1.0 - alpha[:, :, None]) * belt_rgb
    return img.astype(np.float32), sdf - max(2.0, bevel_w)  # defects stay off the bevel


def good_image(rng: np.random.Generator, line: LineLook) -> tuple[np.ndarray, np.ndarray]:
    return _good_surface(rng, line) if line.kind == "surface" else _good_part(rng, line)


def sensor_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal field; scaled per pixel by ``_noise_sigma`` (read + shot noise)."""
    return rng.standard_normal(shape).astype(np.float32)


def _noise_sigma(img: np.ndarray) -> np.ndarray:
    return np.sqrt(0.006**2 + 0.0002 * np.clip(img, 0.0, 1.0))


def quantise(img: np.ndarray, unit_noise: np.ndarray) -> np.ndarray:
    noisy = img + unit_noise * _noise_sigma(img)
    return np.rint(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8)
