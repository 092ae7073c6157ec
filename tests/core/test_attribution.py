"""trillium.core.explain against closed forms: Integrated Gradients of a linear model is exactly
(x - baseline) * w, Grad-CAM of conv -> global average pool -> linear is ReLU(sum_k w_k/N * A_k)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trillium.core.explain import Attribution, attribution_mode, grad_cam, integrated_gradients, unit_scale


def test_integrated_gradients_of_a_linear_model_is_input_minus_baseline_times_weights() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    base = torch.randn(4, 5, dtype=torch.float64)
    attr = integrated_gradients(lin, x, kind="tabular", baselines=base, target=2, n_steps=8, return_delta=True)
    want = (x - base).numpy() * lin.weight[2].detach().numpy()
    # exact but for captum's quadrature weights, which sum to 1 within float32 rounding
    np.testing.assert_allclose(attr.values, want, rtol=1e-7)
    assert isinstance(attr, Attribution) and attr.method == "integrated_gradients" and attr.kind == "tabular"
    assert attr.target == 2 and attr.n_steps == 8
    np.testing.assert_array_equal(attr.baseline, base.numpy())
    assert attr.delta is not None and attr.delta.shape == (4,) and np.abs(attr.delta).max() < 1e-6
    # completeness: the attributions of a row sum to f(x) - f(baseline)
    with torch.no_grad():
        gap = (lin(x) - lin(base))[:, 2].numpy()
    np.testing.assert_allclose(attr.values.sum(1), gap, rtol=1e-7)


def test_integrated_gradients_of_a_function_with_extra_args_and_scalar_baseline() -> None:
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    scale = torch.tensor([[2.0]], dtype=torch.float64)
    attr = integrated_gradients(lambda a, s: (a @ w) * s[:, 0], x, kind="tabular", baselines=1.0,
                                additional_forward_args=(scale,))
    np.testing.assert_allclose(attr.values, ((x - 1.0) * w * 2.0).numpy(), rtol=1e-7)
    assert attr.baseline == 1.0 and attr.target is None and attr.delta is None


def test_kind_must_match_the_input_rank() -> None:
    lin = nn.Linear(4, 1)
    with pytest.raises(ValueError, match="image input must have 4 axes"):
        integrated_gradients(lin, torch.zeros(2, 4), kind="image")
    with pytest.raises(ValueError, match="kind must be one of"):
        integrated_gradients(lin, torch.zeros(2, 4), kind="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_steps"):
        integrated_gradients(lin, torch.zeros(2, 4), kind="tabular", n_steps=0)


class _CamNet(nn.Module):
    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv = conv(2, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=tuple(range(2, 2 + self.dims))))


@pytest.mark.parametrize(("kind", "shape"), [("image", (1, 2, 6, 5)), ("volume", (1, 2, 4, 5, 6))])
def test_grad_cam_matches_the_closed_form_and_upsamples_to_the_input(kind: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    net = _CamNet(len(shape) - 2)
    x = torch.randn(*shape)
    cam = grad_cam(net, net.conv, x, kind=kind, target=1, upsample=False)  # type: ignore[arg-type]
    with torch.no_grad():
        a = net.conv(x)[0]  # [K, ...]
        n = a[0].numel()
        w = net.head.weight[1] / n  # d logit / d A_k at every position
        want = torch.relu((a * w.view(-1, *[1] * (a.ndim - 1))).sum(0)).numpy()
    assert cam.values.shape == (1, 1, *shape[2:]) and cam.method == "gradcam" and cam.kind == kind
    np.testing.assert_allclose(cam.values[0, 0], want, rtol=1e-5, atol=1e-6)
    up = grad_cam(net, net.conv, x, kind=kind, target=1)  # type: ignore[arg-type]
    assert up.values.shape == (1, 1, *shape[2:]) and up.baseline is None and up.delta is None
    with pytest.raises(ValueError, match="image or a volume"):
        grad_cam(net, net.conv, torch.zeros(1, 4), kind="tabular")


def test_attribution_mode_is_eval_without_parameter_grads_and_puts_everything_back() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.BatchNorm1d(3))
    net.train()
    net[2].weight.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"), attribution_mode(net) as m:
        assert m is net and not any(mod.training for mod in net.modules())
        assert not any(p.requires_grad for p in net.parameters()) and torch.is_grad_enabled()
        raise RuntimeError("boom")
    assert all(mod.training for mod in net.modules())
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, True]


def test_unit_scale_and_heatmap() -> None:
    np.testing.assert_array_equal(unit_scale(np.array([-1.0, 0.0, 2.0, np.nan])), [0.0, 0.0, 1.0, 0.0])
    assert not unit_scale(np.zeros((2, 2))).any() and unit_scale(np.zeros(0)).size == 0
    values = np.zeros((1, 2, 2, 2), np.float32)
    values[0, 0] = [[1.0, -3.0], [0.0, 0.0]]
    values[0, 1] = [[1.0, 0.0], [0.0, 2.0]]
    heat = Attribution(values, "integrated_gradients", "image").heatmap()
    np.testing.assert_allclose(heat, [[2 / 3, 1.0], [0.0, 2 / 3]])
    assert heat.dtype == np.float32
    np.testing.assert_allclose(Attribution(np.array([[1.0, -4.0]]), "x", "tabular").heatmap(), [0.25, 1.0])
