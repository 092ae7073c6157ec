"""captum explanations of an image's anomaly score, beside the anomaly map.

The anomaly map is the primary heatmap: it is what the verdict is computed from. Integrated
Gradients (from a flat baseline at the image's mean, at input resolution) answers a different
question an engineer asks when a verdict surprises them: which input pixels moved the *score*.
It runs on the eager torch network, never on the fast path.

LayerGradCam was tried on the encoder's last two stages and rejected: the score is a maximum
over the map, so its gradient reaches the features through one location and the class maps
came out noisy and sign-flipping (on holes, inside-versus-outside means of either sign); it is
not offered rather than offered misleading.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trillium.core.explain import attribution_mode, integrated_gradients
from trillium.manufacturing.pipeline import Inspector

METHODS = ("integrated_gradients",)


class _ScoreOnly(nn.Module):
    """The inspection network's image score as a (B, 1) output, which captum attributes."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[1][:, None]


def explain_score(inspector: Inspector, image: np.ndarray, method: str = "integrated_gradients",
                  steps: int = 32) -> np.ndarray:
    """Attribution of the anomaly score to the image (H, W, C) in [0, 1] as a (size, size) map in
    [0, 1] (absolute values, normalised by their maximum; zeros if the score does not move)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    det = inspector.detector
    det._fitted()
    x = torch.from_numpy(inspector.prepare(image))[None]
    baseline = torch.full_like(x, float(x.mean()))
    with attribution_mode(_ScoreOnly(det.net_)) as model:
        attr = integrated_gradients(model, x, kind="image", baselines=baseline, target=0, n_steps=steps)
    return attr.heatmap(0)
