"""Image input adapters: files, folders, MVTec AD datasets and video -> float32 arrays.

Everything downstream (augmentation, models, evaluation) sees one canonical form: float32 in
[0, 1], shape (H, W, C) with C = 1 (grey) or 3 (RGB). The many ways a camera or a dataset
stores pixels (8/16 bit, palette, alpha, BGR from OpenCV) are settled here, once.

Bad input never crashes a batch: ``read_image`` raises ``ImageReadError`` naming the file and
the cause, and ``load_batch`` turns those into a quarantine list so the run goes on.

Pixels are read in their stored order; EXIF orientation is *not* applied, because
ground-truth masks (MVTec AD and the like) are drawn on the stored pixel grid.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from trillium.core.errors import ConfigError, InputValidationError
from trillium.core.untrusted import Limits, limits

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "ImageSample",
    "discover_images",
    "discover_mvtec",
    "is_image_file",
    "iter_video",
    "load_batch",
    "mvtec_split",
    "read_image",
    "read_mask",
    "resize",
    "to_channels",
    "write_png",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = Limits.image_pixels  # TRILLIUM_LIMIT_IMAGE_PIXELS sets another (trillium.core.untrusted)
# OpenCV reads this once, at its first decode: its own decoders then refuse frames past the same limit
# rather than allocating up to 2**30 pixels before our check can see the array.
def _opencv_pixel_limit() -> int:
    try:
        return limits().image_pixels
    except ConfigError:  # a malformed setting is reported where an image is read, not at import
        return Limits.image_pixels


os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(_opencv_pixel_limit()))
GOOD = "good"
SPLITS = ("train", "test")
# ITU-R BT.601 luma: what "grey" means for most industrial cameras and for OpenCV / Pillow.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

VideoSource = str | os.PathLike[str] | int


class ImageReadError(InputValidationError):
    """An image (or video) cannot be read: the message names the file and the cause."""

    def __init__(self, path: str | os.PathLike[str] | int, reason: str, *, what: str = "image") -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read {what} {str(path)!r}: {reason}")


# --------------------------------------------------------------------------- single images


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as float32 (H, W, C) in [0, 1], C = 1 (grey) or 3 (RGB).

    Pillow is tried first (it reports truncation once forced to decode); OpenCV reads what
    Pillow cannot, including 16-bit colour, which Pillow would silently cut to 8 bits. Alpha is
    dropped, palettes are expanded, 16-bit data is divided by 65535. Images above
    ``max_pixels`` are refused before decoding, so a decompression bomb cannot exhaust memory.
    """
    p = Path(path)
    max_pixels = limits().image_pixels if max_pixels is None else max_pixels
    if not p.exists():
        raise ImageReadError(p, "file does not exist")
    if not p.is_file():
        raise ImageReadError(p, "not a regular file (a folder?)")
    if p.stat().st_size == 0:
        raise ImageReadError(p, "file is empty (0 bytes)")
    try:
        arr = _read_with_pillow(p, max_pixels)
    except _PillowCannot as exc:
        logger.debug("Pillow cannot decode %s (%s); trying OpenCV", p, exc)
        arr = _read_with_cv2(p, max_pixels, pillow_reason=str(exc), grey=exc.grey)
    return _normalise(arr, p)


class _PillowCannot(Exception):
    """Pillow does not decode this file (or not faithfully): OpenCV gets a try."""

    def __init__(self, reason: str, *, grey: bool = False) -> None:
        super().__init__(reason)
        self.grey = grey  # the file is grey (+ alpha): keep one channel whatever OpenCV returns


