"""The faster measurement and re-centring give exactly what they gave before (issue 22, findings stage).

``ct_measure_reference.py`` is the code as it was (``measure.py`` and ``recentre_measurement`` of
commit 05882ee, verbatim but for one later line that both share: the outline confined to the lungs,
``measure.MEASURE_IN_LUNGS``; the comparison is run with it on and off). Every candidate of a few phantoms is measured and re-centred by both, and
every field must be equal: the floats bit for bit, the segmentation voxel for voxel. The pieces
that replaced a loop or a whole-array computation are also checked alone on inputs made to hit
their edge cases (ties between slices, anisotropic spacing).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from ct_measure_reference import _axial_diameters as reference_axial_diameters
from ct_measure_reference import measure_consistent as reference_measure_consistent
from ct_measure_reference import recentre_measurement as reference_recentre
from scipy import ndimage

from trillium.medical.imaging import analyzer as analyzer_module
from trillium.medical.imaging import measure
from trillium.medical.imaging.analyzer import StudyAnalyzer, detect_candidates, recentre_measurement
from trillium.medical.imaging.measure import Measurement, _edt_at, _longest_axial
from trillium.medical.imaging.phantom_training import phantom_volume

#: (nodules, seed, shape, spacing): the tests' coarse grid and a finer, anisotropic one like a study's
PHANTOMS = [
    (6, 3, (72, 160, 160), (2.0, 1.6, 1.6)),
    (6, 7, (90, 200, 200), (1.0, 0.7, 0.7)),
]


def _fields(m: Measurement | None) -> Any:
    """Every field of a measurement, the arrays as bytes (exact comparison, NaN-safe for floats)."""
    if m is None:
        return None
    return {k: (v.shape, v.tobytes()) if isinstance(v, np.ndarray) else repr(v) for k, v in m.__dict__.items()}


@pytest.fixture(scope="module", params=[(PHANTOMS[0], True), (PHANTOMS[0], False), (PHANTOMS[1], True)],
                ids=["coarse", "coarse-unconfined", "fine"])  # unconfined on the coarse grid alone: CI time
def study(request: pytest.FixtureRequest) -> SimpleNamespace:
    (n, seed, shape, spacing), confined = request.param
    previous, measure.MEASURE_IN_LUNGS = measure.MEASURE_IN_LUNGS, confined
    request.addfinalizer(lambda: setattr(measure, "MEASURE_IN_LUNGS", previous))
    volume, _ = phantom_volume(n, seed, shape=shape, spacing=spacing)
    cands, measurements, lungs = detect_candidates(volume, backend="scipy")
    return SimpleNamespace(hu=volume.hu, spacing=volume.spacing, lungs=lungs, cands=cands, measurements=measurements,
                           volume=volume)


def test_every_candidate_is_measured_and_recentred_as_before(study: SimpleNamespace) -> None:
    hu, spacing, lungs = study.hu, study.spacing, study.lungs
    assert len(study.cands) >= 20
    calls = {"mask": 0}
    original = measure._nodule_mask

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls["mask"] += 1
        return original(*args, **kwargs)

    ours, theirs = [], []
    for c, m in zip(study.cands, study.measurements, strict=True):
        ref = reference_measure_consistent(hu, c.center_kji, c.radius_mm, spacing, lungs)
        assert _fields(m) == _fields(ref)  # detect_candidates' measurement
        ours.append(m)
        theirs.append(ref)
    measured = [m for m in ours if m is not None]
    assert len(measured) >= 15 and {m.type for m in measured} >= {"solid", "part-solid"}
    measure._nodule_mask = counting
    try:
        cache: dict = {}
        for m, ref in zip(ours, theirs, strict=True):
            again = recentre_measurement(hu, m, spacing, lungs, cache=cache)
            assert _fields(again) == _fields(reference_recentre(hu, ref, spacing, lungs))
            assert _fields(recentre_measurement(hu, m, spacing, lungs)) == _fields(again)  # without the cache
    finally:
        measure._nodule_mask = original
    assert calls["mask"] > 0


def test_the_findings_loop_gives_the_same_findings_as_before(study: SimpleNamespace,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The analyzer's findings (re-centred through the study's cache, deduplicated, ranked) against
    the same loop running the reference measurement, with a stand-in classifier that passes about
    two thirds of the candidates."""
    rng = np.random.default_rng(0)
    prob = rng.uniform(0.2, 1.0, size=len(study.cands))

    class Stub:
        def predict(self, patches: np.ndarray, features: np.ndarray) -> SimpleNamespace:
            z = np.zeros(len(patches))
            return SimpleNamespace(nodule_probability=prob[:len(patches)], malignancy=z + 0.5, malignancy_std=z,
                                   nodule_std=z)

    def run() -> Any:
        result = StudyAnalyzer(Stub(), threshold=0.45, backend="scipy").analyze_volume(study.volume)
        return result.findings, [_fields(m) for m in result.measurements]

    ours = run()
    assert len(ours[0]) >= 3
    monkeypatch.setattr(analyzer_module, "measure_consistent",
                        lambda *a, cache=None, **k: reference_measure_consistent(*a, **k))
    monkeypatch.setattr(analyzer_module, "recentre_measurement",
                        lambda *a, cache=None, **k: reference_recentre(*a, **k))
    assert run() == ours


