"""Reference profiles: what a model version's inputs and score looked like when it was registered.

Why: drift is a comparison, and the reference must be the data the version was measured on,
frozen with the version. A profile is plain JSON (no pickles), stored beside the version's
artifacts in the registry (``reference_profile.json``, sha256-checked like every artifact file),
so it travels with the model and cannot drift from it.

Per numeric column it keeps quantile bin edges and the share of rows in each bin (what PSI
compares), the missing share, the range, a few quantiles, and a seeded sample of values (what the
two-sample KS test compares; the exact values are needed because KS is a test on the whole
distribution, not on bins). Per categorical column it keeps the share of each category.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from trillium.core.errors import InputValidationError

PROFILE_FILE = "reference_profile.json"
PROFILE_FORMAT = 1
SCORE = "__score__"
"""The key under which the model's score is profiled beside the features."""

#: quantiles that cut the reference into bins: deciles, plus the tails (where fraud scores live)
BIN_QUANTILES = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
SAMPLE_SIZE = 5_000
MAX_CATEGORIES = 200


def _numeric_profile(values: np.ndarray, rng: np.random.Generator, sample_size: int) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    missing = float(1.0 - len(finite) / len(values)) if len(values) else 0.0
    if len(finite) == 0:
        return {"kind": "numeric", "rows": len(values), "missing": missing, "edges": [], "proportions": [1.0],
                "min": None, "max": None, "quantiles": {}, "sample": []}
    edges = np.unique(np.quantile(finite, BIN_QUANTILES))
    counts = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=len(edges) + 1)
    sample = finite if len(finite) <= sample_size else rng.choice(finite, sample_size, replace=False)
    return {
        "kind": "numeric", "rows": len(values), "missing": missing,
        "edges": [float(e) for e in edges],
        "proportions": (counts / counts.sum()).tolist(),
        "min": float(finite.min()), "max": float(finite.max()),
        "quantiles": {str(q): float(v) for q, v in zip((0.01, 0.5, 0.99), np.quantile(finite, (0.01, 0.5, 0.99)),
                                                         strict=True)},
        "mean": float(finite.mean()), "std": float(finite.std()),
        "sample": np.sort(sample).astype(float).round(6).tolist(),
    }


def _categorical_profile(values: pd.Series) -> dict[str, Any]:
    missing = float(values.isna().mean()) if len(values) else 0.0
    counts = values.dropna().astype(str).value_counts()
    if len(counts) > MAX_CATEGORIES:  # a long tail is kept as one bucket, so the JSON stays small
        tail = counts.iloc[MAX_CATEGORIES:].sum()
        counts = counts.iloc[:MAX_CATEGORIES]
        counts["__other__"] = tail
    total = counts.sum()
    return {"kind": "categorical", "rows": len(values), "missing": missing,
            "proportions": {str(k): float(v / total) for k, v in counts.items()} if total else {}}


def build_profile(frame: pd.DataFrame | Mapping[str, Any], score: Sequence[float] | np.ndarray | None = None, *,
                  categorical: Sequence[str] = (), calendar: Sequence[str] = (),
                  meta: Mapping[str, Any] | None = None, seed: int = 0,
                  sample_size: int = SAMPLE_SIZE) -> dict[str, Any]:
    """The reference profile of ``frame``'s columns (numeric unless named in ``categorical``) and
    of the model's ``score`` on the same rows.

    The caller (the vertical's training code) chooses the rows: they should be data the model
    never trained on but was measured on (a held-out window), so that the score's reference is
    the out-of-sample distribution production will be compared with.

    ``calendar`` names columns that follow the calendar (a weekend flag): one day cannot match a
    reference that spans a week, so day-level checks leave them out; a batch of whole weeks
    still checks them.
    """
    frame = pd.DataFrame(frame) if not isinstance(frame, pd.DataFrame) else frame
    if len(frame) == 0:
        raise InputValidationError("a reference profile needs at least one row (the reference frame is empty)")
    unknown = (set(categorical) | set(calendar)) - set(frame.columns)
    if unknown:
        raise InputValidationError(f"categorical column(s) {sorted(unknown)} are not in the reference frame")
    rng = np.random.default_rng(seed)
    features: dict[str, Any] = {}
    for col in frame.columns:
        name = str(col)
        if name == SCORE:
            raise InputValidationError(f"column name {SCORE!r} is reserved for the score")
        if col in categorical or not pd.api.types.is_numeric_dtype(frame[col]):
            features[name] = _categorical_profile(frame[col])
        else:
            features[name] = _numeric_profile(frame[col].to_numpy(), rng, sample_size)
        if col in calendar:
            features[name]["calendar"] = True
    out: dict[str, Any] = {"format": PROFILE_FORMAT, "rows": len(frame), "features": features,
                           "meta": dict(meta or {})}
    if score is not None:
        s = np.asarray(score, dtype=np.float64)
        if len(s) != len(frame):
            raise InputValidationError(f"score has {len(s)} values for {len(frame)} reference rows")
        out["score"] = _numeric_profile(s, rng, sample_size)
    return out


def profile_bytes(profile: Mapping[str, Any]) -> bytes:
    """The profile as the registry stores it (compact JSON)."""
    return json.dumps(profile, separators=(",", ":"), allow_nan=False).encode()


def parse_profile(data: bytes | str, source: str = PROFILE_FILE) -> dict[str, Any]:
    """A stored profile, checked for the fields drift needs."""
    try:
        profile = json.loads(data)
    except ValueError as exc:
        raise InputValidationError(f"{source} is not JSON: {exc}") from exc
    if not isinstance(profile, dict) or profile.get("format") != PROFILE_FORMAT or "features" not in profile:
        raise InputValidationError(f"{source} is not a reference profile of format {PROFILE_FORMAT}")
    return profile


__all__ = ["PROFILE_FILE", "SCORE", "build_profile", "parse_profile", "profile_bytes"]