def _read_with_pillow(p: Path, max_pixels: int) -> np.ndarray:
    try:
        im = Image.open(p)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(p, f"image too large for safe decoding ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise _PillowCannot("unrecognised format") from exc
    except PermissionError as exc:
        raise ImageReadError(p, "permission denied") from exc
    except MemoryError:
        raise
    except Exception as exc:  # a broken header may raise anything; OpenCV still gets a try
        raise _PillowCannot(f"{type(exc).__name__}: {exc}") from exc
    with im:
        width, height = im.size
        _check_size(p, height, width, max_pixels)
        raw = _rawmode(im)
        if im.mode in ("RGB", "RGBA", "LA") and ";16" in raw:  # 16-bit colour or grey+alpha
            raise _PillowCannot(f"16-bit {raw} (Pillow reduces it to 8 bits)", grey=raw.startswith("L"))
        try:
            im.load()  # decode now: a truncated or corrupt file fails here, not later
        except MemoryError:
            raise
        except Exception as exc:  # any decoder failure is bad input, never a crash
            raise ImageReadError(p, f"corrupt or truncated image data ({exc})") from exc
        return _pillow_to_array(im, p)


def _rawmode(im: Image.Image) -> str:
    """The stored pixel layout of the first tile, e.g. 'RGB;16B' ('' if unknown)."""
    tile = getattr(im, "tile", None) or []
    if not tile:
        return ""
    args = tile[0][3]
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return ""


def _pillow_to_array(im: Image.Image, p: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"))
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel("L"))
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(p, "32-bit integer pixels outside 0..65535 are not supported")
        return arr.astype(np.uint16)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0):
            raise ImageReadError(p, "floating-point pixels must be finite and within [0, 1]")
        return arr
    if mode == "RGB":
        return np.asarray(im)
    # P, PA, RGBA, RGBX, RGBa, CMYK, YCbCr, LAB, HSV, ...: Pillow knows how to get to RGB.
    return np.asarray(im.convert("RGB"))


def _read_with_cv2(p: Path, max_pixels: int, *, pillow_reason: str, grey: bool = False) -> np.ndarray:
    try:
        arr = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        arr = None
    if arr is None:
        raise ImageReadError(p, f"not a readable image (Pillow: {pillow_reason}; OpenCV could not decode it either)")
    _check_size(p, arr.shape[0], arr.shape[1], max_pixels)
    if grey and arr.ndim == 3:
        return arr[:, :, 0]
    return _from_cv2(arr, p)


def _from_cv2(arr: np.ndarray, source: Path | str | int) -> np.ndarray:
    """OpenCV layout (BGR / BGRA / grey) -> RGB or grey, same dtype."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 2:  # grey + alpha
        return arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return np.ascontiguousarray(arr[:, :, 2::-1])
    raise ImageReadError(source, f"unsupported pixel layout {arr.shape}")


def _check_size(p: Path | str, height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageReadError(p, f"image has zero size ({width}x{height})")
    if height * width > max_pixels:
        raise ImageReadError(
            p,
            f"image is {width}x{height} = {height * width:,} pixels, above the limit of {max_pixels:,} "
            "(a decompression bomb?); TRILLIUM_LIMIT_IMAGE_PIXELS raises it if the file is trusted",
        )


def _normalise(arr: np.ndarray, source: Path | str | int) -> np.ndarray:
    """Any integer/float array (H, W) or (H, W, 3) -> float32 (H, W, C) in [0, 1]."""
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype in (np.float32, np.float64):
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0):
            raise ImageReadError(source, "floating-point pixels must be finite and within [0, 1]")
        out = arr.astype(np.float32)
    else:
        raise ImageReadError(source, f"unsupported pixel type {arr.dtype} (expected 8 or 16 bit)")
    if out.ndim == 2:
        out = out[:, :, None]
    if out.ndim != 3 or out.shape[2] not in (1, 3):
        raise ImageReadError(source, f"unsupported pixel layout {arr.shape}")
    return np.ascontiguousarray(out)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Convert (H, W, 1) <-> (H, W, 3): grey is repeated, colour becomes BT.601 luma.

    A model is trained for one channel count; this lets grey cameras feed colour models and
    the other way round without each caller re-deriving the weights.
    """
    if channels not in (1, 3):
        raise InputValidationError(f"channels must be 1 or 3, got {channels!r}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise InputValidationError(f"expected an image of shape (H, W, 1) or (H, W, 3), got {img.shape}")
    have = img.shape[2]
    if have == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=2)
    grey = img.astype(np.float32, copy=False) @ _LUMA
    return grey[:, :, None].astype(img.dtype, copy=False)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, C) to ``size`` = (H, W), keeping the channel axis.

    INTER_AREA when shrinking (averages, so no aliasing of fine texture or defects) and
    INTER_LINEAR when enlarging (INTER_AREA would be nearest-like there).
    """
    h, w = _check_hw(size)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[:, :, None]
    if img.ndim != 3:
        raise InputValidationError(f"expected an image of shape (H, W, C), got {img.shape}")
    if img.shape[:2] == (h, w):
        return img[:, :, 0] if squeeze else img
    shrinking = h <= img.shape[0] and w <= img.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(img, (w, h), interpolation=interp)
    if out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[:, :, None]
    np.clip(out, 0.0, 1.0, out=out)  # float interpolation can round a hair past 1.0
    return out[:, :, 0] if squeeze else out


def _check_hw(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise InputValidationError(f"size must be (height, width) with positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def read_mask(
    path: str | os.PathLike[str],
    size: tuple[int, int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read a ground-truth mask as bool (H, W): any nonzero pixel (in any channel) is defect.

    Resized with nearest neighbour so a mask stays binary and thin defects are not smeared.
    """
    img = read_image(path, max_pixels=max_pixels)
    mask = (img > 0).any(axis=2)
    if size is not None:
        h, w = _check_hw(size)
        if mask.shape != (h, w):
            mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return mask


