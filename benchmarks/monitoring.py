"""Monitoring evaluation: shifts made with each field's own generator, kept apart from the reference.

Finance (this script's first and, so far, only field): the handbook simulator
(``trillium.finance.simulate``) makes a bank; a gbt fraud model is trained on its first weeks and
registered with its reference profile (the held-out week); then

- 30 unshifted days after the reference are checked one by one (a false alarm is any alert);
- three shifts, each applied from one day on to a copy of the same data, are checked on their
  first day: a new fraud scenario (card testing: bursts of small night-time transactions on
  stolen cards, a pattern absent from the simulator and the reference), an inflation of amounts
  (every amount x1.3, labelled again by the simulator's own amount rule), a wave of compromised
  terminals (the simulator's scenario 2 at 25 times its rate);
- on every checked day, the alert precision the calibrated scores expect (mean probability of the
  alerted rows) is compared with the true precision (the simulator's labels).

Notes: the synthetic generator's departments; a reference of six of its eight, 30 unshifted
batches of 50 notes from them, and for each absent department a batch of its notes and a batch
where it joins the feed (30 % of the notes); checked by ``trillium.medical.records.monitoring``.

Thresholds: by default the script picks the FDR level and PSI floor on a *calibration* bank (other
seeds) as the most sensitive setting with no false alarm on its unshifted days, then evaluates
with them on the evaluation bank; the reported figures never come from the data the thresholds
were chosen on.

    python benchmarks/monitoring.py --json benchmarks/results/monitoring.json

Chest CT (``--only ct``; its own JSON, the run takes about half an hour on two shared cores): the
phantom generator's shifts (a sharper kernel with and without its tag, 5 mm slices, added noise)
on batches of 4 small phantoms, thresholds chosen on the calibration classifier's phantoms (seed 11)
and measured on seed 101's; ``--only ct-cost`` times the statistics on one full-size study:

    python benchmarks/monitoring.py --only ct --json benchmarks/results/monitoring_ct.json
    python benchmarks/monitoring.py --only ct-cost --json benchmarks/results/monitoring_ct_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from trillium.core.monitoring.drift import Thresholds, compare
from trillium.core.monitoring.performance import estimate_alert_precision
from trillium.finance.features import FeatureTable
from trillium.finance.fraud_model import FraudModel
from trillium.finance.lifecycle import feature_spec_for
from trillium.finance.monitoring import feature_frame, reference_profile
from trillium.finance.simulate import simulate_transactions

# The simulator needs about 50 days to reach its steady state (3 cards compromised a day for 14
# days, seen through a 30-day risk window after a 7-day delay): before that the card-risk features
# trend upward, which is no shift. The reference therefore starts after day 50.
REF_DAYS = 70      # days 0..69: train (21, after a 7-day delay) and the held-out reference week (63..69)
CLEAN_DAYS = 30    # days 70..99: no shift
SHIFT_DAY = 100    # each shift starts here (on a copy); followed for FOLLOW days
FOLLOW = 10
N_DAYS = SHIFT_DAY + FOLLOW
ALERTS_PER_DAY = 50


# ------------------------------------------------------------------ finance shifts (generator's own)
def _new_scenario(frame: pd.DataFrame, day0: pd.Timestamp, rng: np.random.Generator) -> pd.DataFrame:
    """Card testing: 1 % of the day's active cards make 6 small transactions within an hour at
    night on one terminal each (fraud). The simulator has no such scenario."""
    today = frame[(frame["timestamp"] >= day0) & (frame["timestamp"] < day0 + pd.Timedelta(days=1))]
    cards = rng.choice(today["customer_id"].unique(), max(1, today["customer_id"].nunique() // 100), replace=False)
    terminals = frame["terminal_id"].unique()
    rows = []
    next_id = int(frame["transaction_id"].max()) + 1
    for c in cards:
        start = day0 + pd.Timedelta(seconds=int(rng.integers(3600, 4 * 3600)))
        term = rng.choice(terminals)
        for j in range(6):
            rows.append({"transaction_id": next_id, "timestamp": start + pd.Timedelta(seconds=int(rng.integers(60, 600)) * j),
                         "customer_id": c, "terminal_id": term, "amount": round(float(rng.uniform(1, 10)), 2),
                         "label": 1, "fraud_scenario": 4})
            next_id += 1
    extra = pd.DataFrame(rows).astype({"label": "Int8", "fraud_scenario": "int8"})
    return pd.concat([frame, extra], ignore_index=True).sort_values("timestamp", kind="stable").reset_index(drop=True)


def _inflation(frame: pd.DataFrame, day0: pd.Timestamp, rng: np.random.Generator) -> pd.DataFrame:
    """Every amount from ``day0`` on x1.3; the simulator's scenario-1 rule (amount > 220) relabels."""
    out = frame.copy()
    at = out["timestamp"] >= day0
    out.loc[at, "amount"] = (out.loc[at, "amount"] * 1.3).round(2)
    new_fraud = at & (out["amount"] > 220)
    out.loc[new_fraud, "label"] = 1
    return out


