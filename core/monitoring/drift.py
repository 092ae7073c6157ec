"""Drift and data quality of a batch against a reference profile: PSI, KS / chi-square, BH.

Why both an index and a test: the population stability index (credit-risk practice: 0.1 watch,
0.25 act) says how much a distribution moved whatever the batch size, while a test says whether
the move is more than chance. A test alone flags negligible moves on big batches; PSI alone
misses a small but certain move in the tail (a new fraud scenario touches 1 % of rows). A
feature drifts when its test is significant after Benjamini-Hochberg control of the false
discovery rate over all the batch's features *and* its PSI reaches a small floor; it is an
``act`` alert when its PSI reaches 0.25, else ``watch``.

Numeric columns: KS two-sample test against the profile's stored sample. Categorical columns:
chi-square test of the batch's counts against the reference shares.
Plain NumPy and SciPy (``scipy.stats.ks_2samp``, ``chisquare``, ``false_discovery_control``):
see docs/dependencies.md for the measurement against Evidently and NannyML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from trillium.core.errors import InputValidationError
from trillium.core.monitoring.profile import SCORE

EPS = 1e-4  # floor of a bin's share in PSI, so an empty bin is a large, finite contribution
MIN_EXPECTED = 1.0  # rows a bin must expect in a batch, else it is merged (Cochran: none below 1)


@dataclass(frozen=True)
class Thresholds:
    """The rules' thresholds. Defaults: PSI's conventional levels (0.1 watch, 0.25 act); ``fdr``
    and ``psi_floor`` as chosen by ``benchmarks/monitoring.py --calibrate`` on its calibration
    banks (seeds 11 and 12, never the evaluation's seed 101): the most sensitive pair with no
    false alarm on their 60 unshifted days. The quality levels are conventions, not tuned."""

    psi_watch: float = 0.1
    psi_act: float = 0.25
    fdr: float = 0.01           # Benjamini-Hochberg false discovery rate over one batch's columns
    psi_floor: float = 0.03     # a significant test needs at least this PSI to count as drift
    missing_increase: float = 0.05   # missing share above the reference's by this much
    out_of_range: float = 0.01  # share of values outside the reference's [min, max] (and more than chance)
    unseen: float = 0.01        # share of values in categories the reference never saw
    min_rows: int = 50          # fewer rows than this: no test (too few to say anything)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def psi(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two vectors of bin shares: sum (c - r) ln(c / r)."""
    r = np.clip(np.asarray(reference, np.float64), EPS, None)
    c = np.clip(np.asarray(current, np.float64), EPS, None)
    if r.shape != c.shape:
        raise InputValidationError(f"PSI needs the same bins: {r.shape} reference vs {c.shape} current")
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def bin_shares(edges: Sequence[float], values: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin cut by ``edges`` (as the profile cut its reference)."""
    counts = np.bincount(np.searchsorted(np.asarray(edges, np.float64), values, side="left"),
                         minlength=len(edges) + 1)
    return counts / max(counts.sum(), 1)


def merge_bins(shares: Sequence[float], rows: int, min_expected: float = MIN_EXPECTED) -> np.ndarray:
    """Start indices of groups of adjacent bins, each expecting at least ``min_expected`` of
    ``rows`` batch rows (for ``np.add.reduceat``).

    Why: with few rows per bin, PSI is biased upward (about (bins - 1) / rows under no change:
    0.3 for 15 bins and 50 images) and the chi-square approximation breaks below about one
    expected row (Cochran); merging the profile's tail bins for a small batch keeps the test
    honest. A large batch keeps every bin, tails included (where a new fraud pattern shows).
    PSI itself decides nothing without a significant test, so its chance level is harmless."""
    p = np.asarray(shares, np.float64)
    starts, acc = [0], 0.0
    for i, share in enumerate(p):
        acc += share * rows
        if acc >= min_expected and i + 1 < len(p):
            starts.append(i + 1)
            acc = 0.0
    if len(starts) > 1 and p[starts[-1]:].sum() * rows < min_expected:
        starts.pop()  # a short last group joins the one before
    return np.asarray(starts, np.int64)


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values); NaN stays NaN (a column with no test)."""
    p = np.asarray(pvalues, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(np.clip(p[ok], 0.0, 1.0), method="bh")
    return out


@dataclass
class ColumnDrift:
    """One column's comparison with its reference."""

    name: str
    kind: str
    rows: int
    psi: float
    test: str
    statistic: float | None
    pvalue: float | None
    qvalue: float | None = None
    drifted: bool = False
    missing: float = 0.0
    missing_reference: float = 0.0
    out_of_range: float = 0.0
    out_of_range_p: float | None = None
    out_of_range_q: float | None = None  # BH over the batch's columns, as the drift tests
    unseen: float = 0.0
    unseen_values: list[str] = field(default_factory=list)
    mean: float | None = None
    mean_reference: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def _numeric(name: str, ref: Mapping[str, Any], values: np.ndarray) -> ColumnDrift:
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    missing = 1.0 - len(finite) / len(values) if len(values) else 0.0
    col = ColumnDrift(name, "numeric", len(values), 0.0, "ks", None, None, missing=missing,
                      missing_reference=float(ref.get("missing", 0.0)), mean_reference=ref.get("mean"))
    if len(finite) == 0 or not ref.get("sample"):
        return col
    col.mean = float(finite.mean())
    groups = merge_bins(ref["proportions"], len(finite))
    ref_props = np.add.reduceat(np.asarray(ref["proportions"], np.float64), groups)
    counts = np.add.reduceat(np.bincount(np.searchsorted(np.asarray(ref["edges"], np.float64), finite, side="left"),
                                         minlength=len(ref["edges"]) + 1), groups)
    col.psi = psi(ref_props, counts / counts.sum())
    outside = int(np.sum((finite < ref["min"]) | (finite > ref["max"])))
    col.out_of_range = outside / len(finite)
    # a new value falls outside the range of N reference values with chance 2 / (N + 1) under no
    # change: one part of a lot of 50 outside a 300-part reference is no evidence; many are
    n_ref = int(ref.get("rows", 0) * (1 - col.missing_reference))
    col.out_of_range_p = float(stats.binomtest(outside, len(finite), min(1.0, 2 / (n_ref + 1)),
                                               alternative="greater").pvalue) if outside else 1.0
    res = stats.ks_2samp(np.asarray(ref["sample"], np.float64), finite, method="asymp")
    col.statistic, col.pvalue = float(res.statistic), float(res.pvalue)
    # KS compares against a sample and is weak in the tails and on discrete columns (a count that is
    # 0 for most rows); the chi-square on the profile's bins uses every reference row and sees a
    # few percent of rows moving into a tail bin. Both are run, Bonferroni-combined.
    p_bins = _two_sample_chi2(ref_props, int(ref.get("rows", 0) * (1 - col.missing_reference)), counts)
    if p_bins is not None:
        col.test = "ks+chi2"
        col.pvalue = float(min(1.0, 2 * min(col.pvalue, p_bins)))
    return col


def _two_sample_chi2(ref_props: Sequence[float], ref_rows: int, counts: np.ndarray) -> float | None:
    """p-value of the chi-square test of homogeneity between the reference's bin counts and a batch's."""
    ref_counts = np.round(np.asarray(ref_props, np.float64) * ref_rows)
    table = np.vstack([ref_counts, counts.astype(np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if ref_rows <= 0 or table.shape[1] < 2:
        return None
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def _categorical(name: str, ref: Mapping[str, Any], values: pd.Series) -> ColumnDrift:
    missing = float(values.isna().mean()) if len(values) else 0.0
    counts = values.dropna().astype(str).value_counts()
    props: dict[str, float] = ref.get("proportions", {})
    col = ColumnDrift(name, "categorical", len(values), 0.0, "chi2", None, None, missing=missing,
                      missing_reference=float(ref.get("missing", 0.0)))
    total = int(counts.sum())
    if total == 0 or not props:
        return col
    known = [k for k in props if k != "__other__"]
    unseen = counts[~counts.index.isin(list(props))]
    if "__other__" in props:  # the reference folded its long tail: nothing is certainly unseen
        unseen = unseen.iloc[0:0]
    col.unseen = float(unseen.sum() / total)
    col.unseen_values = [str(v) for v in unseen.index[:10]]
    observed = np.array([counts.get(k, 0) for k in known] + [total - sum(counts.get(k, 0) for k in known)], float)
    expected_share = np.array([props[k] for k in known] + [props.get("__other__", 0.0)], float)
    col.psi = psi(expected_share, observed / total)
    expected = np.clip(expected_share, EPS, None)
    expected = expected / expected.sum() * total
    keep = (expected > 0) | (observed > 0)
    res = stats.chisquare(observed[keep], expected[keep])
    col.statistic, col.pvalue = float(res.statistic), float(res.pvalue)
    return col


@dataclass
class DriftReport:
    """A batch compared with a profile: per column (and the score), then the rules' verdicts."""

    rows: int
    columns: list[ColumnDrift]
    score: ColumnDrift | None
    thresholds: Thresholds

    @property
    def drifted(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.drifted]

    @property
    def max_psi(self) -> float:
        vals = [c.psi for c in self.columns] + ([self.score.psi] if self.score else [])
        return float(max(vals)) if vals else 0.0

    def status(self) -> str:
        """"act", "watch" or "ok": the worst of the rules' verdicts (a PSI without a significant
        test is no verdict: on a small batch it is large by chance)."""
        alerts = self.alerts()
        return "act" if any(a["severity"] == "act" for a in alerts) else ("watch" if alerts else "ok")

    def alerts(self) -> list[dict[str, Any]]:
        """The rules crossed: one entry per rule and column."""
        t = self.thresholds
        out: list[dict[str, Any]] = []
        cols = self.columns + ([self.score] if self.score else [])
        for c in cols:
            label = "score" if c.name == SCORE else c.name
            if c.drifted:
                sev = "act" if c.psi >= t.psi_act else "watch"
                rule = "score_drift" if c.name == SCORE else "feature_drift"
                q = f", q={c.qvalue:.2g}" if c.qvalue is not None and np.isfinite(c.qvalue) else ""
                out.append({"rule": rule, "severity": sev, "feature": label, "value": c.psi,
                            "threshold": t.psi_act if c.psi >= t.psi_act else t.psi_floor,
                            "message": f"{label} moved: PSI {c.psi:.3f}, {c.test} p={c.pvalue:.2g}{q}"})
            if c.missing - c.missing_reference > t.missing_increase:
                out.append({"rule": "missing", "severity": "act", "feature": label, "value": c.missing,
                            "threshold": c.missing_reference + t.missing_increase,
                            "message": f"{label}: {c.missing:.1%} missing (reference {c.missing_reference:.1%})"})
            if c.out_of_range > t.out_of_range and c.out_of_range_q is not None and c.out_of_range_q <= t.fdr:
                out.append({"rule": "out_of_range", "severity": "watch", "feature": label, "value": c.out_of_range,
                            "threshold": t.out_of_range,
                            "message": f"{label}: {c.out_of_range:.1%} of values outside the reference range"})
            if c.unseen > t.unseen:
                out.append({"rule": "unseen_category", "severity": "act", "feature": label, "value": c.unseen,
                            "threshold": t.unseen,
                            "message": f"{label}: {c.unseen:.1%} in unseen categories ({', '.join(c.unseen_values)})"})
        return out

    def with_thresholds(self, thresholds: Thresholds) -> DriftReport:
        """The same comparison judged by other thresholds (the statistics are not recomputed):
        what a calibration sweep over thresholds needs."""
        cols = [ColumnDrift(**asdict(c)) for c in self.columns]
        score = ColumnDrift(**asdict(self.score)) if self.score else None
        return _decide(DriftReport(self.rows, cols, score, thresholds))

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "status": self.status(), "max_psi": self.max_psi,
                "drifted": [c.name for c in self.drifted],
                "columns": [c.as_dict() for c in self.columns],
                "score": self.score.as_dict() if self.score else None,
                "alerts": self.alerts(), "thresholds": self.thresholds.as_dict()}


def compare(profile: Mapping[str, Any], frame: pd.DataFrame | Mapping[str, Any],
            score: Sequence[float] | np.ndarray | None = None, thresholds: Thresholds | None = None, *,
            one_day: bool = False) -> DriftReport:
    """Compare a batch (the same columns as the profile's) and its scores with the profile.

    A column of the profile missing from the batch is an error naming it; extra batch columns
    are ignored (the profile says what the model reads). ``one_day``: the batch is one day's
    data, so the profile's calendar columns (a weekend flag) are left out.
    """
    t = thresholds or Thresholds()
    frame = pd.DataFrame(frame) if not isinstance(frame, pd.DataFrame) else frame
    features: Mapping[str, Any] = {k: v for k, v in profile["features"].items()
                                   if not (one_day and v.get("calendar"))}
    missing_cols = [c for c in features if c not in frame.columns]
    if missing_cols:
        raise InputValidationError(f"the batch lacks the profiled column(s) {missing_cols[:5]} "
                                   f"({len(missing_cols)} in all)")
    columns = []
    for name, ref in features.items():
        if ref["kind"] == "numeric":
            columns.append(_numeric(name, ref, pd.to_numeric(frame[name], errors="coerce").to_numpy()))
        else:
            columns.append(_categorical(name, ref, frame[name]))
    score_drift = None
    if score is not None and profile.get("score"):
        s = np.asarray(score, np.float64)
        if len(s) != len(frame):
            raise InputValidationError(f"score has {len(s)} values for {len(frame)} batch rows")
        score_drift = _numeric(SCORE, profile["score"], s)
    return _decide(DriftReport(len(frame), columns, score_drift, t))


def _decide(report: DriftReport) -> DriftReport:
    """Apply the report's thresholds: BH over its columns and the score, then the drift rule."""
    t = report.thresholds
    tested = report.columns + ([report.score] if report.score else [])
    enough = report.rows >= t.min_rows
    q = benjamini_hochberg([c.pvalue if (c.pvalue is not None and enough) else np.nan for c in tested])
    for c, qv in zip(tested, q, strict=True):
        c.qvalue = float(qv) if np.isfinite(qv) else None
        significant = c.qvalue is not None and c.qvalue <= t.fdr
        # PSI alone is no rule: on a small batch it is large by chance (see merge_bins)
        c.drifted = enough and significant and c.psi >= t.psi_floor
    # the out-of-range tests run on every column too: without the same control, a batch checked
    # on 12 columns at 0.01 raises a chance alarm about once in 10 batches (measured on CT)
    q_range = benjamini_hochberg([c.out_of_range_p if c.out_of_range_p is not None else np.nan for c in tested])
    for c, qv in zip(tested, q_range, strict=True):
        c.out_of_range_q = float(qv) if np.isfinite(qv) else None
    return report


__all__ = ["ColumnDrift", "DriftReport", "Thresholds", "benjamini_hochberg", "bin_shares", "compare", "merge_bins",
           "psi"]
