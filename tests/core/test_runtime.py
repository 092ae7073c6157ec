"""The runtime measures its candidates, rejects inaccurate ones and routes by batch size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trillium.core.errors import RuntimeBackendError
from trillium.core.models.reference import SmallCNN, TabularMLP
from trillium.core.runtime import InferenceRuntime, TuneSettings
from trillium.core.runtime.hardware import detect, native_precisions

FAST = {"budget_s": 0.03, "min_repeats": 3, "warmup": 2, "include_compile": False}


def _by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["candidates"]}


def test_autotune_table_and_choice_are_consistent() -> None:
    torch.manual_seed(0)
    model = TabularMLP(n_features=16, hidden=(64, 64))
    x = torch.randn(32, 16)
    rt = InferenceRuntime(model, x, device="cpu")
    report = rt.autotune(TuneSettings(sizes=(1, 32), **FAST))
    cands = _by_name(report)
    assert cands["eager/fp32"]["status"] == "ok"
    for size, name in report["choice"].items():
        chosen = cands[name]
        assert chosen["status"] == "ok"
        # The choice is the measured minimum among accepted candidates at that size.
        best = min(c["by_size"][size]["p50_ms"] for c in cands.values() if c["status"] == "ok")
        assert chosen["by_size"][size]["p50_ms"] == best
        assert rt.backend_for(int(size)) == name
    with torch.no_grad():
        torch.testing.assert_close(rt(x), model(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(rt(x[:1]), model(x[:1]), rtol=1e-4, atol=1e-5)


def test_inaccurate_candidates_are_rejected_by_tolerance() -> None:
    torch.manual_seed(0)
    model = TabularMLP(n_features=16, hidden=(64, 64))
    x = torch.randn(64, 16)
    strict = InferenceRuntime(model, x, device="cpu").autotune(
        TuneSettings(sizes=(1, 64), backends=("eager", "onnxruntime"), rtol=1e-5, atol=1e-6, **FAST)
    )
    int8 = _by_name(strict)[f"onnxruntime/int8/t{detect().cores}"]
    assert int8["status"] == "rejected" and int8["max_abs_diff"] > 1e-6
    assert "max |diff|" in int8["reason"]
    assert all(strict["choice"][s] != int8["name"] for s in strict["choice"])
    loose = InferenceRuntime(model, x, device="cpu").autotune(
        TuneSettings(sizes=(1, 64), backends=("eager", "onnxruntime"), rtol=1.0, atol=1.0, **FAST)
    )
    assert _by_name(loose)[int8["name"]]["status"] == "ok"


def test_non_native_precisions_are_skipped_with_a_reason() -> None:
    report = InferenceRuntime(TabularMLP(n_features=4, hidden=(8,)), torch.randn(2, 4), device="cpu").autotune(
        TuneSettings(sizes=(1,), backends=("eager",), **FAST)
    )
    cands = _by_name(report)
    native = native_precisions("cpu")
    for prec in ("bf16", "fp16"):
        if prec not in native:
            assert cands[f"eager/{prec}"]["status"] == "skipped"
            assert "not native" in cands[f"eager/{prec}"]["reason"]
        else:
            assert cands[f"eager/{prec}"]["status"] in ("ok", "rejected")


class TwoHeads(nn.Module):
    """Two inputs (features and a mask), two outputs: the shape of the domain models."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.lin(x) * mask
        return h.sum(dim=1, keepdim=True), torch.sigmoid(h)


def test_tuple_inputs_and_outputs_work_on_every_backend() -> None:
    torch.manual_seed(0)
    model = TwoHeads()
    x, mask = torch.randn(8, 6), (torch.rand(8, 3) > 0.5).float()
    rt = InferenceRuntime(model, (x, mask), device="cpu")
    report = rt.autotune(TuneSettings(sizes=(1, 8), backends=("eager", "torchscript", "onnxruntime"), **FAST))
    assert {c["status"] for c in report["candidates"] if c["precision"] == "fp32"} == {"ok"}
    a, b = rt(x, mask)
    ea, eb = model(x, mask)
    torch.testing.assert_close(a, ea.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b, eb.detach(), rtol=1e-4, atol=1e-5)


def test_cnn_is_tuned_and_served() -> None:
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, width=4)
    x = torch.randn(4, 1, 32, 32)
    rt = InferenceRuntime(model, x, device="cpu")
    rt.autotune(TuneSettings(sizes=(1, 4), backends=("eager", "onnxruntime"), **FAST))
    with torch.no_grad():
        torch.testing.assert_close(rt(x), model(x), rtol=1e-4, atol=1e-5)


def test_bad_calls_give_clear_errors() -> None:
    rt = InferenceRuntime(TabularMLP(n_features=4, hidden=(8,)), torch.randn(2, 4), device="cpu")
    with pytest.raises(RuntimeBackendError, match="batch dimension"):
        rt(torch.tensor(1.0))
    with pytest.raises(RuntimeBackendError, match="at least one input"):
        rt()


def test_batches_above_the_largest_measured_size_run_in_blocks_of_it() -> None:
    torch.manual_seed(0)
    model = TabularMLP(n_features=6, hidden=(16,)).eval()
    rt = InferenceRuntime(model, torch.randn(8, 6), device="cpu")
    rt.autotune(TuneSettings(sizes=(1, 16), backends=("eager",), include_compile=False, budget_s=0.02, min_repeats=3))
    seen: list[int] = []
    for name, backend in list(rt._backends.items()):
        def recording(inputs: tuple, _inner: object = backend) -> object:
            seen.append(inputs[0].shape[0])
            return _inner(inputs)
        rt._backends[name] = recording
    x = torch.randn(40, 6)
    out = rt(x)
    assert seen == [16, 16, 8]  # never above the largest measured size, nothing lost
    with torch.inference_mode():
        assert torch.allclose(out, model(x), atol=1e-6)
    seen.clear()
    rt(x[:16])
    assert seen == [16]


def test_an_untuned_runtime_runs_any_batch_whole() -> None:
    rt = InferenceRuntime(TabularMLP(n_features=6, hidden=(16,)), torch.randn(4, 6), device="cpu")
    assert rt(torch.randn(1000, 6)).shape == (1000, 1)
    assert rt._block is None
