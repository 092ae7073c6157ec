"""Chest-CT classifier stage on CPU and GPU: the part of a study's analysis that runs on torch.

    python3 benchmarks/medical_imaging_gpu.py --json out.json      # on the lent GPU machine

Lungs, candidates and measurements are scipy on the CPU (about 28 of the 30 s of a 512 x 512 x 300
study here), so a GPU can only change the classifier stage: the fold ensemble's features for
every candidate patch and the MC-dropout heads. This times exactly that stage, with the
product's network (``NoduleNet3D``, width 8, 24^3 patches, 2 folds x 8 draws), for a typical
study's 70 candidates and for a large batch, on the CPU and, when present, on CUDA; p50/p99 over
repeats. It needs only torch and numpy, so it runs from the source tree:

    mkdir -p /tmp/tp/trillium && ln -s "$PWD/apps/medical" /tmp/tp/trillium/medical
    PYTHONPATH=/tmp/tp python3 benchmarks/medical_imaging_gpu.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from trillium.medical.imaging.network import NoduleNet3D


def stage(nets: list[NoduleNet3D], x: torch.Tensor, draws: int) -> torch.Tensor:
    outs = []
    with torch.inference_mode():
        for net in nets:
            pooled = net.features(x).mean(dim=(2, 3, 4))
            keep = (torch.rand((draws, *pooled.shape), device=x.device) >= net.dropout_p).float() / (1 - net.dropout_p)
            outs.append(torch.sigmoid(net.head(pooled[None] * keep)))
    return torch.cat(outs)


def bench(device: str, n: int, repeats: int) -> dict:
    torch.manual_seed(0)
    nets = [NoduleNet3D(1, 1, width=8).eval().to(device) for _ in range(4)]  # 2 detector + 2 malignancy folds
    x = torch.randn(n, 1, 24, 24, 24, device=device)
    for _ in range(3):
        stage(nets, x, 8)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        stage(nets, x, 8)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    a = np.array(times) * 1000
    return {"device": device, "candidates": n, "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "candidates_per_s": float(n / np.median(times))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [bench(d, n, args.repeats) for d in devices for n in (70, 1024)]
    report = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "cpu_threads": torch.get_num_threads(), "rows": rows}
    if "cuda" in devices:
        by = {(r["device"], r["candidates"]): r for r in rows}
        report["speedup_gpu_vs_cpu"] = {n: by[("cpu", n)]["p50_ms"] / by[("cuda", n)]["p50_ms"] for n in (70, 1024)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
