"""The finance what-if's expected figure, computed independently of the page (AppTest and browser tests)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd


def expected_alerts_per_day(output: Path, threshold: float) -> str:
    """The what-if's "alerts per day (mean)" as the page must show it, computed here from the
    scoring job's Parquet parts: the transactions whose stored probability is at least THRESHOLD,
    counted per calendar day of their timestamp, averaged over the days with at least one."""
    scores = pd.concat([pd.read_parquet(p) for p in sorted(Path(output).glob("part-*.parquet"))], ignore_index=True)
    assert len(scores) > 0, f"no scores in {output}"
    per_day = Counter(ts.date() for ts, p in zip(pd.to_datetime(scores["timestamp"]), scores["probability"])
                      if p >= threshold)
    return f"{sum(per_day.values()) / len(per_day):,.0f}" if per_day else "0"
