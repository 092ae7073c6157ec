"""Chest-CT benchmark: a 512 x 512 x 300 study from DICOM folder to findings, stage by stage, for each
candidate backend against main's path in the same run.

    .venv/bin/python benchmarks/medical_imaging.py --json benchmarks/results/medical_imaging_cpu.json
    bash benchmarks/device/medical_imaging_gpu.sh          # the GPU run (lent H100), see that script

Goals (issue 22): at most 10 s from DICOM folder to findings on this 2-core CPU, at most 2 s on an
H100 end to end. Measured on a phantom (``trillium medical phantom``) of 300 slices of 512 x 512 at
0.7 mm pixels and 1.0 mm slices, written once into ``--work`` (about 150 MB):

1. Loading: ``load_ct`` (header scan, geometry checks, IPP sort, threaded pixel reads straight
   from the buffer) against a naive pydicom loop and, when installed, SimpleITK; every reader must
   give the same HU volume to count.
2. The whole analysis (load, lungs, candidates, measurements, classifier with MC dropout,
   findings with re-centring; heatmaps off) with the production model of the registry (trained on
   phantoms first if none is registered), per stage p50 over the repeats, for each path of
   ``--paths``: ``main`` (SciPy candidates and main's measurement: ``tests/medical/ct_measure_reference.py``
   with the opening on the whole ROI, i.e. the path before issue 22), ``scipy`` (SciPy candidates,
   the current measurement) and ``torch`` (lung mask and candidates on torch, ``--device``). Ratios are main's stage time over each path's, and each
   path's findings are compared with main's (same count, centres within 0.01 mm, same diameters).
3. With ``--in-flight N``: N studies analysed at once (threads sharing the device), studies per
   minute, and the GPU memory peak; ``--big-slices 600`` also runs the torch lung mask and
   candidates on a 512 x 512 x 600 volume and reports their memory peak.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _nodule_mask_main(mask: np.ndarray, within: np.ndarray, radius_mm: float,
                      spacing: tuple[float, float, float]) -> np.ndarray | None:
    """``measure._nodule_mask`` as on main before issue 22 (both distance transforms on the whole
    ROI): the ``main`` path swaps it into the reference measurement so that the ratio is taken
    against main in the same run."""
    from scipy import ndimage

    mask = mask & within
    r_open = 0.5 * radius_mm
    if r_open >= 0.8 * min(spacing) and mask.any():
        inside = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
        centres = inside > r_open
        if centres.any():
            opened = ndimage.distance_transform_edt(~centres, sampling=spacing) <= r_open
            mask = ndimage.binary_dilation(opened & mask) & mask
    return mask if mask.any() else None


def run_path(analyzer, folder: Path, path: str, device: str | None, repeats: int) -> tuple[list[dict], object]:
    from trillium.medical.imaging import analyzer as analyzer_module
    from trillium.medical.imaging import candidates as candidates_module

    label, workers = path, os.environ.get("TRILLIUM_CT_WORKERS")
    if path.endswith("-serial"):  # the same path with every measurement in this process (parallel.py)
        os.environ["TRILLIUM_CT_WORKERS"] = "1"
        path = path.removesuffix("-serial")
    analyzer.backend = "torch" if path in ("torch", "before-torch") else "scipy"
    analyzer.device = device
    current = (analyzer_module.measure_consistent, analyzer_module.recentre_measurement,
               candidates_module._peaks_scipy, analyzer_module.segment_lungs, analyzer_module.extract_patches,
               analyzer_module.segment_lungs_torch)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "medical"))
    if path in ("main", "before", "before-torch"):
        # the CPU path before this release's speed-ups: candidate filters on the whole grid, lung
        # closings on whole slices, patches from a float32 copy of the study
        # (tests/medical/ct_candidates_reference.py; the same results bit for bit)
        import ct_candidates_reference as before

        candidates_module._peaks_scipy = before.peaks_scipy
        analyzer_module.segment_lungs = before.segment_lungs
        # the lung mask ran on SciPy whatever the backend before lungs_torch
        analyzer_module.segment_lungs_torch = lambda hu, spacing, device=None: before.segment_lungs(hu, spacing)
        analyzer_module.extract_patches = lambda hu, centers, spacing: before.extract_patches(hu, centers, spacing)
    if path == "main":
        # main's measurement: the reference copy (tests/medical/ct_measure_reference.py, the code
        # before the findings stage was made faster) with main's opening on the whole ROI
        import ct_measure_reference as reference

        reference._nodule_mask = _nodule_mask_main
        analyzer_module.measure_consistent = lambda *a, cache=None, **k: reference.measure_consistent(*a, **k)
        analyzer_module.recentre_measurement = lambda *a, cache=None, **k: reference.recentre_measurement(*a, **k)
    try:
        runs, result = [], None
        for r in range(repeats):
            result = analyzer.analyze(folder)
            runs.append({k: round(v, 4) for k, v in result.timings.items()})
            stages = {k: round(v, 2) for k, v in result.timings.items()}
            log(f"{label} run {r}: {result.timings['total']:.2f}s {stages}, "
                f"{len(result.findings)} findings, {result.n_candidates} candidates")
    finally:
        if workers is None:
            os.environ.pop("TRILLIUM_CT_WORKERS", None)
        else:
            os.environ["TRILLIUM_CT_WORKERS"] = workers
        (analyzer_module.measure_consistent, analyzer_module.recentre_measurement,
         candidates_module._peaks_scipy, analyzer_module.segment_lungs, analyzer_module.extract_patches,
         analyzer_module.segment_lungs_torch) = current
    return runs, result


def same_findings(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        np.allclose(x["center_mm"], y["center_mm"], atol=0.01) and x["diameter_mm"] == y["diameter_mm"]
        and x["category"] == y["category"] for x, y in zip(a, b, strict=True))


def in_flight(analyzer, folder: Path, n: int, studies: int) -> dict:
    """``studies`` analyses of the folder, ``n`` at a time on threads sharing the device."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda _: analyzer.analyze(folder), range(studies)))
    wall = time.perf_counter() - t
    out = {"in_flight": n, "studies": studies, "wall_s": round(wall, 2),
           "studies_per_minute": round(60 * studies / wall, 2),
           "findings": sorted({len(r.findings) for r in results})}
    if torch.cuda.is_available():
        out["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def big_study(slices: int, size: int, device: str | None) -> dict:
    """Torch candidates on a ``slices`` x ``size`` x ``size`` phantom volume (in memory): its time and memory peak."""
    import torch

    from trillium.medical.imaging.candidates import find_candidates
    from trillium.medical.imaging.lungs import segment_lungs
    from trillium.medical.imaging.lungs_torch import segment_lungs_torch
    from trillium.medical.imaging.phantom import make_phantom

    hu, _ = make_phantom(8, 600, shape=(slices, size, size), spacing=(0.5, 0.7, 0.7))
    lungs = segment_lungs(hu, (0.5, 0.7, 0.7))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    same_lungs = bool(np.array_equal(segment_lungs_torch(hu, (0.5, 0.7, 0.7), device=device), lungs))
    lungs_s = time.perf_counter() - t
    t = time.perf_counter()
    cands = find_candidates(hu, lungs, (0.5, 0.7, 0.7), backend="torch", device=device)
    out = {"shape": [slices, size, size], "spacing_mm": [0.5, 0.7, 0.7], "candidates": len(cands),
           "torch_candidates_s": round(time.perf_counter() - t, 3), "torch_lungs_s": round(lungs_s, 3),
           "torch_lungs_equal_scipy": same_lungs}
    if torch.cuda.is_available():
        out["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--work", default=".trillium/bench/ct512")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", default="main,scipy,torch",
                    help="comma list of main (before issue 22), before (the last release's SciPy path), "
                         "before-torch (the last release's torch path), scipy, torch; a path ending in -serial "
                         "(scipy-serial, torch-serial) with the measurements in one process: TRILLIUM_CT_WORKERS=1")
    ap.add_argument("--device", default=None, help="torch device for the torch path (default: CUDA when present)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (this machine has 2 cores)")
    ap.add_argument("--in-flight", type=int, default=0, help="studies at once for the throughput figure (0: skip)")
    ap.add_argument("--big-slices", type=int, default=0, help="also a 512 x 512 x N candidates run (0: skip)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
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
    cuda = torch.cuda.is_available()
    report: dict = {"host": platform.node(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": args.device or ("cuda" if cuda else "cpu"),
                    "gpu": torch.cuda.get_device_name(0) if cuda else None,
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
    if {"torch", "before-torch", "torch-serial"} & set(args.paths.split(",")):
        run_path(analyzer, folder, "torch", args.device, 1)  # warm-up: CUDA context, kernels, allocator
    def save() -> None:  # after every phase: a run cut short still leaves its figures
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))

    goal = 2.0 if report["device"].startswith("cuda") else 10.0
    paths: dict = {}
    results: dict = {}
    for path in args.paths.split(","):
        runs, result = run_path(analyzer, folder, path, args.device, max(2, args.repeats - 1))
        results[path] = result
        stages = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        matched = sum(any(np.linalg.norm(np.array(f["center_mm"]) - np.array(n["center_mm"])) < max(n["diameter_mm"] / 2, 3)
                          for f in result.findings) for n in truth["nodules"])
        paths[path] = {"runs": runs, "stage_p50_s": stages, "total_p50_s": stages["total"],
                       "findings": len(result.findings), "truth_found": int(matched),
                       "candidates": result.n_candidates}
        report["analysis_partial"] = paths
        save()
    base = next((p for p in ("main", "before", "before-torch") if p in paths), next(iter(paths)))
    for path, rec in paths.items():
        rec["ratio_vs_" + base] = {k: round(paths[base]["stage_p50_s"][k] / max(v, 1e-9), 2)
                                   for k, v in rec["stage_p50_s"].items()}
        rec["same_findings_as_" + base] = same_findings(results[path].findings, results[base].findings)
        rec["meets_goal"] = bool(rec["total_p50_s"] <= goal)
    report.pop("analysis_partial", None)
    report["analysis"] = {"model": analyzer.model_label, "goal_s": goal, "truth_nodules": len(truth["nodules"]),
                          "paths": paths}
    save()
    best = "torch" if "torch" in paths else base
    if args.in_flight:
        analyzer.backend, analyzer.device = ("torch" if best == "torch" else "scipy"), args.device
        report["in_flight"] = [in_flight(analyzer, folder, n, max(2 * n, 4)) for n in sorted({1, args.in_flight})]
        log(f"in flight: {report['in_flight']}")
        save()
    if args.big_slices:
        report["big_study"] = big_study(args.big_slices, args.size, args.device)
        log(f"big study: {report['big_study']}")
    save()
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
