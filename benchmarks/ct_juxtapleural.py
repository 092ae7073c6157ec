"""Chest CT: nodules against the pleura (issue 21), the registered model against a candidate
change in the same run. Writes JSON.

    .venv/bin/python benchmarks/ct_juxtapleural.py --json benchmarks/results/ct_juxtapleural.json \
        [--real SERIES_DIR ...]

A nodule that touches the chest wall or the mediastinum is not air, so the air-threshold lung
mask leaves a bay where it sits and the detector, which sees nothing outside the mask, sees half
a nodule or none. Two arms, each measured on the same studies:

- ``baseline``: the registered production model and the lung mask without the rolling ball
  (``lungs.JUXTA_MM = 0``), i.e. the product before this change;
- ``candidate``: a model trained with ``--train-pleural-share`` of its phantoms' nodules against
  the pleura, and the rolling-ball mask (``--juxta-mm``).

Measured on: fresh phantoms with interior nodules only (``detect-eval``'s seeds 900000.., the
figure the product reports), fresh phantoms whose nodules all touch the pleura (seeds 960000..),
and, if given, real series against their readers' marks (``real_eval``). Nothing here is used to
train or choose anything: the candidate's settings are fixed on the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def detection_arm(analyzer: Any, *, interior_studies: int, pleural_studies: int, real: list[str],
                  label: str) -> dict[str, Any]:
    """One arm's figures (also ``ct_lung_bound.py``'s): detection on fresh interior phantoms
    (``detect-eval``'s seeds 900000..), on phantoms whose nodules all touch the pleura (seeds
    960000..), and on real series against their readers' marks."""
    from trillium.medical.imaging.phantom_training import evaluate_detection
    from trillium.medical.imaging.real_eval import evaluate_series, summarise

    def brief(report: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in report.items() if k != "per_study"}

    out: dict[str, Any] = {}
    t = time.perf_counter()
    out["interior_phantoms"] = brief(evaluate_detection(analyzer, studies=interior_studies, seed=900_000))
    out["pleural_phantoms"] = brief(evaluate_detection(analyzer, studies=pleural_studies, seed=960_000,
                                                       pleural_share=1.0))
    if real:
        from trillium.core.audit import cli_actor
        from trillium.core.db import connect

        rows = []
        for s in real:
            rows.append(evaluate_series(analyzer.analyze, s))
            # a read of a patient's CT, attributable as `trillium medical real-eval`'s are
            connect().audit("medical.ct.real_eval", target=rows[-1]["series_uid"], actor=cli_actor(), source=str(s),
                            patient=rows[-1]["patient_id"] or "", benchmark=label)
        out["real"] = {"summary": summarise(rows),
                       "series": [{k: r[k] for k in ("series", "hits", "counted_lesions", "findings")}
                                  | {"false_findings": len(r["false_findings"])} for r in rows]}
    out["seconds"] = round(time.perf_counter() - t, 1)
    _log(f"{label}: {json.dumps(out)[:600]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--real", nargs="*", default=[], help="Real series folders with their readers' marks.")
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--juxta-mm", type=float, default=15.0)
    ap.add_argument("--train-pleural-share", type=float, default=0.3)
    args = ap.parse_args()

    from trillium.medical.imaging import lungs
    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.phantom_training import train_nodule_model

    def measure(analyzer: StudyAnalyzer, juxta_mm: float) -> dict[str, Any]:
        lungs.JUXTA_MM = juxta_mm
        return {"juxta_mm": juxta_mm, **detection_arm(analyzer, interior_studies=args.studies,
                                                      pleural_studies=args.studies, real=args.real,
                                                      label=f"juxta {juxta_mm}")}

    t0 = time.perf_counter()
    baseline = StudyAnalyzer.from_registry()
    report: dict[str, Any] = {"baseline_model": baseline.model_label}
    report["baseline"] = measure(baseline, 0.0)
    lungs.JUXTA_MM = args.juxta_mm  # the candidate trains on the masks it will analyse with
    trained = train_nodule_model(register=False, profile_studies=0, pleural_share=args.train_pleural_share,
                                 log_fn=_log)
    report["candidate_training"] = {**trained.metrics, "seconds": round(trained.seconds, 1),
                                    "train_pleural_share": args.train_pleural_share}
    report["candidate"] = measure(StudyAnalyzer(trained.classifier, threshold=trained.threshold), args.juxta_mm)
    report.update({"seconds": round(time.perf_counter() - t0, 1), "host": platform.node(), "cpu_count": os.cpu_count(),
                   "params": vars(args)})
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
