"""Chest-CT monitoring statistics on small phantoms (no model needed): the noise estimate follows
the noise, the kernel and thickness come from the DICOM tags, bad input is named.

The registration profile and the batch job's check are tested in ``test_ct_analysis.py``, beside
the small classifier that module trains once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trillium.core.errors import InputValidationError
from trillium.medical.imaging.dicom_io import load_ct
from trillium.medical.imaging.lungs import segment_lungs
from trillium.medical.imaging.monitoring import SCORE_KEY, study_frame, study_statistics
from trillium.medical.imaging.phantom import PHANTOM_KERNEL, write_phantom
from trillium.medical.imaging.phantom_training import phantom_volume

TINY, TINY_SPACING = (36, 112, 112), (4.0, 2.3, 2.3)


def _stats(**look: object) -> dict:
    vol, _ = phantom_volume(2, 5, shape=TINY, spacing=TINY_SPACING, **look)
    return study_statistics(vol, segment_lungs(vol.hu, vol.spacing), 7, [0.2, 0.4])


def test_noise_estimate_rises_with_added_noise_and_with_a_sharper_kernel() -> None:
    base, noisy, sharp = _stats(), _stats(noise_hu=30.0), _stats(noise_sigma=0.35, noise_hu=35.0)
    # the phantom's noise is 20 HU before correlation; its high-pass part is what the estimate sees
    assert 3.0 < base["lung_noise_hu"] < 20.0
    assert noisy["lung_noise_hu"] > 1.3 * base["lung_noise_hu"]
    assert sharp["lung_noise_hu"] > 2.5 * base["lung_noise_hu"]
    assert noisy["air_noise_hu"] > base["air_noise_hu"] and sharp["air_noise_hu"] > noisy["air_noise_hu"]
    # the lungs' HU and volume do not move with noise (the same phantom)
    assert abs(noisy["lung_hu_mean"] - base["lung_hu_mean"]) < 5.0
    assert noisy["lung_volume_ml"] == pytest.approx(base["lung_volume_ml"], rel=0.02)
    assert base["n_candidates"] == 7 and base[SCORE_KEY] == pytest.approx(0.3)
    assert -900 < base["lung_hu_p05"] < base["lung_hu_mean"] < base["lung_hu_p95"] < -600


def test_kernel_thickness_and_spacing_are_read_from_the_written_series(tmp_path: Path) -> None:
    write_phantom(tmp_path / "sharp", nodules=1, seed=3, shape=TINY, spacing=TINY_SPACING, kernel="B70f")
    write_phantom(tmp_path / "plain", nodules=1, seed=3, shape=TINY, spacing=TINY_SPACING)
    sharp, plain = load_ct(tmp_path / "sharp"), load_ct(tmp_path / "plain")
    assert sharp.acquisition == {"kernel": "B70f", "slice_thickness": 4.0, "manufacturer": ""}
    assert plain.acquisition["kernel"] == PHANTOM_KERNEL
    s = study_statistics(sharp, segment_lungs(sharp.hu, sharp.spacing), 0, [])
    assert s["kernel"] == "B70f" and s["manufacturer"] == "unknown"
    assert s["slice_spacing_mm"] == 4.0 and s["slice_thickness"] == "4" and s["pixel_spacing_mm"] == 2.3
    assert s[SCORE_KEY] == 0.0  # no candidate: the score is defined all the same


def test_study_frame_types_columns_and_names_a_study_without_statistics() -> None:
    s = _stats()
    frame, score = study_frame([s, {**s, "kernel": None, "lung_noise_hu": None}])
    assert list(frame["kernel"]) == [PHANTOM_KERNEL, "unknown"]
    assert np.isnan(frame["lung_noise_hu"].iloc[1]) and frame["lung_noise_hu"].dtype == np.float64
    assert score.tolist() == [pytest.approx(0.3)] * 2
    with pytest.raises(InputValidationError, match="study 1: .*mean_nodule_probability"):
        study_frame([s, {"kernel": "B30f"}])
    vol, _ = phantom_volume(1, 1, shape=TINY, spacing=TINY_SPACING)
    with pytest.raises(InputValidationError, match="lung mask's shape"):
        study_statistics(vol, np.zeros((2, 2, 2), bool), 0, [])
