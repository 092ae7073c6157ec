"""Chest-CT measure and findings stages before and after they were made faster (issue 22), in one run.

    .venv/bin/python benchmarks/medical_imaging_findings.py --json benchmarks/results/medical_imaging_findings_cpu.json

The study is the benchmark's (``benchmarks/medical_imaging.py``): a phantom of 300 slices of 512 x 512
at 0.7 mm pixels and 1.0 mm slices with 8 nodules (seed 512), made in memory here (``--slices``,
``--size`` for a smaller one). The analysis is ``StudyAnalyzer.analyze_volume`` with the registry's
production model on the SciPy backend; lungs and candidates are computed once and handed back to
every run (they are not what is measured here), so each run times the real measure, classify and
findings code. Variants, interleaved run by run so that a load on the machine spreads over all:

- ``before``: the measurement and re-centring as they were (``tests/medical/ct_measure_reference.py``,
  the code of commit 05882ee verbatim), swapped into the analyzer;
- ``after``: the current code.

Each variant's findings and measurements (every field, masks included) must equal ``before``'s.
``--threshold 0`` re-centres every candidate instead of those above the model's threshold (the
worst case for the findings stage).

``--detect-eval N`` instead runs the detection evaluation (``trillium medical detect-eval --studies N
--backend scipy``: N fresh phantoms, seed 900000) with both codes and reports whether every figure
is the same (only the per-study seconds may differ).
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

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fields(m: object) -> object:
    if m is None:
        return None
    return {k: (v.shape, v.tobytes()) if isinstance(v, np.ndarray) else repr(v) for k, v in m.__dict__.items()}


def detect_eval_ab(args: argparse.Namespace, analyzer_module: object, variants: dict) -> None:
    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.phantom_training import evaluate_detection

    analyzer = StudyAnalyzer.from_registry(backend="scipy")
    reports = {}
    for name, (mc, rc) in variants.items():
        analyzer_module.measure_consistent, analyzer_module.recentre_measurement = mc, rc
        t = time.perf_counter()
        reports[name] = evaluate_detection(analyzer, studies=args.detect_eval, seed=900_000, nodules=6)
        log(f"{name}: detect-eval in {time.perf_counter() - t:.0f}s, sensitivity {reports[name]['sensitivity']:.4f}, "
            f"{reports[name]['fp_per_scan']} FP/scan")
    analyzer_module.measure_consistent, analyzer_module.recentre_measurement = variants["after"]

    def figures(r: dict) -> dict:
        return {**{k: v for k, v in r.items() if k != "per_study"},
                "per_study": [{k: v for k, v in s.items() if k != "seconds"} for s in r["per_study"]]}

    out = {"command": " ".join([".venv/bin/python", "benchmarks/medical_imaging_findings.py", *sys.argv[1:]]),
           "model": analyzer.model_label, "host": platform.node(), "cpu_count": os.cpu_count(),
           "identical_except_per_study_seconds": figures(reports["after"]) == figures(reports["before"]), **reports}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    log(f"identical: {out['identical_except_per_study_seconds']}; wrote {args.json}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=None, help="nodule probability threshold (default: the model's)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for the classifier")
    ap.add_argument("--detect-eval", type=int, default=0, help="studies for the detection A/B instead (0: timing)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "tests" / "medical"))
    import ct_measure_reference as reference

    from trillium.medical.imaging import analyzer as analyzer_module
    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.candidates import find_candidates
    from trillium.medical.imaging.lungs import segment_lungs
    from trillium.medical.imaging.phantom_training import phantom_volume

    current = (analyzer_module.measure_consistent, analyzer_module.recentre_measurement)
    before = (lambda *a, cache=None, **k: reference.measure_consistent(*a, **k),
              lambda *a, cache=None, **k: reference.recentre_measurement(*a, **k))
    if args.detect_eval:
        detect_eval_ab(args, analyzer_module, {"after": current, "before": before})
        return
    spacing = (1.0, 0.7, 0.7)
    t = time.perf_counter()
    volume, truth = phantom_volume(8, 512, shape=(args.slices, args.size, args.size), spacing=spacing)
    log(f"phantom {volume.shape} in {time.perf_counter() - t:.1f}s")
    analyzer = StudyAnalyzer.from_registry(backend="scipy")
    if args.threshold is not None:
        analyzer.threshold = args.threshold
    t = time.perf_counter()
    lungs = segment_lungs(volume.hu, spacing)
    cands = find_candidates(volume.hu, lungs, spacing, backend="scipy")
    log(f"lungs and {len(cands)} candidates in {time.perf_counter() - t:.1f}s (computed once)")
    analyzer_module.segment_lungs = lambda hu, sp: lungs
    analyzer_module.find_candidates = lambda *a, **k: cands

    variants = {"before": before, "after": current}

    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    outputs: dict[str, tuple] = {}
    for r in range(args.repeats):
        for name, (mc, rc) in variants.items():
            analyzer_module.measure_consistent, analyzer_module.recentre_measurement = mc, rc
            result = analyzer.analyze_volume(volume)
            runs[name].append({k: round(v, 4) for k, v in result.timings.items()})
            outputs[name] = (result.findings, [fields(m) for m in result.measurements])
            log(f"{name} run {r}: measure {result.timings['measure']:.2f}s findings {result.timings['findings']:.2f}s "
                f"classify {result.timings['classify']:.2f}s, {len(result.findings)} findings")
    analyzer_module.measure_consistent, analyzer_module.recentre_measurement = current

    def p50(name: str, stage: str) -> float:
        return float(np.median([run[stage] for run in runs[name]]))

    report = {
        "host": platform.node(), "cpu_count": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
        "study": {"shape": list(volume.shape), "spacing_mm": list(spacing), "nodules": len(truth),
                  "candidates": len(cands)},
        "model": analyzer.model_label, "threshold": analyzer.threshold, "repeats": args.repeats,
        "variants": {}, "command": " ".join([".venv/bin/python", "benchmarks/medical_imaging_findings.py", *sys.argv[1:]]),
    }
    for name in variants:
        report["variants"][name] = {
            "runs": runs[name], "measure_p50_s": p50(name, "measure"), "findings_p50_s": p50(name, "findings"),
            "findings": len(outputs[name][0]),
            "same_findings_and_measurements_as_before": outputs[name] == outputs["before"],
            "measure_speedup": round(p50("before", "measure") / max(p50(name, "measure"), 1e-9), 2),
            "findings_speedup": round(p50("before", "findings") / max(p50(name, "findings"), 1e-9), 2),
        }
        log(f"{name}: {report['variants'][name]['measure_p50_s']:.2f}s / {report['variants'][name]['findings_p50_s']:.2f}s "
            f"same={report['variants'][name]['same_findings_and_measurements_as_before']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
