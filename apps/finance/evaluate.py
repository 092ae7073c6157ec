"""The field's evaluation protocols and metrics, as the Fraud Detection Handbook defines them.

Handbook protocol (timestamped data with card ids): features are computed once on the whole
history (terminal and card risk use labels only after the delay); a fold trains on
``delta_train`` days, skips ``delta_delay`` days (labels not yet known), and tests on
``delta_test`` days, where each test day drops the cards known compromised by then (frauds in
the training period or in the delay period up to the day before, shifted by the delay).
Metrics: AUC ROC, average precision, and card precision@100: per test day, the share of truly
compromised cards among the 100 cards with the highest score (a card's score is its highest
transaction score that day), cards detected on an earlier test day removed, then the mean
over days.

* Protocol A (handbook chapter 3): one fold, training from 2018-07-25.
* Protocol B (chapters 5 and 7): four folds whose training starts 2018-07-25, 08-01, 08-08 and
  08-15; model choices made on validation folds that end before the first test fold
  (training starts 2018-07-11, 07-04, 06-27, 06-20), never on the test folds.

Card-less data (ULB): a time-ordered split, 60 % train, 20 % validation, 20 % test, and the
model against a gradient-boosted tree tuned on the validation part in the same run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from trillium.core.errors import InputValidationError
from trillium.finance.features import FeatureSpec, FeatureTable
from trillium.finance.fraud_model import FraudModel
from trillium.finance.records import CUSTOMER_ID, LABEL, TIMESTAMP
from trillium.finance.train import GradientBoostedModel

log = logging.getLogger(__name__)

TEST_STARTS_B = ("2018-07-25", "2018-08-01", "2018-08-08", "2018-08-15")
VALID_STARTS_B = ("2018-07-11", "2018-07-04", "2018-06-27", "2018-06-20")
HANDBOOK_BEST_B = {"auc_roc": 0.876, "average_precision": 0.687, "card_precision_at_100": 0.303}


# ----------------------------------------------------------------------- metrics
def card_precision_at_k(days: np.ndarray, cards: np.ndarray, y: np.ndarray, scores: np.ndarray,
                        k: int = 100) -> tuple[float, list[float]]:
    """Mean over days of the precision of the top-k cards (handbook definition), and per day."""
    df = pd.DataFrame({"day": days, "card": cards, "score": scores, "y": y})
    detected: set[Any] = set()
    per_day: list[float] = []
    for _, g in df.groupby("day", sort=True):
        g = g[~g["card"].isin(detected)]
        top = g.groupby("card")[["score", "y"]].max().sort_values("score", ascending=False, kind="stable").head(k)
        hits = top.index[top["y"] == 1]
        per_day.append(len(hits) / k)
        detected.update(hits)
    return (float(np.mean(per_day)) if per_day else float("nan")), per_day


def scores_report(y: np.ndarray, p: np.ndarray, days: np.ndarray | None = None,
                  cards: np.ndarray | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "auc_roc": float(roc_auc_score(y, p)),
        "average_precision": float(average_precision_score(y, p)),
        "n": len(y), "frauds": int(np.sum(y)),
    }
    if days is not None and cards is not None:
        out["card_precision_at_100"], out["card_precision_at_100_per_day"] = card_precision_at_k(days, cards, y, p)
    return out


# ----------------------------------------------------------------------- data preparation
@dataclass
class Prepared:
    """Features of a whole history, computed once and shared by all folds."""

    frame: pd.DataFrame
    x: np.ndarray
    table: FeatureTable
    y: np.ndarray
    day: np.ndarray  # calendar day as datetime64[D]
    cards: np.ndarray
    spec: FeatureSpec
    seconds: float


def prepare(frame: pd.DataFrame, spec: FeatureSpec | None = None, with_sequences: bool = True) -> Prepared:
    spec = spec or FeatureSpec()
    if LABEL not in frame.columns or frame[LABEL].isna().any():
        raise InputValidationError("evaluation needs a label on every transaction (column 'label', 0 or 1)")
    t0 = time.perf_counter()
    table = FeatureTable.compute(frame, spec, sequences=with_sequences)
    return Prepared(
        frame=frame, x=table.x, table=table, y=frame[LABEL].to_numpy().astype(np.int64),
        day=frame[TIMESTAMP].to_numpy().astype("datetime64[D]"),
        cards=frame[CUSTOMER_ID].to_numpy() if CUSTOMER_ID in frame.columns else np.arange(len(frame)),
        spec=spec, seconds=time.perf_counter() - t0,
    )


def handbook_split(data: Prepared, train_start: str, delta_train: int = 7, delta_delay: int = 7,
                   delta_test: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of (train, test) for one fold, known-compromised cards removed from test."""
    s = np.datetime64(pd.Timestamp(train_start).date(), "D")
    day, y, cards = data.day, data.y, data.cards
    train = np.flatnonzero((day >= s) & (day < s + delta_train))
    if len(train) == 0:
        raise InputValidationError(f"no transactions in the training period starting {train_start} "
                                   f"(data covers {day.min()} to {day.max()})")
    known = set(cards[train][y[train] == 1].tolist())
    test_parts = []
    for k in range(delta_test):
        delay_day = s + delta_train + k - 1
        known.update(cards[(day == delay_day) & (y == 1)].tolist())
        today = np.flatnonzero(day == s + delta_train + delta_delay + k)
        test_parts.append(today[~np.isin(cards[today], list(known))])
    test = np.concatenate(test_parts)
    if len(test) == 0:
        raise InputValidationError(f"no test transactions for the fold starting {train_start}")
    return train, test


