"""NoduleNet3D: a small 3D residual CNN that scores cubic CT patches (lung nodules).

This module holds only the network and inference helpers, so it can be exported (ONNX,
safetensors through the registry) without dragging training code along; the trainer lives in
``trillium.medical.imaging.network_training``. Inputs are expected already normalised by the caller
(the evaluation standardises with the training set's mean and std), which keeps the exported
graph free of dataset-specific constants.

Why this shape: MedMNIST's NoduleMNIST3D patches are only 28³ and the training set has about
1,200 volumes, so a ResNet-50 over-fits and costs minutes per epoch on a CPU. Three stages of
basic residual blocks (width, 2·width, 4·width channels, the last two halving the resolution)
keep about 0.1 M parameters at ``width=8`` and 0.4 M at ``width=16`` while still reaching the
7³ feature map Grad-CAM needs to localise the nodule.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ResidualBlock3d(nn.Module):
    """Two 3x3x3 convolutions with a skip connection (a 1x1x1 projection when shape changes).

    The second BatchNorm starts at zero weight, so each block begins as an identity map: that
    steadies the first epochs of a small network trained from scratch on a small dataset.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm3d(out_channels)
            )
        else:
            self.shortcut = nn.Identity()
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class NoduleNet3D(nn.Module):
    """3D residual classifier: [B, in_channels, D, H, W] -> [B, n_outputs] logits.

    Works on any cubic (or box) patch with sides of at least 16 voxels: 28³ gives a 7³ final
    feature map, 32³ gives 8³. ``last_conv`` is the module whose output is that feature map, the
    layer to hand to captum's ``LayerGradCam``; ``features(x)`` returns the map itself.
    ``blocks_per_stage`` deepens every stage for larger data or a GPU; the default of one block
    keeps CPU training of NoduleMNIST3D to seconds per epoch.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_outputs: int = 1,
        width: int = 16,
        dropout: float = 0.3,
        *,
        blocks_per_stage: int = 1,
    ) -> None:
        super().__init__()
        if width < 1 or blocks_per_stage < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"bad NoduleNet3D config: width={width}, blocks={blocks_per_stage}, dropout={dropout}")
        self.in_channels, self.n_outputs, self.width, self.dropout_p = in_channels, n_outputs, width, dropout
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm3d(width), nn.ReLU(inplace=True)
        )
        self.stage1 = self._stage(width, width, 1, blocks_per_stage)
        self.stage2 = self._stage(width, 2 * width, 2, blocks_per_stage)
        self.stage3 = self._stage(2 * width, 4 * width, 2, blocks_per_stage)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * width, n_outputs)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(cin: int, cout: int, stride: int, n_blocks: int) -> nn.Sequential:
        blocks = [ResidualBlock3d(cin, cout, stride)] + [ResidualBlock3d(cout, cout) for _ in range(n_blocks - 1)]
        return nn.Sequential(*blocks)

    @property
    def last_conv(self) -> nn.Module:
        """The last residual block (its output is the final 3D feature map, for LayerGradCam).

        A property rather than a second registered attribute, so the state dict holds each
        tensor once (safetensors refuses shared tensors).
        """
        return self.stage3[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map [B, 4*width, D/4, H/4, W/4] (rounded up), before pooling."""
        return self.stage3(self.stage2(self.stage1(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3, 4))  # global average pool; exports as ReduceMean
        return self.head(self.dropout(pooled))


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Deterministic logits [B, n_outputs] in eval mode, batched; restores the model's mode."""
    xt, device, was_training = _as_tensor(x), _model_device(model), model.training
    model.eval()
    try:
        with torch.inference_mode():
            outs = [model(xt[i:i + batch_size].to(device, torch.float32)).float().cpu() for i in
                    range(0, len(xt), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs).numpy() if outs else np.zeros((0, getattr(model, "n_outputs", 1)), np.float32)


def predict_proba(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """sigmoid(logits) [B, n_outputs]: the per-output probability of the positive class."""
    return 1.0 / (1.0 + np.exp(-predict_logits(model, x, batch_size)))
