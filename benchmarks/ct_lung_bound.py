"""Chest CT: nodule outlines confined to the lung mask (issue 21), against the registered model
and unconfined outlines in the same run. Writes JSON.

    .venv/bin/python benchmarks/ct_lung_bound.py --json benchmarks/results/ct_lung_bound.json \
        [--real SERIES_DIR ...]

The measurement thresholds half-way between the lung and the nodule; the chest wall's soft tissue
passes that threshold too, so a nodule against the pleura grew into the wall (and was re-centred
there). Two arms, each measured on the same studies, both with the rolling-ball lung mask:

- ``baseline``: the registered production model, outlines not confined
  (``measure.MEASURE_IN_LUNGS = False``), i.e. the product before this change;
- ``candidate``: a model trained with confined outlines (its features are measured the way it
  will analyse), analysed with them.

Measured on: fresh phantoms with interior nodules only (``detect-eval``'s seeds 900000.., the
figure the product reports), fresh phantoms whose nodules all touch the pleura (seeds 960000..),
and, if given, real series against their readers' marks (``real_eval``). Also, before any model,
each phantom nodule measured from its true centre with both settings (the measurement alone).
Nothing here is used to train or choose anything.
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

from ct_juxtapleural import detection_arm  # benchmarks/ct_juxtapleural.py: the same arm's figures


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--real", nargs="*", default=[], help="Real series folders with their readers' marks.")
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--interior-studies", type=int, default=10)
    args = ap.parse_args()

    import numpy as np

    from trillium.medical.imaging import measure as measure_module
    from trillium.medical.imaging.analyzer import StudyAnalyzer, recentre_measurement
    from trillium.medical.imaging.lungs import segment_lungs
    from trillium.medical.imaging.phantom_training import phantom_volume, train_nodule_model

    def arm(analyzer: StudyAnalyzer, confined: bool) -> dict[str, Any]:
        measure_module.MEASURE_IN_LUNGS = confined
        return {"confined": confined, **detection_arm(analyzer, interior_studies=args.interior_studies,
                                                      pleural_studies=args.studies, real=args.real,
                                                      label=f"confined {confined}")}

    def from_truth(confined: bool) -> dict[str, Any]:
        """Every phantom nodule >= 5 mm measured and re-centred from its true centre and radius."""
        measure_module.MEASURE_IN_LUNGS = confined
        out: dict[str, Any] = {}
        for name, share, seed in (("pleural", 1.0, 960_000), ("interior", 0.0, 900_000)):
            rows = []
            for s in range(seed, seed + 4):
                vol, nodules = phantom_volume(6, s, pleural_share=share)
                mask = segment_lungs(vol.hu, vol.spacing)
                for n in nodules:
                    if n.diameter_mm < 5:
                        continue
                    c = np.array(n.center_kji, float)
                    m = measure_module.measure_consistent(vol.hu, c, n.diameter_mm / 2, vol.spacing, mask)
                    m = recentre_measurement(vol.hu, m, vol.spacing, mask)
                    rows.append(None if m is None else (
                        m.diameter_mm / n.diameter_mm - 1,
                        float(np.linalg.norm((np.array(m.center_kji) - c) * np.array(vol.spacing)))))
            ok = [r for r in rows if r is not None]
            out[name] = {"nodules": len(rows), "measured": len(ok),
                         "median_abs_size_error": round(float(np.median([abs(e) for e, _ in ok])), 4),
                         "within_20pct": round(float(np.mean([abs(e) <= 0.2 for e, _ in ok])), 4),
                         "median_centre_error_mm": round(float(np.median([d for _, d in ok])), 3)}
        _log(f"from truth, confined {confined}: {out}")
        return out

    t0 = time.perf_counter()
    report: dict[str, Any] = {"measured_from_truth": {"unconfined": from_truth(False), "confined": from_truth(True)}}
    baseline = StudyAnalyzer.from_registry()
    report["baseline_model"] = baseline.model_label
    report["baseline"] = arm(baseline, False)
    measure_module.MEASURE_IN_LUNGS = True  # the candidate trains on the outlines it will analyse with
    trained = train_nodule_model(register=False, profile_studies=0, log_fn=_log)
    report["candidate_training"] = {**trained.metrics, "seconds": round(trained.seconds, 1)}
    report["candidate"] = arm(StudyAnalyzer(trained.classifier, threshold=trained.threshold), True)
    report.update({"seconds": round(time.perf_counter() - t0, 1), "host": platform.node(), "cpu_count": os.cpu_count(),
                   "params": vars(args)})
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