def _brute_longest(mask3d: np.ndarray, sy: float, sx: float, origin: tuple[int, int]) -> tuple[float, float]:
    """The loop ``measure_nodule`` ran before: every slice, the first largest long axis."""
    best = (0.0, 0.0)
    for k in np.flatnonzero(mask3d.any(axis=(1, 2))):
        d = reference_axial_diameters(np.pad(mask3d[k], ((origin[0], 0), (origin[1], 0))), sy, sx)
        if d[0] > best[0]:
            best = d
    return best


def test_longest_axial_diameter_equals_the_loop_over_every_slice_ties_included() -> None:
    rng = np.random.default_rng(1)
    zz, yy, xx = np.mgrid[:9, :15, :17]
    shapes = [
        np.ones((5, 6, 6), dtype=bool),  # every slice the same: the first must win the tie
        (yy - 7) ** 2 + (xx - 8) ** 2 <= 36,  # a cylinder: equal discs
        (zz - 4) ** 2 + (yy - 7) ** 2 + (xx - 8) ** 2 <= 16,  # a sphere: mirrored slices tie
        np.zeros((3, 4, 4), dtype=bool),
    ]
    shapes[3][1, 2, 2] = True  # a single pixel
    for _ in range(40):
        shapes.append(ndimage.gaussian_filter(rng.normal(size=(7, 14, 14)), 1.5) > rng.uniform(0.0, 0.3))
    for mask in shapes:
        for sy, sx in ((0.7, 0.7), (1.4, 1.4), (0.62, 0.81)):
            origin = (int(rng.integers(0, 40)), int(rng.integers(0, 40)))
            expected = _brute_longest(mask, sy, sx, origin)
            assert _longest_axial(mask, sy, sx, origin) == expected
            assert _longest_axial(mask, sy, sx, origin, short_axis=False)[0] == expected[0]


@pytest.mark.parametrize("spacing", [(1.0, 0.7, 0.7), (2.0, 1.6, 1.6), (1.25, 0.68, 0.74)])
def test_distances_at_chosen_voxels_equal_scipys_bit_for_bit(spacing: tuple[float, float, float]) -> None:
    rng = np.random.default_rng(2)
    mask = ndimage.gaussian_filter(rng.normal(size=(30, 40, 36)), 2.0) > 0.0
    expected = ndimage.distance_transform_edt(mask, sampling=spacing)
    flat = np.flatnonzero(mask)
    assert np.array_equal(_edt_at(mask, flat, spacing), expected.reshape(-1)[flat])
    assert np.array_equal(_edt_at(~mask, np.flatnonzero(~mask), spacing),
                          ndimage.distance_transform_edt(~mask, sampling=spacing)[~mask])
