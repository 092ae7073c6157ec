"""Chest CT with thick slices and a sharp kernel (issue 21): detection and measurement per slice
thickness and kernel on phantoms, with the registered production model. Writes JSON.

    TRILLIUM_HOME=... .venv/bin/python benchmarks/ct_slice_thickness.py --json benchmarks/results/ct_slice_thickness.json

The same phantoms (seeds 970000..) are made at 1.25 mm and averaged into 2.5, 5 and 7.5 mm slices
(a thick slice is the mean of the thin ones it covers: partial volume, and less noise), each with
the soft kernel the phantoms are made with (B30f) and a sharp one (B70f: 35 HU noise, less
correlated). The 1.25 mm soft row is the baseline of the same run. Nothing here was used to train
or tune the model (its phantoms are 1.5 mm, seeds 0..19).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--nodules", type=int, default=6)
    ap.add_argument("--thicknesses", default="1.25,2.5,5,7.5")
    ap.add_argument("--kernels", default="B30f,B70f")
    ap.add_argument("--model", default="chest-ct-nodules")
    ap.add_argument("--ref", default="production")
    args = ap.parse_args()

    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.thickness import evaluate_thickness

    analyzer = StudyAnalyzer.from_registry(args.model, int(args.ref) if args.ref.isdigit() else args.ref)
    t0 = time.perf_counter()
    report = evaluate_thickness(analyzer, thicknesses=[float(t) for t in args.thicknesses.split(",")],
                                kernels=args.kernels.split(","), studies=args.studies, nodules=args.nodules,
                                log_fn=lambda m: print(m, file=sys.stderr, flush=True))
    report.update({"model": analyzer.model_label, "seconds": round(time.perf_counter() - t0, 1),
                   "host": platform.node(), "cpu_count": os.cpu_count(),
                   "baseline": "the 1.25 mm soft-kernel row of the same run"})
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    for r in report["rows"]:
        print(f"{r['kernel']:>5} {r['thickness_mm']:>5} mm: sensitivity {r['sensitivity']}, "
              f"{r['false_findings_per_scan']} false/scan, diameter error {r['diameter_error_median']}, "
              f"lungs x{r['lung_volume_vs_thin']}")


if __name__ == "__main__":
    main()