def _terminal_wave(frame: pd.DataFrame, day0: pd.Timestamp, rng: np.random.Generator) -> pd.DataFrame:
    """50 terminals compromised on ``day0`` (the simulator draws 2 a day): all their
    transactions from then on are fraud (scenario 2's rule). Only labels change."""
    out = frame.copy()
    terms = rng.choice(out["terminal_id"].unique(), 50, replace=False)
    hit = (out["timestamp"] >= day0) & out["terminal_id"].isin(terms)
    out.loc[hit, "label"] = 1
    out.loc[hit, "fraud_scenario"] = 2
    return out


_REPORTS: dict[int, Any] = {}

FINANCE_SHIFTS = {"new fraud scenario (card testing)": _new_scenario, "amounts x1.3": _inflation,
                  "compromised terminal wave (50)": _terminal_wave}


def _finance_bank(seed: int, customers: int) -> tuple[pd.DataFrame, FraudModel, dict[str, Any]]:
    sim = simulate_transactions(n_customers=customers, n_terminals=2 * customers, n_days=N_DAYS, seed=seed)
    start = sim["timestamp"].min().normalize()
    ref = sim[sim["timestamp"] < start + pd.Timedelta(days=REF_DAYS)].reset_index(drop=True)
    ref["label"] = ref["label"].astype("int8")
    spec = feature_spec_for(ref)
    model = FraudModel(kind="gbt", spec=spec, seed=seed)
    table = FeatureTable.compute(ref, spec, sequences=False)
    day = ref["timestamp"].to_numpy().astype("datetime64[D]")
    end = day.max() + 1
    train = np.flatnonzero((day >= end - 7 - 7 - 21) & (day < end - 7 - 7))
    model.fit(table.x[train], ref["label"].to_numpy()[train], order=ref["timestamp"].to_numpy()[train])
    hold = np.flatnonzero(day >= end - 7)
    profile = reference_profile(model, table.x[hold], None)
    return sim, model, profile


def _score_days(frame: pd.DataFrame, model: FraudModel, days: list[pd.Timestamp]) -> dict[pd.Timestamp, Any]:
    table = FeatureTable.compute(frame.drop(columns=["fraud_scenario"]), model.spec, sequences=False)
    p = model.predict_proba(table.x, None)
    out = {}
    for d in days:
        rows = np.flatnonzero((frame["timestamp"] >= d) & (frame["timestamp"] < d + pd.Timedelta(days=1)))
        out[d] = (table.x[rows], p[rows], frame["label"].to_numpy()[rows].astype(int))
    return out


def _day_check(profile: dict[str, Any], model: FraudModel, x: np.ndarray, p: np.ndarray, y: np.ndarray,
               thr: float, t: Thresholds) -> dict[str, Any]:
    key = id(x)
    if key not in _REPORTS:  # the statistics once per day; thresholds are re-applied per setting
        _REPORTS[key] = compare(profile, feature_frame(model, x), p, t, one_day=True)
    rep = _REPORTS[key].with_thresholds(t)
    alerted = p >= thr
    est = estimate_alert_precision(p[alerted])
    true = float(y[alerted].mean()) if alerted.any() else None
    alerts = rep.alerts()
    return {"rows": len(p), "flagged": bool(alerts), "status": rep.status(), "max_psi": round(rep.max_psi, 4),
            "score_psi": round(rep.score.psi, 4) if rep.score else None,
            "rules": sorted({f"{a['rule']}:{a['feature']}" for a in alerts}),
            "alerts": int(alerted.sum()), "true_precision": true,
            "estimated_precision": est["estimated_precision"], "standard_error": est["standard_error"],
            "estimate_error": None if true is None else abs(est["estimated_precision"] - true)}


