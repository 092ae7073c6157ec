"""A study's measurements on several processes equal the serial loop's, field for field (issue 22).

``parallel.measure_all`` and ``recentre_all`` fork workers that share the study's voxels; every
measurement that comes back must equal the one this process computes alone (floats bit for bit,
the segmentation voxel for voxel), in the candidates' order, and the analyser's findings must be
the same with one worker or several.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from trillium.core.errors import ConfigError
from trillium.medical.imaging.analyzer import detect_candidates
from trillium.medical.imaging.measure import Measurement
from trillium.medical.imaging.parallel import ct_workers, measure_all, recentre_all
from trillium.medical.imaging.phantom_training import phantom_volume


def _fields(m: Measurement | None) -> Any:
    if m is None:
        return None
    return {k: (v.shape, v.tobytes()) if isinstance(v, np.ndarray) else repr(v) for k, v in m.__dict__.items()}


@pytest.fixture(scope="module")
def study() -> Any:
    volume, _ = phantom_volume(6, 11, shape=(72, 160, 160), spacing=(2.0, 1.6, 1.6))
    cands, measurements, lungs = detect_candidates(volume, backend="scipy")
    return volume, cands, measurements, lungs


def test_measurements_on_three_processes_equal_the_serial_loop(study) -> None:
    volume, cands, serial, lungs = study
    assert len(cands) >= 12
    centers, radii = [c.center_kji for c in cands], [c.radius_mm for c in cands]
    forked = measure_all(volume.hu, centers, radii, volume.spacing, lungs, workers=3)
    assert [_fields(m) for m in forked] == [_fields(m) for m in serial]
    again = recentre_all(volume.hu, serial, volume.spacing, lungs, workers=1)
    forked_again = recentre_all(volume.hu, serial, volume.spacing, lungs, workers=3)
    assert [_fields(m) for m in forked_again] == [_fields(m) for m in again]
    assert any(_fields(a) != _fields(m) for a, m in zip(again, serial, strict=True))  # re-centring moved some


def test_the_analyser_reports_the_same_findings_with_one_worker_or_several(study, monkeypatch) -> None:
    from types import SimpleNamespace

    from trillium.medical.imaging.analyzer import StudyAnalyzer

    volume = study[0]
    prob = np.random.default_rng(0).uniform(0.2, 1.0, size=len(study[1]))

    class Stub:
        """A stand-in classifier passing about two thirds of the candidates: the test is the loop's."""

        def predict(self, patches: np.ndarray, features: np.ndarray) -> SimpleNamespace:
            z = np.zeros(len(patches))
            return SimpleNamespace(nodule_probability=prob[:len(patches)], malignancy=z + 0.5, malignancy_std=z,
                                   nodule_std=z)

    analyzer = StudyAnalyzer(Stub(), threshold=0.45, backend="scipy")
    monkeypatch.setenv("TRILLIUM_CT_WORKERS", "1")
    one = analyzer.analyze_volume(volume).findings
    monkeypatch.setenv("TRILLIUM_CT_WORKERS", "3")
    three = analyzer.analyze_volume(volume).findings
    assert one and one == three


def test_worker_count(monkeypatch) -> None:
    monkeypatch.setenv("TRILLIUM_CT_WORKERS", "4")
    assert ct_workers() == 4 and ct_workers(2) == 2 and ct_workers(0) == 1
    monkeypatch.setenv("TRILLIUM_CT_WORKERS", "many")
    with pytest.raises(ConfigError, match="TRILLIUM_CT_WORKERS"):
        ct_workers()
    monkeypatch.delenv("TRILLIUM_CT_WORKERS")
    import os
    import threading

    # the default: every core in a process of one Python thread, else 1 (a fork copies no thread)
    assert ct_workers() == (min(os.cpu_count() or 1, 16) if threading.active_count() == 1 else 1)
    done = threading.Event()
    other = threading.Thread(target=done.wait)
    other.start()
    try:
        assert ct_workers() == 1
    finally:
        done.set()
        other.join()


def test_the_lung_mask_on_slabs_of_several_threads_equals_one_thread(study, monkeypatch) -> None:
    from trillium.medical.imaging.lungs import by_slabs, segment_lungs

    volume = study[0]
    monkeypatch.setenv("TRILLIUM_CT_THREADS", "1")
    one = segment_lungs(volume.hu, volume.spacing)
    for threads in ("3", "7"):  # slabs of uneven size, and one boundary inside the juxtapleural nodules' slices
        monkeypatch.setenv("TRILLIUM_CT_THREADS", threads)
        assert np.array_equal(segment_lungs(volume.hu, volume.spacing), one), threads
    seen = by_slabs(lambda sl: np.arange(sl.start, sl.stop), 10, 4)
    assert [len(s) for s in seen] == [2, 3, 2, 3] and np.array_equal(np.concatenate(seen), np.arange(10))
