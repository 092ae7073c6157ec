"""Monitoring of registered models after they ship: reference profiles, drift, data quality,
live and estimated performance, alerts (DESIGN.md's core ``monitoring`` piece).

- ``profile``: the reference profile made when a version is registered (stored with it);
- ``drift``: PSI and KS / chi-square per column and for the score, Benjamini-Hochberg control;
- ``store``: runs and alerts in the database, after every batch job and every day online;
- ``performance``: the alert precision estimated from calibrated scores before labels arrive;
- ``report``: what ``trillium monitor report`` and the dashboard's Monitoring page show.

The core never imports a vertical: each vertical hands in its own frame of model inputs and its
scores (its training code makes the profile, its batch job calls ``check_batch``).
The names below load on first use (the database's models import ``tables`` from here, and that
must not pull in pandas and SciPy).
"""

from trillium.core.exports import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from trillium.core.monitoring.drift import Thresholds, benjamini_hochberg, compare, psi
    from trillium.core.monitoring.performance import estimate_alert_precision
    from trillium.core.monitoring.profile import PROFILE_FILE, SCORE, build_profile
    from trillium.core.monitoring.store import check_batch, record_run

__all__ = ["PROFILE_FILE", "SCORE", "Thresholds", "benjamini_hochberg", "build_profile", "check_batch", "compare",
           "estimate_alert_precision", "psi", "record_run"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "trillium.core.monitoring.drift": ("Thresholds", "benjamini_hochberg", "compare", "psi"),
    "trillium.core.monitoring.performance": ("estimate_alert_precision",),
    "trillium.core.monitoring.profile": ("PROFILE_FILE", "SCORE", "build_profile"),
    "trillium.core.monitoring.store": ("check_batch", "record_run"),
})
