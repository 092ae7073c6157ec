"""Manufacturing benchmark: 256x256 inspection with the anomaly map, against baselines in the same run.

    .venv/bin/python benchmarks/manufacturing.py --json benchmarks/results/manufacturing_cpu.json

The goal is at least 30 images/s on this 2-core CPU for 256x256 inspection with the anomaly
map. Measured, each on the same 256 synthetic PNG files (``trillium manufacturing synth``):

1. End to end from files: decode, resize, network, anomaly map, verdict (``Inspector``), in
   batches of 32, with the network on the core runtime's autotuned backend, against the same
   with eager torch fp32 (the runtime's gain) and against a naive loop (one image at a time,
   eager). Images/s and per-batch p50/p99.
2. The network alone at batch 1, 8 and 32 on every backend the runtime measured (its own
   table), and single-image latency p50/p99 end to end (a line that inspects part by part).
3. On a CUDA machine (the lent GPU): the network's throughput at batch 64 and 256 in eager fp32
   and fp16 autocast.

The weights do not change the speed, so the segmenter is fitted for a few steps only. With
``--detector patchcore`` the same is measured for the patch-memory detector, whose speed does
depend on its memory: ``--memory`` rows (default 7,000, the 1 % coreset of 700 good images at
256 px, Magnetic Tile's size), selected from a synthetic line's good images.

    .venv/bin/python benchmarks/manufacturing.py --detector patchcore --json benchmarks/results/manufacturing_patchcore_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentiles(times: list[float]) -> dict[str, float]:
    a = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(a)}


def make_inspector(size: int, files: list[Path], detector: str = "segmenter", memory: int = 7000,
                   patch_dims: int | None = None) -> object:
    from trillium.manufacturing.detector import DefectDetector
    from trillium.manufacturing.images import load_batch
    from trillium.manufacturing.pipeline import Inspector

    if detector == "patchcore":
        x, _ = load_batch(files, (size, size), 1)
        n_fit = len(files) - max(1, round(len(files) * 0.1))
        coreset = memory / (n_fit * (size // 8) ** 2)
        det = DefectDetector(model="patchcore", size=size, coreset=coreset, patch_dims=patch_dims).fit(x)
        log(f"patchcore memory: {det.net_.memory.shape[0]} rows")
        return Inspector(det)
    x, _ = load_batch(files[:16], (size, size), 1)
    det = DefectDetector(size=size, steps=3, batch_size=4, val_fraction=0.25).fit(x)
    return Inspector(det)


def end_to_end(inspector: object, files: list[Path], batch: int, repeats: int = 2) -> dict[str, object]:
    times, total = [], 0
    started = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(files), batch):
            t0 = time.perf_counter()
            results, bad = inspector.inspect_files(files[i:i + batch])
            times.append(time.perf_counter() - t0)
            total += len(results)
            assert not bad
    seconds = time.perf_counter() - started
    return {"images": total, "seconds": seconds, "images_per_s": total / seconds, "batch": batch,
            "per_batch": percentiles(times)}


def one_by_one(inspector: object, files: list[Path]) -> dict[str, object]:
    """A line that inspects part by part: one file per call, latency per call."""
    times = []
    for f in files:
        t0 = time.perf_counter()
        inspector.inspect_files([f])
        times.append(time.perf_counter() - t0)
    return {"images_per_s": len(times) / sum(times), "latency": percentiles(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--detector", choices=("segmenter", "patchcore"), default="segmenter")
    ap.add_argument("--memory", type=int, default=7000, help="patchcore: memory rows")
    ap.add_argument("--patch-dims", type=int, default=64, help="patchcore: principal components compared (0: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    from trillium.manufacturing.synth import write_synthetic_line

    report: dict[str, object] = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                             "threads": torch.get_num_threads(), "cpu": platform.processor()}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "line"
        per = max(1, (args.images - 20) // 5)
        # patchcore's coreset is drawn from a tenth of each image's patches: enough images for --memory rows
        n_train = 20 if args.detector == "segmenter" else int(np.ceil(args.memory / (0.1 * (args.size // 8) ** 2) / 0.9)) + 1
        write_synthetic_line(root, n_train=n_train, n_test_good=args.images - 5 * per, n_test_per_defect=per,
                             size=args.size, seed=0)
        files = sorted((root / "test").rglob("*.png"))
        log(f"{len(files)} files of {args.size}x{args.size}")
        inspector = make_inspector(args.size, sorted((root / "train").rglob("*.png")), args.detector, args.memory,
                                   args.patch_dims or None)
        det = inspector.detector

        for f in files:  # every configuration reads the files from the page cache, not the disk
            f.read_bytes()
        inspector.inspect_files(files[:32])  # first-call allocations out of the timings
        # Baselines first: eager torch (no runtime), batched and one at a time.
        eager = end_to_end(inspector, files, 32)
        log(f"eager batched: {eager['images_per_s']:.1f} img/s")
        naive = one_by_one(inspector, files[:64])
        log(f"eager one-by-one: {naive['images_per_s']:.1f} img/s")

        t0 = time.perf_counter()
        rt = det.use_runtime(sizes=(1, 8, 32) if args.detector == "segmenter" else (1, 8))
        tune_s = time.perf_counter() - t0
        log(f"autotune {tune_s:.1f} s: {rt.report['choice']}")
        tuned = end_to_end(inspector, files, 32)
        log(f"runtime batched: {tuned['images_per_s']:.1f} img/s")
        single_rt = one_by_one(inspector, files[:64])
        with_overlays = None
        with tempfile.TemporaryDirectory() as ov:
            t0 = time.perf_counter()
            for i in range(0, len(files), 32):
                inspector.inspect_files(files[i:i + 32], overlay_dir=ov)
            with_overlays = len(files) / (time.perf_counter() - t0)
        log(f"runtime batched with overlay PNGs: {with_overlays:.1f} img/s")

        net_only = {}
        for c in rt.report["candidates"]:
            if c.get("by_size"):
                net_only[c["name"]] = {"status": c["status"], **{
                    f"batch{k}": {"p50_ms": v["p50_ms"], "images_per_s": int(k) / (v["p50_ms"] / 1000)}
                    for k, v in c["by_size"].items()}}
        report["cpu"] = {
            "detector": args.detector,
            "memory_rows": int(det.net_.memory.shape[0]) if args.detector == "patchcore" else None,
            "patch_dims": args.patch_dims or None,
            "size": args.size,
            "end_to_end_runtime": tuned,
            "end_to_end_eager": eager,
            "end_to_end_runtime_with_overlays_images_per_s": with_overlays,
            "one_by_one_eager": naive,
            "one_by_one_runtime": single_rt,
            "speedup_runtime_vs_eager": tuned["images_per_s"] / eager["images_per_s"],
            "speedup_runtime_batched_vs_naive": tuned["images_per_s"] / naive["images_per_s"],
            "goal_images_per_s": 30,
            "autotune_s": tune_s,
            "backend_choice": rt.report["choice"],
            "network_only": net_only,
        }

    if torch.cuda.is_available():
        net = det.net_.to("cuda").eval()
        gpu: dict[str, object] = {"device": torch.cuda.get_device_name(0)}
        for b in (64, 256):
            x = torch.rand(b, 1, args.size, args.size, device="cuda")
            for mode in ("fp32", "fp16"):
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=mode == "fp16"):
                    for _ in range(5):
                        net(x)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    n = 20
                    for _ in range(n):
                        net(x)
                    torch.cuda.synchronize()
                    dt = (time.perf_counter() - t0) / n
                gpu[f"batch{b}_{mode}"] = {"ms_per_batch": dt * 1000, "images_per_s": b / dt}
                log(f"GPU batch {b} {mode}: {b / dt:.0f} img/s")
        report["gpu"] = gpu
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