def finance_prepare(seed: int, customers: int) -> dict[str, Any]:
    """Everything but the thresholds: scored clean days and shifted first days."""
    _REPORTS.clear()  # keyed by array id: a freed bank's ids could be reused by this one's
    sim, model, profile = _finance_bank(seed, customers)
    start = sim["timestamp"].min().normalize()
    clean_days = [start + pd.Timedelta(days=REF_DAYS + i) for i in range(CLEAN_DAYS)]
    scored = _score_days(sim, model, clean_days)
    day0 = start + pd.Timedelta(days=SHIFT_DAY)
    follow = [day0 + pd.Timedelta(days=i) for i in range(FOLLOW)]
    shifted = {}
    for i, (name, make) in enumerate(FINANCE_SHIFTS.items()):
        frame = make(sim, day0, np.random.default_rng(seed * 100 + i))
        shifted[name] = list(_score_days(frame, model, follow).values())
    # the alert threshold: the budget read off the reference week's scores
    ref_scores = np.sort(profile["score"]["sample"])[::-1]
    frac = ALERTS_PER_DAY * 7 / profile["score"]["rows"]
    thr = float(np.quantile(ref_scores, 1 - frac))
    return {"model": model, "profile": profile, "clean": scored, "shifted": shifted, "threshold": thr,
            "rows_per_day": float(np.mean([len(v[1]) for v in scored.values()]))}


def finance_evaluate(prep: dict[str, Any], t: Thresholds) -> dict[str, Any]:
    m, prof, thr = prep["model"], prep["profile"], prep["threshold"]
    clean = [{"day": str(d.date()), **_day_check(prof, m, *v, thr, t)} for d, v in prep["clean"].items()]
    shifts = []
    for n, days in prep["shifted"].items():
        first = _day_check(prof, m, *days[0], thr, t)
        later = [first] + [_day_check(prof, m, *d, thr, t) for d in days[1:]] if not first["flagged"] else [first]
        flagged_on = next((i + 1 for i, r in enumerate(later) if r["flagged"]), None)
        shifts.append({"shift": n, **first, "first_flagged_day": flagged_on,
                       "first_flagged_rules": later[flagged_on - 1]["rules"][:6] if flagged_on else []})
    return {"unshifted_days": len(clean), "false_alarms": sum(c["flagged"] for c in clean),
            "shifts_flagged_first_day": sum(s["flagged"] for s in shifts), "shifts": len(shifts),
            "max_estimate_error_on_shifts": max((s["estimate_error"] or 0.0) for s in shifts),
            "mean_estimate_error_unshifted": float(np.mean([c["estimate_error"] for c in clean
                                                            if c["estimate_error"] is not None])),
            "shift_results": shifts, "unshifted_results": clean}



# ------------------------------------------------------------------ manufacturing (the synthetic line's own generator)
MFG_SIZE, MFG_LOT, MFG_LOTS, MFG_REF = 64, 50, 30, 300


def _mfg_render(line: Any, first: int, n: int, seed: int) -> np.ndarray:
    """``n`` good parts of ``line`` (a ``LineLook``, possibly shifted), float (n, H, W, C) in [0, 1]."""
    from trillium.manufacturing.synth import _IN_MEMORY_STREAM, _render

    return np.stack([_render(line, (seed, _IN_MEMORY_STREAM, 0, first + i), None)[0] for i in range(n)]
                    ).astype(np.float32) / 255.0


