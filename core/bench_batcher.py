"""Dynamic batcher benchmark: 32 concurrent callers of the reference MLP, with and without it.

(Part of ``trillium bench core``; also runnable alone: ``python -m trillium.core.bench_batcher``.)

Goal (foundation issue): at least 5x the throughput of unbatched calls, with a p99 latency no
more than ``max_delay_ms + 3 * batch_compute_ms``.

Each pair calls the *same* callable (the reference ``TabularMLP`` as a plain module, and the
same model on its autotuned ``InferenceRuntime``) from ``callers`` threads in a closed loop:

* unbatched: each thread calls ``runtime(x)`` with its own 1-row tensor ``(1, 32)``;
* batched: each thread calls ``batcher(x)`` with a row ``(32,)``; the batcher's worker calls
  ``runtime`` on the stacked batch.

Throughput counts the requests completed inside a fixed window after a warm-up; latencies are
measured by the callers (call to return), so they include every queueing and thread hand-off.
``batch_compute_ms`` is the median time of one ``runtime`` call on a full batch, measured
alone. A third, diagnostic run puts the batcher in front of a function that does no work
(``noop_rows_per_s``): the ceiling the batching machinery itself allows on this machine.

    python -m trillium.core.bench_batcher [--duration 2] [--callers 32] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from trillium.core.batching import DynamicBatcher
from trillium.core.models.reference import TabularMLP
from trillium.core.runtime import InferenceRuntime, TuneSettings
from trillium.core.runtime.autotune import measure_latency


def closed_loop(
    call: Callable[[Any], Any],
    items: list[list[Any]],
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    """``len(items)`` threads call ``call(item)`` back to back (each cycling its own items).

    Requests that *finish* inside the measuring window ``[warmup_s, warmup_s + duration_s]``
    count toward throughput, and their latencies (start to return) are kept.
    """
    n = len(items)
    lat: list[list[float]] = [[] for _ in range(n)]
    errors: list[list[str]] = [[] for _ in range(n)]
    clock: dict[str, float] = {}

    def start() -> None:
        t0 = time.perf_counter()
        clock["start"], clock["end"] = t0 + warmup_s, t0 + warmup_s + duration_s

    barrier = threading.Barrier(n, action=start)

    def worker(i: int) -> None:
        mine, out, errs = items[i], lat[i], errors[i]
        k, m = 0, len(mine)
        perf = time.perf_counter
        barrier.wait()
        t_start, t_end = clock["start"], clock["end"]
        while True:
            t0 = perf()
            if t0 >= t_end:
                break
            try:
                call(mine[k])
            except Exception as exc:  # noqa: BLE001 - counted and reported, not fatal
                errs.append(f"{type(exc).__name__}: {exc}")
            t1 = perf()
            if t_start <= t1 <= t_end and t0 >= t_start:
                out.append(t1 - t0)
            k = k + 1 if k + 1 < m else 0

    threads = [threading.Thread(target=worker, args=(i,), name=f"caller-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    arr = np.concatenate([np.asarray(x) for x in lat]) * 1e3 if any(lat) else np.zeros(0)
    errs = [e for es in errors for e in es]
    return {
        "requests": int(arr.size),
        "rows_per_s": arr.size / duration_s,
        "p50_ms": float(np.percentile(arr, 50)) if arr.size else None,
        "p99_ms": float(np.percentile(arr, 99)) if arr.size else None,
        "max_ms": float(arr.max()) if arr.size else None,
        "errors": len(errs),
        "first_error": errs[0] if errs else None,
    }


def median_call_ms(fn: Callable[[], Any], *, warmup: int = 20, repeats: int = 300, budget_s: float = 1.0) -> float:
    return measure_latency(fn, warmup=warmup, min_repeats=20, max_repeats=repeats, budget_s=budget_s)["p50_ms"]


class EagerMLP:
    """The reference MLP called as a plain torch module (the "without anything" baseline)."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.device = device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x.to(self.device)).cpu()


