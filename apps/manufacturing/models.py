"""Pure torch networks of the manufacturing vertical (exportable to ONNX, no training code here).

``AnomalySegmenter`` is a small fully convolutional encoder with a feature-pyramid decoder. It
maps an image to per-pixel anomaly logits. It learns what "normal" looks like from good parts
only: during training, synthetic defects are pasted onto good images (``augment.py``) and the
network learns to segment them, the discriminative recipe of DRAEM/CutPaste without any
pretrained backbone. Its encoder features also serve the few-shot defect-type classifier.

Kept apart, as anomalib does: the module (this file), its training wrapper (``train.py``) and
the anomaly-map post-processing (``anomaly_map.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class AnomalySegmenter(nn.Module):
    """Image (B, C, H, W) in [0, 1] -> anomaly logits (B, 1, H, W).

    Encoder: four stages at strides 2, 4, 8, 16 (two 3x3 convs each; the last stage dilated, so
    that large shading defects are seen with their surroundings). Decoder: 1x1 laterals summed
    top-down (FPN), one 3x3 conv, logits at stride 2, bilinear upsampling to the input size.
    ``mean``/``std`` are buffers set from the training images so callers pass raw [0, 1] pixels.

    Args:
        in_channels: 1 for grey, 3 for colour.
        width: channels of the first stage; later stages use 2x, 4x, 6x.
        decoder_channels: channels of the pyramid.
        norm: ``"dataset"`` standardises with the training set's mean/std; ``"image"`` with each
            image's own, so that a part photographed brighter or darker is not itself an anomaly.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, decoder_channels: int = 32,
                 norm: str = "dataset") -> None:
        super().__init__()
        if norm not in ("dataset", "image"):
            raise ValueError(f"norm must be 'dataset' or 'image', got {norm!r}")
        self.norm = norm
        w = [width, width * 2, width * 4, width * 6]
        self.in_channels = in_channels
        self.register_buffer("mean", torch.full((1, in_channels, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, in_channels, 1, 1), 0.25))
        self.stage1 = nn.Sequential(_conv(in_channels, w[0], 2), _conv(w[0], w[0]))
        self.stage2 = nn.Sequential(_conv(w[0], w[1], 2), _conv(w[1], w[1]))
        self.stage3 = nn.Sequential(_conv(w[1], w[2], 2), _conv(w[2], w[2]))
        self.stage4 = nn.Sequential(_conv(w[2], w[3], 2), _conv(w[3], w[3], dilation=2), _conv(w[3], w[3], dilation=4))
        d = decoder_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, d, 1) for c in w)
        self.smooth = _conv(d, d)
        self.head = nn.Conv2d(d, 1, 1)
        self.feature_channels = w[2] + w[3]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four encoder stages' features (strides 2, 4, 8, 16)."""
        if self.norm == "image":
            mu = x.mean(dim=(1, 2, 3), keepdim=True)
            sd = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
            x = (x - mu) / sd
        else:
            x = (x - self.mean) / self.std
        f1 = self.stage1(x)
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        return [f1, f2, f3, f4]

    def decode(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        y = self.lateral[3](feats[3])
        for level in (2, 1, 0):
            lat = self.lateral[level](feats[level])
            y = lat + F.interpolate(y, size=lat.shape[-2:], mode="bilinear", align_corners=False)
        y = self.head(self.smooth(y))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), (x.shape[-2], x.shape[-1]))

    def embed(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """A descriptor of each image (B, feature_channels) for defect-type classification.

        The deep features (strides 8 and 16) are pooled with the anomaly map as weights when
        ``weight`` (B, 1, H, W) is given, so that the descriptor describes the defect rather than
        the whole part; without it, plain average pooling.
        """
        feats = self.encode(x)
        pooled = []
        for f in feats[2:]:
            if weight is None:
                pooled.append(f.mean(dim=(2, 3)))
            else:
                w = F.adaptive_avg_pool2d(weight, f.shape[-2:])
                w = w / w.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
                pooled.append((f * w).sum(dim=(2, 3)))
        return torch.cat(pooled, dim=1)
