"""Field-neutral evaluation metrics: AUROC (whole, per group), FROC, detection matching.

Why this exists: the verticals' evaluation protocols differ (a handbook's fold protocol, an
MVTec-style split, a LUNA16-style detection study) but several of their figures are the same
computation under different names. A defect type's image AUROC against the good parts and a
finding's sensitivity at a number of false positives per scan are written once here, so two
verticals reporting "AUROC per group" mean the same thing, and a fix reaches all of them.

- ``auroc``: ROC AUC, or None when the labels hold a single class (instead of an exception).
- ``auroc_per_group``: ``auroc`` on each group's rows (optionally with a reference group's rows
  added, as in "each defect type against the good parts"), with the counts.
- ``froc_table`` and ``cpm``: sensitivity at fixed false-positive rates per scan (image, study:
  whatever unit the detections are counted in), and their mean (the competition performance
  metric of LUNA16).
- ``fp_budget_threshold``: the lowest score threshold whose false positives per group stay
  within a budget, the usual way a detector's operating point is set.
- ``nearest_hit``: which truth object a detection hits (the nearest whose radius holds it).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["FROC_FP_RATES", "auroc", "auroc_per_group", "cpm", "fp_budget_threshold", "froc_table", "nearest_hit"]

#: FROC operating points (false positives per scan), as in LUNA16's CPM.
FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


# ----------------------------------------------------------------------- AUROC
def auroc(y: Any, scores: Any) -> float | None:
    """ROC AUC of ``scores`` against binary labels ``y`` (any shape, flattened); None when the
    labels hold only one class (or none), where the AUC is undefined."""
    y = np.asarray(y).reshape(-1)
    if y.size == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, np.asarray(scores).reshape(-1)))


def auroc_per_group(y: Any, scores: Any, groups: Any, *, reference: Hashable | None = None
                    ) -> dict[Any, dict[str, Any]]:
    """``auroc`` on each group's rows: ``{group: {"n": rows of the group, "auroc": float | None}}``.

    ``y`` and ``scores`` have one row per item of ``groups`` and may have more axes (the pixels
    of an image), which are flattened within the selection. With ``reference`` (the negatives'
    group, e.g. the good parts), each other group is scored on its rows plus the reference's,
    and the reference gets no entry of its own; without it, each group on its own rows. Groups
    come out sorted.
    """
    y, scores, groups = np.asarray(y), np.asarray(scores), np.asarray(groups)
    if not len(y) == len(scores) == len(groups):
        raise ValueError(f"y, scores and groups need one row each per item, got {len(y)}, {len(scores)}, {len(groups)}")
    ref = groups == reference if reference is not None else np.zeros(len(groups), bool)
    out: dict[Any, dict[str, Any]] = {}
    for g in sorted(set(groups.tolist()) - ({reference} if reference is not None else set())):
        own = groups == g
        sel = own | ref
        out[g] = {"n": int(own.sum()), "auroc": auroc(y[sel], scores[sel])}
    return out


# ----------------------------------------------------------------------- detection: FROC
def froc_table(scored: Sequence[tuple[float, bool]], n_truth: int, scans: int,
               fp_rates: Sequence[float] = FROC_FP_RATES) -> list[dict[str, float]]:
    """Sensitivity at each rate of false positives per scan of ``fp_rates``.

    ``scored`` holds one ``(score, is_true_positive)`` per detection over all ``scans`` (each
    truth object hit at most once), ``n_truth`` the truth objects counted. For each rate the
    detections are taken from the highest score down until one more false positive would pass
    ``rate * scans``; each row gives the rate, the sensitivity reached and the score of the last
    detection taken (1.0 if none). Empty when there is no truth or no scan.
    """
    if not n_truth or not scans:
        return []
    ranked = sorted(scored, key=lambda x: -x[0])
    rows = []
    for rate in fp_rates:
        fp_budget = rate * scans
        tp = fp = 0
        threshold = 1.0
        for p, is_tp in ranked:
            if not is_tp and fp + 1 > fp_budget:
                break
            tp += is_tp
            fp += not is_tp
            threshold = p
        rows.append({"fp_per_scan": rate, "sensitivity": round(tp / n_truth, 4), "threshold": round(threshold, 4)})
    return rows


def cpm(froc: Sequence[dict[str, float]]) -> float | None:
    """The mean sensitivity over a ``froc_table``'s rows (LUNA16's CPM); None for an empty table."""
    return float(np.mean([row["sensitivity"] for row in froc])) if froc else None


def fp_budget_threshold(scores: np.ndarray, is_positive: np.ndarray, groups: np.ndarray, *,
                        max_fp_per_group: float = 0.5, bounds: tuple[float, float] = (0.05, 0.95)) -> float:
    """The lowest threshold whose false positives per group (scan, study, image) stay within the budget.

    ``floor(max_fp_per_group * groups)`` negatives may score at or above it; the threshold is
    set just above the next one, and kept within ``bounds`` (the lower bound when there are
    fewer negatives than the budget allows).
    """
    lo, hi = bounds
    n_groups = max(1, len(np.unique(groups)))
    neg = np.sort(scores[is_positive < 0.5])[::-1]
    allowed = int(np.floor(max_fp_per_group * n_groups))
    if len(neg) <= allowed:
        return lo
    return float(min(hi, max(lo, neg[allowed] + 1e-6)))


def nearest_hit(point: Any, centres: Sequence[Any], radii: Sequence[float]) -> tuple[int | None, float]:
    """(index, distance) of the nearest of ``centres`` whose ``radii`` entry holds ``point``
    (distance strictly below it), or ``(None, inf)`` if none does. Coordinates in one unit (mm)."""
    pos = np.asarray(point, dtype=float)
    best, best_d = None, np.inf
    for n, (centre, radius) in enumerate(zip(centres, radii, strict=True)):
        d = float(np.linalg.norm(pos - np.asarray(centre, dtype=float)))
        if d < radius and d < best_d:
            best, best_d = n, d
    return best, best_d
