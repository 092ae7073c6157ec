"""Synthetic inspection images with exact ground truth, for the demo and the tests.

A "line" is one product seen by one camera: every image shares the line's look, and each image
varies the way real parts do (``synth_line``), so an anomaly detector has to learn what "normal"
looks like; it cannot memorise one image.

Defects (scratch, crack, spot, hole, contamination: ``synth_defects``) are drawn on the clean
image and the same sensor noise is added to the image with and without the defect. The mask is
where the two 8-bit images differ, so it covers exactly the changed pixels. Every defect pixel
changes by at least ``MIN_CHANGE`` before noise, so masks are whole regions, and the contrast of
each defect is drawn from a range that includes subtle ones.

Images are written in the MVTec AD layout, which ``images.discover_mvtec`` reads back:
``train/good``, ``test/good``, ``test/<defect>``, ``ground_truth/<defect>/<stem>_mask.png``
(0/255), plus ``truth.json`` with every image's label and defect bounding box.

numpy and OpenCV only; deterministic for a seed (same seed, same bytes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from trillium.core.errors import InputValidationError
from trillium.manufacturing.synth_defects import DEFECT_DRAWERS, DEFECTS, commit_defect
from trillium.manufacturing.synth_line import LineLook, good_image, make_line, quantise, sensor_noise

__all__ = ["KINDS", "TRUTH_FILE", "synthetic_images", "write_synthetic_line"]

logger = logging.getLogger(__name__)

Kind = Literal["surface", "part"]
KINDS: tuple[str, ...] = ("surface", "part")
TRUTH_FILE = "truth.json"
GENERATOR = "trillium.manufacturing.synth"
_MIN_SIZE = 32
_IN_MEMORY_STREAM = 7  # key of synthetic_images, apart from the written splits


# --------------------------------------------------------------------------- one sample


def _render(line: LineLook, key: Sequence[int], defect: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 H x W x C image, bool H x W mask) of one sample; the mask is where it differs from its twin."""
    clean, room = good_image(np.random.default_rng([*key, 1]), line)
    noise = sensor_noise(np.random.default_rng([*key, 2]), clean.shape)
    good = quantise(clean, noise)
    if defect is None:
        return good, np.zeros(good.shape[:2], bool)
    fn = DEFECT_DRAWERS[defect]
    for attempt in range(8):  # a region clipped to nothing is redrawn; practically never needed
        rng = np.random.default_rng([*key, 3, _label_code(defect), attempt])
        target, region, sign = fn(clean, room, rng, line)
        region &= room >= 0.0
        if not region.any():
            continue
        bad = quantise(commit_defect(clean, target, region, sign), noise)
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
    unknown = [d for d in defects if d not in DEFECT_DRAWERS]
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
    line = make_line(kind, size, seed, colour)
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
    line = make_line(kind, size, seed, colour)
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
