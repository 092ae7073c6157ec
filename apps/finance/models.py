"""Pure torch modules for fraud scoring: exportable to ONNX, no training code inside.

Both take the raw feature vector (as ``trillium.finance.features`` computes it) and do their
own normalization in the graph: a signed log for heavy-tailed amounts and counts, then a
standardization whose statistics are buffers set by the trainer. So the runtime, ONNX export
and captum all see the same function of the raw features, and attributions are per raw
feature. They return logits; calibration to probabilities is kept outside (a fitted Platt
scaling), so the same module can be recalibrated without retraining.
"""

from __future__ import annotations

import torch
from torch import nn


class _Normalize(nn.Module):
    """x -> (sign(x) * log1p(|x|) - mean) / std, with mean and std as buffers."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.sign(x) * torch.log1p(torch.abs(x))
        return (z - self.mean) / self.std

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        z = torch.sign(x) * torch.log1p(torch.abs(x))
        self.mean.copy_(z.mean(0))
        std = z.std(0)
        # a feature constant in training (all weekend days, say) keeps scale 1: dividing by a
        # tiny std would blow up the first value that differs (seen: logits of -2000)
        self.std.copy_(torch.where(std < 1e-3, torch.ones_like(std), std))


class FraudMLP(nn.Module):
    """A feed-forward network over one transaction's features; returns (B, 1) logits."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] | list[int] = (128, 64), dropout: float = 0.2) -> None:
        super().__init__()
        self.norm = _Normalize(n_features)
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class FraudSequenceModel(nn.Module):
    """A GRU over the card's previous transactions, joined with the current one.

    Inputs: ``x`` (B, F) the current features and ``seq`` (B, L, S + 1) the previous
    transactions' sequence features, oldest first, with a presence flag last (zeros when
    absent). Returns (B, 1) logits.
    """

    def __init__(self, n_features: int, n_step_features: int | None = None, hidden: int = 16,
                 dropout: float = 0.2) -> None:
        super().__init__()
        n_step = n_features if n_step_features is None else n_step_features
        self.norm = _Normalize(n_features)
        self.step_norm = _Normalize(n_step)
        self.gru = nn.GRU(n_step + 1, hidden, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(n_features + hidden, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 1)
        )

    def forward(self, x: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        present = seq[..., -1:]
        past = self.step_norm(seq[..., :-1]) * present  # absent steps stay exactly zero
        _, h = self.gru(torch.cat([past, present], dim=-1))
        return self.head(torch.cat([self.norm(x), h[-1]], dim=-1))
