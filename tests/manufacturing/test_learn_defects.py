"""Learning from a few labelled real defects beside the synthetic ones: the batch composition,
the mask-free (image label) loss, the seeded learn/threshold split, and that it pays off on a
defect the synthetic generator does not draw."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from trillium.core.cli import app
from trillium.core.errors import InputValidationError
from trillium.manufacturing.detector import DefectDetector
from trillium.manufacturing.lifecycle import _load_line, labelled_defects, learning_split, train_inspector
from trillium.manufacturing.synth import synthetic_images, write_synthetic_line
from trillium.manufacturing.train import (
    NO_MASK,
    TrainConfig,
    _real_batch,
    fit_segmenter,
    focal_dice_loss,
    segmentation_loss,
)


def _nchw(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- the split


def test_learning_split_takes_the_share_of_each_type_and_leaves_every_type_to_the_threshold() -> None:
    types = ["crack"] * 20 + ["hole"] * 8 + ["rare"] * 1
    learn = learning_split(types, 0.75, seed=0)
    picked = [types[i] for i in learn]
    assert picked.count("crack") == 15 and picked.count("hole") == 6 and picked.count("rare") == 0
    assert len(set(learn.tolist())) == len(learn)
    assert np.array_equal(learn, learning_split(types, 0.75, seed=0))  # adopt rebuilds the same split
    assert not np.array_equal(learn, learning_split(types, 0.75, seed=1))
    # Even a share near 1 keeps one image of each type for the threshold.
    almost_all = [types[i] for i in learning_split(types, 0.99, seed=0)]
    assert almost_all.count("crack") == 19 and almost_all.count("hole") == 7
    assert len(learning_split(types, 0.0, seed=0)) == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(InputValidationError, match="learn share"):
            learning_split(types, bad, seed=0)


# --------------------------------------------------------------------------- batches and loss


def test_real_defects_are_cropped_and_flipped_together_with_their_masks() -> None:
    rng = np.random.default_rng(0)
    n, size = 6, 48
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):  # a bright block somewhere in each image: its mask marks exactly it
        top, left = rng.integers(0, size - 12, 2)
        masks[i, 0, top:top + 12, left:left + 8] = 1
    images = 0.2 + 0.6 * masks
    config = TrainConfig(crop=32, flips=True)
    for seed in range(5):
        x, y = _real_batch(images, masks, np.arange(n), np.random.default_rng(seed), config)
        assert x.shape == (n, 1, 32, 32) and y.shape == (n, 1, 32, 32)
        # Gain and bias jitter the brightness, not the geometry: bright pixels are the mask's.
        bright = x > x.flatten(1).mean(1)[:, None, None, None] + 0.05
        assert torch.equal(bright, y > 0.5)


def test_a_defect_without_mask_is_shrunk_to_the_crop_not_cut() -> None:
    size = 48
    image = torch.full((1, 1, size, size), 0.2)
    image[0, 0, 40:46, 2:8] = 1.0  # in a corner that most crops would miss
    weak = torch.full((1, 1, size, size), NO_MASK)
    x, y = _real_batch(image, weak, np.array([0]), np.random.default_rng(0), TrainConfig(crop=24, flips=False))
    assert x.shape == (1, 1, 24, 24) and bool((y == NO_MASK).all())
    assert float(x.max()) > 0.6  # the defect is still in view


def test_image_label_loss_pulls_up_only_the_strongest_pixels() -> None:
    logits = torch.full((2, 1, 20, 20), -4.0)
    logits[1, 0, 3, 3] = 2.0
    logits.requires_grad_(True)
    target = torch.full((2, 1, 20, 20), NO_MASK)
    loss = segmentation_loss(logits, target)
    loss.backward()
    k = round(0.01 * 400)  # IMAGE_LABEL_TOP of 400 pixels
    expected = F.binary_cross_entropy_with_logits(
        torch.stack([logits[0].flatten().topk(k).values.mean(), logits[1].flatten().topk(k).values.mean()]),
        torch.ones(2))
    assert torch.isclose(loss, expected)
    assert int((logits.grad != 0).sum()) == 2 * k  # no other pixel is told anything
    # With masks, the loss is the focal + Dice of the synthetic defects; rows mix.
    mask = torch.zeros(2, 1, 20, 20)
    mask[0, 0, :4, :4] = 1
    plain = logits.detach()
    assert torch.isclose(segmentation_loss(plain, mask), focal_dice_loss(plain, mask))
    mixed = torch.cat([mask[:1], target[:1]])
    want = focal_dice_loss(plain[:1], mask[:1]) + F.binary_cross_entropy_with_logits(
        plain[1].flatten().topk(k).values.mean()[None], torch.ones(1))
    assert torch.isclose(segmentation_loss(plain, mixed), want)


def test_real_defects_must_match_the_good_images() -> None:
    from trillium.manufacturing.models import AnomalySegmenter

    good = torch.rand(4, 1, 32, 32)
    with pytest.raises(ValueError, match="real defects must be"):
        fit_segmenter(AnomalySegmenter(), good, TrainConfig(steps=1), real_defects=torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="masks must be"):
        fit_segmenter(AnomalySegmenter(), good, TrainConfig(steps=1), real_defects=torch.rand(2, 1, 32, 32),
                      real_masks=torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="real_defect_fraction"):
        TrainConfig(real_defect_fraction=1.0)
    # Defects given but never drawn into a batch would be silently ignored: refused instead.
    with pytest.raises(ValueError, match="none would join a batch"):
        fit_segmenter(AnomalySegmenter(), good, TrainConfig(steps=1, real_defect_fraction=0.0),
                      real_defects=torch.rand(2, 1, 32, 32))


# --------------------------------------------------------------------------- it pays off


def _stripes(images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A defect the synthetic generator never draws: a faint, regular grating (a roller mark)
    over a rectangle. Returns the images with it and its masks (N, 1, H, W)."""
    n, _, h, w = images.shape
    out, masks = images.copy(), np.zeros((n, 1, h, w), np.float32)
    for i in range(n):
        top, left = rng.integers(4, h // 2, 2)
        rows, cols = slice(top, top + h // 3), slice(left, left + w // 3)
        grating = 0.03 * np.sign(np.sin(np.arange(w)[cols] * np.pi / 2))[None, :]
        out[i, 0, rows, cols] = np.clip(out[i, 0, rows, cols] + grating, 0, 1)
        masks[i, 0, rows, cols] = 1
    return out, masks


@pytest.fixture(scope="module")
def grating_line(one_thread: None) -> dict[str, np.ndarray]:
    good = _nchw(synthetic_images(40, size=64, seed=0)[0])
    test_good = _nchw(synthetic_images(20, size=64, seed=0, start=500)[0])
    labelled, labelled_masks = _stripes(_nchw(synthetic_images(8, size=64, seed=0, start=700)[0]),
                                        np.random.default_rng(1))
    defects, masks = _stripes(_nchw(synthetic_images(20, size=64, seed=0, start=900)[0]), np.random.default_rng(2))
    return {"good": good, "labelled": labelled, "labelled_masks": labelled_masks,
            "test": np.concatenate([test_good, defects]),
            "labels": np.r_[np.zeros(20, bool), np.ones(20, bool)],
            "masks": np.concatenate([np.zeros_like(masks), masks])}


def _figures(det: DefectDetector, data: dict[str, np.ndarray]) -> tuple[float, float]:
    result = det.predict(data["test"])
    return (float(roc_auc_score(data["labels"], result.scores)),
            float(roc_auc_score(data["masks"].ravel() > 0, result.maps.ravel())))


def test_eight_labelled_examples_teach_a_defect_the_synthetic_ones_do_not(
        grating_line: dict[str, np.ndarray]) -> None:
    settings = {"size": 64, "steps": 150, "batch_size": 8, "seed": 0, "real_defect_fraction": 0.25}
    unsupervised = DefectDetector(**settings).fit(grating_line["good"])
    with_masks = DefectDetector(**settings).fit(grating_line["good"], learn_defects=grating_line["labelled"],
                                                learn_masks=grating_line["labelled_masks"])
    labels_only = DefectDetector(**settings).fit(grating_line["good"], learn_defects=grating_line["labelled"])
    u, m, lab = _figures(unsupervised, grating_line), _figures(with_masks, grating_line), _figures(
        labels_only, grating_line)
    assert with_masks.n_learnt_defects_ == 8 and unsupervised.n_learnt_defects_ == 0
    # Pixel masks teach the grating: held-out images of it are found and outlined.
    # (Measured: synthetic defects only 0.55 image / 0.65 pixel AUROC; with masks 1.0 / 0.995.)
    assert m[0] > 0.95 and m[0] > u[0] + 0.2, (m, u)
    assert m[1] > 0.95 and m[1] > u[1] + 0.2, (m, u)
    # Image labels alone teach that it is a defect (1.0), if less well where it lies (0.89).
    assert lab[0] > 0.95 and lab[0] > u[0] + 0.2, (lab, u)
    assert lab[1] > u[1] + 0.1, (lab, u)


# --------------------------------------------------------------------------- the product path


def test_train_with_learn_share_sets_the_threshold_on_the_other_defects_only(
        one_thread: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRILLIUM_HOME", str(tmp_path / "home"))
    data = tmp_path / "line"
    write_synthetic_line(data, kind="surface", n_train=12, n_test_good=4, n_test_per_defect=6, size=64, seed=0,
                         defects=("hole", "scratch"))
    kwargs = {"size": 64, "steps": 3, "batch_size": 4, "shots": 5, "autotune": False}
    plain = train_inspector(data, **kwargs)
    learnt = train_inspector(data, learn_share=0.6, **kwargs)
    # 5 labelled per type: 3 learnt, 2 set the threshold; the classifier still gets all 10.
    assert len(plain.inspector.detector.validation_scores_["defect"]) == 10
    assert len(learnt.inspector.detector.validation_scores_["defect"]) == 4
    assert learnt.inspector.classifier.n_per_type_ == {"hole": 5, "scratch": 5}
    assert learnt.record.metrics["n_learnt_defects"] == 6
    # The CLI's adopt rebuilds the split from --learn-share and calibrates on the same four.
    weights = Path(learnt.record.directory) / "weights.safetensors"
    out = tmp_path / "adopt.json"
    result = CliRunner().invoke(app, ["manufacturing", "adopt", "--weights", str(weights), "--data", str(data),
                                      "--size", "64", "--shots", "5", "--learn-share", "0.6", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["threshold"] == pytest.approx(learnt.inspector.threshold)
    # Learning from defects without any labelled ones is refused with what to give.
    with pytest.raises(InputValidationError, match="--defects or --shots"):
        train_inspector(data, size=64, steps=2, learn_share=0.5, autotune=False)
    with pytest.raises(InputValidationError, match="learn share"):
        train_inspector(tmp_path / "not-read", size=64, steps=2, shots=5, learn_share=1.5, autotune=False)


def test_a_labelled_folder_brings_its_own_masks_and_a_bad_one_is_set_aside(
        one_thread: None, tmp_path: Path) -> None:
    line = tmp_path / "line"
    write_synthetic_line(line, kind="surface", n_train=8, n_test_good=2, n_test_per_defect=4, size=64, seed=0,
                         defects=("hole", "scratch"))
    labelled = tmp_path / "labelled"
    for kind in ("hole", "scratch"):
        shutil.copytree(line / "test" / kind, labelled / kind)
    # Holes come with masks (MVTec layout under ground_truth/), scratches without; one mask is corrupt.
    shutil.copytree(line / "ground_truth" / "hole", labelled / "ground_truth" / "hole")
    broken = min((labelled / "ground_truth" / "hole").iterdir())
    broken.write_bytes(b"not a png")
    found = labelled_defects(labelled)
    assert [t for _, t, _ in found] == ["hole"] * 4 + ["scratch"] * 4  # ground_truth/ is not a defect type
    assert [m is not None for _, _, m in found] == [True] * 4 + [False] * 4

    data, _ = _load_line(line, 64, 1, labelled, None, 0, learn_share=0.5)
    assert data.masks is not None and len(data.learn) == 4
    has_mask = (data.masks != NO_MASK).reshape(8, -1).all(axis=1)
    assert has_mask.tolist() == [False, True, True, True] + [False] * 4  # the corrupt one falls back to its label
    assert set(np.unique(data.masks[1:4]).tolist()) == {0.0, 1.0} and data.masks[1:4].max(axis=(1, 2, 3)).all()
    assert [(p, r.split(":")[0]) for p, r in data.quarantined] == [(broken, "mask")]
    # Training goes on and reports the mask it set aside.
    result = train_inspector(line, size=64, steps=2, batch_size=4, defects=labelled, learn_share=0.5,
                             autotune=False, register=False)
    assert [p for p, _ in result.quarantined] == [broken]
