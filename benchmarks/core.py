"""Core benchmark script: eager fp32 vs the autotuned runtime, and the dynamic batcher.

Same code as ``trillium bench core``; this entry point needs only torch, numpy and
onnxruntime, so it also runs on a GPU host where the project is not installed.

    python benchmarks/core.py --json benchmarks/results/core.json [--device cuda] [--no-batcher]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/core.json"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-batcher", action="store_true")
    parser.add_argument("--rtol", type=float, default=1e-3, help="accuracy gate against fp32 eager")
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args()

    from trillium.core.bench import bench_core

    t0 = time.perf_counter()
    report = bench_core(device=args.device, include_batcher=not args.no_batcher, rtol=args.rtol, atol=args.atol,
                        progress=lambda m: print(f"[{time.perf_counter() - t0:6.1f}s] {m}", file=sys.stderr))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "autotune"} if isinstance(v, dict) else v
               for k, v in report.items() if k in ("mlp", "cnn", "batcher", "goals", "matmul_peak_gflops", "device")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
