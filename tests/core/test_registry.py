"""Registry: versions, aliases, sha256 on load, no untrusted code, on SQLite and PostgreSQL."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from trillium.core.db import Database
from trillium.core.errors import IntegrityError, RegistryError
from trillium.core.models.reference import TabularMLP
from trillium.core.registry import ModelRegistry, data_fingerprint
from trillium.core.runtime import InferenceRuntime, TuneSettings


@pytest.fixture
def registry(database: Database, tmp_path) -> ModelRegistry:
    return ModelRegistry(database, root=tmp_path / "registry")


def _mlp(seed: int) -> TabularMLP:
    torch.manual_seed(seed)
    return TabularMLP(n_features=8, hidden=(16, 16))


def test_versions_increment_and_weights_round_trip(registry: ModelRegistry) -> None:
    x = torch.randn(4, 8)
    m1, m2 = _mlp(1), _mlp(2)
    kw = {"n_features": 8, "hidden": [16, 16]}
    r1 = registry.register_torch("fraud-mlp", m1, x, init_kwargs=kw, metrics={"auc": 0.9})
    r2 = registry.register_torch("fraud-mlp", m2, x, init_kwargs=kw, metrics={"auc": 0.95},
                                 data_fingerprint=data_fingerprint(pd.DataFrame({"a": [1, 2]})))
    assert (r1.version, r2.version) == (1, 2)
    loaded, rec = registry.load_torch("fraud-mlp")  # latest
    assert rec.version == 2 and rec.metrics == {"auc": 0.95} and len(rec.data_fingerprint) == 64
    assert rec.input_signature == {"inputs": [{"shape": [-1, 8], "dtype": "float32"}]}
    with torch.no_grad():
        assert torch.equal(loaded(x), m2(x))
        assert torch.equal(registry.load_torch("fraud-mlp", 1)[0](x), m1(x))


def test_aliases_move_between_versions(registry: ModelRegistry) -> None:
    x = torch.randn(2, 8)
    kw = {"n_features": 8, "hidden": [16, 16]}
    registry.register_torch("m", _mlp(1), x, init_kwargs=kw, aliases=["production"])
    registry.register_torch("m", _mlp(2), x, init_kwargs=kw)
    assert registry.get("m", "production").version == 1
    registry.set_alias("m", "production", 2)
    assert registry.get("m", "production").version == 2
    assert registry.get("m", 2).aliases == ("production",)
    assert [r.version for r in registry.list("m")] == [1, 2]


def test_tampered_file_is_refused_with_a_clear_error(registry: ModelRegistry) -> None:
    rec = registry.register_torch("m", _mlp(1), torch.randn(2, 8), init_kwargs={"n_features": 8, "hidden": [16, 16]})
    weights = rec.directory / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="modified after registration"):
        registry.load_torch("m")


def test_missing_model_and_bad_names_are_clear(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="no model 'nope'"):
        registry.get("nope")
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.register("../evil", {"a.bin": b"x"})


def test_only_trusted_classes_are_rebuilt(registry: ModelRegistry) -> None:
    class Outside(torch.nn.Module):
        def forward(self, x):  # pragma: no cover - never called
            return x

    with pytest.raises(RegistryError, match="outside the trillium package"):
        registry.register_torch("m", Outside(), torch.randn(1, 2), init_kwargs={})
    rec = registry.register("m", {"weights.safetensors": b"", "example.safetensors": b""}, kind="torch",
                            architecture="os:system", init_kwargs={})
    with pytest.raises(RegistryError, match="only classes inside the trillium package"):
        registry.load_torch("m", rec.version)


def test_runtime_choice_is_stored_and_rebuilt(registry: ModelRegistry) -> None:
    model = _mlp(3)
    x = torch.randn(16, 8)
    rt = InferenceRuntime(model, x, device="cpu")
    report = rt.autotune(TuneSettings(sizes=(1, 16), include_compile=False, budget_s=0.05, min_repeats=3))
    registry.register_torch("m", model, x, init_kwargs={"n_features": 8, "hidden": [16, 16]},
                            onnx=rt.onnx_bytes, autotune=report)
    served = registry.load_runtime("m", device="cpu")
    assert served.backend_for(1) == report["choice"]["1"]
    assert served.backend_for(16) == report["choice"]["16"]
    with torch.no_grad():
        torch.testing.assert_close(served(x), model(x), rtol=1e-4, atol=1e-5)


def test_models_list_keeps_names_and_aliases_whole_on_a_narrow_terminal(trillium_home) -> None:
    """CI and batch jobs see 80 columns: names and aliases are what they grep, never an ellipsis."""
    import os
    import subprocess
    import sys

    registry = ModelRegistry()  # the default home's database and registry, as the CLI uses them
    x = torch.randn(2, 8)
    kw = {"n_features": 8, "hidden": [16, 16]}
    long_names = ["reference-mlp", "fraud-scorer-handbook-ensemble", "chest-ct-nodules-classifier"]
    for name in long_names:
        registry.register_torch(name, _mlp(1), x, init_kwargs=kw, aliases=["production", "staging"],
                                metrics={"auc": 0.91, "acc": 0.88, "average_precision": 0.5})
    env = {**os.environ, "COLUMNS": "80", "TRILLIUM_HOME": str(trillium_home)}
    res = subprocess.run([sys.executable, "-m", "trillium.core.cli", "models", "list"], env=env,
                         text=True, capture_output=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert max(len(line) for line in res.stdout.splitlines()) <= 80
    for name in long_names:
        assert name in res.stdout
    assert res.stdout.count("production,staging") == len(long_names)
