"""The home page renders on an empty database and lists what the registry holds."""

from __future__ import annotations

from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest

from trillium import dashboards
from trillium.core.models.reference import TabularMLP
from trillium.core.registry import ModelRegistry

APP = str(Path(dashboards.__file__).parent / "Home.py")


def test_home_on_empty_database_shows_guidance() -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("No model registered yet" in i.value for i in at.info)


def test_home_lists_registered_models() -> None:
    ModelRegistry().register_torch("demo-mlp", TabularMLP(n_features=4, hidden=(8,)), torch.randn(2, 4),
                                   init_kwargs={"n_features": 4, "hidden": [8]}, metrics={"auc": 0.9})
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    frame = at.dataframe[0].value
    assert list(frame["name"]) == ["demo-mlp"]
    assert next(m.value for m in at.metric) == "1"
