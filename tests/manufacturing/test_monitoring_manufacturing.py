"""Manufacturing monitoring: an inspector registered with a profile of its held-out good parts;
a lot of fresh good parts passes, a brighter lot (a new lamp) raises a brightness alert."""

from __future__ import annotations

import numpy as np
import torch

from trillium.core.db import connect
from trillium.core.monitoring import store
from trillium.core.monitoring.profile import PROFILE_FILE
from trillium.core.registry import ModelRegistry
from trillium.manufacturing.batch import inspect_folder
from trillium.manufacturing.detector import DefectDetector
from trillium.manufacturing.lifecycle import _finish, _LineData, _reference_profile
from trillium.manufacturing.monitoring import image_stats, monitor_images
from trillium.manufacturing.pipeline import Inspector
from trillium.manufacturing.synth import synthetic_images


def test_image_stats_see_brightness_contrast_and_blur() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((1, 1, 32, 32)).astype(np.float32)
    stats = image_stats(np.concatenate([img, img * 0.5, np.full_like(img, 0.3)]))
    assert stats["brightness"].iloc[1] == np.float32(stats["brightness"].iloc[0] * 0.5)
    assert stats["contrast"].iloc[1] < stats["contrast"].iloc[0] and stats["contrast"].iloc[2] == 0
    assert stats["sharpness"].iloc[2] == 0 < stats["sharpness"].iloc[1] < stats["sharpness"].iloc[0]


def test_registered_inspector_profile_and_lot_drift() -> None:
    torch.manual_seed(0)
    good, _ = synthetic_images(80, size=32, seed=1)
    x = good.transpose(0, 3, 1, 2)
    det = DefectDetector(size=32, width=4, steps=3, batch_size=4, pool=3, val_fraction=0.3)
    det.fit(x)
    inspector = Inspector(det)
    profile = _reference_profile(inspector, x)
    assert profile["rows"] == 24 and profile["score"]["rows"] == 24  # the held-out good parts, with scores
    # the detector's pooled features, projected on the reference's first principal axes
    assert [c for c in profile["features"] if c.startswith("embedding_pc")] == [f"embedding_pc{i}" for i in (1, 2, 3, 4)]
    assert np.allclose([profile["features"][f"embedding_pc{i}"]["mean"] for i in (1, 2, 3, 4)], 0, atol=1e-5)
    registry = ModelRegistry(connect())
    record = inspector.register(registry, profile=profile)
    assert PROFILE_FILE in record.files
    loaded = Inspector.from_registry(record.name, record.version, registry=registry, runtime=False)

    lot, _ = synthetic_images(50, size=32, seed=1, start=500)  # more parts of the same line
    res = loaded.inspect_arrays(list(lot))
    monitor_images(loaded, list(lot), [r.score for r in res], label="same line")
    brighter = np.clip(lot + 0.12, 0, 1)
    res = loaded.inspect_arrays(list(brighter))
    monitor_images(loaded, list(brighter), [r.score for r in res], label="new lamp")
    runs = store.runs(record.name).set_index("label")
    assert runs.loc["same line", "status"] == "ok"
    alerts = store.alerts(record.name)
    assert set(alerts["message"].str.split(":").str[0]) == {"new lamp"}
    assert "brightness" in set(alerts["feature"])


def test_a_trained_inspector_checks_its_inspection_jobs(tmp_path) -> None:
    """Training registers the profile and keeps where it is registered, so the inspection job
    right after (as in the demo) is checked against it."""
    import time

    from PIL import Image

    torch.manual_seed(0)
    good, _ = synthetic_images(40, size=32, seed=3)
    det = DefectDetector(size=32, width=4, steps=3, batch_size=4, pool=3, val_fraction=0.5)
    det.fit(good.transpose(0, 3, 1, 2))
    line = _LineData(good.transpose(0, 3, 1, 2), None, [], [])
    registry = ModelRegistry(connect())
    trained = _finish(det, line, name="inspector", register=True, autotune=False, registry=registry,
                      started=time.perf_counter())
    assert trained.inspector.registry_ref is not None and PROFILE_FILE in trained.record.files
    folder = tmp_path / "lot"
    folder.mkdir()
    lot, _ = synthetic_images(12, size=32, seed=3, start=900)
    for i, img in enumerate(np.clip(lot + 0.2, 0, 1)):  # a much brighter lot
        Image.fromarray((img[..., 0] * 255).round().astype("uint8")).save(folder / f"part-{i:02d}.png")
    job = inspect_folder(trained.inspector, folder, tmp_path / "out.csv", progress=False)
    runs = store.runs("inspector")
    assert runs["job_id"].tolist() == [job.job.job_id] and runs["rows"].tolist() == [12]
    assert "brightness" in set(store.alerts("inspector")["feature"])
