"""Image adapters on real files: every format and bit depth written to disk and read back."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA, require_shared
from trillium.core.errors import InputValidationError
from trillium.manufacturing.images import (
    ImageReadError,
    ImageSample,
    discover_images,
    discover_mvtec,
    iter_video,
    load_batch,
    mvtec_split,
    read_image,
    read_mask,
    resize,
    to_channels,
)
from trillium.manufacturing.synth import write_synthetic_line

MAGNETIC_TILE = SHARED_DATA / "manufacturing" / "magnetic-tile"
RNG = np.random.default_rng(7)
GREY8 = RNG.integers(0, 256, (12, 10), dtype=np.uint8)
RGB8 = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
GREY16 = RNG.integers(0, 65536, (12, 10), dtype=np.uint16)
RGB16 = RNG.integers(0, 65536, (12, 10, 3), dtype=np.uint16)


def _smooth_rgb(h: int = 32, w: int = 40) -> np.ndarray:
    """A smooth colour image: JPEG keeps it within a few grey levels."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full((h, w), 128)], -1).astype(np.uint8)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_8bit_grey_and_rgb(tmp_path: Path, ext: str) -> None:
    Image.fromarray(GREY8).save(tmp_path / f"g{ext}")
    Image.fromarray(RGB8).save(tmp_path / f"c{ext}")
    grey, rgb = read_image(tmp_path / f"g{ext}"), read_image(tmp_path / f"c{ext}")
    assert grey.dtype == np.float32 and grey.shape == (12, 10, 1)
    assert rgb.dtype == np.float32 and rgb.shape == (12, 10, 3)
    np.testing.assert_allclose(grey[:, :, 0], GREY8 / 255.0, atol=1e-6)
    np.testing.assert_allclose(rgb, RGB8 / 255.0, atol=1e-6)


def test_jpeg_grey_and_rgb(tmp_path: Path) -> None:
    rgb8 = _smooth_rgb()
    Image.fromarray(rgb8).save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(rgb8[:, :, 0]).save(tmp_path / "g.JPEG", quality=95)
    rgb, grey = read_image(tmp_path / "c.jpg"), read_image(tmp_path / "g.JPEG")
    assert rgb.shape == (32, 40, 3) and grey.shape == (32, 40, 1)
    assert np.abs(rgb - rgb8 / 255.0).mean() < 0.01
    assert np.abs(grey[:, :, 0] - rgb8[:, :, 0] / 255.0).mean() < 0.01


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_grey(tmp_path: Path, ext: str) -> None:
    Image.fromarray(GREY16).save(tmp_path / f"g16{ext}")
    img = read_image(tmp_path / f"g16{ext}")
    assert img.shape == (12, 10, 1)
    np.testing.assert_allclose(img[:, :, 0], GREY16 / 65535.0, atol=1e-6)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_rgb_keeps_all_16_bits_and_rgb_order(tmp_path: Path, ext: str) -> None:
    # Pillow would cut 16-bit colour to 8 bits; the OpenCV path must keep every bit (and turn BGR into RGB).
    assert cv2.imwrite(str(tmp_path / f"c16{ext}"), RGB16[:, :, ::-1])
    img = read_image(tmp_path / f"c16{ext}")
    assert img.shape == (12, 10, 3)
    np.testing.assert_allclose(img, RGB16 / 65535.0, atol=1e-6)


def test_16bit_rgba_drops_alpha(tmp_path: Path) -> None:
    alpha = np.full((12, 10, 1), 1000, np.uint16)
    bgra = np.concatenate([RGB16[:, :, ::-1], alpha], axis=2)
    assert cv2.imwrite(str(tmp_path / "c16a.png"), bgra)
    np.testing.assert_allclose(read_image(tmp_path / "c16a.png"), RGB16 / 65535.0, atol=1e-6)


