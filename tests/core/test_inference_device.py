"""Where served models run: ``TRILLIUM_DEVICE`` / ``--device``, a stored autotune measured on
another device, and what ``/readyz`` reports as each model's backends."""

from __future__ import annotations

import pytest
import torch

from trillium.core.errors import ConfigError
from trillium.core.models.reference import TabularMLP
from trillium.core.runtime import InferenceRuntime, inference_device
from trillium.core.service.live import runtime_routes


def test_device_comes_from_the_argument_then_the_environment_then_the_cpu(monkeypatch) -> None:
    monkeypatch.delenv("TRILLIUM_DEVICE", raising=False)
    assert inference_device() == "cpu"
    monkeypatch.setenv("TRILLIUM_DEVICE", " CPU ")
    assert inference_device() == "cpu"
    assert inference_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="expected cpu, cuda, cuda:N or auto"):
        inference_device("gpu")
    monkeypatch.setenv("TRILLIUM_DEVICE", "tpu")
    with pytest.raises(ConfigError, match="TRILLIUM_DEVICE"):
        inference_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_a_gpu_is_an_error_not_a_silent_cpu(monkeypatch) -> None:
    monkeypatch.setenv("TRILLIUM_DEVICE", "cuda")
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        inference_device()
    with pytest.raises(ConfigError):
        inference_device("cuda:0")


def test_a_report_measured_on_another_device_is_not_rebuilt_there() -> None:
    torch.manual_seed(0)
    model = TabularMLP(n_features=8, hidden=(16,))
    x = torch.randn(4, 8)
    same = InferenceRuntime.from_report(model, x, {"device": "cpu", "choice": {"1": "torchscript/fp32"}}, device="cpu")
    assert same.routes == {1: "torchscript/fp32"}
    # its backends would run on the device it was measured on: eager on the one asked for instead
    other = {"device": "cuda:1", "choice": {"1": "torchscript/fp32", "64": "torchscript/fp32"}}
    rt = InferenceRuntime.from_report(model, x, other, device="cpu")
    assert rt.routes == {1: "eager/fp32"} and rt.report is other
    with torch.no_grad():
        torch.testing.assert_close(rt(x), model(x))


def test_readiness_names_each_runtime_backend() -> None:
    class Served:
        def __init__(self, rt: InferenceRuntime) -> None:
            self.rt = rt

        def runtimes(self) -> dict[str, InferenceRuntime]:
            return {"net": self.rt}

    rt = InferenceRuntime(TabularMLP(n_features=8, hidden=(16,)), torch.randn(2, 8), device="cpu")
    assert runtime_routes(Served(rt)) == {"net": {"1": "eager/fp32"}}
    assert runtime_routes(object()) == {}
