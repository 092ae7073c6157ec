"""How sure a model is: Monte Carlo dropout, and Platt scaling of logits into probabilities.

Why this exists: a score alone does not say whether to trust it. A clinician needs to know
which findings the network is unsure of, a fraud analyst needs probabilities that mean what
they say. These are the same few techniques whatever the field, so they live once here and
every vertical calls them:

- ``mc_dropout_predict``: mean and spread of a network's probabilities over stochastic passes
  with only the dropout layers active (``dropout_only``), every module's mode restored after.
- ``mc_dropout_head``: the same distribution at the cost of one feature pass, for networks
  whose only dropout sits right before the last layer.
- ``PlattCalibrator``: ``sigmoid(a * logit + b)`` fitted on held-out logits, two floats in JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["PlattCalibrator", "dropout_only", "mc_dropout_head", "mc_dropout_predict", "sigmoid"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function on numpy arrays, clipped so that large logits do not overflow."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


# ----------------------------------------------------------------------- Monte Carlo dropout
def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextmanager
def dropout_only(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode except its dropout modules, which run in train mode; every
    module's training flag is put back afterwards, even on error.

    BatchNorm stays on its running statistics, so the spread of the passes reflects the
    model's uncertainty, not the composition of the batch.
    """
    flags = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


def mc_dropout_predict(model: nn.Module, x: np.ndarray | torch.Tensor, n_samples: int = 20, batch_size: int = 64,
                       link: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo dropout: mean and std of ``link(model(x))`` over ``n_samples`` stochastic passes.

    Only the dropout modules run in train mode (``dropout_only``). The std is a cheap
    uncertainty signal (a high std: refer the case to a person). Draws come from torch's global
    generator, so ``torch.manual_seed`` makes the result reproducible. The std is the
    population one (ddof 0). Returns two float32 arrays [B, n_outputs].
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    device = _model_device(model)
    means, stds = [], []
    with dropout_only(model), torch.inference_mode():
        for i in range(0, len(xt), batch_size):
            xb = xt[i:i + batch_size].to(device, torch.float32)
            probs = torch.stack([link(model(xb).float()) for _ in range(n_samples)])
            means.append(probs.mean(0).cpu())
            stds.append(probs.std(0, unbiased=False).cpu())
    if not means:
        empty = np.zeros((0, getattr(model, "n_outputs", 1)), np.float32)
        return empty, empty.copy()
    return torch.cat(means).numpy(), torch.cat(stds).numpy()


def mc_dropout_head(features: torch.Tensor, head: nn.Module, p: float, n_samples: int,
                    generator: torch.Generator | None = None,
                    link: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid) -> torch.Tensor:
    """MC dropout draws ``link(head(dropout(features)))`` [n_samples, B, n_outputs] from one feature pass.

    For networks whose only dropout (probability ``p``) sits right before the last layer
    ``head``: the features [B, F] are computed once and only the dropout masks are drawn per
    sample (inverted dropout: kept units scaled by 1 / (1 - p)), which gives the same
    distribution as full MC dropout at about the cost of one forward pass. The masks come from
    ``generator`` (seeded by the caller for reproducible draws), all at once, in one
    [n_samples, B, F] tensor.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    keep = (torch.rand((n_samples, *features.shape), generator=generator) >= p).float() / (1 - p)
    return link(head(features[None] * keep))


# ----------------------------------------------------------------------- calibration
@dataclass
class PlattCalibrator:
    """p = sigmoid(a * logit + b), fitted by logistic regression on held-out logits.

    Why Platt and not isotonic: with a few hundred positives in a calibration slice, isotonic
    steps overfit; two parameters do not, and they keep the ranking (AUC, AP, precision at k)
    unchanged.
    """

    a: float = 1.0
    b: float = 0.0

    def fit(self, logits: np.ndarray, y: np.ndarray) -> PlattCalibrator:
        from sklearn.linear_model import LogisticRegression

        z = np.asarray(logits, np.float64).reshape(-1, 1)
        if len(np.unique(y)) < 2:
            raise ValueError("calibration needs both classes in the held-out labels")
        lr = LogisticRegression(C=1e4, max_iter=1000).fit(z, np.asarray(y).astype(int))
        self.a, self.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return self

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.a * np.asarray(logits, np.float64) + self.b)

    def as_dict(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b}
