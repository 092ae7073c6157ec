"""Chest-CT benchmark: a 512 x 512 x 300 study from DICOM folder to findings, and the loader
against baselines in the same run.

    .venv/bin/python benchmarks/medical_imaging.py --json benchmarks/results/medical_imaging_cpu.json

Goal: at most 60 s on this 2-core CPU from the DICOM folder to the findings. Measured on a
phantom (``trillium medical phantom``) of 300 slices of 512 x 512 at 0.7 mm pixels and 1.0 mm
slices, written once into ``--work`` (about 150 MB):

1. Loading: ``load_ct`` (header scan, geometry checks, IPP sort, threaded pixel reads straight
   from the buffer) against a naive pydicom loop (``dcmread`` every file, ``pixel_array``,
   rescale, sort by position) and, when SimpleITK is installed, its ``ImageSeriesReader``.
   Every reader must give the same HU volume to count.
2. The whole analysis (load, lungs, candidates, measurements, classifier with MC dropout) with
   the production model of the registry (trained on phantoms first if none is registered), per
   step timings, p50 over the repeats.
The device is whatever torch sees; on the lent GPU machine the same script gives GPU timings
(only the classifier runs on torch, so the GPU changes little: the figures say how much).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def naive_load(folder: Path) -> np.ndarray:
    import pydicom

    slices = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                     for d in slices])


def sitk_load(folder: Path) -> np.ndarray | None:
    try:
        import SimpleITK as sitk
    except ImportError:
        return None
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--work", default=".trillium/bench/ct512")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from trillium.core.errors import RegistryError
    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.dicom_io import load_ct
    from trillium.medical.imaging.phantom import write_phantom
    from trillium.medical.imaging.phantom_training import train_nodule_model

    work = Path(args.work)
    folder = work / "study"
    if not (folder / "truth.json").exists():
        log(f"writing a {args.slices} x {args.size} x {args.size} phantom into {folder}")
        t = time.perf_counter()
        write_phantom(folder, nodules=8, seed=512, shape=(args.slices, args.size, args.size),
                      spacing=(1.0, 0.7, 0.7))
        log(f"written in {time.perf_counter() - t:.1f}s")
    truth = json.loads((folder / "truth.json").read_text())
    report: dict = {"host": platform.node(), "cpu_count": torch.get_num_threads(),
                    "device": "cuda" if torch.cuda.is_available() else "cpu",
                    "study": {"shape": [args.slices, args.size, args.size], "spacing_mm": [1.0, 0.7, 0.7],
                              "files": args.slices, "nodules": len(truth["nodules"])}}

    ours_t, vol = timed(lambda: load_ct(folder), args.repeats)
    naive_t, naive = timed(lambda: naive_load(folder), args.repeats)
    same = bool(np.array_equal(vol.hu.astype(np.float32), naive))
    report["load"] = {"trillium_s": ours_t, "naive_pydicom_s": naive_t,
                      "trillium_p50_s": float(np.median(ours_t)), "naive_p50_s": float(np.median(naive_t)),
                      "speedup_vs_naive": float(np.median(naive_t) / np.median(ours_t)), "identical_hu": same}
    sitk_t, sitk_vol = timed(lambda: sitk_load(folder), 1)
    if sitk_vol is not None:
        report["load"]["simpleitk_s"] = sitk_t
        report["load"]["simpleitk_identical"] = bool(np.array_equal(vol.hu.astype(np.float32),
                                                                    np.asarray(sitk_vol, np.float32)))
    else:
        report["load"]["simpleitk"] = "not installed (pip install SimpleITK to add it)"
    log(f"load: ours {np.median(ours_t):.2f}s, naive {np.median(naive_t):.2f}s, identical {same}")

    try:
        analyzer = StudyAnalyzer.from_registry()
    except RegistryError:
        log("no registered chest-CT model: training one on phantoms")
        train_nodule_model()
        analyzer = StudyAnalyzer.from_registry()
    runs = []
    for r in range(max(2, args.repeats - 1)):
        result = analyzer.analyze(folder)
        runs.append(result.timings)
        log(f"analysis run {r}: {result.timings['total']:.1f}s, {len(result.findings)} findings, "
            f"{result.n_candidates} candidates")
    totals = [t["total"] for t in runs]
    matched = sum(any(np.linalg.norm(np.array(f["center_mm"]) - np.array(n["center_mm"])) < max(n["diameter_mm"] / 2, 3)
                      for f in result.findings) for n in truth["nodules"])
    report["analysis"] = {"model": analyzer.model_label, "runs": runs, "total_p50_s": float(np.median(totals)),
                          "total_max_s": float(max(totals)), "goal_s": 60.0,
                          "meets_goal": bool(max(totals) <= 60.0), "findings": len(result.findings),
                          "truth_nodules": len(truth["nodules"]), "truth_found": int(matched),
                          "candidates": result.n_candidates}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