# --------------------------------------------------------------------------- folders, MVTec


@dataclass(frozen=True)
class ImageSample:
    """One image of an MVTec-style dataset with its label and (for defects) its mask file."""

    path: Path
    label: str  # "good" or the defect type
    split: str  # "train" or "test"
    mask_path: Path | None = None

    @property
    def is_defect(self) -> bool:
        return self.label != GOOD


def is_image_file(path: Path) -> bool:
    """An image by extension; hidden files (".DS_Store", macOS "._x.png" forks) are not."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def _label_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def discover_mvtec(root: str | os.PathLike[str]) -> list[ImageSample]:
    """List the images of an MVTec AD style folder with labels and mask paths.

    Layout: ``root/train/good/*``, ``root/test/<type>/*`` (``good`` or a defect type),
    ``root/ground_truth/<type>/<stem>_mask.png`` (``<stem>.png`` is accepted too). A defect
    image without a mask gets ``mask_path=None``: pixel metrics skip it, image metrics keep it.
    Order is train before test, ``good`` before defect types, then by name: deterministic.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputValidationError(
            f"MVTec dataset folder {str(base)!r} does not exist or is not a folder "
            "(expected train/good/, test/<type>/ and ground_truth/<type>/ inside)"
        )
    missing = [s for s in SPLITS if not (base / s).is_dir()]
    if missing:
        raise InputValidationError(
            f"{str(base)!r} is not an MVTec AD style folder: no {' or '.join(s + '/' for s in missing)} inside "
            "(expected train/good/*.png, test/<good|defect type>/*.png and ground_truth/<defect type>/*_mask.png)"
        )
    samples: list[ImageSample] = []
    missing_masks = 0
    for split in SPLITS:
        labels = _label_dirs(base / split)
        labels.sort(key=lambda d: (d.name != GOOD, d.name))
        for label_dir in labels:
            label = label_dir.name
            masks = mask_index(base / "ground_truth" / label) if label != GOOD else {}
            for img in _image_files(label_dir):
                mask = None
                if label != GOOD:
                    mask = masks.get(img.stem.lower() + "_mask") or masks.get(img.stem.lower())
                    missing_masks += mask is None
                samples.append(ImageSample(path=img, label=label, split=split, mask_path=mask))
    if not samples:
        raise InputValidationError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {str(base)!r}")
    if missing_masks:
        logger.warning("%s: %d defect image(s) have no ground-truth mask", base, missing_masks)
    return samples


def mask_index(folder: Path) -> dict[str, Path]:
    """Mask files of one defect type by lower-case stem; PNG wins over other formats.
    An image ``<stem>.*`` has its mask under the key ``<stem>_mask`` (MVTec) or ``<stem>``."""
    if not folder.is_dir():
        return {}
    index: dict[str, Path] = {}
    for p in _image_files(folder):
        key = p.stem.lower()
        if key not in index or p.suffix.lower() == ".png":
            index[key] = p
    return index


def mvtec_split(samples: Iterable[ImageSample], split: str) -> list[ImageSample]:
    """The samples of one split ("train" or "test"), in their given order."""
    if split not in SPLITS:
        raise InputValidationError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return [s for s in samples if s.split == split]


def discover_images(root: str | os.PathLike[str]) -> list[Path]:
    """Every image file under ``root``, recursively, sorted (hidden files skipped)."""
    base = Path(root)
    if not base.is_dir():
        raise InputValidationError(f"image folder {str(base)!r} does not exist or is not a folder")
    return sorted(
        p
        for p in base.rglob("*")
        if p.is_file() and is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(base).parts)
    )


# --------------------------------------------------------------------------- batches, video


def load_batch(
    paths: Iterable[str | os.PathLike[str]],
    size: tuple[int, int],
    channels: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Read images into float32 (N, channels, H, W), resized to ``size`` = (H, W).

    Unreadable files are not fatal: they come back as (path, reason) in the second list
    (the quarantine) and the batch holds the others, in input order.
    """
    h, w = _check_hw(size)
    if channels not in (1, 3):
        raise InputValidationError(f"channels must be 1 or 3, got {channels!r}")
    items = [Path(p) for p in paths]
    out = np.empty((len(items), channels, h, w), dtype=np.float32)
    bad: list[tuple[Path, str]] = []
    n = 0
    for p in items:
        try:
            img = read_image(p, max_pixels=max_pixels)
        except ImageReadError as exc:
            logger.warning("quarantined %s: %s", p, exc.reason)
            bad.append((p, exc.reason))
            continue
        out[n] = resize(to_channels(img, channels), (h, w)).transpose(2, 0, 1)
        n += 1
    return out[:n], bad


def _video_source(source: VideoSource) -> int | str:
    if isinstance(source, bool):
        raise InputValidationError(f"video source must be a path, URL or camera index, got {source!r}")
    if isinstance(source, int):
        return source
    text = os.fspath(source)
    return int(text) if text.isdigit() else text  # "0" on a command line means camera 0


def iter_video(
    source: VideoSource,
    *,
    every: int = 1,
    max_frames: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame_index, float32 (H, W, 3) RGB in [0, 1]) from a file, camera index or URL.

    ``every`` keeps one frame in ``every`` (skipped frames are grabbed, not decoded);
    ``max_frames`` caps the frames yielded. The capture is released even when the caller stops
    early, so a camera is never left locked.
    """
    if every < 1:
        raise InputValidationError(f"every must be >= 1, got {every!r}")
    if max_frames is not None and max_frames < 0:
        raise InputValidationError(f"max_frames must be >= 0 or None, got {max_frames!r}")
    src = _video_source(source)
    if isinstance(src, str) and "://" not in src and not Path(src).is_file():
        raise ImageReadError(src, "video file does not exist", what="video")
    cap = cv2.VideoCapture(src)
    try:
        if not cap.isOpened():
            raise ImageReadError(
                src, "cannot open video source (not a video, unsupported codec or no such camera)", what="video"
            )
        index = 0
        yielded = 0
        while max_frames is None or yielded < max_frames:
            if not cap.grab():
                if index == 0:
                    raise ImageReadError(src, "video source opened but no frame could be read", what="video")
                break
            if index % every == 0:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise ImageReadError(src, f"frame {index} could not be decoded", what="video")
                yield index, to_channels(_normalise(_from_cv2(frame, str(src)), str(src)), 3)
                yielded += 1
            index += 1
    finally:
        cap.release()


def write_png(path: str | os.PathLike[str], img: np.ndarray) -> Path:
    """Write a float (H, W, C) image in [0, 1] as an 8-bit PNG (grey or RGB); returns the path."""
    arr = np.clip(np.asarray(img, dtype=np.float32) * 255 + 0.5, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim == 3:
        arr = np.ascontiguousarray(arr[:, :, ::-1])  # OpenCV writes BGR
    p = Path(path)
    if not cv2.imwrite(str(p), arr):
        raise OSError(f"could not write {p} (disk full or folder not writable?)")
    return p
