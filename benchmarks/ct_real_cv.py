"""Chest CT on real anatomy (issue 21): the classifier trained with real series, measured on
real series by patient-wise cross-validation, against the phantom-only classifier in the same run.

    .venv/bin/python benchmarks/ct_real_cv.py --json benchmarks/results/ct_real_cv.json SERIES_DIR...

For each patient P among the series given: a classifier is trained on the phantoms plus the
real series of every *other* patient (``real_training``: their false candidates, synthetic
nodules drawn in their lungs, their readers' lesions), its threshold chosen on phantom studies
as the product does, and it analyses P's series; ``real_eval`` scores the findings against P's
readers' marks. The baseline, trained on the same phantoms only (same seeds, same threshold
rule), analyses the same series in the same run. No figure on a series comes from a model that
saw its patient. Phantom and real candidate sets are cached under ``--work`` between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cached(path: Path, make: Any) -> dict[str, Any]:
    if path.exists():
        with np.load(path, allow_pickle=False) as z:  # our own cache: arrays only, never pickles
            out = {k: z[k] for k in z.files}
        if "counts" in out:
            out["counts"] = json.loads(str(out["counts"]))
        return out
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in data.items() if k != "counts"}
    if "counts" in data:
        arrays["counts"] = np.array(json.dumps(data["counts"]))
    np.savez(path, **arrays)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("series", nargs="+", help="Real series folders with their marks (LIDC XML or VOC boxes).")
    ap.add_argument("--json", required=True)
    ap.add_argument("--work", default=".trillium/ct-real-cv", help="Cache of candidate sets.")
    ap.add_argument("--studies", type=int, default=16)
    ap.add_argument("--val-studies", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--copies", type=int, default=2, help="Copies of each real series with synthetic nodules.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-readers", type=int, default=2)
    args = ap.parse_args()

    from trillium.core.audit import cli_actor
    from trillium.core.db import connect
    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.lungs import JUXTA_MM
    from trillium.medical.imaging.phantom_training import (
        TRAIN_PLEURAL_SHARE,
        candidate_set,
        fit_with_threshold,
        join_candidate_sets,
    )
    from trillium.medical.imaging.real_eval import evaluate_series, summarise
    from trillium.medical.imaging.real_training import real_candidate_set

    t_start = time.perf_counter()
    work = Path(args.work)
    # the sets depend on the lung mask and the phantoms' pleural share: a cache of other settings is not reused
    tag = f"p{TRAIN_PLEURAL_SHARE:g}-j{JUXTA_MM:g}"
    seeds = [args.seed * 10_000 + s for s in range(args.studies + args.val_studies)]
    train = _cached(work / f"phantom-train-{args.seed}-{args.studies}-{tag}.npz",
                    lambda: candidate_set(seeds[:-args.val_studies], log_fn=_log))
    val = _cached(work / f"phantom-val-{args.seed}-{args.val_studies}-{tag}.npz",
                  lambda: candidate_set(seeds[-args.val_studies:], log_fn=_log))
    def audit_training_read(patient: str | None, series_uid: str) -> None:
        # a read of a patient's CT for training, attributable as `trillium medical train --real-series`'s
        connect().audit("medical.ct.train", target=series_uid, actor=cli_actor(), patient=patient or "",
                        benchmark="ct_real_cv")

    real: dict[str, dict[str, Any]] = {}
    for s in args.series:
        key = Path(s).resolve().name[-24:]
        real[s] = _cached(work / f"real-{key}-c{args.copies}-s{args.seed}-{tag}.npz",
                          lambda s=s: real_candidate_set([s], copies=args.copies, seed=args.seed, log_fn=_log,
                                                         on_read=audit_training_read))
    patient_of = {s: str(real[s]["groups"][0]) for s in args.series}
    by_patient: dict[str, list[str]] = defaultdict(list)
    for s, p in patient_of.items():
        by_patient[p].append(s)
    _log(f"patients: { {p: len(v) for p, v in by_patient.items()} }")

    def fit(sets: list[dict[str, Any]]) -> tuple[StudyAnalyzer, dict[str, Any]]:
        t = time.perf_counter()
        data = join_candidate_sets(*sets) if len(sets) > 1 else sets[0]
        clf, threshold, metrics = fit_with_threshold(data, val, epochs=args.epochs, seed=args.seed, log_fn=_log)
        metrics["fit_s"] = round(time.perf_counter() - t, 1)
        return StudyAnalyzer(clf, threshold=threshold), metrics

    def evaluate(analyzer: StudyAnalyzer, series: list[str]) -> list[dict[str, Any]]:
        rows = []
        for s in series:
            r = evaluate_series(analyzer.analyze, s, min_readers=args.min_readers)
            # a read of a patient's CT, attributable as `trillium medical real-eval`'s are
            connect().audit("medical.ct.real_eval", target=r["series_uid"], actor=cli_actor(), source=str(s),
                            patient=r["patient_id"] or "", benchmark="ct_real_cv")
            _log(f"  {s}: {r['hits']}/{r['counted_lesions']} found, {len(r['false_findings'])} false")
            rows.append(r)
        return rows

    _log("baseline: phantoms only")
    baseline, base_metrics = fit([train])
    base_rows: list[dict[str, Any]] = []
    cv_rows: list[dict[str, Any]] = []
    folds = []
    for patient, series in by_patient.items():
        others = [s for s in args.series if patient_of[s] != patient]
        _log(f"fold: held out {patient} ({len(series)} series), trained with {len(others)} real series")
        base_rows += evaluate(baseline, series)
        analyzer, metrics = fit([train, *[real[s] for s in others]])
        rows = evaluate(analyzer, series)
        cv_rows += rows
        folds.append({"held_out_patient": patient, "held_out_series": series, "trained_with": others,
                      "real_candidates": {s: real[s].get("counts") for s in others}, "metrics": metrics,
                      "summary": summarise(rows)})

    def slim(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keep = ("series", "format", "shape", "spacing_mm", "counted_lesions", "findings", "n_candidates", "hits",
                "missed", "lesions", "false_findings", "seconds")
        return [{k: r[k] for k in keep if k in r} for r in rows]

    report = {
        "what": "patient-wise cross-validation on real series: each patient's series analysed by a classifier "
                "trained on phantoms plus the other patients' real series; the baseline (phantoms only) on the "
                "same series in the same run",
        "min_readers": args.min_readers, "patients": len(by_patient), "series_n": len(args.series),
        "cv": {"summary": summarise(cv_rows), "series": slim(cv_rows), "folds": folds},
        "baseline_phantom_only": {"summary": summarise(base_rows), "series": slim(base_rows),
                                  "metrics": base_metrics},
        "params": vars(args), "seconds": round(time.perf_counter() - t_start, 1),
        "host": platform.node(), "cpu_count": os.cpu_count(),
        "caveat": "a handful of series from public collections (LIDC-IDRI, Lung-PET-CT-Dx; CC BY): "
                  "a check on real anatomy, not a benchmark",
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    for name, part in (("baseline (phantoms only)", report["baseline_phantom_only"]), ("patient-wise CV", report["cv"])):
        s = part["summary"]
        _log(f"{name}: {s['found']}/{s['lesions']} lesions, false findings per series {s['false_findings']} "
             f"(mean {s['false_findings_per_series']}), centre error median {s['median_centre_error_mm']} mm")


if __name__ == "__main__":
    main()
