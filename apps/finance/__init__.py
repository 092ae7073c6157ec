"""trillium.finance: transaction fraud scoring, one vertical on the shared core (see DESIGN.md).

The public API, importable from here (``from trillium.finance import FraudScorer``): the scorer
and its result, the batch job, the alert store, training, the handbook evaluation, the
transaction simulator and the adapters. Each name is imported on first use
(``trillium.core.exports``), so ``import trillium.finance`` loads none of the models.
"""

from __future__ import annotations

from trillium.core.exports import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (trillium.core.exports)
if TYPE_CHECKING:
    from trillium.finance.adapters import read_transactions, write_transactions
    from trillium.finance.batch import ScoreJobResult, read_scores, score_file
    from trillium.finance.evaluate import evaluate_handbook, evaluate_time_split
    from trillium.finance.formats import ColumnMapping
    from trillium.finance.fraud_model import FraudModel
    from trillium.finance.lifecycle import TrainResult, retrain, train_model
    from trillium.finance.online_state import RedisState
    from trillium.finance.pipeline import ALERT, OVER_BUDGET, PASS, FraudScorer, ScoreResult
    from trillium.finance.reasons import Reason
    from trillium.finance.simulate import simulate_transactions, to_handbook
    from trillium.finance.store import (
        alert_details,
        alert_queue,
        feedback_labels,
        latest_scoring_job,
        model_history,
        record_feedback,
        store_alerts,
    )

__all__ = [
    "ALERT",
    "OVER_BUDGET",
    "PASS",
    "ColumnMapping",
    "FraudModel",
    "FraudScorer",
    "Reason",
    "RedisState",
    "ScoreJobResult",
    "ScoreResult",
    "TrainResult",
    "alert_details",
    "alert_queue",
    "evaluate_handbook",
    "evaluate_time_split",
    "feedback_labels",
    "latest_scoring_job",
    "model_history",
    "read_scores",
    "read_transactions",
    "record_feedback",
    "retrain",
    "score_file",
    "simulate_transactions",
    "store_alerts",
    "to_handbook",
    "train_model",
    "write_transactions",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "trillium.finance.adapters": ("read_transactions", "write_transactions"),
    "trillium.finance.batch": ("ScoreJobResult", "read_scores", "score_file"),
    "trillium.finance.evaluate": ("evaluate_handbook", "evaluate_time_split"),
    "trillium.finance.formats": ("ColumnMapping",),
    "trillium.finance.fraud_model": ("FraudModel",),
    "trillium.finance.lifecycle": ("TrainResult", "retrain", "train_model"),
    "trillium.finance.online_state": ("RedisState",),
    "trillium.finance.pipeline": ("ALERT", "OVER_BUDGET", "PASS", "FraudScorer", "ScoreResult"),
    "trillium.finance.reasons": ("Reason",),
    "trillium.finance.simulate": ("simulate_transactions", "to_handbook"),
    "trillium.finance.store": (
        "alert_details", "alert_queue", "feedback_labels", "latest_scoring_job", "model_history", "record_feedback",
        "store_alerts",
    ),
})
