"""Synthetic inspection data: deterministic, exact masks, realistic variation, MVTec layout."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from trillium.core.errors import InputValidationError
from trillium.manufacturing.images import discover_mvtec, read_image, read_mask
from trillium.manufacturing.synth import TRUTH_FILE, synthetic_images, write_synthetic_line
from trillium.manufacturing.synth_defects import DEFECTS, MIN_CHANGE

SMALL = {"n_train": 3, "n_test_good": 2, "n_test_per_defect": 2, "size": 64}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "surface"
    write_synthetic_line(root, seed=5, **SMALL)
    return root


def test_same_seed_same_bytes_other_seed_other_bytes(line: Path, tmp_path: Path) -> None:
    write_synthetic_line(tmp_path / "again", seed=5, **SMALL)
    write_synthetic_line(tmp_path / "other", seed=6, **SMALL)
    first, again, other = _files(line), _files(tmp_path / "again"), _files(tmp_path / "other")
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[k] != other[k] for k in first if k.startswith(("train/", "test/")))


def test_layout_truth_and_counts_match_files(line: Path) -> None:
    truth = json.loads((line / TRUTH_FILE).read_text())
    assert truth["counts"] == {
        "train_good": 3,
        "test_good": 2,
        "test_defects": {d: 2 for d in DEFECTS},
        "images": 3 + 2 + 2 * len(DEFECTS),
    }
    images = sorted(p.relative_to(line).as_posix() for p in line.glob("t*/*/*.png"))
    masks = sorted(p.relative_to(line).as_posix() for p in line.glob("ground_truth/*/*.png"))
    assert sorted(r["path"] for r in truth["images"]) == images
    assert sorted(r["mask"] for r in truth["images"] if r["mask"]) == masks
    assert len(images) == truth["counts"]["images"] and len(masks) == 2 * len(DEFECTS)
    assert not (line / "ground_truth" / "good").exists()
    for rec in truth["images"]:
        img = cv2.imread(str(line / rec["path"]), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.shape == (64, 64)  # 8-bit grey PNG
        if rec["label"] == "good":
            assert rec["mask"] is None and rec["bbox"] is None and rec["defect_pixels"] == 0
            continue
        raw = cv2.imread(str(line / rec["mask"]), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(raw)) == {0, 255}  # 0/255 masks, never empty
        mask = raw > 0
        ys, xs = np.nonzero(mask)
        assert rec["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert rec["defect_pixels"] == mask.sum()


def test_discover_mvtec_reads_the_line_back(line: Path) -> None:
    samples = discover_mvtec(line)
    assert len(samples) == 3 + 2 + 2 * len(DEFECTS)
    assert {s.label for s in samples if s.is_defect} == set(DEFECTS)
    assert all(s.mask_path is not None and read_mask(s.mask_path).any() for s in samples if s.is_defect)


@pytest.mark.parametrize("kind", ["surface", "part"])
def test_defects_change_exactly_the_mask(kind: str) -> None:
    good, good_masks = synthetic_images(3, kind=kind, size=96, seed=11)
    assert good.dtype == np.float32 and good.shape == (3, 96, 96, 1)
    assert not good_masks.any()
    for defect in DEFECTS:
        bad, masks = synthetic_images(3, kind=kind, size=96, seed=11, defect=defect)
        assert masks.dtype == bool and masks.shape == (3, 96, 96)
        for img, twin, mask in zip(bad, good, masks, strict=True):
            assert mask.any(), defect
            changed = np.abs(img - twin).max(axis=2)
            np.testing.assert_array_equal(changed > 0, mask)  # same part without the defect: differs only there
            assert changed[mask].mean() >= MIN_CHANGE * 0.9, defect  # visible, not one grey level


def test_defect_looks_like_its_kind() -> None:
    def contrast(defect: str) -> np.ndarray:
        bad, masks = synthetic_images(4, size=128, seed=2, defect=defect)
        good, _ = synthetic_images(4, size=128, seed=2)
        return np.array([(b - g)[m].mean() for b, g, m in zip(bad, good, masks, strict=True)])

    assert (contrast("crack") < 0).all()  # cracks and holes are dark
    assert (contrast("hole") < 0).all()
    _, masks = synthetic_images(4, size=128, seed=2, defect="scratch")
    _, blobs = synthetic_images(4, size=128, seed=2, defect="contamination")
    assert masks.sum(axis=(1, 2)).mean() < blobs.sum(axis=(1, 2)).mean()  # scratches are thin, stains are areas


def test_good_images_vary_like_real_parts() -> None:
    imgs, _ = synthetic_images(6, kind="surface", size=96, seed=4)
    means = imgs.mean(axis=(1, 2, 3))
    assert np.ptp(means) > 0.005 and 0.3 < means.min() and means.max() < 0.75  # brightness jitter, same line
    for a in range(6):
        for b in range(a + 1, 6):
            assert np.abs(imgs[a] - imgs[b]).mean() > 0.02  # a new patch of metal each time
    # brushed texture: much smoother along the streaks than across them (for some direction)
    img = imgs[0, :, :, 0].astype(np.float64)
    dx = np.abs(np.diff(img, axis=1)).mean()
    dy = np.abs(np.diff(img, axis=0)).mean()
    assert max(dx, dy) / min(dx, dy) > 1.15


def test_part_on_darker_background_with_jitter() -> None:
    imgs, _ = synthetic_images(4, kind="part", size=96, seed=3)
    corners = np.concatenate([imgs[:, :8, :8], imgs[:, -8:, -8:]], axis=1).mean()
    face = imgs[:, 16:32, 40:56].mean()  # left/right of centre: on the face of both a washer and a plate
    assert corners < face - 0.2
    parts = imgs[:, :, :, 0] > (corners + face) / 2
    for a, b in ((0, 1), (1, 2), (2, 3)):
        assert (parts[a] != parts[b]).sum() > 20  # the part moved or turned: its outline shifts between images


def test_colour_line(tmp_path: Path) -> None:
    write_synthetic_line(
        tmp_path / "c",
        kind="part",
        n_train=1,
        n_test_good=0,
        n_test_per_defect=1,
        size=48,
        defects=("contamination",),
        colour=True,
        seed=1,
    )
    img = read_image(tmp_path / "c" / "test" / "contamination" / "000.png")
    assert img.shape == (48, 48, 3)
    assert np.abs(img[:, :, 0] - img[:, :, 2]).max() > 0.02  # really colour, not grey in three channels
    imgs, _ = synthetic_images(2, kind="surface", size=48, colour=True)
    assert imgs.shape == (2, 48, 48, 3)


def test_bad_arguments_and_output_folders(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match="unknown defect type.*'dent'"):
        write_synthetic_line(tmp_path / "x", defects=("scratch", "dent"))
    with pytest.raises(InputValidationError, match="kind must be"):
        synthetic_images(1, kind="gear")  # type: ignore[arg-type]
    with pytest.raises(InputValidationError, match="size must be"):
        synthetic_images(1, size=8)
    with pytest.raises(InputValidationError, match="n_train"):
        write_synthetic_line(tmp_path / "x", n_train=-1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(InputValidationError, match="not empty"):
        write_synthetic_line(foreign, **SMALL)
    with pytest.raises(InputValidationError, match="refusing to delete"):
        write_synthetic_line(foreign, overwrite=True, **SMALL)
    assert (foreign / "precious.txt").read_text() == "keep me"
    ours = tmp_path / "ours"
    write_synthetic_line(ours, n_train=4, n_test_good=1, n_test_per_defect=1, size=32)
    with pytest.raises(InputValidationError, match="overwrite=True"):
        write_synthetic_line(ours, **SMALL)
    summary = write_synthetic_line(ours, overwrite=True, **SMALL)
    assert summary["train_good"] == 3 and len(list((ours / "train" / "good").iterdir())) == 3  # no stale files
