"""Reasons of a model without trees: captum Integrated Gradients (through trillium.core.explain)
of the torch member's logit, which must add up to the logit's rise over the training-mean baseline."""

from __future__ import annotations

import numpy as np
import torch

from trillium.finance.features import FeatureSpec, batch_features
from trillium.finance.fraud_model import FraudModel
from trillium.finance.simulate import simulate_transactions
from trillium.finance.train import TorchTrainSettings


def test_mlp_contributions_are_integrated_gradients_that_add_up_to_the_logit_gap() -> None:
    frame = simulate_transactions(n_customers=200, n_terminals=400, n_days=20, seed=3)
    spec = FeatureSpec()
    x, y, ts = batch_features(frame, spec), frame["label"].to_numpy(int), frame["timestamp"].to_numpy()
    model = FraudModel(kind="mlp", spec=spec, seed=0, torch_settings=TorchTrainSettings(epochs=1, seed=0))
    model.fit(x, y, order=ts)
    rows = x[np.flatnonzero(y)[:8]]
    contrib, method = model.contributions(rows)
    assert method == "integrated_gradients" and contrib.shape == rows.shape and contrib.dtype == np.float64
    module = model.members_["mlp"].module
    xt = torch.from_numpy(rows.astype(np.float32))
    mean_z = module.norm.mean.detach()
    baseline = (torch.sign(mean_z) * torch.expm1(torch.abs(mean_z))).expand_as(xt)
    with torch.no_grad():
        gap = (module(xt) - module(baseline)).squeeze(-1).numpy()
    # completeness, up to the 32-step quadrature over the ReLU kinks
    np.testing.assert_allclose(contrib.sum(axis=1), gap, atol=0.1)
    np.testing.assert_array_equal(model.contributions(rows)[0], contrib)  # deterministic (eval mode, no dropout)
