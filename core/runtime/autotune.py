"""The autotuner: measure every candidate backend, reject the inaccurate, keep the fastest.

Nothing is chosen by belief. Each candidate is built, checked against fp32 eager on the same
inputs (max absolute difference within ``atol + rtol * max|reference|``), then timed after a
warm-up at several batch sizes (median and p99 of repeats). The fastest accepted candidate is
kept *per batch size*, because the best single-row backend is often not the best for large
batches; the whole table goes into the model's metadata.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trillium.core.runtime.backends import Backend, CandidateSpec, Inputs, Outputs
from trillium.core.runtime.hardware import detect, native_precisions

log = logging.getLogger(__name__)


@dataclass
class TuneSettings:
    """How hard to look. Defaults keep a full CPU autotune of a small model under a minute."""

    sizes: tuple[int, ...] = (1, 16, 256)
    rtol: float = 1e-3
    atol: float = 1e-4
    warmup: int = 10
    min_repeats: int = 15
    max_repeats: int = 2000
    budget_s: float = 0.4  # per candidate and batch size, after warm-up
    backends: tuple[str, ...] | None = None  # None: every backend available here
    include_compile: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class CandidateResult:
    spec: CandidateSpec
    status: str = "pending"  # ok | rejected | error | skipped
    reason: str = ""
    build_s: float = 0.0
    max_abs_diff: float | None = None
    by_size: dict[int, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "backend": self.spec.backend,
            "precision": self.spec.precision,
            "device": self.spec.device,
            "threads": self.spec.threads,
            "status": self.status,
            "reason": self.reason,
            "build_s": round(self.build_s, 4),
            "max_abs_diff": self.max_abs_diff,
            "by_size": {str(k): v for k, v in self.by_size.items()},
        }


def candidate_specs(device: str, settings: TuneSettings) -> tuple[list[CandidateSpec], list[CandidateResult]]:
    """The search space on ``device``, and the candidates skipped with the reason why."""
    import onnxruntime as ort

    info = detect()
    wanted = set(settings.backends or ("eager", "torchscript", "onnxruntime", "compile", "cudagraph"))
    if not device.startswith("cuda"):
        wanted.discard("cudagraph")
    if not settings.include_compile:
        wanted.discard("compile")
    specs: list[CandidateSpec] = []
    skipped: list[CandidateResult] = []
    native = native_precisions(device)
    for precision in ("fp32", "fp16", "bf16"):
        for backend in ("eager", "torchscript", "compile", "cudagraph"):
            if backend not in wanted:
                continue
            spec = CandidateSpec(backend, precision, device)
            if precision in native:
                specs.append(spec)
            else:
                skipped.append(CandidateResult(spec, "skipped", f"{precision} is not native on {device} ({info.cpu_capability})"))
    if "onnxruntime" in wanted:
        if device == "cpu":
            threads = sorted({1, info.cores})
            specs += [CandidateSpec("onnxruntime", "fp32", "cpu", t) for t in threads]
            specs.append(CandidateSpec("onnxruntime", "int8", "cpu", info.cores))
        elif "CUDAExecutionProvider" in ort.get_available_providers():
            specs.append(CandidateSpec("onnxruntime", "fp32", device))
        else:
            skipped.append(
                CandidateResult(CandidateSpec("onnxruntime", "fp32", device), "skipped", "onnxruntime has no CUDA provider here")
            )
    return specs, skipped


def batch_of(example: Inputs, n: int) -> Inputs:
    """``n`` rows built by cycling the example's rows (keeps realistic values, any n)."""
    out = []
    for x in example:
        reps = -(-n // x.shape[0])
        out.append(x.repeat(reps, *([1] * (x.dim() - 1)))[:n].contiguous())
    return tuple(out)


def max_abs_diff(a: Outputs, b: Outputs) -> float:
    return max(float((x - y).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))


def within_tolerance(candidate: Outputs, reference: Outputs, rtol: float, atol: float) -> tuple[bool, float]:
    if len(candidate) != len(reference) or any(c.shape != r.shape for c, r in zip(candidate, reference)):
        return False, float("inf")
    diff = max_abs_diff(candidate, reference)
    if not np.isfinite(diff):
        return False, diff
    scale = max(float(r.abs().max()) if r.numel() else 0.0 for r in reference)
    return diff <= atol + rtol * scale, diff


def measure_latency(
    fn: Callable[[], Any], *, warmup: int = 10, min_repeats: int = 15, max_repeats: int = 2000, budget_s: float = 0.4
) -> dict[str, float]:
    """p50/p99 (ms) of ``fn()`` after ``warmup`` calls: at least ``min_repeats`` timed calls,
    then more until ``budget_s`` is spent or ``max_repeats`` reached. The one timing loop of
    the autotuner and the benchmarks, so their figures are measured the same way."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    arr = np.asarray(times) * 1e3
    return {"p50_ms": float(np.median(arr)), "p99_ms": float(np.percentile(arr, 99)), "repeats": len(times)}


def time_call(backend: Backend, xs: Inputs, settings: TuneSettings) -> dict[str, float]:
    """Median and p99 latency of ``backend(xs)`` after warm-up, and the rows/s that implies."""
    out = measure_latency(lambda: backend(xs), warmup=settings.warmup, min_repeats=settings.min_repeats,
                          max_repeats=settings.max_repeats, budget_s=settings.budget_s)
    out["rows_per_s"] = xs[0].shape[0] / (out["p50_ms"] / 1e3)
    return out