def test_16bit_grey_alpha_stays_grey_and_16_bit(tmp_path: Path) -> None:
    # Neither Pillow (writes 8-bit LA only) nor OpenCV (no 2-channel PNG) writes this: build the PNG by hand.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = np.stack([GREY16, np.full_like(GREY16, 40000)], axis=2).astype(">u2")
    rows = b"".join(b"\0" + row.tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", 10, 12, 16, 4, 0, 0, 0)  # 10x12, 16 bit, colour type 4 = grey + alpha
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    (tmp_path / "ga16.png").write_bytes(png)
    img = read_image(tmp_path / "ga16.png")
    assert img.shape == (12, 10, 1)
    np.testing.assert_allclose(img[:, :, 0], GREY16 / 65535.0, atol=1e-6)


def test_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = np.concatenate([RGB8, np.zeros((12, 10, 1), np.uint8)], axis=2)  # fully transparent: colour still kept
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    la = np.stack([GREY8, np.full_like(GREY8, 77)], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), RGB8 / 255.0, atol=1e-6)
    grey = read_image(tmp_path / "la.png")
    assert grey.shape == (12, 10, 1)
    np.testing.assert_allclose(grey[:, :, 0], GREY8 / 255.0, atol=1e-6)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_palette_becomes_rgb(tmp_path: Path, ext: str) -> None:
    palette = [255, 0, 0, 0, 128, 255, 10, 20, 30] + [0] * (256 * 3 - 9)
    idx = (np.arange(12 * 10).reshape(12, 10) % 3).astype(np.uint8)
    im = Image.fromarray(idx, "L").convert("P")
    im.putpalette(palette)
    im.putdata(idx.ravel().tolist())
    im.save(tmp_path / f"p{ext}")
    img = read_image(tmp_path / f"p{ext}")
    colours = np.array(palette[:9], np.float32).reshape(3, 3) / 255.0
    np.testing.assert_allclose(img, colours[idx], atol=1e-6)


def test_bilevel_image(tmp_path: Path) -> None:
    Image.fromarray(GREY8 > 127).save(tmp_path / "b.png")
    img = read_image(tmp_path / "b.png")
    np.testing.assert_array_equal(img[:, :, 0], (GREY8 > 127).astype(np.float32))


# --------------------------------------------------------------------------- bad files


def _truncated_png(tmp_path: Path) -> Path:
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _truncated_jpeg(tmp_path: Path) -> Path:
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _text_as_png(tmp_path: Path) -> Path:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image\n")
    return bad


def _empty(tmp_path: Path) -> Path:
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    return bad


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.png"


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (_truncated_png, "truncated"),
        (_truncated_jpeg, "truncated"),
        (_text_as_png, "not a readable image"),
        (_empty, "empty"),
        (_missing, "does not exist"),
    ],
)
def test_bad_files_raise_naming_file_and_cause(tmp_path: Path, make, cause: str) -> None:
    bad = make(tmp_path)
    with pytest.raises(ImageReadError, match=rf"cannot read image '.*{re.escape(bad.name)}': .*{cause}") as info:
        read_image(bad)
    assert bad.name in str(info.value)
    assert cause in str(info.value)
    assert isinstance(info.value, InputValidationError)


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(tmp_path)


def test_too_many_pixels_refused_before_decoding(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ImageReadError, match=r"big\.png.*2,000 pixels, above the limit of 1,999"):
        read_image(tmp_path / "big.png", max_pixels=1999)
    assert read_image(tmp_path / "big.png", max_pixels=2000).shape == (40, 50, 1)


# --------------------------------------------------------------------------- conversions


def test_to_channels() -> None:
    grey = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4, 1)
    colour = to_channels(grey, 3)
    assert colour.shape == (3, 4, 3)
    np.testing.assert_array_equal(colour[:, :, 1], grey[:, :, 0])
    assert to_channels(grey, 1) is grey
    prim = np.zeros((1, 3, 3), np.float32)
    prim[0, 0, 0] = prim[0, 1, 1] = prim[0, 2, 2] = 1.0  # pure red, green, blue
    np.testing.assert_allclose(to_channels(prim, 1)[0, :, 0], [0.299, 0.587, 0.114], atol=1e-6)
    np.testing.assert_allclose(to_channels(np.ones((2, 2, 3), np.float32), 1), 1.0, atol=1e-6)
    with pytest.raises(InputValidationError, match="channels must be 1 or 3"):
        to_channels(grey, 2)


