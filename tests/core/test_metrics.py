"""trillium.core.metrics: FROC and the FP-budget threshold on hand-computed cases, AUROC per group
against scikit-learn on each subset, detection matching on a drawn-out geometry."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from trillium.core.metrics import (
    FROC_FP_RATES,
    auroc,
    auroc_per_group,
    cpm,
    fp_budget_threshold,
    froc_table,
    nearest_hit,
)


def test_froc_by_hand() -> None:
    # 2 scans, 4 truth objects, detections from the highest score down
    scored = [(0.5, False), (0.9, True), (0.8, False), (0.7, True), (0.6, False), (0.4, True)]
    rows = froc_table(scored, n_truth=4, scans=2, fp_rates=(0.25, 0.5, 1.0, 2.0))
    # 0.25/scan -> 0.5 FP: stop before 0.8; 0.5/scan -> 1 FP: 0.9, 0.8, 0.7 then 0.6 would be
    # the second; 1/scan -> 2 FP: through 0.6, 0.5 is the third; 2/scan: everything
    assert rows == [
        {"fp_per_scan": 0.25, "sensitivity": 0.25, "threshold": 0.9},
        {"fp_per_scan": 0.5, "sensitivity": 0.5, "threshold": 0.7},
        {"fp_per_scan": 1.0, "sensitivity": 0.5, "threshold": 0.6},
        {"fp_per_scan": 2.0, "sensitivity": 0.75, "threshold": 0.4},
    ]
    assert cpm(rows) == pytest.approx((0.25 + 0.5 + 0.5 + 0.75) / 4)
    assert [r["fp_per_scan"] for r in froc_table(scored, 4, 2)] == list(FROC_FP_RATES)
    assert froc_table(scored, 0, 2) == [] and froc_table(scored, 4, 0) == [] and cpm([]) is None
    # a first false positive above every budget: nothing taken, threshold 1.0
    assert froc_table([(0.9, False), (0.8, True)], 1, 1, fp_rates=(0.5,))[0] == {
        "fp_per_scan": 0.5, "sensitivity": 0.0, "threshold": 1.0}


def test_fp_budget_threshold_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.95])
    positive = np.array([0, 0, 0, 0, 1])
    groups = np.array([1, 1, 2, 2, 1])
    # 2 groups x 0.5 = 1 false positive allowed: just above the second-highest negative (0.8)
    assert fp_budget_threshold(scores, positive, groups, max_fp_per_group=0.5) == pytest.approx(0.8 + 1e-6)
    assert fp_budget_threshold(scores, positive, groups, max_fp_per_group=0.0) == pytest.approx(0.9 + 1e-6)
    assert fp_budget_threshold(scores, positive, groups, max_fp_per_group=0.0, bounds=(0.05, 0.85)) == 0.85
    assert fp_budget_threshold(scores, positive, groups, max_fp_per_group=2.0) == 0.05  # budget exceeds negatives
    assert fp_budget_threshold(scores, positive, groups, max_fp_per_group=1.0, bounds=(0.1, 0.99)) == pytest.approx(
        0.3 + 1e-6)


def test_auroc_and_auroc_per_group_match_sklearn_on_each_subset() -> None:
    rng = np.random.default_rng(0)
    n = 300
    groups = rng.choice(["good", "hole", "scratch", "stain"], n)
    y = (groups != "good") & (rng.random(n) < 0.9)
    scores = rng.normal(size=n) + y * rng.uniform(0.5, 2.0)
    assert auroc(y, scores) == pytest.approx(roc_auc_score(y, scores))
    assert auroc(np.ones(5), np.arange(5)) is None and auroc([], []) is None

    ref = auroc_per_group(y, scores, groups, reference="good")
    assert list(ref) == ["hole", "scratch", "stain"]
    for g, row in ref.items():
        sel = (groups == g) | (groups == "good")
        assert row == {"n": int((groups == g).sum()), "auroc": pytest.approx(roc_auc_score(y[sel], scores[sel]))}

    own = auroc_per_group(y, scores, groups)
    assert list(own) == ["good", "hole", "scratch", "stain"]
    assert own["good"] == {"n": int((groups == "good").sum()), "auroc": None}  # one class only
    sel = groups == "hole"
    assert own["hole"]["auroc"] == pytest.approx(roc_auc_score(y[sel], scores[sel]))

    # extra axes (pixels of an image) are flattened within the selection
    masks = rng.random((n, 4, 4)) < 0.2
    maps = rng.random((n, 4, 4)) + masks
    pix = auroc_per_group(masks, maps, groups, reference="good")
    sel = (groups == "stain") | (groups == "good")
    assert pix["stain"]["auroc"] == pytest.approx(roc_auc_score(masks[sel].ravel(), maps[sel].ravel()))
    with pytest.raises(ValueError, match="one row each"):
        auroc_per_group(y[:-1], scores, groups)


def test_nearest_hit() -> None:
    centres = [(0.0, 0.0, 0.0), (4.0, 0.0, 0.0), (20.0, 0.0, 0.0)]
    radii = [5.0, 3.0, 1.0]
    assert nearest_hit((3.0, 0.0, 0.0), centres, radii) == (1, 1.0)  # inside both: the nearer centre
    assert nearest_hit((-4.0, 0.0, 0.0), centres, radii) == (0, 4.0)
    best, d = nearest_hit((21.0, 0.0, 0.0), centres, radii)  # exactly on the radius: strict, no hit
    assert best is None and d == np.inf
    assert nearest_hit((0.0, 0.0, 0.0), [], []) == (None, np.inf)
