"""trillium.core.uncertainty: MC dropout against hand-rolled passes, modes restored, Platt scaling
against a direct minimisation of the log-loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from trillium.core.uncertainty import PlattCalibrator, dropout_only, mc_dropout_head, mc_dropout_predict, sigmoid


def _net(p: float) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(p), nn.Linear(8, 2))


def _warm(net: nn.Module) -> None:
    """Give BatchNorm running statistics unlike a batch's own, so train-mode BatchNorm would show."""
    with torch.no_grad():
        net[1].running_mean.fill_(0.7)
        net[1].running_var.fill_(3.0)


def test_p_zero_gives_zero_std_and_the_eval_prediction_and_modes_come_back() -> None:
    net = _net(0.0)
    _warm(net)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    net.train()
    mean, std = mc_dropout_predict(net, x, n_samples=4, batch_size=2)
    assert all(m.training for m in net.modules())
    assert mean.shape == std.shape == (5, 2) and mean.dtype == np.float32
    assert (std == 0).all()
    net.eval()
    with torch.no_grad():
        want = torch.sigmoid(net(torch.from_numpy(x))).numpy()  # BatchNorm on running stats
    np.testing.assert_allclose(mean, want, rtol=1e-6)
    assert not any(m.training for m in net.modules())


def test_mc_dropout_equals_hand_rolled_passes_with_only_dropout_in_train_mode() -> None:
    net = _net(0.5)
    _warm(net)
    x = torch.randn(6, 4)
    torch.manual_seed(5)
    mean, std = mc_dropout_predict(net, x, n_samples=7, batch_size=64)
    net.eval()
    net[3].train()
    torch.manual_seed(5)
    with torch.no_grad():
        draws = torch.stack([torch.sigmoid(net(x)) for _ in range(7)]).numpy()
    np.testing.assert_allclose(mean, draws.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, draws.std(0), rtol=1e-5, atol=1e-7)
    assert (std > 0).any()
    with pytest.raises(ValueError, match="n_samples"):
        mc_dropout_predict(net, x, n_samples=0)
    empty_mean, empty_std = mc_dropout_predict(net, np.zeros((0, 4), np.float32))
    assert empty_mean.shape == (0, 1) and empty_std.shape == (0, 1)


def test_dropout_only_restores_flags_on_error() -> None:
    net = _net(0.3).eval()
    with pytest.raises(RuntimeError), dropout_only(net):
        assert [m.training for m in net] == [False, False, False, True, False]
        raise RuntimeError
    assert not any(m.training for m in net.modules())


def test_mc_dropout_head_draws_inverted_dropout_masks_from_the_generator() -> None:
    torch.manual_seed(0)
    head = nn.Linear(3, 1)
    feats = torch.randn(4, 3)
    draws = mc_dropout_head(feats, head, 0.25, 5, torch.Generator().manual_seed(9))
    keep = (torch.rand((5, 4, 3), generator=torch.Generator().manual_seed(9)) >= 0.25).float() / 0.75
    with torch.no_grad():
        want = torch.stack([torch.sigmoid(head(feats * keep[s])) for s in range(5)])
    assert draws.shape == (5, 4, 1)
    torch.testing.assert_close(draws.detach(), want)
    same = mc_dropout_head(feats, head, 0.0, 3, link=lambda z: z).detach()
    torch.testing.assert_close(same, head(feats).detach().expand(3, 4, 1))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mc_dropout_head(feats, head, 1.0, 3)


def test_platt_minimises_the_log_loss_and_maps_through_the_sigmoid() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=2000) * 2
    y = (rng.random(2000) < sigmoid(1.5 * z - 0.5)).astype(int)
    cal = PlattCalibrator().fit(z, y)

    def nll(ab: np.ndarray) -> float:
        p = np.clip(sigmoid(ab[0] * z + ab[1]), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    best = minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-12}).x
    np.testing.assert_allclose([cal.a, cal.b], best, atol=2e-3)
    assert abs(cal.a - 1.5) < 0.2 and abs(cal.b + 0.5) < 0.2
    np.testing.assert_allclose(cal(z[:5]), 1 / (1 + np.exp(-(cal.a * z[:5] + cal.b))))
    assert PlattCalibrator(**cal.as_dict()) == cal
    with pytest.raises(ValueError, match="both classes"):
        PlattCalibrator().fit(z[:10], np.zeros(10))
    assert sigmoid(np.array([-1e4, 1e4])).tolist() == pytest.approx([0.0, 1.0])
