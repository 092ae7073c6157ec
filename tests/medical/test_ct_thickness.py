"""``imaging.thickness``: a thick reconstruction is the average of the thin slices it covers."""

from __future__ import annotations

import numpy as np
import pytest

from trillium.medical.imaging.thickness import KERNELS, thick_phantom

SMALL = {"size": 96, "pixel_mm": 3.0, "extent_mm": 90.0}


def test_thick_slices_average_the_thin_ones_in_the_same_frame() -> None:
    thin, truth, centres = thick_phantom(3, 11, thickness_mm=1.25, **SMALL)
    thick, truth5, centres5 = thick_phantom(3, 11, thickness_mm=5.0, **SMALL)
    assert np.allclose(centres5, centres)  # the truth does not depend on the reconstruction
    assert thin.spacing == (1.25, 3.0, 3.0) and thick.spacing == (5.0, 3.0, 3.0)
    assert thick.hu.shape == (thin.hu.shape[0] // 4, 96, 96)
    # the same phantom: each thick slice is the rounded mean of its four thin ones
    want = np.rint(thin.hu.astype(np.float32).reshape(-1, 4, 96, 96).mean(axis=1))
    assert np.abs(thick.hu.astype(np.float32) - want).max() <= 1.0
    assert [n.diameter_mm for n in truth] == [n.diameter_mm for n in truth5]
    # truth centres are patient mm; both volumes map them onto the same in-plane voxel, and the
    # thick slice holding a centre is the block of thin slices holding it
    for c in centres:
        k1, j1, i1 = thin.patient_to_voxel(c)
        k5, j5, i5 = thick.patient_to_voxel(c)
        assert (j1, i1) == pytest.approx((j5, i5)) and k1 == pytest.approx(4 * k5 + 1.5)
    assert thick.acquisition == {"kernel": "B30f", "slice_thickness": 5.0, "manufacturer": ""}


def test_averaging_lowers_the_noise_and_the_sharp_kernel_raises_it() -> None:
    from scipy import ndimage

    from trillium.medical.imaging.lungs import segment_lungs

    def lung_noise(vol) -> float:
        """Robust spread of the in-plane high-pass residual inside the lungs (vessels are few)."""
        hu = vol.hu.astype(np.float32)
        residual = hu - ndimage.uniform_filter(hu, size=(1, 3, 3))
        r = residual[segment_lungs(vol.hu, vol.spacing)]
        return float(1.4826 * np.median(np.abs(r - np.median(r))))

    soft1, soft5, sharp1, sharp5 = (lung_noise(thick_phantom(0, 3, thickness_mm=t, kernel=k, **SMALL)[0])
                                    for k in ("B30f", "B70f") for t in (1.25, 5.0))
    # four slices averaged: the sharp kernel's nearly white noise drops towards 1/2 (measured 0.59);
    # the soft kernel's noise is correlated along z too, so it drops less (0.87)
    assert sharp5 < 0.7 * sharp1 and soft5 < 0.95 * soft1 and sharp5 / sharp1 < soft5 / soft1
    assert sharp1 > 2 * soft1
    assert set(KERNELS) == {"B30f", "B70f"}
