"""Performance before labels arrive: the alert precision a calibrated model expects (CBPE-style).

Why it works: if the scores are calibrated, an alerted row with probability p is a true fraud
with probability p, so the expected precision of the alerts is the mean of their p, and the
realised precision is a sum of independent Bernoulli(p) variables over n (Poisson binomial),
whose standard deviation is sqrt(sum p (1 - p)) / n. NannyML's CBPE is this idea for the whole
confusion matrix; alert precision is the one figure an analysts' queue needs.

What it cannot see: a shift that breaks the calibration (a fraud pattern the model scores low
is missed silently). The drift checks are there for that; the estimate's error is shown beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def estimate_alert_precision(alert_scores: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Expected precision of alerts with calibrated probabilities ``alert_scores``, with its
    standard error (the Poisson-binomial spread of the realised precision)."""
    p = np.clip(np.asarray(alert_scores, np.float64), 0.0, 1.0)
    n = len(p)
    if n == 0:
        return {"alerts": 0, "estimated_precision": None, "standard_error": None}
    return {"alerts": n, "estimated_precision": float(p.mean()),
            "standard_error": float(np.sqrt(np.sum(p * (1 - p))) / n)}


__all__ = ["estimate_alert_precision"]