def test_resize_area_when_shrinking_linear_when_enlarging() -> None:
    checker = np.indices((8, 8)).sum(axis=0) % 2
    img = checker.astype(np.float32)[:, :, None]
    small = resize(img, (4, 4))
    assert small.shape == (4, 4, 1)
    np.testing.assert_allclose(small, 0.5, atol=1e-6)  # area averaging: no aliasing of the checker
    ramp = np.array([[0.0, 1.0]], np.float32)[:, :, None].repeat(2, axis=0)
    big = resize(ramp, (2, 8))
    assert big.shape == (2, 8, 1)
    assert np.all(np.diff(big[0, :, 0]) >= 0) and 0.0 < big[0, 3, 0] < 1.0  # interpolated, not blocky
    assert resize(np.zeros((5, 6, 3), np.float32), (3, 2)).shape == (3, 2, 3)
    with pytest.raises(InputValidationError, match="size must be"):
        resize(img, (0, 4))


def test_read_mask_any_nonzero_and_nearest_resize(tmp_path: Path) -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 6:12] = 1  # a mask stored as 0/1, not 0/255, still counts
    Image.fromarray(mask).save(tmp_path / "m.png")
    full = read_mask(tmp_path / "m.png")
    assert full.dtype == bool and full.shape == (20, 30) and full.sum() == 30
    half = read_mask(tmp_path / "m.png", (10, 15))
    assert half.dtype == bool and half.shape == (10, 15)
    np.testing.assert_array_equal(half, mask[::2, ::2] > 0)  # nearest neighbour: still binary, no smearing


# --------------------------------------------------------------------------- folders


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("line") / "line"
    write_synthetic_line(root, n_train=4, n_test_good=3, n_test_per_defect=2, size=48, defects=("crack", "hole"))
    return root


def test_discover_mvtec_on_synthetic_line(synth_root: Path) -> None:
    samples = discover_mvtec(synth_root)
    assert len(samples) == 4 + 3 + 2 * 2
    train, test = mvtec_split(samples, "train"), mvtec_split(samples, "test")
    assert [s.label for s in train] == ["good"] * 4
    assert [s.label for s in test] == ["good"] * 3 + ["crack"] * 2 + ["hole"] * 2
    assert samples == train + test  # train first, good first, then by defect type and name
    for s in samples:
        assert s.is_defect == (s.label != "good")
        if s.is_defect:
            assert s.mask_path == synth_root / "ground_truth" / s.label / f"{s.path.stem}_mask.png"
            assert s.mask_path.is_file()
        else:
            assert s.mask_path is None
    assert discover_mvtec(synth_root) == samples  # deterministic


def test_discover_mvtec_odd_files_masks_and_extensions(tmp_path: Path) -> None:
    img = np.zeros((8, 8), np.uint8)
    for rel in [
        "train/good/b.png",
        "train/good/A.JPG",
        "test/good/x.bmp",
        "test/dent/d1.TIF",
        "test/dent/d2.png",
        "test/dent/d3.jpeg",
        "ground_truth/dent/d1_mask.png",
        "ground_truth/dent/d2.png",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / rel)
    (tmp_path / "README.txt").write_text("about this set")
    (tmp_path / "train" / "good" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "train" / "good" / "._b.png").write_bytes(b"\0\1")  # macOS resource fork, not an image
    (tmp_path / "test" / "dent" / "notes.txt").write_text("x")
    samples = discover_mvtec(tmp_path)
    names = [(s.split, s.label, s.path.name) for s in samples]
    assert names == [
        ("train", "good", "A.JPG"),
        ("train", "good", "b.png"),
        ("test", "good", "x.bmp"),
        ("test", "dent", "d1.TIF"),
        ("test", "dent", "d2.png"),
        ("test", "dent", "d3.jpeg"),
    ]
    masks = {s.path.name: s.mask_path for s in samples if s.is_defect}
    assert masks == {
        "d1.TIF": tmp_path / "ground_truth/dent/d1_mask.png",
        "d2.png": tmp_path / "ground_truth/dent/d2.png",
        "d3.jpeg": None,  # no mask: not an error
    }


