"""The home page renders on an empty database and lists what the registry holds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from streamlit.testing.v1 import AppTest

from tests.dashboard_login import logged_in
from trillium import dashboards
from trillium.core import jobs
from trillium.core.models.reference import TabularMLP
from trillium.core.registry import ModelRegistry

APP = str(Path(dashboards.__file__).parent / "Home.py")


def test_home_on_empty_database_shows_guidance() -> None:
    at = logged_in(AppTest.from_file(APP, default_timeout=60)).run()
    assert not at.exception
    assert any("No model registered yet" in i.value for i in at.info)


def test_home_lists_registered_models_and_jobs(tmp_path: Path) -> None:
    registry = ModelRegistry()

    def register(name: str):
        return registry.register_torch(name, TabularMLP(n_features=4, hidden=(8,)), torch.randn(2, 4),
                                       init_kwargs={"n_features": 4, "hidden": [8]}, metrics={"auc": 0.9})

    registered = [register("demo-mlp"), register("other-mlp"), register("demo-mlp")]
    assert [(r.name, r.version) for r in registered] == [("demo-mlp", 1), ("other-mlp", 1), ("demo-mlp", 2)]
    src = tmp_path / "rows.parquet"
    pd.DataFrame({"id": range(10)}).to_parquet(src, index=False)
    job = jobs.run_job("home-demo-job", jobs.ParquetSource(src, 4), lambda frame, _: frame.assign(x=2 * frame["id"]),
                       jobs.CsvSink(tmp_path / "out.csv"), progress=False)
    at = logged_in(AppTest.from_file(APP, default_timeout=60), ("viewer",)).run()
    assert not at.exception
    models, job_table = (d.value for d in at.dataframe)
    # every version, newest first, each with its name, number (per name, not the row id) and kind
    assert models[["name", "version", "kind"]].values.tolist() == [[r.name, r.version, r.kind]
                                                                   for r in reversed(registered)]
    assert job_table[["job", "status", "rows in", "chunks"]].values.tolist() == [[job.name, "done", 10, 3]]
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["model versions"], metrics["jobs"]) == ("3", "1")
