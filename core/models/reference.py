"""Reference networks the core is benchmarked and tested on.

They are small stand-ins of the domains' models: a tabular MLP (fraud features) and a small
CNN (image patches). Keeping them in the package lets `trillium bench core` and the tests use
the same definitions, and lets the registry rebuild them by name.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


class TabularMLP(nn.Module):
    """A feed-forward scorer over a feature vector (about 100k parameters by default)."""

    def __init__(self, n_features: int = 32, hidden: tuple[int, ...] = (256, 256, 128), n_outputs: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)
        self.n_features = n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """A four-stage convolutional classifier for small image patches (about 100k parameters)."""

    def __init__(self, in_channels: int = 3, n_classes: int = 2, width: int = 16) -> None:
        super().__init__()
        chans = [in_channels, width, width * 2, width * 4, width * 4]
        blocks: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(chans[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
