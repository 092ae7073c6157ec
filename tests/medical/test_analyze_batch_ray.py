"""``analyze_folder(..., engine="ray")``: the local engine's study summaries, findings and quarantine.

A tiny nodule classifier (one phantom's candidates, one epoch: the comparison needs the same
model, not a good one) is fitted once for the module into its own registry; a local Ray cluster of
2 CPUs is started once. The workers load the classifier from that registry, read the studies,
write the findings JSON and store the studies in the registry's database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from sqlalchemy import func, select

from trillium.core.db import Database, connect
from trillium.core.jobs import read_quarantine
from trillium.core.registry import ModelRegistry
from trillium.medical.imaging.analyzer import StudyAnalyzer
from trillium.medical.imaging.batch import analyze_folder, read_summary
from trillium.medical.imaging.classifier import NoduleClassifier
from trillium.medical.imaging.phantom import write_phantom
from trillium.medical.imaging.phantom_training import candidate_set
from trillium.medical.tables import ImagingStudy

SMALL = (72, 160, 160)
SMALL_SPACING = (2.0, 1.6, 1.6)


@pytest.fixture(scope="module")
def registry_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A registry holding a classifier fitted on one phantom's candidates, split in two groups
    for the cross-fitting (seconds, where a real training set takes minutes)."""
    home = tmp_path_factory.mktemp("ct-registry")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = candidate_set([0], shape=SMALL, spacing=SMALL_SPACING)
        data["groups"] = np.arange(len(data["groups"])) % 2
        clf = NoduleClassifier(width=4, epochs=1, seed=0, mc_samples=2).fit(
            data["patches"], data["features"], data["is_nodule"], data["malignant"], data["groups"])
    finally:
        torch.set_num_threads(threads)
    clf.register(ModelRegistry(connect(f"sqlite:///{home / 'registry.db'}"), home / "registry"), threshold=0.5)
    yield home


def _studies(root: Path) -> None:
    """Two phantom studies and one with a slice missing (refused by the loader)."""
    for name, seed in (("a", 41), ("b", 42)):
        write_phantom(root / name, nodules=2, seed=seed, shape=SMALL, spacing=SMALL_SPACING)
    write_phantom(root / "c-broken", nodules=1, seed=43, shape=SMALL, spacing=SMALL_SPACING)
    files = sorted((root / "c-broken").glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    files[len(files) // 2].unlink()


def _stored_studies(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(ImagingStudy)))


def test_analyze_batch_on_ray_equals_the_local_engine(ray_cluster: Any, registry_home: Path, tmp_path: Path) -> None:
    root = tmp_path / "studies"
    _studies(root)
    db = connect(f"sqlite:///{registry_home / 'registry.db'}")  # the findings name the model version: one database
    analyzer = StudyAnalyzer.from_registry(registry=ModelRegistry(db, registry_home / "registry"))
    before = _stored_studies(db)
    local = analyze_folder(analyzer, root, tmp_path / "local", db=db, chunk_rows=1, progress=False)
    assert _stored_studies(db) == before + 2

    ray = analyze_folder(analyzer, root, tmp_path / "ray", db=db, chunk_rows=1, progress=False, engine="ray",
                         workers=2)

    assert ray.job.status == "done" and ray.job.params["engine"] == "ray" and ray.job.chunks == 3
    lo = read_summary(tmp_path / "local").sort_values("study", ignore_index=True)
    ro = read_summary(tmp_path / "ray").sort_values("study", ignore_index=True)
    assert list(ro["study"]) == ["a", "b"]
    varying = ["seconds", "json"]  # wall time, and the JSON's own folder
    pd.testing.assert_frame_equal(ro.drop(columns=varying), lo.drop(columns=varying), check_exact=False, rtol=1e-6)
    for mine, theirs in zip(ro["json"], lo["json"], strict=True):
        assert Path(mine).parent == (tmp_path / "ray_studies").resolve()
        a, b = json.loads(Path(mine).read_text()), json.loads(Path(theirs).read_text())
        assert a["findings"] == b["findings"] and a["series_uid"] == b["series_uid"]
    q = read_quarantine(ray.job.quarantine)
    pd.testing.assert_frame_equal(q, read_quarantine(local.job.quarantine))
    assert len(q) == 1 and "c-broken" in q["record"][0] and "missing slice" in q["reason"][0]
    assert _stored_studies(db) == before + 2  # the workers stored them again, replacing, not duplicating
