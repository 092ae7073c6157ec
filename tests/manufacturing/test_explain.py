"""captum explanations of the anomaly score: they point at the defect once the model has learned."""

from __future__ import annotations

import numpy as np
import pytest

from trillium.manufacturing.detector import DefectDetector
from trillium.manufacturing.explain import explain_score
from trillium.manufacturing.pipeline import Inspector
from trillium.manufacturing.synth import synthetic_images


@pytest.fixture(scope="module")
def trained(one_thread: None) -> Inspector:
    good, _ = synthetic_images(32, size=96, seed=0)
    x = np.ascontiguousarray(good.transpose(0, 3, 1, 2))
    return Inspector(DefectDetector(size=96, steps=100, batch_size=8, crop=64, seed=0).fit(x))


def test_integrated_gradients_concentrate_on_the_defect(trained: Inspector) -> None:
    holes, masks = synthetic_images(4, size=96, seed=0, defect="hole", start=500)
    ratios = []
    for image, mask in zip(holes, masks, strict=True):
        heat = explain_score(trained, image)
        assert heat.shape == (96, 96) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
        near = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        near[max(0, ys.min() - 6):ys.max() + 7, max(0, xs.min() - 6):xs.max() + 7] = True  # the hole and its rim
        ratios.append(heat[near].mean() / max(heat[~near].mean(), 1e-9))
    # Attribution per pixel is several times higher at the defect than over the rest of the part.
    assert np.median(ratios) > 3, ratios


def test_unknown_method_is_refused(trained: Inspector) -> None:
    image, _ = synthetic_images(1, size=96, seed=0)
    with pytest.raises(ValueError, match="integrated_gradients"):
        explain_score(trained, image[0], "gradcam")
