"""One captum wrapper and one attribution type, for tabular, image and volume inputs.

Why this exists: every vertical explains a score by attribution (which features of a
transaction, which pixels of a part, which voxels of a CT patch moved it), and each used to
call captum its own way. Here the calls live once: ``integrated_gradients`` and ``grad_cam``
run captum and return an ``Attribution`` that says what was attributed (the values, the
baseline, the target, the method, captum's convergence delta when asked for, and whether the
input was a table, an image or a volume). ``attribution_mode`` puts a network into the state an
attribution needs and back, and ``unit_scale`` turns a map into a [0, 1] heatmap. The
verticals keep what belongs to their field: which output is explained, the baseline that
means "nothing there", overlays, the mapping back onto the original grid, reason texts.

captum is imported when an attribution is computed, not when this module is imported, so a
scorer that never explains does not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

InputKind = Literal["tabular", "image", "volume"]

#: The input rank each kind expects, batch axis included: [B, F], [B, C, H, W], [B, C, D, H, W].
INPUT_NDIM: dict[str, int] = {"tabular": 2, "image": 4, "volume": 5}
_INTERPOLATE = {"image": "bilinear", "volume": "trilinear"}

__all__ = ["Attribution", "InputKind", "attribution_mode", "grad_cam", "integrated_gradients", "unit_scale"]


@dataclass(frozen=True)
class Attribution:
    """What drove a model's output, for a batch of tabular rows, images or volumes.

    ``values`` has the input's shape ([B, F], [B, C, H, W] or [B, C, D, H, W]) for Integrated
    Gradients; for Grad-CAM it is the class map, one channel, upsampled to the input's spatial
    size when asked. ``baseline`` is the reference input of a path method (None for Grad-CAM),
    ``target`` the output index attributed (None for a single-output forward), ``delta``
    captum's convergence delta per row when it was requested (Integrated Gradients only: the
    attributions of a row should sum to f(x) - f(baseline), and ``delta`` is how far off they
    are), ``n_steps`` the number of integration steps of a path method.
    """

    values: np.ndarray
    method: str
    kind: InputKind
    target: int | None = None
    baseline: np.ndarray | float | None = None
    delta: np.ndarray | None = None
    n_steps: int | None = None

    def heatmap(self, index: int = 0) -> np.ndarray:
        """Row ``index`` as a [0, 1] map over the spatial axes: absolute values summed over
        channels, divided by their maximum (zeros if the map is all zero). Tabular rows come back
        as a [0, 1] vector over the features."""
        v = np.abs(self.values[index])
        if self.kind != "tabular":
            v = v.sum(axis=0)
        return unit_scale(v)


def _check_kind(x: torch.Tensor, kind: str) -> None:
    if kind not in INPUT_NDIM:
        raise ValueError(f"kind must be one of {tuple(INPUT_NDIM)}, got {kind!r}")
    if x.ndim != INPUT_NDIM[kind]:
        raise ValueError(f"a {kind} input must have {INPUT_NDIM[kind]} axes (batch first), got shape {tuple(x.shape)}")


def _numpy(t: Any) -> np.ndarray | float | None:
    if t is None or isinstance(t, (int, float)):
        return t
    return t.detach().cpu().numpy()


def unit_scale(x: np.ndarray) -> np.ndarray:
    """A non-negative float32 map scaled to [0, 1] by its maximum.

    Negative values count as zero; an all-zero (or non-finite) map stays zero rather than NaN.
    """
    x = np.nan_to_num(np.maximum(x, 0.0), nan=0.0, posinf=0.0).astype(np.float32)
    peak = float(x.max()) if x.size else 0.0
    return x / peak if peak > 0 else np.zeros_like(x)


@contextmanager
def attribution_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with its parameters' ``requires_grad`` off, for the duration.

    Eval mode (BatchNorm on running statistics, no dropout) makes the attribution deterministic
    and about the prediction that was reported; only gradients with respect to the input (or a
    layer's output) are needed, so parameter gradients are not tracked. Every module's training
    flag and every parameter's ``requires_grad`` are put back afterwards, even on error:
    explaining a model must not change how it later trains or predicts.
    """
    flags = {m: m.training for m in model.modules()}
    params = list(model.parameters())
    grad_flags = [p.requires_grad for p in params]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield model
    finally:
        for p, flag in zip(params, grad_flags, strict=True):
            p.requires_grad_(flag)
        for m, flag in flags.items():
            m.training = flag


def integrated_gradients(forward: nn.Module | Callable[..., torch.Tensor], x: torch.Tensor, *, kind: InputKind,
                         baselines: torch.Tensor | float | None = None, target: int | None = None,
                         n_steps: int = 32, additional_forward_args: tuple[Any, ...] | None = None,
                         internal_batch_size: int | None = None, return_delta: bool = False) -> Attribution:
    """captum ``IntegratedGradients`` of ``forward``'s output with respect to ``x``.

    ``forward`` is a module or any function of ``x`` (and of ``additional_forward_args``);
    ``target`` picks the output column when the output is [B, K] (None when it is [B]).
    ``baselines`` is the reference input (a tensor like ``x`` or a scalar; None: zeros), which
    is where the field's meaning of "nothing there" goes. The model's modes are left as they are
    (wrap the call in ``attribution_mode`` for eval mode). ``return_delta`` also asks captum for
    the convergence delta, at the cost of one more forward pass of inputs and baselines.
    """
    from captum.attr import IntegratedGradients

    _check_kind(x, kind)
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    out = IntegratedGradients(forward).attribute(
        x, baselines=baselines, target=target, additional_forward_args=additional_forward_args, n_steps=n_steps,
        internal_batch_size=internal_batch_size, return_convergence_delta=return_delta)
    attr, delta = out if return_delta else (out, None)
    return Attribution(values=attr.detach().cpu().numpy(), method="integrated_gradients", kind=kind, target=target,
                       baseline=_numpy(baselines), delta=_numpy(delta), n_steps=n_steps)


def grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, *, kind: InputKind, target: int | None = None,
             upsample: bool = True) -> Attribution:
    """captum ``LayerGradCam`` on ``layer``: the class map of ``target``, ReLU'd, one channel.

    With ``upsample`` the map is interpolated to the input's spatial size (bilinear for images,
    trilinear for volumes), so it overlays the input. The input is cloned with
    ``requires_grad`` on, so the layer's output has a graph back to something even when the
    parameters' gradients are off (``attribution_mode``). Not for tabular inputs: there is no
    spatial map to take.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    _check_kind(x, kind)
    if kind == "tabular":
        raise ValueError("Grad-CAM needs an image or a volume; use integrated_gradients for tabular inputs")
    xin = x.clone().requires_grad_(True)
    cam = torch.relu(LayerGradCam(model, layer).attribute(xin, target=target))
    if upsample:
        cam = LayerAttribution.interpolate(cam, tuple(int(s) for s in x.shape[2:]), interpolate_mode=_INTERPOLATE[kind])
    return Attribution(values=cam.detach().cpu().numpy(), method="gradcam", kind=kind, target=target)