def manufacturing_prepare(seed: int) -> dict[str, Any]:
    """A tiny detector trained on good parts; a reference of 300 fresh good parts (scores out of
    sample); 30 unshifted lots of 50; lighting drift (brightness +0.05, about 10 %) and a new
    surface texture (brushing 1.6x as strong, turned 45 degrees), each on its first lot.
    Returns the comparisons; thresholds are applied by ``manufacturing_evaluate``."""
    from dataclasses import replace as dc_replace

    import torch

    from trillium.manufacturing.detector import DefectDetector
    from trillium.manufacturing.monitoring import image_frame, reference_profile
    from trillium.manufacturing.pipeline import Inspector
    from trillium.manufacturing.synth_line import make_line

    torch.manual_seed(seed)
    line = make_line("surface", MFG_SIZE, seed, False)
    train = _mfg_render(line, 0, 64, seed)
    det = DefectDetector(size=MFG_SIZE, width=4, steps=40, batch_size=8, pool=3, val_fraction=0.25, seed=seed)
    det.fit(train.transpose(0, 3, 1, 2))
    inspector = Inspector(det)
    ref_imgs = _mfg_render(line, 10_000, MFG_REF, seed)
    profile = reference_profile(inspector, np.stack([inspector.prepare(im) for im in ref_imgs]))

    def check(images: np.ndarray) -> Any:
        batch = np.stack([inspector.prepare(im) for im in images])
        return compare(profile, image_frame(inspector, batch, profile["meta"].get("embedding")),
                       det.predict(batch).scores)

    clean = [check(_mfg_render(line, 20_000 + k * MFG_LOT, MFG_LOT, seed)) for k in range(MFG_LOTS)]
    shifts = {"lighting drift (brightness +0.05)": dc_replace(line, brightness=line.brightness + 0.05),
              "new surface texture (contrast x1.6, angle +45)": dc_replace(line, contrast=line.contrast * 1.6,
                                                                           angle=line.angle + 45.0)}
    return {"clean": clean, "shifts": {name: check(_mfg_render(shifted, 90_000, MFG_LOT, seed))
                                       for name, shifted in shifts.items()}}