def test_discover_mvtec_without_train_is_refused(tmp_path: Path) -> None:
    (tmp_path / "test" / "good").mkdir(parents=True)
    with pytest.raises(InputValidationError, match=rf"{re.escape(repr(str(tmp_path)))} is not an MVTec AD style "
                                                   r"folder: no train/ inside") as info:
        discover_mvtec(tmp_path)
    assert str(tmp_path) in str(info.value) and "train/" in str(info.value)
    with pytest.raises(InputValidationError, match="does not exist"):
        discover_mvtec(tmp_path / "nowhere")
    with pytest.raises(InputValidationError, match="split must be"):
        mvtec_split([ImageSample(Path("a.png"), "good", "train", None)], "val")


def test_discover_images_recursive_sorted(tmp_path: Path) -> None:
    for rel in ["b/2.png", "a/1.jpg", "a/deep/3.TIFF", "top.bmp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "a" / "notes.md").write_text("x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "thumb.png").write_bytes(b"x")
    found = discover_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/1.jpg", "a/deep/3.TIFF", "b/2.png", "top.bmp"]


def test_discover_mvtec_magnetic_tile() -> None:
    require_shared(MAGNETIC_TILE, "the Magnetic Tile dataset")
    samples = discover_mvtec(MAGNETIC_TILE)
    counts: dict[tuple[str, str], int] = {}
    for s in samples:
        counts[s.split, s.label] = counts.get((s.split, s.label), 0) + 1
    assert counts == {
        ("train", "good"): 761,
        ("test", "good"): 191,
        ("test", "blowhole"): 115,
        ("test", "break"): 85,
        ("test", "crack"): 57,
        ("test", "fray"): 32,
        ("test", "uneven"): 103,
    }
    defects = [s for s in samples if s.is_defect]
    assert all(s.mask_path is not None and s.mask_path.name == f"{s.path.stem}_mask.png" for s in defects)


# --------------------------------------------------------------------------- batches and video


def test_load_batch_quarantines_bad_files(tmp_path: Path) -> None:
    good1, good2 = tmp_path / "g1.png", tmp_path / "g2.jpg"
    Image.fromarray(RGB8).save(good1)
    Image.fromarray(_smooth_rgb()).save(good2, quality=95)
    bad = _text_as_png(tmp_path)
    batch, quarantine = load_batch([good1, bad, good2, tmp_path / "gone.png"], (16, 20), 1)
    assert batch.dtype == np.float32 and batch.shape == (2, 1, 16, 20)
    assert [p.name for p, _ in quarantine] == ["notes.png", "gone.png"]
    assert "not a readable image" in quarantine[0][1] and "does not exist" in quarantine[1][1]
    expected = resize(to_channels(read_image(good1), 1), (16, 20))[:, :, 0]
    np.testing.assert_allclose(batch[0, 0], expected, atol=1e-6)
    colour, none_bad = load_batch([good1], (12, 10), 3)
    assert colour.shape == (1, 3, 12, 10) and none_bad == []
    np.testing.assert_allclose(colour[0], (RGB8 / 255.0).transpose(2, 0, 1), atol=1e-6)
    empty, _ = load_batch([bad], (8, 8), 3)
    assert empty.shape == (0, 3, 8, 8)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    assert writer.isOpened()
    for i in range(10):
        frame = np.zeros((24, 32, 3), np.uint8)
        frame[:, :, 2] = 200  # BGR: red
        frame[:, :, 1] = i * 20  # green grows with the frame number
        writer.write(frame)
    writer.release()
    return path


def test_iter_video_frames_every_and_max(video: Path) -> None:
    frames = list(iter_video(video))
    assert [i for i, _ in frames] == list(range(10))
    first = frames[0][1]
    assert first.dtype == np.float32 and first.shape == (24, 32, 3)
    assert first[..., 0].mean() > 0.7 and first[..., 2].mean() < 0.05  # RGB order, not BGR
    assert frames[9][1][..., 1].mean() > frames[0][1][..., 1].mean() + 0.5
    assert [i for i, _ in iter_video(video, every=3)] == [0, 3, 6, 9]
    assert [i for i, _ in iter_video(str(video), every=2, max_frames=3)] == [0, 2, 4]


def test_iter_video_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="nothing.avi"):
        next(iter_video(tmp_path / "nothing.avi"))
    fake = tmp_path / "fake.avi"
    fake.write_text("not a video")
    with pytest.raises(ImageReadError, match="fake.avi"):
        next(iter_video(fake))
    with pytest.raises(InputValidationError, match="every must be"):
        next(iter_video(fake, every=0))
