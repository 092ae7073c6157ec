"""Reasons an analyst can read: a feature's contribution turned into a sentence.

Contributions (TreeSHAP or Integrated Gradients) say *which* features pushed a score up;
an analyst needs *what about the transaction* that means. Each feature has a template that
states its value in the business's terms ("amount is 5.2x the card's 30-day average").
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trillium.finance.features import DAY


@dataclass(frozen=True)
class Reason:
    feature: str
    value: float
    contribution: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY:.1f} days"


def describe(feature: str, value: float, horizon_days: float = 37.0) -> str:
    """One sentence about a feature's value."""
    v = float(value)
    if feature == "amount":
        return f"amount {v:,.2f}"
    if feature == "tx_during_weekend":
        return "made on a weekend" if v else "made on a weekday"
    if feature == "tx_during_night":
        return "made at night (00:00-06:59)" if v else "made during the day"
    if feature == "customer_nb_tx_1h":
        return f"{v:.0f} transaction(s) on this card in the last hour"
    if feature == "log_seconds_since_last_tx":
        seconds = math.expm1(v)
        if seconds >= horizon_days * DAY - 1:
            return f"first transaction of this card in {horizon_days:.0f} days"
        return f"{_duration(seconds)} since the card's previous transaction"
    if m := re.fullmatch(r"customer_nb_tx_(\d+)d", feature):
        return f"{v:.0f} transaction(s) on this card in {m[1]} day(s)"
    if m := re.fullmatch(r"customer_avg_amount_(\d+)d", feature):
        return f"card's {m[1]}-day average amount {v:,.2f}"
    if m := re.fullmatch(r"terminal_nb_tx_(\d+)d", feature):
        return f"terminal had {v:.0f} transaction(s) with known labels in its last {m[1]}-day window"
    if m := re.fullmatch(r"terminal_risk_(\d+)d", feature):
        return f"{v:.0%} of the terminal's known transactions in its last {m[1]}-day window were fraud"
    if m := re.fullmatch(r"amount_to_avg_(\d+)d", feature):
        return f"amount is {v:.1f}x the card's {m[1]}-day average"
    if m := re.fullmatch(r"amount_zscore_(\d+)d", feature):
        return f"amount is {v:+.1f} standard deviations from the card's {m[1]}-day mean"
    if m := re.fullmatch(r"customer_risk_(\d+)d", feature):
        return f"{v:.0%} of the card's known transactions in its last {m[1]}-day window were fraud"
    if feature.endswith("_known_fraud"):
        who = "terminal" if feature.startswith("terminal") else "card"
        which = "first" if "_first_" in feature else "last"
        if v >= horizon_days - 1e-9:
            return f"no known fraud at this {who} in {horizon_days:.0f} days"
        return f"{who}'s {which} known fraud was {v:.1f} days ago"
    return f"{feature} = {v:.4g}"


def top_reasons(names: list[str], values: np.ndarray, contributions: np.ndarray, k: int = 3,
                horizon_days: float = 37.0) -> list[Reason]:
    """The ``k`` features that pushed this score up the most (positive contributions only;
    if none is positive, the least negative ones, so a reason is always given)."""
    order = np.argsort(-contributions, kind="stable")
    chosen = [i for i in order if contributions[i] > 0][:k] or list(order[:k])
    return [Reason(names[i], float(values[i]), float(contributions[i]), describe(names[i], values[i], horizon_days))
            for i in chosen]