def _pair(
    call: Callable[[torch.Tensor], torch.Tensor],
    one_row: list[list[torch.Tensor]],
    items: list[list[torch.Tensor]],
    rows: torch.Tensor,
    *,
    duration_s: float,
    warmup_s: float,
    max_batch_size: int,
    max_delay_ms: float,
    max_queue_size: int,
) -> dict[str, Any]:
    """The same callable unbatched (one row per call) and behind a batcher, same load."""
    unbatched = closed_loop(call, one_row, duration_s, warmup_s)
    with DynamicBatcher(call, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms,
                        max_queue_size=max_queue_size, name="bench") as batcher:
        expected = call(rows[:8])
        got = torch.stack([batcher(rows[i]) for i in range(8)])
        before = batcher.snapshot()
        batched = closed_loop(batcher, items, duration_s, warmup_s)
        snap = batcher.snapshot()
    full = torch.cat([rows] * -(-max_batch_size // rows.shape[0]))[:max_batch_size].contiguous()
    batch_compute_ms = median_call_ms(lambda: call(full))
    bound = max_delay_ms + 3 * batch_compute_ms
    ratio = batched["rows_per_s"] / unbatched["rows_per_s"] if unbatched["rows_per_s"] else float("inf")
    return {
        "throughput_ratio": ratio,
        "p50_ms": batched["p50_ms"],
        "p99_ms": batched["p99_ms"],
        "batch_compute_ms": batch_compute_ms,
        "single_row_compute_ms": median_call_ms(lambda: call(one_row[0][0])),
        "p99_bound_ms": bound,
        "rows_per_s_batched": batched["rows_per_s"],
        "rows_per_s_unbatched": unbatched["rows_per_s"],
        "unbatched_p50_ms": unbatched["p50_ms"],
        "unbatched_p99_ms": unbatched["p99_ms"],
        "mean_batch_size": snap["mean_batch_size"],
        "batches_in_run": snap["batches"] - before["batches"],
        "server_latency_p99_ms": snap["latency_p99_ms"],
        "queue_wait_p50_ms": snap["queue_wait_p50_ms"],
        "max_abs_diff": float((got - expected).abs().max()),
        "errors": unbatched["errors"] + batched["errors"],
        "first_error": unbatched["first_error"] or batched["first_error"],
    }


def bench_batcher(
    runtime: InferenceRuntime | None = None,
    *,
    callers: int = 32,
    duration_s: float = 2.0,
    warmup_s: float = 0.3,
    max_batch_size: int = 32,
    max_delay_ms: float = 2.0,
    max_queue_size: int = 1024,
    n_features: int = 32,
    include_noop: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Throughput and latency of ``callers`` threads with and without a ``DynamicBatcher``.

    Two callables are measured, each unbatched and batched under the same closed-loop load:
    the reference MLP as a plain torch module (``eager``: the issue's "reference MLP with and
    without batching", and the headline keys) and the same MLP on its autotuned
    ``InferenceRuntime`` (``tuned``), whose single-row path is already ~2x faster and so
    leaves batching less to gain. ``runtime`` reuses a ready runtime for the tuned pair.
    """
    t_all = time.perf_counter()
    torch.manual_seed(seed)
    model = TabularMLP(n_features=n_features).eval()
    t0 = time.perf_counter()
    if runtime is None:
        runtime = InferenceRuntime(model, torch.randn(256, n_features))
        runtime.autotune(TuneSettings(sizes=(1, max_batch_size), include_compile=False))
    tune_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed + 1)
    per_caller = 16
    rows = torch.randn(callers * per_caller, n_features, generator=gen)
    one_row = [[rows[i * per_caller + j: i * per_caller + j + 1].clone() for j in range(per_caller)]
               for i in range(callers)]  # (1, n_features) tensors
    items = [[r[0] for r in caller] for caller in one_row]  # (n_features,) tensors
    kw = {"duration_s": duration_s, "warmup_s": warmup_s, "max_batch_size": max_batch_size,
          "max_delay_ms": max_delay_ms, "max_queue_size": max_queue_size}
    eager = _pair(EagerMLP(model, runtime.device), one_row, items, rows, **kw)
    tuned = _pair(runtime, one_row, items, rows, **kw)

    noop = None
    if include_noop:
        with DynamicBatcher(lambda x: x, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms,
                            max_queue_size=max_queue_size, name="noop") as nb:
            noop = closed_loop(nb, items, min(duration_s, 1.0), warmup_s)
    p99 = eager["p99_ms"] if eager["p99_ms"] is not None else float("inf")
    return {
        # Headline keys: the reference MLP (plain module) with and without batching.
        "throughput_ratio": eager["throughput_ratio"],
        "p50_ms": eager["p50_ms"],
        "p99_ms": eager["p99_ms"],
        "max_delay_ms": max_delay_ms,
        "batch_compute_ms": eager["batch_compute_ms"],
        "p99_bound_ms": eager["p99_bound_ms"],
        "goal_met": {"throughput_ge_5x": eager["throughput_ratio"] >= 5.0, "p99_within_bound": p99 <= eager["p99_bound_ms"]},
        "eager": eager,
        "tuned": tuned,
        "throughput_ratio_tuned": tuned["throughput_ratio"],
        "tuned_backends": {"1": runtime.backend_for(1), str(max_batch_size): runtime.backend_for(max_batch_size)},
        "noop_rows_per_s": noop["rows_per_s"] if noop else None,
        "noop_p99_ms": noop["p99_ms"] if noop else None,
        "callers": callers,
        "max_batch_size": max_batch_size,
        "duration_s": duration_s,
        "autotune_s": tune_s,
        "total_s": time.perf_counter() - t_all,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "switch_interval_s": sys.getswitchinterval(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--callers", type=int, default=32)
    p.add_argument("--duration", type=float, default=2.0, help="seconds measured per mode")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--json", help="also write the report to this file")
    a = p.parse_args(argv)
    report = bench_batcher(callers=a.callers, duration_s=a.duration, max_batch_size=a.max_batch_size,
                           max_delay_ms=a.max_delay_ms)
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
