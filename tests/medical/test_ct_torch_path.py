"""The chest-CT hot path on torch against the SciPy reference, on phantom volumes.

The filters (``volume_ops``) are compared with ``scipy.ndimage`` on a phantom's HU values (exact
for the maximum filter and the erosion; Gaussians within 1e-3 HU, float32 accumulation against
SciPy's float64); the candidate detector and a study end to end must give the same candidates and
the same findings with either backend. The cropped opening of ``measure`` is compared with the
same opening on the whole ROI.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from trillium.medical.imaging import volume_ops as vo
from trillium.medical.imaging.candidates import find_candidates, resolve_backend
from trillium.medical.imaging.lungs import block_mean, segment_lungs
from trillium.medical.imaging.measure import _nodule_mask
from trillium.medical.imaging.phantom import make_phantom

SHAPE = (48, 96, 96)
SPACING = (2.0, 1.6, 1.6)


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    torch.set_num_threads(1)
    vol, _nodules = make_phantom(3, 7, shape=SHAPE, spacing=SPACING)
    hu = np.asarray(vol)
    lungs = segment_lungs(hu, SPACING)
    assert lungs.any()
    return hu, lungs, SPACING


def _work(hu: np.ndarray) -> np.ndarray:
    return np.clip(hu, -1000, 300).astype(np.float32)


@pytest.mark.parametrize("sigma", [(0.6, 0.75, 0.75), (1.5, 2.1, 2.1), (4.5, 5.6, 5.6)])
def test_gaussian_matches_scipy_nearest(phantom, sigma) -> None:
    x = _work(phantom[0])
    ours = vo.gaussian_filter(torch.from_numpy(x), sigma, truncate=3.0).numpy()
    ref = ndimage.gaussian_filter(x, sigma=sigma, mode="nearest", truncate=3.0)
    assert np.abs(ours - ref).max() < 1e-3  # HU, on values from -1000 to 300
    # the kernel reaches past the volume (4.5 * 3 > 48 / 2 slices): the edge copies itself, as in SciPy
    assert np.abs(ours[0] - ref[0]).max() < 1e-3


@pytest.mark.parametrize("size", [(3, 3, 3), (5, 7, 9), (13, 17, 17), (1, 5, 3)])
def test_maximum_filter_is_exactly_scipys(phantom, size) -> None:
    x = ndimage.gaussian_filter(_work(phantom[0]), 1.0)
    ours = vo.maximum_filter(torch.from_numpy(x), size).numpy()
    assert np.array_equal(ours, ndimage.maximum_filter(x, size=size, mode="nearest"))


def test_maximum_filter_refuses_even_sizes() -> None:
    with pytest.raises(ValueError, match="must be odd"):
        vo.maximum_filter(torch.zeros(4, 4, 4), (4, 3, 3))


def test_erosion_block_mean_and_laplacian_match_the_numpy_path(phantom) -> None:
    hu, lungs, spacing = phantom
    assert np.array_equal(vo.binary_erosion(torch.from_numpy(lungs)).numpy(), ndimage.binary_erosion(lungs))
    ours = vo.block_mean(torch.from_numpy(np.ascontiguousarray(hu)), (1, 2, 2)).numpy()
    assert np.allclose(ours, block_mean(hu, (1, 2, 2)), atol=1e-3)
    ours3 = vo.block_mean(torch.from_numpy(lungs), (2, 2, 2)).numpy()
    assert np.array_equal(ours3, block_mean(lungs.astype(np.float32), (2, 2, 2)))  # quarters and eighths: exact
    from trillium.medical.imaging.candidates import _laplacian

    g = ndimage.gaussian_filter(_work(hu), 1.5)
    assert np.allclose(vo.laplacian(torch.from_numpy(g), spacing).numpy(), _laplacian(g, spacing), atol=1e-3)


def test_hessians_match_the_per_point_stencil(phantom) -> None:
    from trillium.medical.imaging.candidates import _hessian_at

    g = ndimage.gaussian_filter(_work(phantom[0]), 2.0)
    pts = np.array([[5, 40, 30], [20, 50, 60], [30, 47, 48], [1, 1, 1]])
    ours = vo.hessians_at(torch.from_numpy(g), torch.from_numpy(pts), SPACING).numpy()
    ref = np.stack([_hessian_at(g, p, SPACING) for p in pts])
    assert np.allclose(ours, ref, rtol=1e-4, atol=1e-3)


def test_candidates_are_the_same_with_either_backend(phantom) -> None:
    hu, lungs, spacing = phantom
    ref = find_candidates(hu, lungs, spacing, backend="scipy")
    ours = find_candidates(hu, lungs, spacing, backend="torch", device="cpu")
    assert len(ref) >= 3  # the three nodules at least, and vessels
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        assert np.array_equal(a.center_kji, b.center_kji) and a.radius_mm == b.radius_mm
        assert abs(a.response - b.response) <= 1e-3 * abs(b.response) + 1e-3
        assert abs(a.blobness - b.blobness) < 1e-3 and abs(a.peak_hu - b.peak_hu) < 1e-2


def test_backend_names_are_checked() -> None:
    with pytest.raises(ValueError, match="backend 'numba'"):
        resolve_backend("numba")
    assert resolve_backend("scipy") == "scipy"
    assert resolve_backend(None) == ("torch" if torch.cuda.is_available() else "scipy")


def test_cropped_opening_equals_the_opening_on_the_whole_roi(phantom) -> None:
    hu = phantom[0]
    roi = ndimage.gaussian_filter(hu[10:40, 20:80, 20:80].astype(np.float32), 0.5)
    zz, yy, xx = np.ogrid[:30, :60, :60]
    dist = np.sqrt(((zz - 15) * 2.0) ** 2 + ((yy - 30) * 1.6) ** 2 + ((xx - 30) * 1.6) ** 2)
    for radius, level in ((6.0, -500.0), (10.0, -650.0), (14.0, -300.0)):
        within = dist <= 1.6 * radius + 3.0
        mask = (roi > level) & within
        if not mask.any():
            continue
        r_open = 0.5 * radius
        inside = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=SPACING)[1:-1, 1:-1, 1:-1]
        centres = inside > r_open
        expected = mask
        if centres.any():
            opened = ndimage.distance_transform_edt(~centres, sampling=SPACING) <= r_open
            expected = ndimage.binary_dilation(opened & mask) & mask
        got = _nodule_mask(roi > level, within, radius, SPACING)
        assert got is not None and np.array_equal(got, expected)
