"""Re-centring a measurement: a candidate on the lobe of a large nodule grows into the whole
nodule; an outline that would grow along a vessel is refused."""

from __future__ import annotations

import numpy as np

from trillium.medical.imaging.analyzer import recentre_measurement
from trillium.medical.imaging.measure import measure_consistent

SPACING = (1.5, 1.0, 1.0)


def _lung(shape: tuple[int, int, int] = (48, 80, 80)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    hu = (-850 + rng.normal(0, 15, shape)).astype(np.float32)
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, SPACING, strict=True)), indexing="ij")
    return hu, np.ones(shape, dtype=bool), np.stack([zz, yy, xx])


def _mm(center_kji) -> np.ndarray:
    return np.asarray(center_kji) * np.asarray(SPACING)


def test_a_candidate_on_the_rim_of_a_large_nodule_grows_into_the_whole_nodule() -> None:
    hu, lungs, grid = _lung()
    centre = np.array([36.0, 40.0, 40.0])  # mm
    hu[np.linalg.norm(grid - centre[:, None, None, None], axis=0) <= 12.0] = 20.0  # a 24 mm solid nodule
    start = (centre + [0.0, 0.0, 8.0]) / np.asarray(SPACING)  # a blob scale that answered 8 mm off centre
    first = measure_consistent(hu, start, 2.0, SPACING, lungs)
    assert first is not None and first.diameter_mm < 0.6 * 24  # the first outline sees part of it
    again = recentre_measurement(hu, first, SPACING, lungs)
    assert np.linalg.norm(_mm(again.center_kji) - centre) < 1.5
    assert abs(again.diameter_mm - 24.0) / 24.0 <= 0.2


def test_growth_along_a_vessel_is_refused() -> None:
    hu, lungs, grid = _lung()
    centre = np.array([36.0, 40.0, 40.0])
    hu[np.linalg.norm(grid - centre[:, None, None, None], axis=0) <= 3.0] = 20.0  # a 6 mm nodule
    # a 5 mm vessel running along x past the nodule's edge
    hu[(np.hypot(grid[0] - centre[0], grid[1] - (centre[1] + 4.0)) <= 2.5)] = 20.0
    first = measure_consistent(hu, centre / np.asarray(SPACING), 3.0, SPACING, lungs)
    assert first is not None
    again = recentre_measurement(hu, first, SPACING, lungs)
    assert again.diameter_mm <= 1.6 * first.diameter_mm  # never the vessel's length
    assert again.elongation >= 0.6 or again is first
