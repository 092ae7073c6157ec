"""``trillium manufacturing inspect FOLDER --engine ray``: the local engine's verdicts, row by row.

A tiny inspector (32 px, a few training steps: the comparison needs the same model, not a
good one) is fitted once for the module; a local Ray cluster of 2 CPUs is started once.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from trillium.core.cli import app
from trillium.core.db import connect
from trillium.core.jobs import read_quarantine
from trillium.manufacturing.batch import OUTPUT_COLUMNS, inspect_folder, read_inspections
from trillium.manufacturing.detector import DefectDetector
from trillium.manufacturing.images import discover_mvtec, load_batch, mvtec_split
from trillium.manufacturing.linestats import recent_inspections
from trillium.manufacturing.pipeline import Inspector
from trillium.manufacturing.synth import write_synthetic_line

SIZE = 32


@pytest.fixture(scope="module")
def line(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DefectDetector]:
    root = tmp_path_factory.mktemp("line") / "surface"
    write_synthetic_line(root, kind="surface", n_train=8, n_test_good=4, n_test_per_defect=3, size=SIZE, seed=0,
                         defects=("hole",))
    x, _ = load_batch([s.path for s in mvtec_split(discover_mvtec(root), "train")], (SIZE, SIZE), 1)
    return root, DefectDetector(size=SIZE, steps=5, batch_size=4, seed=0).fit(x)


def test_inspect_folder_on_ray_equals_the_local_engine(
    ray_cluster: Any, line: tuple[Path, DefectDetector], tmp_path: Path
) -> None:
    root, detector = line
    Inspector(detector).register()
    incoming = tmp_path / "incoming"
    for sub in ("good", "hole"):
        (incoming / sub).mkdir(parents=True)
        for p in sorted((root / "test" / sub).glob("*.png")):
            shutil.copy(p, incoming / sub / p.name)
    (incoming / "hole" / "broken.png").write_bytes(b"this is no png")
    inspector = Inspector.from_registry()
    local = inspect_folder(inspector, incoming, tmp_path / "local", overlay_dir=tmp_path / "ov-local", line="L",
                           chunk_rows=3, progress=False)

    ray = inspect_folder(inspector, incoming, tmp_path / "ray", overlay_dir=tmp_path / "ov-ray", line="R",
                         chunk_rows=3, progress=False, engine="ray", workers=2)

    assert ray.job.params["engine"] == "ray" and ray.job.chunks == local.job.chunks == 3
    lo = read_inspections(tmp_path / "local").sort_values("image_id", ignore_index=True)
    ro = read_inspections(tmp_path / "ray").sort_values("image_id", ignore_index=True)
    assert list(ro.columns) == OUTPUT_COLUMNS and len(ro) == local.job.rows_out == 7
    pd.testing.assert_frame_equal(ro.drop(columns=["overlay"]), lo.drop(columns=["overlay"]), check_exact=False,
                                  rtol=1e-6)
    assert [Path(p).name for p in ro["overlay"]] == [Path(p).name for p in lo["overlay"]]
    assert all(Path(p).parent == tmp_path / "ov-ray" and Path(p).is_file() for p in ro["overlay"])
    q = read_quarantine(tmp_path / "ray.quarantine.csv")
    pd.testing.assert_frame_equal(q, read_quarantine(local.job.quarantine))
    assert len(q) == 1 and "broken.png" in q["reason"][0]
    stored = recent_inspections(db=connect(), line="R")
    assert ray.stored == 7 and sorted(stored["image_id"]) == sorted(ro["image_id"])  # once each, from the output


def test_inspect_cli_engine_options_are_checked_before_any_work(line: tuple[Path, DefectDetector],
                                                                tmp_path: Path) -> None:
    root, detector = line
    Inspector(detector).register()
    image = min((root / "test" / "good").glob("*.png"))
    runner = CliRunner()
    res = runner.invoke(app, ["manufacturing", "inspect", str(image), "--engine", "ray"])
    assert res.exit_code == 2 and "applies to folders" in " ".join(res.output.split())
    res = runner.invoke(app, ["manufacturing", "inspect", str(root / "test"), "--engine", "ray", "--output",
                              str(tmp_path / "v.csv")])
    assert res.exit_code == 2 and "writes a directory of Parquet parts" in " ".join(res.output.split())
    assert not (tmp_path / "v.csv").exists()
