"""The CPU speed-ups of the chest-CT path change no result. Against the code before them
(``ct_candidates_reference``), bit for bit: the candidate detector's SciPy filters on each
scale's box, its leaner Laplacian, the lung mask closed on the lungs' box (on phantoms with
nodules against the pleura and on real series of both kernels), block means by strided sums, and
patches cut from boxes; the rolling ball's closing by distance transforms against
``ndimage.binary_closing`` pixel for pixel."""

from __future__ import annotations

import ct_candidates_reference as reference
import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import SHARED_DATA, require_shared
from trillium.medical.imaging import candidates as cand
from trillium.medical.imaging.lungs import closing_by_disc, ct_threads, downsample_factors, segment_lungs
from trillium.medical.imaging.phantom import make_phantom


def _same_peaks(hu: np.ndarray, spacing: tuple[float, float, float]) -> int:
    lungs = segment_lungs(hu, spacing)
    factors = downsample_factors(spacing, 1.2)
    sp = tuple(s * f for s, f in zip(spacing, factors, strict=True))
    args = (hu, lungs, factors, sp, cand.SCALES_MM, 120.0, 0.45)
    old, new = reference.peaks_scipy(*args), cand._peaks_scipy(*args)
    assert len(old) == len(new)
    for a, b in zip(old, new, strict=True):
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]  # centre, scale, response, blobness, HU: exact
    return len(new)


@pytest.mark.parametrize("spacing", [(2.0, 1.4, 1.4), (np.float64(1.25), np.float64(1.1), np.float64(1.1))])
def test_the_cropped_filters_find_the_same_peaks_bit_for_bit_on_a_phantom(spacing) -> None:
    vol, _ = make_phantom(3, 7, shape=(56, 128, 128), spacing=tuple(float(s) for s in spacing))
    assert _same_peaks(np.asarray(vol), spacing) > 5


def test_the_cropped_filters_find_the_same_peaks_bit_for_bit_on_a_real_sharp_series() -> None:
    from trillium.medical.imaging.dicom_io import load_ct

    series = require_shared(SHARED_DATA / "medical-imaging" / "lung-pet-ct-dx" / "A0002" / "series-B70f",
                            "the Lung-PET-CT-Dx patient A0002 (sharp kernel)")
    vol = load_ct(series)
    assert _same_peaks(vol.hu, vol.spacing) > 0


@pytest.mark.parametrize("spacing", [(1.0, 0.7, 0.7), (np.float64(2.5), np.float64(0.66), np.float64(0.66))])
def test_the_lean_laplacian_is_the_plain_one_bit_for_bit(spacing) -> None:
    g = np.random.default_rng(0).normal(scale=300, size=(9, 31, 17)).astype(np.float32)
    assert cand._laplacian(g, spacing).tobytes() == reference.laplacian(g, spacing).tobytes()
    flat = np.random.default_rng(1).normal(size=(2, 5, 6)).astype(np.float32)  # an axis too short: no term
    assert np.array_equal(cand._laplacian(flat, spacing), reference.laplacian(flat, spacing))


def test_closing_by_distance_transforms_is_binary_closing_with_a_disc() -> None:
    rng = np.random.default_rng(3)
    for _ in range(150):
        h, w = rng.integers(4, 50, 2)
        r = int(rng.integers(1, 12))
        mask = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 3)) > rng.uniform(0.4, 0.6)
        if rng.random() < 0.5:
            mask = np.pad(mask, r)  # as the rolling ball pads each lung
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disc = yy ** 2 + xx ** 2 <= r * r
        assert np.array_equal(closing_by_disc(mask, r), ndimage.binary_closing(mask, structure=disc)), (h, w, r)


def _block_mean_by_numpy_mean(vol: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    fz, fy, fx = factors
    nz, ny, nx = (s // f * f for s, f in zip(vol.shape, factors, strict=True))
    v = vol[:nz, :ny, :nx].astype(np.float32)
    return v.reshape(nz // fz, fz, ny // fy, fy, nx // fx, fx).mean(axis=(1, 3, 5))


@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 2, 2), (3, 1, 2), (4, 4, 4)])
@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.bool_, np.float32])
def test_block_mean_of_whole_numbers_is_numpys_mean_bit_for_bit(factors, dtype) -> None:
    from trillium.medical.imaging.lungs import block_mean

    rng = np.random.default_rng(7)
    vol = (rng.random((13, 21, 17)) > 0.5 if dtype is np.bool_
           else rng.integers(-32768 if dtype is not np.uint16 else 0, 32767, (13, 21, 17))).astype(dtype)
    ours = block_mean(vol, factors)
    assert ours.dtype == np.float32 and ours.tobytes() == _block_mean_by_numpy_mean(vol, factors).tobytes()


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_patches_cut_from_boxes_are_the_patches_of_the_whole_volume_bit_for_bit(dtype) -> None:
    from trillium.medical.imaging.classifier import extract_patches

    rng = np.random.default_rng(11)
    hu = rng.integers(-1024, 1500, (40, 90, 80)).astype(dtype)
    if dtype is np.float32:
        hu += rng.random(hu.shape).astype(np.float32)
    centres = np.concatenate([rng.uniform(-5, [45, 95, 85], (120, 3)),  # inside, at and beyond the faces
                              [[0, 0, 0], [39, 89, 79], [-30, -40, -40], [80, 200, 200], [20.5, 45.25, 0.0]]])
    spacing = (1.25, 0.7, 0.7)
    ours = extract_patches(hu, centres, spacing)
    assert ours.tobytes() == reference.extract_patches(hu, centres, spacing).tobytes()


@pytest.mark.parametrize("pleural_share", [0.0, 0.6])
def test_the_lung_mask_is_the_same_on_phantoms(pleural_share) -> None:
    vol, _ = make_phantom(5, 9, shape=(48, 160, 160), spacing=(2.0, 1.1, 1.1), pleural_share=pleural_share)
    hu = np.asarray(vol)
    ours = segment_lungs(hu, (2.0, 1.1, 1.1))
    assert ours.any() and np.array_equal(ours, reference.segment_lungs(hu, (2.0, 1.1, 1.1)))
    empty = np.full((6, 40, 40), 40, dtype=np.int16)  # no air at all: no lungs on either path
    assert not segment_lungs(empty, (2.0, 1.1, 1.1)).any() and not reference.segment_lungs(empty, (2.0, 1.1, 1.1)).any()


@pytest.mark.parametrize("kernel", ["series-B70f", "series-B40f"])
def test_the_lung_mask_is_the_same_on_real_series(kernel) -> None:
    from trillium.medical.imaging.dicom_io import load_ct

    series = require_shared(SHARED_DATA / "medical-imaging" / "lung-pet-ct-dx" / "A0002" / kernel,
                            f"the Lung-PET-CT-Dx patient A0002 ({kernel})")
    vol = load_ct(series)
    ours = segment_lungs(vol.hu, vol.spacing)
    assert ours.any() and np.array_equal(ours, reference.segment_lungs(vol.hu, vol.spacing))


def test_the_filter_threads_setting_is_read_or_refused_by_name(monkeypatch) -> None:
    monkeypatch.setenv("TRILLIUM_CT_THREADS", "3")
    assert ct_threads() == 3
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("TRILLIUM_CT_THREADS", bad)
        with pytest.raises(ValueError, match="TRILLIUM_CT_THREADS"):
            ct_threads()
    monkeypatch.delenv("TRILLIUM_CT_THREADS")
    assert 1 <= ct_threads() <= 4
