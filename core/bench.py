"""The core benchmark: eager fp32 against the autotuned runtime, in one run, on this machine.

Figures are ratios against a baseline measured in the same process (eager single-item
latency, eager batch throughput, the fp32 GEMM peak), so they mean the same on a noisy
2-core CPU as on a GPU host. ``trillium bench core --json PATH`` writes the report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trillium.core.models.reference import SmallCNN, TabularMLP, count_parameters
from trillium.core.runtime import InferenceRuntime, TuneSettings, detect, matmul_peak_gflops
from trillium.core.runtime.autotune import measure_latency


def latency_ms(fn: Callable[[], Any], *, warmup: int = 20, repeats: int = 1000, budget_s: float = 3.0) -> dict[str, float]:
    """p50/p99 of ``fn()`` in milliseconds over up to ``repeats`` calls or ``budget_s`` seconds."""
    return measure_latency(fn, warmup=warmup, min_repeats=20, max_repeats=repeats, budget_s=budget_s)


def flops_per_row(model: nn.Module, one_row: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(one_row)
    return float(counter.get_total_flops())


def bench_model(
    model: nn.Module,
    example: torch.Tensor,
    batch_rows: int,
    peak_gflops: float,
    device: str = "cpu",
    settings: TuneSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Autotune ``model``, then time eager and the chosen backends on one row and on a batch."""
    model = model.eval()
    one = example[:1]
    batch = example.repeat(-(-batch_rows // example.shape[0]), *([1] * (example.dim() - 1)))[:batch_rows]
    rt = InferenceRuntime(model, example, device=device)
    tune = settings or TuneSettings(sizes=(1, 16, batch_rows))
    report = rt.autotune(tune, progress=progress)

    eager_model = model.to(device)

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = eager_model(x.to(device))
            return out.cpu()

    eager_single = latency_ms(lambda: eager(one))
    best_single = latency_ms(lambda: rt(one))
    eager_batch = latency_ms(lambda: eager(batch), warmup=3, repeats=30, budget_s=5.0)
    best_batch = latency_ms(lambda: rt(batch), warmup=3, repeats=30, budget_s=5.0)
    with torch.inference_mode():
        ref = eager(batch)
    diff = float((rt(batch) - ref).abs().max())
    diff_one = float((rt(one) - eager(one)).abs().max())
    eager_tp = batch_rows / (eager_batch["p50_ms"] / 1e3)
    best_tp = batch_rows / (best_batch["p50_ms"] / 1e3)
    fpr = flops_per_row(model.to("cpu"), one)
    achieved = fpr * best_tp / 1e9
    return {
        "parameters": count_parameters(model),
        "flops_per_row": fpr,
        "eager_p50_ms": eager_single["p50_ms"],
        "eager_p99_ms": eager_single["p99_ms"],
        "best_p50_ms": best_single["p50_ms"],
        "best_p99_ms": best_single["p99_ms"],
        "speedup_p50": eager_single["p50_ms"] / best_single["p50_ms"],
        "best_backend": rt.backend_for(1),
        "best_batch_backend": rt.backend_for(batch_rows),
        "max_abs_diff": max(diff, diff_one),
        "tolerance": {"rtol": tune.rtol, "atol": tune.atol, "ref_max_abs": float(ref.abs().max())},
        "batch_rows": batch_rows,
        "eager_rows_per_s": eager_tp,
        "best_rows_per_s": best_tp,
        "throughput_ratio": best_tp / eager_tp,
        "achieved_gflops": achieved,
        "roofline_fraction": achieved / peak_gflops,
        "autotune": report,
    }


def bench_core(
    device: str = "auto",
    progress: Callable[[str], None] | None = None,
    include_batcher: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """The full ``trillium bench core`` report (see the foundation issue for its keys).

    ``rtol``/``atol`` set the accuracy gate against fp32 eager (loosen them to let fp16/int8
    candidates compete where that accuracy is acceptable).
    """
    device = detect().device if device == "auto" else device
    torch.manual_seed(0)
    say = progress or (lambda _msg: None)
    say("measuring the fp32 matmul peak")
    peak = matmul_peak_gflops(2048 if device.startswith("cuda") else 1024, device=device)
    say("reference MLP")
    mlp_rows = 4096 if device == "cpu" else 65536
    mlp = bench_model(TabularMLP(), torch.randn(256, 32), mlp_rows, peak, device,
                      settings=TuneSettings(sizes=(1, 16, mlp_rows), rtol=rtol, atol=atol),
                      progress=lambda n: say(f"MLP: {n}"))
    say("reference CNN")
    cnn = bench_model(SmallCNN(), torch.randn(16, 3, 64, 64), 64 if device == "cpu" else 1024, peak, device,
                      settings=TuneSettings(sizes=(1, 8, 64 if device == "cpu" else 1024), rtol=rtol, atol=atol),
                      progress=lambda n: say(f"CNN: {n}"))
    out: dict[str, Any] = {
        "hardware": detect().as_dict(),
        "device": device,
        "matmul_peak_gflops": peak,
        "mlp": mlp,
        "cnn": cnn,
    }
    if include_batcher:
        from trillium.core.bench_batcher import bench_batcher

        say("dynamic batcher: 32 callers")
        out["batcher"] = bench_batcher()
    out["goals"] = goals(out)
    return out


def goals(report: dict[str, Any]) -> dict[str, bool]:
    """The foundation issue's goals, checked on the figures just measured."""
    g: dict[str, bool] = {}
    for key in ("mlp", "cnn"):
        r = report[key]
        tol = r["tolerance"]
        g[f"{key}_speedup_p50_ge_1.5"] = r["speedup_p50"] >= 1.5
        g[f"{key}_throughput_not_below_eager"] = r["throughput_ratio"] >= 0.95  # 5 % timing noise
        g[f"{key}_within_tolerance"] = r["max_abs_diff"] <= tol["atol"] + tol["rtol"] * tol["ref_max_abs"]
    if "batcher" in report:
        b = report["batcher"]
        g["batcher_throughput_ge_5x"] = b["throughput_ratio"] >= 5.0
        g["batcher_p99_within_bound"] = b["p99_ms"] <= b.get("p99_bound_ms", float("inf"))
    return g