def _fit_predict(data: Prepared, kind: str, train: np.ndarray, test: np.ndarray, seed: int,
                 gbt_params: dict[str, Any] | None) -> np.ndarray:
    model = FraudModel(kind=kind, spec=data.spec, gbt_params=gbt_params, seed=seed)
    x_train, seq_train = data.table.rows(train, model.needs_sequence)
    model.fit(x_train, data.y[train], seq_train, order=data.frame[TIMESTAMP].to_numpy()[train])
    x_test, seq_test = data.table.rows(test, model.needs_sequence)
    return model.predict_proba(x_test, seq_test)


def evaluate_folds(data: Prepared, kind: str, starts: Sequence[str], *, seed: int = 0,
                   gbt_params: dict[str, Any] | None = None, delta_train: int = 7, delta_delay: int = 7,
                   delta_test: int = 7, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    folds = []
    for start in starts:
        t0 = time.perf_counter()
        train, test = handbook_split(data, start, delta_train, delta_delay, delta_test)
        p = _fit_predict(data, kind, train, test, seed, gbt_params)
        rep = scores_report(data.y[test], p, data.day[test], data.cards[test])
        rep.update(train_start=start, train_rows=len(train), train_frauds=int(data.y[train].sum()),
                   seconds=round(time.perf_counter() - t0, 2))
        folds.append(rep)
        if progress:
            progress(f"{kind} fold {start}: AUC {rep['auc_roc']:.4f} AP {rep['average_precision']:.4f} "
                     f"CP@100 {rep['card_precision_at_100']:.4f}")
    keys = ("auc_roc", "average_precision", "card_precision_at_100")
    return {"model": kind, **{k: float(np.mean([f[k] for f in folds])) for k in keys}, "folds": folds}


def evaluate_handbook(frame: pd.DataFrame, *, kind: str = "gbt+seq", train_start: str = TEST_STARTS_B[0],
                      folds: int = 4, select: Sequence[str] | None = None,
                      valid_starts: Sequence[str] = VALID_STARTS_B, seed: int = 0,
                      delta_train: int = 7, delta_delay: int = 7, delta_test: int = 7,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The handbook protocol; ``folds`` test folds a week apart from ``train_start``.

    With ``select`` (candidate kinds), each candidate is scored on the validation folds and
    the best average precision is the model tested, so no test fold takes part in the choice.
    """
    data = prepare(frame, with_sequences=True)
    starts = [str((pd.Timestamp(train_start) + pd.Timedelta(days=7 * i)).date()) for i in range(folds)]
    report: dict[str, Any] = {
        "protocol": "handbook", "train_start": train_start, "folds": folds,
        "delta_train": delta_train, "delta_delay": delta_delay, "delta_test": delta_test,
        "feature_seconds": round(data.seconds, 2), "features": data.spec.names,
        "rows": len(frame), "frauds": int(data.y.sum()),
    }
    if train_start == TEST_STARTS_B[0] and folds == 4:
        report["protocol_name"] = "B (handbook chapters 5 and 7: mean of 4 test folds)"
        report["handbook_best"] = HANDBOOK_BEST_B
    elif folds == 1 and train_start == TEST_STARTS_B[0]:
        report["protocol_name"] = "A (handbook chapter 3: one fold)"
    if select:
        validation = {k: evaluate_folds(data, k, valid_starts, seed=seed, delta_train=delta_train,
                                        delta_delay=delta_delay, delta_test=delta_test, progress=progress)
                      for k in select}
        kind = max(validation, key=lambda k: validation[k]["average_precision"])
        report["validation"] = {k: {m: v[m] for m in ("auc_roc", "average_precision", "card_precision_at_100")}
                                for k, v in validation.items()}
        report["valid_starts"] = list(valid_starts)
        report["selected_by"] = "validation average precision"
    test = evaluate_folds(data, kind, starts, seed=seed, delta_train=delta_train, delta_delay=delta_delay,
                          delta_test=delta_test, progress=progress)
    report.update(test)
    if "handbook_best" in report:
        report["beats_handbook"] = {k: report[k] > v for k, v in HANDBOOK_BEST_B.items()}
    return report


# ----------------------------------------------------------------------- card-less data (ULB)
def evaluate_time_split(frame: pd.DataFrame, *, kind: str = "gbt+mlp", passthrough: Sequence[str] = (),
                        seed: int = 0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time-ordered 60/20/20 split for data without card ids; our model vs a tuned GBT."""
    spec = FeatureSpec(card_history=False, passthrough=tuple(passthrough))
    frame = frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    data = prepare(frame, spec, with_sequences=False)
    n = len(frame)
    a, b = int(n * 0.6), int(n * 0.8)
    train, valid, test = np.arange(a), np.arange(a, b), np.arange(b, n)
    for part, idx in (("train", train), ("validation", valid), ("test", test)):
        if len(np.unique(data.y[idx])) < 2:
            raise InputValidationError(f"the time-ordered {part} part has only one class; need frauds in each part")
    # the baseline: a GBT whose size and learning rate are tuned on the validation part
    grid = [{"n_estimators": ne, "learning_rate": lr, "num_leaves": nl, "min_child_samples": mc}
            for ne, lr in ((200, 0.05), (500, 0.02)) for nl, mc in ((15, 50), (31, 20), (63, 10))]
    best, best_ap = grid[0], -1.0
    for params in grid:
        z = GradientBoostedModel(seed=seed, **params).fit(data.x[train], data.y[train]).decision_function(data.x[valid])
        ap = average_precision_score(data.y[valid], z)
        if progress:
            progress(f"tuning GBT {params}: validation AP {ap:.4f}")
        if ap > best_ap:
            best, best_ap = params, ap
    trainval = np.arange(b)
    gbt = GradientBoostedModel(seed=seed, **best).fit(data.x[trainval], data.y[trainval])
    baseline = scores_report(data.y[test], gbt.decision_function(data.x[test]))
    model = FraudModel(kind=kind, spec=spec, gbt_params=best, seed=seed)
    model.fit(data.x[trainval], data.y[trainval], order=np.arange(b))
    ours = scores_report(data.y[test], model.predict_proba(data.x[test]))
    return {
        "protocol": "time-ordered split 60/20/20 (card-less data)", "rows": n, "frauds": int(data.y.sum()),
        "model": kind, "auc_roc": ours["auc_roc"], "average_precision": ours["average_precision"],
        "baseline": {"model": "tuned gbt", "params": best, "validation_ap": best_ap, **baseline},
        "ap_vs_baseline": ours["average_precision"] - baseline["average_precision"],
    }
