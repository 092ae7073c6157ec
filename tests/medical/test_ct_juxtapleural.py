"""Nodules against the pleura: phantoms that have them, the rolling-ball lung mask that takes
them in without bridging the two lungs (``lungs.take_in_juxtapleural``), and their outlines kept
inside that mask (``measure.MEASURE_IN_LUNGS``)."""

from __future__ import annotations

import numpy as np

from trillium.medical.imaging.lungs import segment_lungs
from trillium.medical.imaging.phantom import make_phantom
from trillium.medical.imaging.phantom_training import phantom_volume


def _centres_in(mask: np.ndarray, nodules: list) -> float:
    return float(np.mean([mask[tuple(round(v) for v in n.center_kji)] for n in nodules]))


def test_pleural_phantoms_touch_the_wall_and_share_zero_leaves_every_seed_as_it_was() -> None:
    vol, nodules = phantom_volume(6, 4242, pleural_share=1.0)
    air_only = segment_lungs(vol.hu, vol.spacing, juxta_mm=0)
    big = [n for n in nodules if n.diameter_mm >= 8]
    assert big and _centres_in(air_only, big) < 0.7  # the air mask leaves most of them out
    # no extra random number is drawn at share 0: the phantom is the one every earlier release made
    a, na = make_phantom(4, 77, shape=(60, 128, 128))
    b, nb = make_phantom(4, 77, shape=(60, 128, 128), pleural_share=0.0)
    assert np.array_equal(a, b) and [n.center_kji for n in na] == [n.center_kji for n in nb]


def test_the_rolling_ball_takes_pleural_nodules_in_and_never_bridges_the_lungs() -> None:
    inside = {0: 0, 15: 0}
    total = 0
    for seed in (4242, 4243, 4244):
        vol, nodules = phantom_volume(6, seed, pleural_share=1.0)
        big = [n for n in nodules if n.diameter_mm >= 8]
        total += len(big)
        for juxta in inside:
            inside[juxta] += round(_centres_in(segment_lungs(vol.hu, vol.spacing, juxta_mm=juxta), big) * len(big))
    # 13 nodules of 8 mm or more: 2 centres inside the air mask, 8 inside the rolled one (those
    # against the apex or the base bulge along the body axis, which a slice-wise ball cannot reach)
    assert total >= 10 and inside[15] >= inside[0] + total // 3, (inside, total)
    air_only = segment_lungs(vol.hu, vol.spacing, juxta_mm=0)
    rolled = segment_lungs(vol.hu, vol.spacing, juxta_mm=15)
    assert (rolled | air_only).sum() == rolled.sum()  # it only adds
    added = rolled & ~air_only
    assert (vol.hu[added] > -400).all()  # only dense voxels: bumps of tissue, never air outside
    # the mediastinum between the lungs stays out on every slice that has two lungs
    mid = vol.hu.shape[2] // 2
    assert not rolled[:, :, mid - 2:mid + 3].any()
    # and it grows the lungs by a few per cent, not by the chest wall
    assert rolled.sum() < 1.1 * air_only.sum()


def test_a_nodule_against_the_pleura_is_outlined_inside_the_lungs_not_into_the_wall(monkeypatch) -> None:
    from trillium.medical.imaging import measure
    from trillium.medical.imaging.analyzer import recentre_measurement

    vol, nodules = phantom_volume(6, 4242, pleural_share=1.0)
    lungs = segment_lungs(vol.hu, vol.spacing)

    def outline(confined: bool) -> list[tuple[float, float]]:
        monkeypatch.setattr(measure, "MEASURE_IN_LUNGS", confined)
        out = []
        for n in nodules:
            if n.diameter_mm < 5:
                continue
            c = np.array(n.center_kji, float)
            m = recentre_measurement(vol.hu, measure.measure_consistent(vol.hu, c, n.diameter_mm / 2, vol.spacing,
                                                                        lungs), vol.spacing, lungs)
            out.append((np.inf, np.inf) if m is None else (
                abs(m.diameter_mm / n.diameter_mm - 1),
                float(np.linalg.norm((np.array(m.center_kji) - c) * np.array(vol.spacing)))))
        return out

    confined, free = outline(True), outline(False)
    assert len(confined) >= 4
    # confined to the lungs (and the bays the rolling ball took in): most near their size and centre
    assert np.median([e for e, _ in confined]) < 0.25 and np.median([d for _, d in confined]) < 2.5, confined
    # unconfined, the half-way threshold also passes the chest wall, and the outline grows into it
    assert np.median([e for e, _ in free]) > 1.0, free
    # an interior nodule is untouched by the confinement
    vol, nodules = phantom_volume(6, 4242)
    lungs = segment_lungs(vol.hu, vol.spacing)
    n = max(nodules, key=lambda n: n.diameter_mm)
    both = []
    for confine in (True, False):
        monkeypatch.setattr(measure, "MEASURE_IN_LUNGS", confine)
        both.append(measure.measure_consistent(vol.hu, np.array(n.center_kji, float), n.diameter_mm / 2, vol.spacing,
                                               lungs))
    a, b = both
    assert a is not None and b is not None and a.diameter_mm == b.diameter_mm and a.volume_mm3 == b.volume_mm3
