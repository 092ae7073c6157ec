"""Finance's online drift: the score route's transactions sampled per day of their timestamps.

The sampling, the day files and the check are the core's (``trillium.core.monitoring.online``,
which says why a per-worker reservoir sample and how days close); finance hands in its feature
vectors (the profile's columns in the spec's order), the calibrated probabilities and the alert
decisions from ``serving.OnlineBatchScorer``'s observer hook, and ``trillium finance
monitor-online`` checks a day on demand.
"""

from __future__ import annotations

from trillium.core.monitoring.online import (
    KEEP_DAYS,
    LABEL,
    SAMPLE_ROWS,
    OnlineDayCollector,
    _Reservoir,
    check_days,
    days_frame,
    online_dir,
    read_day,
)

__all__ = ["KEEP_DAYS", "LABEL", "SAMPLE_ROWS", "OnlineDayCollector", "_Reservoir", "check_days", "days_frame",
           "online_dir", "read_day"]