def _verdicts(prep: dict[str, Any], t: Thresholds) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The prepared comparisons (``clean`` batches, named ``shifts``) judged by thresholds ``t``."""
    def verdict(report: Any) -> dict[str, Any]:
        rep = report.with_thresholds(t)
        alerts = rep.alerts()
        return {"flagged": bool(alerts), "rules": sorted({f"{a['rule']}:{a['feature']}" for a in alerts}),
                "max_psi": round(rep.max_psi, 4)}

    return [verdict(r) for r in prep["clean"]], [{"shift": n, **verdict(r)} for n, r in prep["shifts"].items()]


def manufacturing_evaluate(prep: dict[str, Any], t: Thresholds) -> dict[str, Any]:
    clean, shift_results = _verdicts(prep, t)
    return {"lot_size": MFG_LOT, "reference_images": MFG_REF, "unshifted_lots": MFG_LOTS,
            "false_alarms": sum(c["flagged"] for c in clean),
            "shifts_flagged_first_lot": sum(r["flagged"] for r in shift_results), "shifts": len(shift_results),
            "shift_results": shift_results, "unshifted_results": clean}


# ------------------------------------------------------------------ notes (the synthetic generator's departments)
NOTES_HELD_OUT = ("Dermatology", "Urology")  # departments absent from the reference
NOTES_REF = 400
NOTES_BATCH = 50
NOTES_BATCHES = 30


def notes_prepare(seed: int) -> dict[str, Any]:
    """A reference of 400 notes from six of the generator's eight departments (half learns the
    vocabulary, half is profiled); 30 unshifted batches of 50 notes from those departments; and,
    for each absent department, a batch of its notes only and a batch where it is 30 % of the
    notes (a department joining the feed). Returns the comparisons."""
    from trillium.medical.records.monitoring import note_stats, reference_profile
    from trillium.medical.records.structurer import RecordStructurer
    from trillium.medical.records.synth import SPECIALTIES, synthetic_notes

    structurer = RecordStructurer()
    ref_specs = [s for s in SPECIALTIES if s not in NOTES_HELD_OUT]

    def structured(n: int, s: int, specs: list[str]) -> list[Any]:
        return [structurer.structure(x.text, note_id=x.note_id) for x in synthetic_notes(n, seed=s, specialties=specs)]

    reference, profile = reference_profile(structured(NOTES_REF, seed, ref_specs), seed=seed)

    def check(notes: list[Any]) -> Any:
        return compare(profile, note_stats(notes, reference))

    clean = [check(structured(NOTES_BATCH, seed * 1000 + k, ref_specs)) for k in range(NOTES_BATCHES)]
    joining = round(0.3 * NOTES_BATCH)
    shifts = {}
    for i, spec in enumerate(NOTES_HELD_OUT):
        shifts[f"{spec} notes (absent from the reference)"] = check(structured(NOTES_BATCH, seed * 1000 + 900 + i,
                                                                             [spec]))
        shifts[f"{spec} joins the feed (30 % of a batch)"] = check(
            structured(NOTES_BATCH - joining, seed * 1000 + 950 + i, ref_specs)
            + structured(joining, seed * 1000 + 970 + i, [spec]))
    return {"clean": clean, "shifts": shifts}


def notes_evaluate(prep: dict[str, Any], t: Thresholds) -> dict[str, Any]:
    clean, shift_results = _verdicts(prep, t)
    return {"batch_size": NOTES_BATCH, "reference_notes": NOTES_REF, "unshifted_batches": NOTES_BATCHES,
            "false_alarms": sum(c["flagged"] for c in clean),
            "shifts_flagged_first_batch": sum(r["flagged"] for r in shift_results), "shifts": len(shift_results),
            "shift_results": shift_results, "unshifted_results": clean}


def calibrate_field(preps: list[dict[str, Any]], evaluate: Any, flagged_key: str, *,
                    grid: list[tuple[float, float]] | None = None, base: Thresholds | None = None
                    ) -> tuple[Thresholds, list[dict[str, Any]]]:
    """The most sensitive (fdr, psi_floor) of ``grid`` (default ``GRID``) with no false alarm on
    the calibration preps: shifts flagged (``flagged_key`` of ``evaluate``'s result), then the
    largest FDR and the smallest PSI floor; the other thresholds are ``base``'s (the field's own)."""
    base = base or Thresholds()
    table = []
    for fdr, floor in grid or GRID:
        t = replace(base, fdr=fdr, psi_floor=floor)
        res = [evaluate(p, t) for p in preps]
        table.append({"fdr": fdr, "psi_floor": floor, "false_alarms": sum(r["false_alarms"] for r in res),
                      "shifts_flagged": sum(r[flagged_key] for r in res)})
    ok = [r for r in table if r["false_alarms"] == 0] or sorted(table, key=lambda r: r["false_alarms"])[:1]
    best = max(ok, key=lambda r: (r["shifts_flagged"], r["fdr"], -r["psi_floor"]))
    return replace(base, fdr=best["fdr"], psi_floor=best["psi_floor"]), table


# ------------------------------------------------------------------ chest CT (the phantom generator's own)
#: small phantoms (about a tenth of training's voxels; 150 x 256 x 256 mm like the training's 210 x 358 x 358
#: mm chest, cut short): a study costs about 3 s here instead of 20 s, so 250 of them fit in minutes
CT_SHAPE, CT_SPACING = (60, 128, 128), (2.5, 2.0, 2.0)
CT_BATCH, CT_REF = 4, 20
#: phantom seeds, per role, relative to ``role_seed * 10_000``: the classifier trains on + 0 .. 5 and
#: the reference is + 5_000 .. (as ``train_nodule_model`` makes it); unshifted batches + 6_000 ..,
#: shifted ones + 8_000 + 100 * shift ..
CT_CLEAN_OFFSET, CT_SHIFT_OFFSET = 6_000, 8_000
CT_SHIFTS: dict[str, dict[str, Any]] = {
    "sharper kernel (tag B70f; noise 35 HU, less correlated)": {"kernel": "B70f", "noise_sigma": 0.35, "noise_hu": 35.0},
    "sharper kernel, tag unchanged (noise only)": {"noise_sigma": 0.35, "noise_hu": 35.0},
    "thicker slices (5 mm instead of 2.5 mm)": {"shape": (30, 128, 128), "spacing": (5.0, 2.0, 2.0)},
    "added noise (20 -> 30 HU, same kernel)": {"noise_hu": 30.0},
}


def _ct_studies(analyzer: Any, seeds: list[int], look: dict[str, Any]) -> list[dict[str, Any]]:
    """The monitoring statistics of phantoms analysed by ``analyzer`` (the analyzer's own path)."""
    from trillium.medical.imaging.phantom_training import phantom_volume

    look = {"shape": CT_SHAPE, "spacing": CT_SPACING, **look}
    out = []
    for s in seeds:
        vol, _ = phantom_volume(6, s, **look)
        res = analyzer.analyze_volume(vol)
        out.append({**res.monitoring, "_seconds": {k: round(v, 4) for k, v in res.timings.items()}})
    print(f"  ct: {len(seeds)} studies analysed (seeds {seeds[0]}..{seeds[-1]})", file=sys.stderr, flush=True)
    return out


def ct_prepare(seed: int, batches: int, reference: int = CT_REF) -> dict[str, Any]:
    """A small nodule classifier trained on phantoms (``train_nodule_model``, seeds ``seed`` * 10_000 +
    0 .. 5), its reference profile on ``CT_REF`` fresh phantoms (``reference_profile``, the
    registration's own call), ``batches`` unshifted batches of ``CT_BATCH`` studies and one first
    batch per shift. The analyzer's threshold is raised above 1 so no finding is measured: the
    statistics are computed before that step and do not depend on it, and it saves 2 s a study."""
    import torch

    from trillium.core.monitoring.profile import build_profile
    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.monitoring import CATEGORICAL, study_frame
    from trillium.medical.imaging.phantom_training import PROFILE_SEED_OFFSET, train_nodule_model

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    rep = train_nodule_model(studies=4, val_studies=2, epochs=3, width=4, mc_samples=2, seed=seed, register=False,
                             shape=CT_SHAPE, spacing=CT_SPACING)
    analyzer = StudyAnalyzer(rep.classifier, threshold=1.01)
    base = seed * 10_000
    ref = _ct_studies(analyzer, [base + PROFILE_SEED_OFFSET + i for i in range(reference)], {})
    frame, score = study_frame(ref)
    profile = build_profile(frame, score, categorical=CATEGORICAL, meta={"domain": "medical-imaging"})
    clean = [_ct_studies(analyzer, [base + CT_CLEAN_OFFSET + b * CT_BATCH + i for i in range(CT_BATCH)], {})
             for b in range(batches)]
    shifts = {name: _ct_studies(analyzer, [base + CT_SHIFT_OFFSET + 100 * j + i for i in range(CT_BATCH)], look)
              for j, (name, look) in enumerate(CT_SHIFTS.items())}

    def check(studies: list[dict[str, Any]]) -> Any:
        f, sc = study_frame(studies)
        return compare(profile, f, sc)

    timings = [s["_seconds"] for s in ref + [x for b in clean for x in b]]
    return {"clean": [check(b) for b in clean], "reference_studies": reference, "shifts": {n: check(b) for n, b in shifts.items()},
            "classifier_seconds": round(rep.seconds, 1), "prepare_seconds": round(time.perf_counter() - t0, 1),
            "monitor_seconds_per_study": float(np.mean([t["monitor"] for t in timings])),
            "analysis_seconds_per_study": float(np.mean([t["total"] if "total" in t else sum(t.values())
                                                         for t in timings])),
            "reference": {c: {k: profile["features"][c].get(k) for k in ("min", "max", "mean", "proportions")
                              if k in profile["features"][c]} for c in ("lung_noise_hu", "air_noise_hu", "kernel")},
            "shift_means": {n: {c: float(np.nanmean(pd.to_numeric(pd.Series([s[c] for s in b]), errors="coerce")))
                                for c in ("lung_noise_hu", "air_noise_hu", "slice_spacing_mm", "lung_hu_p05")}
                            for n, b in shifts.items()}}


def ct_evaluate(prep: dict[str, Any], t: Thresholds) -> dict[str, Any]:
    clean, shift_results = _verdicts(prep, t)
    return {"batch_studies": CT_BATCH, "reference_studies": prep["reference_studies"], "unshifted_batches": len(clean),
            "false_alarms": sum(c["flagged"] for c in clean),
            "shifts_flagged_first_batch": sum(r["flagged"] for r in shift_results), "shifts": len(shift_results),
            "shift_results": shift_results, "unshifted_results": clean}


CT_GRID = [(fdr, floor) for fdr in (1e-2, 1e-3, 1e-4, 1e-6) for floor in (0.05, 0.1, 0.2, 0.3)]


def ct_statistics_cost(repeats: int = 3) -> dict[str, Any]:
    """Seconds ``study_statistics`` adds to a full-size study (300 x 512 x 512, 1 x 0.7 x 0.7 mm),
    beside the lung segmentation the analyzer runs anyway (same volume, same process)."""
    from trillium.medical.imaging.lungs import segment_lungs
    from trillium.medical.imaging.monitoring import study_statistics
    from trillium.medical.imaging.phantom_training import phantom_volume

    vol, _ = phantom_volume(6, 4_242, shape=(300, 512, 512), spacing=(1.0, 0.7, 0.7))
    t = time.perf_counter()
    lungs = segment_lungs(vol.hu, vol.spacing)
    lungs_s = time.perf_counter() - t
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        study_statistics(vol, lungs, 100, np.linspace(0, 1, 100))
        runs.append(time.perf_counter() - t)
    return {"shape": list(vol.shape), "spacing_mm": list(vol.spacing), "statistics_seconds": runs,
            "statistics_seconds_median": float(np.median(runs)), "lung_segmentation_seconds": lungs_s}


GRID = [(fdr, floor) for fdr in (1e-2, 1e-3, 1e-4, 1e-6) for floor in (0.01, 0.02, 0.03, 0.05, 0.1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="benchmarks/results/monitoring.json")
    ap.add_argument("--customers", type=int, default=2000, help="cards in each simulated bank")
    ap.add_argument("--seed", type=int, default=101, help="the evaluation bank's seed")
    ap.add_argument("--calibration-seeds", type=int, nargs="*", default=[11, 12],
                    help="the calibration banks' seeds (never the evaluation's)")
    ap.add_argument("--no-calibrate", action="store_true", help="use the library's default thresholds")
    ap.add_argument("--only", choices=["finance", "manufacturing", "notes", "ct", "ct-cost"],
                    help="run one field (finance and manufacturing: default thresholds; ct: calibrated as usual; "
                         "ct-cost: only the CT statistics' seconds on one full-size study)")
    ap.add_argument("--ct-batches", type=int, default=30, help="unshifted CT batches of the evaluation")
    ap.add_argument("--ct-reference", type=int, default=CT_REF, help="phantom studies in each CT reference profile")
    ap.add_argument("--ct-calibration-batches", type=int, default=8, help="unshifted CT batches per calibration seed")
    ap.add_argument("--ct-calibration-seeds", type=int, nargs="*", default=[11],
                    help="the CT calibration classifiers' seeds (never the evaluation's)")
    ap.add_argument("--ct-cost", action="store_true",
                    help="also time the statistics on one full-size study (300 x 512 x 512; about a minute)")
    ap.add_argument("--ct-cost-repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if args.seed in args.calibration_seeds or args.seed in args.ct_calibration_seeds:
        ap.error("the evaluation seed must differ from the calibration seeds")
    t0 = time.perf_counter()
    if args.only == "ct-cost":
        cost = ct_statistics_cost(args.ct_cost_repeats)
        cost.update(benchmark="monitoring-ct-cost", python=sys.version.split()[0], cpu_count=os.cpu_count())
        with open(args.json, "w") as fh:
            json.dump(cost, fh, indent=1)
        print(f"ct statistics on {cost['shape']}: {cost['statistics_seconds_median']:.3f} s (median of "
              f"{args.ct_cost_repeats}); lung segmentation {cost['lung_segmentation_seconds']:.2f} s -> {args.json}")
        return 0
    grid: list[dict[str, Any]] = []
    thresholds = Thresholds()
    if not (args.no_calibrate or args.only):
        thresholds, grid = calibrate_field([finance_prepare(s, args.customers) for s in args.calibration_seeds],
                                           finance_evaluate, "shifts_flagged_first_day")
    finance = manufacturing = ct = None
    if args.only in (None, "finance"):
        prep = finance_prepare(args.seed, args.customers)
        finance = finance_evaluate(prep, thresholds)
        finance.update(rows_per_day=prep["rows_per_day"], alert_threshold=prep["threshold"])
    from trillium.manufacturing.monitoring import THRESHOLDS as mfg_default

    mfg_thresholds, mfg_grid = mfg_default, []
    if args.only in (None, "manufacturing"):
        if not (args.no_calibrate or args.only):
            mfg_thresholds, mfg_grid = calibrate_field([manufacturing_prepare(s) for s in args.calibration_seeds],
                                                       manufacturing_evaluate, "shifts_flagged_first_lot")
        manufacturing = manufacturing_evaluate(manufacturing_prepare(args.seed), mfg_thresholds)
        manufacturing.update(thresholds=mfg_thresholds.as_dict(), calibration_grid=mfg_grid)
    from trillium.medical.records.monitoring import THRESHOLDS as notes_default

    notes, notes_thresholds, notes_grid = None, notes_default, []
    if args.only in (None, "notes"):
        if not args.no_calibrate:  # cheap (seconds): calibrated even with --only notes
            notes_thresholds, notes_grid = calibrate_field([notes_prepare(s) for s in args.calibration_seeds],
                                                           notes_evaluate, "shifts_flagged_first_batch")
        notes = notes_evaluate(notes_prepare(args.seed), notes_thresholds)
        notes.update(thresholds=notes_thresholds.as_dict(), calibration_grid=notes_grid)
    if args.only in (None, "ct"):
        from trillium.medical.imaging.monitoring import THRESHOLDS as ct_default

        ct_thresholds, ct_grid, ct_cal = ct_default, [], []
        if not args.no_calibrate:
            ct_cal = [ct_prepare(s, args.ct_calibration_batches, args.ct_reference) for s in args.ct_calibration_seeds]
            ct_thresholds, ct_grid = calibrate_field(ct_cal, ct_evaluate, "shifts_flagged_first_batch", grid=CT_GRID,
                                                     base=ct_default)
        ct_prep = ct_prepare(args.seed, args.ct_batches, args.ct_reference)
        ct = ct_evaluate(ct_prep, ct_thresholds)
        ct.update(thresholds=ct_thresholds.as_dict(), calibration_grid=ct_grid,
                  calibration_seeds=args.ct_calibration_seeds if not args.no_calibrate else [],
                  phantom_shape=list(CT_SHAPE), phantom_spacing_mm=list(CT_SPACING),
                  **{k: ct_prep[k] for k in ("classifier_seconds", "prepare_seconds", "monitor_seconds_per_study",
                                             "analysis_seconds_per_study", "reference", "shift_means")},
                  calibration_results=[ct_evaluate(p, ct_thresholds) for p in ct_cal])
        if args.ct_cost:
            ct["full_size_cost"] = ct_statistics_cost(args.ct_cost_repeats)
    out = {"benchmark": "monitoring", "python": sys.version.split()[0], "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "seconds": round(time.perf_counter() - t0, 1),
           "settings": {"customers": args.customers, "seed": args.seed, "calibration_seeds": args.calibration_seeds,
                        "alerts_per_day": ALERTS_PER_DAY,
                        "reference": f"finance: the held-out week before day {REF_DAYS}",
                        "unshifted_days": CLEAN_DAYS},
           "thresholds": thresholds.as_dict(), "calibration_grid": grid, "finance": finance,
           "manufacturing": manufacturing, "notes": notes, "ct": ct}
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=1, default=str)
    print(f"thresholds {thresholds.as_dict()}")
    if finance:
        f = finance
        print(f"finance: {f['shifts_flagged_first_day']}/{f['shifts']} shifts flagged on day 1, "
              f"{f['false_alarms']}/{f['unshifted_days']} false alarms; estimate error on shifts "
              f"<= {f['max_estimate_error_on_shifts']:.3f}")
        for s in f["shift_results"]:
            print(f"  {s['shift']}: day 1 flagged={s['flagged']} rules={s['rules'][:4]}; first flagged on day "
                  f"{s['first_flagged_day']} {s['first_flagged_rules'][:3]}; est={s['estimated_precision']:.3f} "
                  f"± {s['standard_error']:.3f} true={s['true_precision']:.3f}")
    if manufacturing:
        m = manufacturing
        print(f"manufacturing: {m['shifts_flagged_first_lot']}/{m['shifts']} shifts flagged on their first lot, "
              f"{m['false_alarms']}/{m['unshifted_lots']} false alarms")
        for r in m["shift_results"]:
            print(f"  {r['shift']}: flagged={r['flagged']} rules={r['rules'][:4]} max PSI {r['max_psi']}")
    if notes:
        n = notes
        print(f"notes: {n['shifts_flagged_first_batch']}/{n['shifts']} shifts flagged on their first batch, "
              f"{n['false_alarms']}/{n['unshifted_batches']} false alarms")
        for r in n["shift_results"]:
            print(f"  {r['shift']}: flagged={r['flagged']} rules={r['rules'][:4]} max PSI {r['max_psi']}")
    if ct:
        print(f"ct: {ct['shifts_flagged_first_batch']}/{ct['shifts']} shifts flagged on their first batch of "
              f"{CT_BATCH}, {ct['false_alarms']}/{ct['unshifted_batches']} false alarms; statistics "
              f"{ct['monitor_seconds_per_study']:.3f} s of {ct['analysis_seconds_per_study']:.2f} s a study; "
              f"thresholds fdr={ct['thresholds']['fdr']} psi_floor={ct['thresholds']['psi_floor']}")
        for r in ct["shift_results"]:
            print(f"  {r['shift']}: flagged={r['flagged']} rules={r['rules'][:5]} max PSI {r['max_psi']}")
        if "full_size_cost" in ct:
            print(f"  full-size study: statistics {ct['full_size_cost']['statistics_seconds_median']:.2f} s")
    print(f"-> {args.json} ({out['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
