"""The Ray engine against the local engine: ``trillium finance score`` of the handbook dataset.

    .venv/bin/python benchmarks/ray_engine.py --json benchmarks/results/ray_engine_cpu.json

Data: the handbook's simulated transactions (``../shared/data/finance``, 1,754,155 rows,
Parquet) if present, else the same-size output of ``trillium finance simulate`` (seed 0)
written to a Parquet file. The model: ``gbt+seq`` trained on 7 days (2018-07-25 to 07-31),
autotuned on this machine and registered in a temporary ``TRILLIUM_HOME``, as in
``benchmarks/finance.py``.

The same ``score_file`` call (validation and features in the driver, then the scoring job in
parts of ``--chunk-rows``; reasons for alerts; no alerts stored) runs:

1. on the local engine (the baseline, measured in the same run), with its default threads;
2. on the local engine with one thread (torch and OpenMP), the resources of one Ray worker
   (a worker of 1 CPU runs with ``OMP_NUM_THREADS=1``);
3. on Ray with one worker: its job time minus run 2's, per part, is Ray's overhead per part
   (actor start and model load, the features through the object store, scheduling, reading
   the part's rows from Parquet and writing its files);
4. on Ray with one worker per core (``--workers``, default all CPUs): the throughput, against
   run 1.

A local Ray of ``--cpus`` CPUs is started once before the Ray runs (its start is reported, not
counted in the jobs). Outputs of every Ray run are compared row by row with the local one.
Per part, the worker's own time (read, score, write, from its done-marker) and the local
engine's per-chunk scoring time give p50/p99; a Ray run's fixed cost is its job time minus
its workers' part times (divided by the number of workers). ``--workers-curve 1,2,4,8`` adds a
throughput curve against the number of workers (for a many-core machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "finance" / "handbook_simulated_raw.parquet"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"p50_s": float(np.percentile(a, 50)), "p99_s": float(np.percentile(a, 99)), "mean_s": float(a.mean()),
            "n": len(a)}


def input_file(work: Path) -> tuple[Path, str, str]:
    """(Parquet file, its format, where it comes from)."""
    if SHARED.exists():
        return SHARED, "handbook", str(SHARED)
    from trillium.finance.simulate import simulate_transactions, to_handbook

    path = work / "simulated.parquet"
    to_handbook(simulate_transactions(seed=0)).to_parquet(path, index=False)
    return path, "handbook", "trillium finance simulate (seed 0, reference size)"


def train_and_register(path: Path, fmt: str) -> dict[str, Any]:
    """The benchmark model of benchmarks/finance.py, registered as fraud:production."""
    from trillium.core.registry import ModelRegistry
    from trillium.finance.adapters import read_transactions
    from trillium.finance.features import FeatureSpec, batch_features, previous_indices, sequence_tensor
    from trillium.finance.fraud_model import FraudModel

    frame, _ = read_transactions(path, fmt)
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    spec = FeatureSpec()
    x = batch_features(frame, spec)  # the whole history, so the training week's features have theirs
    prev = previous_indices(frame, spec.seq_len)
    day = frame["timestamp"].to_numpy().astype("datetime64[D]")
    train = np.flatnonzero((day >= np.datetime64("2018-07-25")) & (day < np.datetime64("2018-08-01")))
    seq = sequence_tensor(x.astype(np.float32), prev[train], spec.seq_indices)
    t0 = time.perf_counter()
    model = FraudModel("gbt+seq", spec).fit(x[train], frame["label"].to_numpy()[train], seq,
                                           order=frame["timestamp"].to_numpy()[train])
    fit_s = time.perf_counter() - t0
    tune = model.build_runtimes(autotune=True)
    record = model.register(ModelRegistry(), "fraud")
    return {"kind": "gbt+seq", "train_rows": len(train), "fit_s": fit_s, "version": record.version,
            "seq_backend": {k: v.get("choice") for k, v in tune.items()}}


def chunk_timer() -> list[float]:
    """Time every chunk the local engine scores (the same function the Ray workers run)."""
    from trillium.finance import batch

    times: list[float] = []
    inner = batch.score_chunk

    def timed(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args)
        finally:
            times.append(time.perf_counter() - t0)

    batch.score_chunk = timed  # type: ignore[assignment]
    return times


def score(path: Path, fmt: str, output: Path, chunk_rows: int, **engine: Any) -> dict[str, Any]:
    from trillium.finance.batch import score_file
    from trillium.finance.pipeline import FraudScorer

    scorer = FraudScorer.from_registry("fraud", "production", alerts_per_day=100)
    t0 = time.perf_counter()
    res = score_file(scorer, path, output, fmt=fmt, chunk_rows=chunk_rows, store=False, progress=False,
                     name=f"bench-{output.name}", **engine)
    wall = time.perf_counter() - t0
    job = res.job
    job_s = wall - res.feature_seconds  # validation and features happen before the job, in the driver
    out = {"wall_s": wall, "validation_and_features_s": res.feature_seconds, "job_s": job_s,
           "rows": job.rows_in, "rows_out": job.rows_out, "rows_quarantined": job.rows_quarantined,
           "parts": job.chunks, "rows_per_s": job.rows_in / wall, "job_rows_per_s": job.rows_in / job_s,
           "job_s_per_part": job_s / max(job.chunks, 1)}
    markers = sorted((output / "_ray" / "done").glob("part-*.json"))
    if markers:
        parts = [json.loads(m.read_text()) for m in markers]
        out["worker_part_s"] = percentiles([p["seconds"] for p in parts])
        out["worker_processes"] = len({(p["host"], p["pid"]) for p in parts})
        out["fixed_cost_s"] = job_s - sum(p["seconds"] for p in parts) / engine["workers"]
    return out


def same_rows(a: Path, b: Path) -> dict[str, Any]:
    from trillium.finance.batch import read_scores

    x = read_scores(a).sort_values("transaction_id", ignore_index=True)
    y = read_scores(b).sort_values("transaction_id", ignore_index=True)
    same_ids = len(x) == len(y) and bool((x["transaction_id"] == y["transaction_id"]).all())
    diff = float(np.abs(x["probability"].to_numpy() - y["probability"].to_numpy()).max()) if same_ids else None
    return {"rows": len(y), "same_transactions": same_ids, "max_abs_probability_diff": diff,
            "same_decisions": same_ids and bool((x["decision"] == y["decision"]).all()),
            "identical": same_ids and bool(x.equals(y))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/ray_engine_cpu.json"))
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="rows per part (the CLI's default)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray")
    parser.add_argument("--workers", type=int, default=0, help="workers of the throughput run (0: --cpus)")
    parser.add_argument("--workers-curve", default="", help="comma-separated worker counts for a scaling curve")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="trillium-bench-ray-"))
    os.environ["TRILLIUM_HOME"] = str(work / "home")  # the model and jobs of this run only
    import ray
    import torch

    from trillium.core.runtime.hardware import detect

    report: dict[str, Any] = {"machine": {"platform": platform.platform(), **detect().as_dict(),
                                          "cpu_count": os.cpu_count()},
                              "torch_threads": torch.get_num_threads(), "ray": ray.__version__,
                              "chunk_rows": args.chunk_rows}
    path, fmt, source = input_file(work)
    report["data"] = {"source": source, "rows": int(pd.read_parquet(path, columns=["TX_AMOUNT"]).shape[0])}
    log(f"{report['data']['rows']:,} transactions from {source}")
    report["model"] = train_and_register(path, fmt)
    log(f"model {report['model']}")

    from threadpoolctl import threadpool_limits

    times = chunk_timer()
    report["local"] = score(path, fmt, work / "local", args.chunk_rows)
    report["local"]["chunk_score_s"] = percentiles(times)
    log(f"local: {report['local']}")
    times.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="openmp"):
        report["local_1_thread"] = score(path, fmt, work / "local_1_thread", args.chunk_rows)
    torch.set_num_threads(threads)
    report["local_1_thread"]["chunk_score_s"] = percentiles(times)
    log(f"local, one thread: {report['local_1_thread']}")

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING)
    report["ray_cluster_start_s"] = time.perf_counter() - t0
    workers = args.workers or args.cpus
    def key(n: int) -> str:
        return "ray_1_worker" if n == 1 else f"ray_{n}_workers"

    curve = [int(w) for w in args.workers_curve.split(",") if w.strip()]
    runs = {key(n): n for n in dict.fromkeys([1, workers, *curve])}  # each worker count runs once
    for name, n in runs.items():
        out = work / name
        report[name] = score(path, fmt, out, args.chunk_rows, engine="ray", workers=n)
        report[name]["workers"] = n
        report[name]["equals_local"] = same_rows(work / "local", out)
        log(f"{name}: {report[name]}")
    ray.shutdown()

    local, single = report["local"], report["local_1_thread"]
    one, many = report["ray_1_worker"], report[key(workers)]
    parts = one["parts"]
    report["comparison"] = {
        "local_rows_per_s": local["rows_per_s"],
        "ray_rows_per_s": many["rows_per_s"],
        "workers": workers,
        "throughput_ratio_ray_vs_local_end_to_end": many["rows_per_s"] / local["rows_per_s"],
        "throughput_ratio_ray_vs_local_job": many["job_rows_per_s"] / local["job_rows_per_s"],
        "overhead_per_part_s": (one["job_s"] - single["job_s"]) / parts,
        "wall_per_part_ray_minus_local_s": many["job_s_per_part"] - local["job_s_per_part"],
        "worker_part_minus_local_chunk_p50_s": one["worker_part_s"]["p50_s"] - single["chunk_score_s"]["p50_s"],
        "worker_part_minus_local_chunk_p99_s": one["worker_part_s"]["p99_s"] - single["chunk_score_s"]["p99_s"],
        "ray_fixed_cost_s": {"1_worker": one["fixed_cost_s"], f"{workers}_workers": many["fixed_cost_s"]},
        "all_outputs_identical_to_local": all(report[k]["equals_local"]["identical"] for k in runs),
        "note": ("job_s excludes validation and features, which run in the driver for both engines. "
                 "overhead_per_part_s = (Ray job with one 1-CPU worker - local job with one thread) / parts: "
                 "Ray's cost per part at equal resources. wall_per_part_ray_minus_local_s = job wall time per "
                 "part, Ray with all workers minus local with its default threads. worker_part_minus_local_"
                 "chunk = a worker's own time per part (read its Parquet rows, score, write its files) minus "
                 "the one-thread local engine's scoring time per chunk. ray_fixed_cost_s = job time not "
                 "spent in parts: actor start, model load, the features through the object store, scheduling."),
    }
    if curve:
        base = report[key(1)]["job_rows_per_s"]
        report["scaling"] = [{"workers": n, "job_rows_per_s": report[key(n)]["job_rows_per_s"],
                              "rows_per_s": report[key(n)]["rows_per_s"],
                              "speedup_vs_1_worker": report[key(n)]["job_rows_per_s"] / base,
                              "parallel_efficiency": report[key(n)]["job_rows_per_s"] / base / n,
                              "vs_local_job": report[key(n)]["job_rows_per_s"] / local["job_rows_per_s"]}
                             for n in sorted(set(curve))]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report["comparison"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
