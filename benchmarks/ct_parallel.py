"""Chest CT: a study's measurements in this process against forked workers (issue 22, ``parallel.py``).

    .venv/bin/python benchmarks/ct_parallel.py --json benchmarks/results/ct_parallel_cpu.json

The 512 x 512 x 300 phantom of ``benchmarks/medical_imaging.py`` (8 nodules, seed 512, 1.0 x 0.7 x
0.7 mm), analysed with the SciPy backend and a stand-in classifier that passes about two thirds of
the candidates (the stage timed here is the measurement's, not the model's; no registered model
is needed). Each round analyses the study with ``TRILLIUM_CT_WORKERS=1`` (the serial loop, the
baseline) and with ``--workers`` processes, alternating, and the findings of the two must be equal.
Reports each stage's p50 and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class PassMost:
    """A stand-in classifier: a fixed pseudo-random probability per candidate (seeded by the count)."""

    def predict(self, patches: np.ndarray, features: np.ndarray) -> SimpleNamespace:
        z = np.zeros(len(patches))
        p = np.random.default_rng(len(patches)).uniform(0.2, 1.0, len(patches))
        return SimpleNamespace(nodule_probability=p, malignancy=z + 0.5, malignancy_std=z, nodule_std=z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    from trillium.core.runtime.hardware import detect
    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.phantom_training import phantom_volume

    t = time.perf_counter()
    volume, _ = phantom_volume(8, 512, shape=(args.slices, args.size, args.size), spacing=(1.0, 0.7, 0.7))
    log(f"phantom {volume.shape} in {time.perf_counter() - t:.1f}s")
    analyzer = StudyAnalyzer(PassMost(), threshold=0.45, backend="scipy")
    forms = {"serial": "1", f"{args.workers}_workers": str(args.workers)}
    runs: dict[str, list[dict[str, float]]] = {f: [] for f in forms}
    findings: dict[str, list] = {}
    for r in range(args.rounds):
        for form, n in forms.items():
            os.environ["TRILLIUM_CT_WORKERS"] = n
            t = time.perf_counter()
            result = analyzer.analyze_volume(volume)
            stages = {k: round(v, 3) for k, v in result.timings.items()}
            stages["total"] = round(time.perf_counter() - t, 3)
            runs[form].append(stages)
            findings.setdefault(form, result.findings)
            log(f"round {r} {form}: {stages}, {len(result.findings)} findings")
    p50 = {f: {k: float(np.median([x[k] for x in v])) for k in v[0]} for f, v in runs.items()}
    base, other = list(forms)
    report = {
        "machine": {"platform": platform.platform(), **detect().as_dict()},
        "study": {"shape": list(volume.shape), "spacing": list(volume.spacing), "backend": "scipy",
                  "classifier": "stand-in passing about two thirds of the candidates"},
        "rounds": args.rounds, "runs": runs, "stage_p50_s": p50,
        "ratio_serial_over_workers": {k: round(p50[base][k] / max(p50[other][k], 1e-9), 2) for k in p50[base]},
        "same_findings": findings[base] == findings[other], "findings": len(findings[base]),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    log(f"p50 {p50}; ratios {report['ratio_serial_over_workers']}; same findings {report['same_findings']}")


if __name__ == "__main__":
    main()
