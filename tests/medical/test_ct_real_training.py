"""Real series as training material (``real_training``): synthetic nodules drawn into real lungs
away from every reader's mark, at the series' own noise and slice thickness, and the labelling of
the detector's candidates on a real series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_DATA, require_shared
from trillium.medical.imaging.lungs import segment_lungs
from trillium.medical.imaging.phantom_training import join_candidate_sets, phantom_volume
from trillium.medical.imaging.real_training import (
    MARK_MARGIN_MM,
    RealSeries,
    insert_nodules,
    real_candidate_set,
)


def _series(spacing: tuple[float, float, float], marks_kji: list[tuple[tuple[float, float, float], float]],
            noise_hu: float = 20.0) -> RealSeries:
    """A vessel-free phantom standing in for a real series, with marks placed in its lungs."""
    shape = (round(140 * 1.5 / spacing[0]), 160, 160)
    vol, _ = phantom_volume(0, 7, shape=shape, spacing=spacing, vessels=False, noise_hu=noise_hu)
    lungs = segment_lungs(vol.hu, vol.spacing)
    marks = [(vol.voxel_to_patient(np.array(c)), r) for c, r in marks_kji]
    return RealSeries(Path("phantom"), "P1", vol, lungs, marks, [], [])


@pytest.mark.parametrize("spacing", [(1.5, 1.4, 1.4), (5.0, 1.4, 1.4)])
def test_inserted_nodules_sit_in_the_lungs_away_from_marks_where_their_centres_say(spacing) -> None:
    probe = _series(spacing, [])
    lung_vox = np.argwhere(probe.lungs)
    mark = (tuple(float(v) for v in lung_vox[len(lung_vox) // 2]), 6.0)
    series = _series(spacing, [mark])
    hu, nodules = insert_nodules(series, 6, seed=3)
    assert len(nodules) == 6 and hu.shape == series.volume.hu.shape and hu.dtype == np.int16
    mark_mm = series.marks[0][0]
    changed = np.abs(hu.astype(np.int32) - series.volume.hu) > 60
    for nod in nodules:
        k, j, i = (round(v) for v in nod.center_kji)
        assert series.lungs[k, j, i]
        # clear of the mark by its radius, the margin and the nodule's own radius
        assert np.linalg.norm(np.array(nod.center_mm) - mark_mm) > 6.0 + MARK_MARGIN_MM
        if nod.type != "ground-glass" and nod.diameter_mm >= 8:
            assert hu[k, j, i] > -400 > series.volume.hu[k, j, i]  # a solid centre where lung was
    # nothing outside the lungs changed, and nothing near the mark
    assert not (changed & ~series.lungs).any()
    c = np.round(series.volume.patient_to_voxel(mark_mm)).astype(int)
    assert not changed[c[0], c[1], c[2]]


def test_thick_slices_get_partial_volume_and_the_series_noise() -> None:
    thin = _series((1.5, 1.4, 1.4), [], noise_hu=20.0)
    thick = _series((5.0, 1.4, 1.4), [], noise_hu=80.0)
    _, thin_nods = insert_nodules(thin, 8, seed=5, diameter_range=(5.0, 6.0))
    hu, thick_nods = insert_nodules(thick, 8, seed=5, diameter_range=(5.0, 6.0))
    # a 5-6 mm solid nodule fills a 5 mm slice only in part: its peak is well below solid tissue
    peaks = [hu[tuple(round(v) for v in n.center_kji)] for n in thick_nods if n.type == "solid"]
    assert peaks and float(np.median(peaks)) < -100
    # inside the big nodules the noise is that of the series (80 HU), not noise-free
    hu_big, big = insert_nodules(thick, 4, seed=9, diameter_range=(24.0, 28.0))
    spreads = []
    for n in big:
        if n.type != "solid":
            continue
        k, j, i = (round(v) for v in n.center_kji)
        core = hu_big[k, j - 3:j + 4, i - 3:i + 4].astype(float)
        spreads.append(core.std())
    assert spreads and 20 < float(np.median(spreads)) < 200
    assert thin_nods  # the thin series took nodules too


def test_real_series_candidates_are_labelled_away_from_every_mark() -> None:
    patient = require_shared(SHARED_DATA / "medical-imaging" / "lung-pet-ct-dx" / "A0002",
                             "the Lung-PET-CT-Dx patient A0002")
    reads: list[tuple[str | None, str]] = []
    data = real_candidate_set([patient / "series-B70f"], copies=1, nodules_per_copy=8, seed=1,
                              on_read=lambda p, uid: reads.append((p, uid)))
    assert len(reads) == 1 and reads[0][0] == "Lung_Dx-A0002" and reads[0][1]  # each series read is reported
    counts = data["counts"]
    # 8 mm slices: the smallest drawn nodules vanish in the partial volume; 3-6 of 8 get a candidate
    assert counts["negatives"] > 0 and counts["synthetic_hits"] >= 2
    assert set(data["groups"]) == {"real:Lung_Dx-A0002"}
    n = len(data["is_nodule"])
    assert data["patches"].shape == (n, 1, 24, 24, 24) and data["features"].shape[0] == n
    assert data["is_nodule"].sum() == counts["synthetic_hits"] + counts["lesion_hits"]
    # malignancy only where there is a nodule
    assert not (data["malignant"] > 0)[data["is_nodule"] < 0.5].any()
    joined = join_candidate_sets({k: v for k, v in data.items() if k != "counts"},
                                 {**{k: v[:3] for k, v in data.items() if k != "counts"}, "groups": np.array([4, 4, 4])})
    assert joined["groups"].dtype.kind == "U" and len(joined["is_nodule"]) == n + 3


def test_train_refuses_a_real_series_without_marks_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trillium.core.cli import app

    bare = tmp_path / "series"
    bare.mkdir()
    r = CliRunner().invoke(app, ["medical", "train", "--real-series", str(bare)])
    assert r.exit_code != 0 and str(bare) in r.output and "no readers' marks" in r.output
    r = CliRunner().invoke(app, ["medical", "train", "--real-series", str(tmp_path / "missing")])
    assert r.exit_code != 0 and "not found" in r.output


def test_train_audits_each_real_series_it_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's hook writes one attributable row per real series; training itself is replaced by a
    stand-in that only reads (the real training takes minutes and is measured in benchmarks)."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import trillium.medical.imaging.phantom_training as pt
    from trillium.core.audit import audit_rows, cli_actor
    from trillium.core.cli import app
    from trillium.core.db import connect

    monkeypatch.setenv("TRILLIUM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRILLIUM_DB_URL", raising=False)
    series = tmp_path / "series"
    series.mkdir()
    (tmp_path / "annotations").mkdir()

    def stand_in(**kw):
        kw["on_read"]("PAT-7", "1.2.3.4")
        return SimpleNamespace(record=None, seconds=0.0, metrics={"real_series": len(kw["real_series"])})

    monkeypatch.setattr(pt, "train_nodule_model", stand_in)
    r = CliRunner().invoke(app, ["medical", "train", "--real-series", str(series)])
    assert r.exit_code == 0, r.output
    rows = audit_rows(connect(), action="medical.ct.train")
    assert [(x["target"], x["actor"], x["details"]["patient"]) for x in rows] == [("1.2.3.4", cli_actor(), "PAT-7")]
