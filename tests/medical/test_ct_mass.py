"""A lesion above 30 mm is a mass: reported as one (kind, a 4X category when solid), measured in
three dimensions from its own outline (long and short axes, craniocaudal extent, volume), not
clipped to a nodule-sized window."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from trillium.medical.imaging.analyzer import StudyAnalyzer
from trillium.medical.imaging.measure import finding_category, lesion_kind
from trillium.medical.imaging.phantom_training import phantom_volume


def test_kind_and_category_of_a_mass() -> None:
    assert lesion_kind(30.0) == "nodule" and lesion_kind(30.01) == "mass"
    assert finding_category("solid", 29.9, 27.0) == "4B"  # a nodule: the size rule
    assert finding_category("solid", 34.0, 30.0) == "4X"
    assert finding_category("part-solid", 40.0, 35.0, 12.0) == "4X"
    assert finding_category("ground-glass", 36.0, 33.0) == "3"  # Lung-RADS' ground-glass rule stands


def test_a_mass_in_the_lung_is_found_and_measured_from_its_own_outline() -> None:
    vol, nodules = phantom_volume(1, 31, diameter_range=(42.0, 46.0))
    truth = nodules[0]
    assert truth.diameter_mm > 40

    class Everything:
        """A stand-in classifier that passes every candidate: the test is the measurement's."""

        def predict(self, patches: np.ndarray, features: np.ndarray) -> SimpleNamespace:
            z = np.zeros(len(patches))
            return SimpleNamespace(nodule_probability=z + 0.9, malignancy=z + 0.5, malignancy_std=z, nodule_std=z)

    result = StudyAnalyzer(Everything(), threshold=0.5, backend="scipy").analyze_volume(vol)
    centre = np.array(truth.center_kji) * np.array(vol.spacing)
    near = [f for f in result.findings
            if np.linalg.norm(np.array(f["center_kji"]) * np.array(vol.spacing) - centre) < truth.diameter_mm / 2]
    assert near, result.findings
    mass = max(near, key=lambda f: f["diameter_mm"])
    assert mass["kind"] == "mass" and mass["category"] == "4X" and mass["type"] == "solid"
    assert abs(mass["diameter_mm"] / truth.diameter_mm - 1) < 0.2, (mass, truth)
    assert 0.7 * truth.diameter_mm < mass["craniocaudal_mm"] < 1.3 * truth.diameter_mm
    assert abs(mass["volume_mm3"] / truth.volume_mm3 - 1) < 0.35
    assert np.linalg.norm(np.array(mass["center_kji"]) * np.array(vol.spacing) - centre) < 3.0
