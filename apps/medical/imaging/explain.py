"""Where the nodule networks look: captum heatmaps for chest-CT findings, on the CT grid and as PNGs.

Why this exists: a malignancy score alone gives a radiologist nothing to check. A heatmap shows
which part of the 48 mm cube drove the score, so a reader can see at a glance whether the
network looked at the nodule or at a neighbouring vessel, rib or the pleura. Two methods are
offered because they fail differently: Grad-CAM is coarse (the final feature map is 6³ for a
24³ patch) but robust, Integrated Gradients is voxel-sharp but noisy; agreement between them
is itself a signal.

The maps live in patch space (2.0 mm voxels, see ``classifier.extract_patches``), so
``to_ct_grid`` resamples them back onto the study's own voxels with the inverse of the
patch sampling, which lets reports, the dashboard and DICOM exports overlay them on the
original images. ``render_overlay`` draws the three orthogonal planes through a finding with
isotropic pixels, so a round nodule stays round on coronal and sagittal views even when the
slices are thicker than the in-plane pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scipy import ndimage

from trillium.core.explain import attribution_mode, grad_cam, integrated_gradients, unit_scale
from trillium.medical.imaging.classifier import PATCH_VOXEL_MM, normalise_hu
from trillium.medical.imaging.network import NoduleNet3D

METHODS = ("gradcam", "ig")
#: Heat below this fraction of the map's maximum is left uncoloured, so the CT stays readable.
HEAT_FLOOR = 0.1
HEAT_ALPHA = 0.45
TITLE_PX = 28

Box = tuple[slice, slice, slice]


# --------------------------------------------------------------------------- attribution

def attribution_maps(net: NoduleNet3D, patch: np.ndarray, methods: Sequence[str] = METHODS,
                     ig_steps: int = 32) -> dict[str, np.ndarray]:
    """Per method, a [S, S, S] map in [0, 1] of what drove the logit of one patch [1, S, S, S].

    The network runs in eval mode (BatchNorm on running statistics, no dropout) so the map is
    deterministic and belongs to the prediction that was reported. Parameters have their
    ``requires_grad`` switched off while captum runs, since only gradients with respect to the
    input or the last feature map are needed, and every module's training flag and every
    parameter's ``requires_grad`` are put back afterwards, even on error: explaining a model must
    not change how it later trains or predicts.

    "gradcam": ``LayerGradCam`` on ``net.last_conv`` (the final feature map), ReLU'd, upsampled
    trilinearly to the patch. "ig": ``IntegratedGradients`` from an all-air baseline (a cube of
    -1000 HU, i.e. "nothing there"), absolute value, Gaussian-smoothed with sigma 1 voxel to
    damp the checkerboard of strided convolutions.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown attribution method(s) {unknown}; choose from {METHODS}")
    if ig_steps < 1:
        raise ValueError(f"ig_steps must be >= 1, got {ig_steps}")
    arr = np.asarray(patch, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[0] != 1:
        raise ValueError(f"patch must be [1, S, S, S] (or [S, S, S]), got shape {np.shape(patch)}")
    params = list(net.parameters())
    device = params[0].device if params else torch.device("cpu")
    x = torch.from_numpy(np.ascontiguousarray(arr[None])).to(device)  # [1, 1, S, S, S]

    out: dict[str, np.ndarray] = {}
    with attribution_mode(net):
        for method in methods:
            if method == "gradcam":
                cam = grad_cam(net, net.last_conv, x, kind="volume", target=0)
                out[method] = unit_scale(cam.values[0, 0])
            else:
                baseline = float(normalise_hu(np.array(-1000.0)))
                ig = integrated_gradients(net, x, kind="volume", baselines=baseline, target=0, n_steps=ig_steps,
                                          internal_batch_size=min(ig_steps, 16))
                amap = np.abs(ig.values[0, 0]).astype(np.float32)
                out[method] = unit_scale(ndimage.gaussian_filter(amap, sigma=1.0))
    return out


# --------------------------------------------------------------------------- patch -> CT grid

def to_ct_grid(patch_map: np.ndarray, center_kji: Sequence[float], spacing: Sequence[float],
               shape: Sequence[int], *, voxel_mm: float = PATCH_VOXEL_MM) -> tuple[Box, np.ndarray]:
    """Resample a patch-space map onto the CT voxels the patch covers: (box of slices, map over the box).

    The inverse of ``extract_patches``: CT voxel ``(k, j, i)`` sits at patch coordinate
    ``(k - c_k) * s_k / voxel_mm + (S_k - 1) / 2`` on each axis, and the map is sampled there
    trilinearly. The box is clipped to the volume, so a finding near the edge of the scan gets
    a smaller box instead of an index error; voxels of the box outside the patch get zero.
    A patch entirely outside the volume gives empty slices and an empty array.
    """
    pm = np.asarray(patch_map, dtype=np.float32)
    if pm.ndim == 4 and pm.shape[0] == 1:
        pm = pm[0]
    if pm.ndim != 3:
        raise ValueError(f"patch_map must be [S, S, S], got shape {np.shape(patch_map)}")
    center = np.asarray(center_kji, dtype=float)
    sp = np.asarray(spacing, dtype=float)
    half = (np.asarray(pm.shape, dtype=float) - 1.0) / 2.0
    eps = 1e-6
    box: list[slice] = []
    axes: list[np.ndarray] = []
    for a in range(3):
        reach = half[a] * voxel_mm / sp[a]  # CT voxels from the centre to the outermost patch sample
        lo = max(int(np.ceil(center[a] - reach - eps)), 0)
        hi = min(int(np.floor(center[a] + reach + eps)), int(shape[a]) - 1)
        hi = max(hi, lo - 1)  # empty, never negative-length
        box.append(slice(lo, hi + 1))
        axes.append((np.arange(lo, hi + 1) - center[a]) * sp[a] / voxel_mm + half[a])
    if any(len(ax) == 0 for ax in axes):
        return tuple(box), np.zeros(tuple(len(ax) for ax in axes), np.float32)  # type: ignore[return-value]
    grid = np.meshgrid(*axes, indexing="ij")
    vals = ndimage.map_coordinates(pm, grid, order=1, mode="constant", cval=0.0)
    return tuple(box), vals.astype(np.float32)  # type: ignore[return-value]


# --------------------------------------------------------------------------- rendering

def _plane(vol_slice: np.ndarray, center_rc: tuple[float, float], sp_rc: tuple[float, float], fov_mm: float,
           px: int, order: int, cval: float) -> np.ndarray:
    """A fov_mm x fov_mm square around ``center_rc`` of a 2D slice, as px x px isotropic pixels."""
    step = fov_mm / px
    offs = (np.arange(px) + 0.5 - px / 2.0) * step  # mm from the centre to each pixel centre
    rows = center_rc[0] + offs / sp_rc[0]
    cols = center_rc[1] + offs / sp_rc[1]
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(vol_slice.astype(np.float32), [rr, cc], order=order, mode="constant", cval=cval)


def _heat_slice(heat_box: Box, heat: np.ndarray, axis: int, index: int, plane_shape: tuple[int, int]) -> np.ndarray:
    """The 2D heat of one plane of the full grid, built from the box only (no full-volume copy)."""
    out = np.zeros(plane_shape, np.float32)
    s = heat_box[axis]
    if not s.start <= index < s.stop:
        return out
    sub = np.take(heat, index - s.start, axis=axis)
    rest = [heat_box[a] for a in range(3) if a != axis]
    out[rest[0], rest[1]] = sub
    return out


def render_overlay(hu: np.ndarray, spacing: Sequence[float], center_kji: Sequence[float], heat_box: Box | None,
                   heat: np.ndarray | None, mask: np.ndarray | None, out_path: str | Path, *, title: str = "",
                   fov_mm: float = 80.0, window: tuple[float, float] = (-600, 1500), panel_px: int = 256) -> Path:
    """Write a PNG: axial, coronal and sagittal planes through the finding, heat and mask outline drawn in.

    Each panel covers ``fov_mm`` around the centre with ``panel_px`` square pixels, so all three
    have the same mm per pixel and anatomy keeps its proportions whatever the slice thickness.
    CT is shown in the lung window ``window = (center, width)``; heat above ``HEAT_FLOOR`` is
    blended in with the JET colour map at ``HEAT_ALPHA``; the segmentation is outlined in green
    so the reader can compare where the network looked with what was measured. Areas beyond the
    scan show as air (black). The image is ``3 * panel_px`` wide with a title row on top.
    """
    if fov_mm <= 0 or panel_px < 8:
        raise ValueError(f"need fov_mm > 0 and panel_px >= 8, got {fov_mm}, {panel_px}")
    hu = np.asarray(hu)
    sz, sy, sx = (float(s) for s in spacing)
    shape = hu.shape
    c = np.asarray(center_kji, dtype=float)
    k, j, i = (int(np.clip(round(c[a]), 0, shape[a] - 1)) for a in range(3))
    wc, ww = float(window[0]), float(window[1])
    lo = wc - ww / 2.0
    # (name, fixed axis, index, in-plane centre, in-plane spacing, 2D HU, 2D mask)
    planes = [
        ("axial", 0, k, (c[1], c[2]), (sy, sx), hu[k], None if mask is None else mask[k]),
        ("coronal", 1, j, (c[0], c[2]), (sz, sx), hu[:, j, :], None if mask is None else mask[:, j, :]),
        ("sagittal", 2, i, (c[0], c[1]), (sz, sy), hu[:, :, i], None if mask is None else mask[:, :, i]),
    ]
    panels = []
    for name, axis, index, ctr, sp, hu2d, mask2d in planes:
        ct = _plane(hu2d, ctr, sp, fov_mm, panel_px, order=1, cval=-1000.0)
        grey = (np.clip((ct - lo) / ww, 0.0, 1.0) * 255.0).astype(np.uint8)
        img = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        if heat is not None and heat_box is not None and heat.size:
            h2d = _heat_slice(heat_box, np.asarray(heat, np.float32), axis, index, hu2d.shape)
            h = np.clip(_plane(h2d, ctr, sp, fov_mm, panel_px, order=1, cval=0.0), 0.0, 1.0)
            colour = cv2.applyColorMap((h * 255.0).astype(np.uint8), cv2.COLORMAP_JET)
            blend = cv2.addWeighted(img, 1.0 - HEAT_ALPHA, colour, HEAT_ALPHA, 0.0)
            hot = h > HEAT_FLOOR
            img[hot] = blend[hot]
        if mask2d is not None and mask2d.any():
            m = _plane(mask2d.astype(np.float32), ctr, sp, fov_mm, panel_px, order=0, cval=0.0) > 0.5
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, contours, -1, (0, 255, 0), 1)
        cv2.putText(img, f"{name} {'kji'[axis]}={index}", (4, panel_px - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(img)
    body = np.concatenate(panels, axis=1)
    header = np.zeros((TITLE_PX, body.shape[1], 3), np.uint8)
    label = title or "finding"
    cv2.putText(header, label, (6, TITLE_PX - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.concatenate([header, body], axis=0)):
        raise OSError(f"could not write {out}")
    return out


# --------------------------------------------------------------------------- per study

def explain_findings(result: Any, classifier: Any, out_dir: str | Path, *, methods: Sequence[str] = METHODS,
                     network: str = "malignancy") -> list[dict[str, Any]]:
    """Heatmap PNGs for every reported finding of a ``StudyResult``; returns what was written.

    Uses the first network of the fold ensemble (``malignancy_nets_``, or ``detectors_`` with
    ``network="detector"``): the folds see the same cube and the point is a picture a reader
    can check, not an ensemble average of attributions. Each entry is ``{"id", <method>: PNG
    path (str), "peak_mm_from_center": {method: mm or None}}``; the peak distance is the
    sanity signal that attention sits on the nodule (a few mm) rather than beside it. Each
    finding dict of ``result.findings`` gains ``"heatmaps": {method: file name}`` so the stored
    JSON can point at the images relative to ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    findings = list(result.findings or [])
    if not findings:
        return []
    if network not in ("malignancy", "detector"):
        raise ValueError(f"network must be 'malignancy' or 'detector', got {network!r}")
    nets = classifier.malignancy_nets_ if network == "malignancy" else classifier.detectors_
    if not nets:
        raise ValueError(f"the classifier has no {network} networks")
    patches = result.patches
    if patches is None or len(patches) != len(findings):
        raise ValueError(f"result has {len(findings)} findings but {0 if patches is None else len(patches)} patches")
    net = nets[0]
    hu = result.volume.hu
    spacing = tuple(float(s) for s in result.volume.spacing)
    measurements = list(getattr(result, "measurements", None) or [])
    report: list[dict[str, Any]] = []
    for n, finding in enumerate(findings):
        center = np.asarray(finding["center_kji"], dtype=float)
        maps = attribution_maps(net, patches[n], methods)
        mask = measurements[n].full_mask(hu.shape) if n < len(measurements) else None
        entry: dict[str, Any] = {"id": finding["id"], "peak_mm_from_center": {}}
        names: dict[str, str] = {}
        for method in methods:
            box, heat = to_ct_grid(maps[method], center, spacing, hu.shape)
            peak_mm = None
            if heat.size and heat.max() > 0:
                peak = np.array(np.unravel_index(int(np.argmax(heat)), heat.shape)) + [s.start for s in box]
                peak_mm = round(float(np.linalg.norm((peak - center) * np.asarray(spacing))), 2)
            diameter = finding.get("diameter_mm")
            size = f", {float(diameter):.1f} mm" if diameter is not None else ""
            name = f"finding-{finding['id']}-{method}.png"
            path = render_overlay(hu, spacing, center, box, heat, mask, out / name,
                                  title=f"finding {finding['id']}{size} - {method} ({network})")
            entry[method] = str(path)
            entry["peak_mm_from_center"][method] = peak_mm
            names[method] = name
        finding["heatmaps"] = names
        report.append(entry)
    return report
