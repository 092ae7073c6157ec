"""The lung mask on torch tensors (``lungs_torch``) is SciPy's, voxel for voxel: its connected
components are ``ndimage.label``'s partition, its hole filling ``binary_fill_holes``'s, and the
whole mask ``segment_lungs``'s on phantoms (with and without nodules against the pleura) and on a
real sharp-kernel series. Run here on CPU threads; the GPU run repeats the real-series check
(``benchmarks/medical_imaging_equality.py --device cuda``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from tests.conftest import SHARED_DATA, require_shared
from trillium.medical.imaging import lungs_torch as lt
from trillium.medical.imaging.lungs import segment_lungs
from trillium.medical.imaging.phantom import make_phantom


def _same_partition(ours: np.ndarray, labels: np.ndarray) -> bool:
    """Two labellings of one mask (ours: -1 outside; SciPy's: 0 outside) group the voxels alike."""
    inside = labels > 0
    if not np.array_equal(ours >= 0, inside):
        return False
    pairs = np.unique(np.stack([ours[inside], labels[inside]]), axis=1)
    # one-to-one: each of our labels meets one SciPy label and the other way round
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.mark.parametrize("density", [0.3, 0.55, 0.7])
def test_components_are_scipys_partition_in_3d_and_slice_by_slice(density) -> None:
    rng = np.random.default_rng(int(density * 100))
    mask = ndimage.binary_opening(rng.random((9, 40, 52)) < density) if density > 0.5 else rng.random((9, 40, 52)) < density
    ours = lt.components(torch.from_numpy(mask)).numpy()
    labels, n = ndimage.label(mask)
    assert n > 1 and _same_partition(ours, labels)
    # each component's label is the smallest flat index of its voxels
    flat = np.arange(mask.size).reshape(mask.shape)
    for lab in range(1, min(n, 20) + 1):
        assert set(ours[labels == lab]) == {flat[labels == lab].min()}
    inplane = np.zeros((3, 3, 3), dtype=bool)
    inplane[1] = ndimage.generate_binary_structure(2, 1)
    ours2d = lt.components(torch.from_numpy(mask), axes=(1, 2)).numpy()
    assert _same_partition(ours2d, ndimage.label(mask, structure=inplane)[0])


def test_a_winding_component_is_one_component() -> None:
    """A spiral corridor: a label must travel around every turn (many sweeps), not stop early."""
    mask = np.zeros((1, 41, 41), dtype=bool)
    lo, hi = 1, 39
    while lo < hi:  # concentric square rings joined in a spiral
        mask[0, lo, lo:hi + 1] = mask[0, hi, lo:hi + 1] = True
        mask[0, lo:hi + 1, lo] = mask[0, lo:hi + 1, hi] = True
        mask[0, lo + 1, lo] = False
        mask[0, lo + 2, lo + 1] = True
        lo, hi = lo + 2, hi - 2
    labels, n = ndimage.label(mask)
    ours = lt.components(torch.from_numpy(mask)).numpy()
    assert _same_partition(ours, labels) and len(np.unique(ours[mask])) == n


def test_hole_filling_is_scipys_slice_by_slice() -> None:
    rng = np.random.default_rng(5)
    mask = ndimage.binary_closing(rng.random((6, 48, 48)) < 0.45)
    inplane = np.zeros((3, 3, 3), dtype=bool)
    inplane[1] = ndimage.generate_binary_structure(2, 1)
    ours = lt._fill_holes(torch.from_numpy(mask)).numpy()
    assert np.array_equal(ours, ndimage.binary_fill_holes(mask, structure=inplane))
    assert (ours & ~mask).any()  # there were holes to fill


@pytest.mark.parametrize("pleural_share", [0.0, 0.6])
def test_the_torch_lung_mask_is_scipys_on_phantoms(pleural_share) -> None:
    vol, _ = make_phantom(5, 9, shape=(48, 160, 160), spacing=(2.0, 1.1, 1.1), pleural_share=pleural_share)
    hu = np.asarray(vol)
    ours = lt.segment_lungs_torch(hu, (2.0, 1.1, 1.1), device="cpu")
    scipy_mask = segment_lungs(hu, (2.0, 1.1, 1.1))
    assert scipy_mask.any() and np.array_equal(ours, scipy_mask)
    # the rolling ball took pleural nodules in, on both paths alike
    no_ball = lt.segment_lungs_torch(hu, (2.0, 1.1, 1.1), juxta_mm=0, device="cpu")
    assert np.array_equal(no_ball, segment_lungs(hu, (2.0, 1.1, 1.1), juxta_mm=0))
    if pleural_share:
        assert (ours & ~no_ball).sum() > 100
    empty = np.full((6, 40, 40), 40, dtype=np.int16)  # no air at all: no lungs
    assert not lt.segment_lungs_torch(empty, (2.0, 1.1, 1.1), device="cpu").any()


def test_fractional_hu_takes_numpys_block_means() -> None:
    """A series whose rescale is not whole gives float HU: the block means are then NumPy's own,
    so that a value at the air threshold falls on the same side on both paths."""
    vol, _ = make_phantom(5, 9, shape=(32, 128, 128), spacing=(2.0, 1.1, 1.1))
    hu = np.asarray(vol).astype(np.float32) * np.float32(0.97) + np.float32(0.3)
    assert np.array_equal(lt.segment_lungs_torch(hu, (2.0, 1.1, 1.1), device="cpu"),
                          segment_lungs(hu, (2.0, 1.1, 1.1)))


def test_the_torch_lung_mask_is_scipys_on_a_real_sharp_series() -> None:
    from trillium.medical.imaging.dicom_io import load_ct

    series = require_shared(SHARED_DATA / "medical-imaging" / "lung-pet-ct-dx" / "A0002" / "series-B70f",
                            "the Lung-PET-CT-Dx patient A0002 (B70f)")
    vol = load_ct(series)
    hu = vol.hu[8:20]  # twelve 8 mm slices through the tumour: the CPU run stays short
    ours = lt.segment_lungs_torch(hu, vol.spacing, device="cpu")
    assert ours.sum() > 100_000 and np.array_equal(ours, segment_lungs(hu, vol.spacing))


def test_the_analyzer_takes_the_torch_mask_on_a_gpu_only(monkeypatch) -> None:
    """Torch backend on a CUDA device: the torch mask; on CPU threads (measured far slower there)
    and with the SciPy backend: SciPy's. The detector's lungs and candidates are the same either way."""
    from trillium.medical.imaging import analyzer as analyzer_module
    from trillium.medical.imaging.dicom_io import CTVolume

    hu, _ = make_phantom(3, 4, shape=(40, 128, 128), spacing=(2.0, 1.4, 1.4))
    hu = np.asarray(hu)
    calls = []

    def spy(volume, spacing, device=None):
        calls.append(device)
        return lt.segment_lungs_torch(volume, spacing, device="cpu")  # the mask the GPU would give

    monkeypatch.setattr(analyzer_module, "segment_lungs_torch", spy)
    on_gpu = analyzer_module.lung_mask(hu, (2.0, 1.4, 1.4), backend="torch", device="cuda:0")
    assert calls == ["cuda:0"] and np.array_equal(on_gpu, segment_lungs(hu, (2.0, 1.4, 1.4)))
    vol = CTVolume(hu=hu, affine=np.diag([1.4, 1.4, 2.0, 1.0]), series_uid="1.2.3")
    cands_t, _, lungs_t = analyzer_module.detect_candidates(vol, backend="torch", device="cpu")
    cands_s, _, lungs_s = analyzer_module.detect_candidates(vol, backend="scipy")
    assert calls == ["cuda:0"]  # neither run took the torch mask
    assert np.array_equal(lungs_t, lungs_s) and np.array_equal(lungs_t, on_gpu)
    assert [tuple(c.center_kji) for c in cands_t] == [tuple(c.center_kji) for c in cands_s]
