"""Train, register and retrain fraud models; analyst feedback closes the loop.

``train_model`` fits on the most recent ``train_days`` of labelled history before a held-out
final ``holdout_days`` window, measures the model on that window (AUC, AP, CP@100, with the
handbook's removal of cards already known compromised), and registers exactly the model it
measured, so the registry's metrics describe the artifact that scores.

``retrain`` does the same with labels merged from analyst feedback: a transaction's label is
the latest analyst label if there is one, else the file's label, else genuine (a transaction
nobody reported once the delay has passed is taken as genuine, the usual convention). The
new version is compared with the current production model on the same held-out window and
becomes ``production`` only if its average precision is not lower (or when forced).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trillium.core.db import Database, connect
from trillium.core.errors import InputValidationError, RegistryError
from trillium.core.registry import ModelRecord, ModelRegistry
from trillium.finance.evaluate import card_precision_at_k, scores_report
from trillium.finance.features import FeatureSpec, FeatureTable
from trillium.finance.fraud_model import FraudModel, parse_kind
from trillium.finance.records import CANONICAL, CUSTOMER_ID, LABEL, TERMINAL_ID, TIMESTAMP, TRANSACTION_ID
from trillium.finance.store import feedback_labels

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: FraudModel
    record: ModelRecord
    metrics: dict[str, Any]
    promoted: bool
    compared_with: dict[str, Any] | None = None


def _windows(frame: pd.DataFrame, train_days: int, holdout_days: int, delay_days: int
             ) -> tuple[np.ndarray, np.ndarray]:
    day = frame[TIMESTAMP].to_numpy().astype("datetime64[D]")
    end = day.max() + 1
    hold_start = end - holdout_days
    train_end = hold_start - delay_days
    train = np.flatnonzero((day >= train_end - train_days) & (day < train_end))
    hold = np.flatnonzero(day >= hold_start)
    if len(train) == 0 or len(hold) == 0:
        raise InputValidationError(
            f"need at least {train_days + delay_days + holdout_days} days of history to train on {train_days}, "
            f"leave {delay_days} of delay and hold out {holdout_days}; the data covers {day.min()} to {day.max()}"
        )
    if CUSTOMER_ID in frame.columns:  # cards known compromised before the held-out days leave it
        y = frame[LABEL].to_numpy()
        known = set(frame[CUSTOMER_ID].to_numpy()[np.flatnonzero((day < hold_start) & (y == 1))].tolist())
        hold = hold[~np.isin(frame[CUSTOMER_ID].to_numpy()[hold], list(known))]
    return train, hold


def _measure(model: FraudModel, table: FeatureTable, frame: pd.DataFrame, idx: np.ndarray) -> dict[str, Any]:
    y = frame[LABEL].to_numpy()[idx].astype(int)
    if len(np.unique(y)) < 2:
        return {"holdout_rows": len(idx), "note": "held-out window has one class only; no metrics"}
    x, seq = table.rows(idx, model.needs_sequence)
    p = model.predict_proba(x, seq)
    rep = scores_report(y, p)
    out = {"auc_roc": rep["auc_roc"], "average_precision": rep["average_precision"],
           "holdout_rows": len(idx), "holdout_frauds": int(y.sum())}
    if CUSTOMER_ID in frame.columns:
        day = frame[TIMESTAMP].to_numpy()[idx].astype("datetime64[D]")
        out["card_precision_at_100"], _ = card_precision_at_k(day, frame[CUSTOMER_ID].to_numpy()[idx], y, p)
    return out


def feature_spec_for(frame: pd.DataFrame) -> FeatureSpec:
    """Card history features when the data has cards and terminals; else (ULB-like data) the
    frame's own numeric columns passed through, beside amount and time of day."""
    if CUSTOMER_ID in frame.columns and TERMINAL_ID in frame.columns:
        return FeatureSpec()
    passthrough = tuple(c for c in frame.columns
                        if c not in CANONICAL and c != "fraud_scenario" and pd.api.types.is_numeric_dtype(frame[c]))
    return FeatureSpec(card_history=False, passthrough=passthrough)


def train_model(frame: pd.DataFrame, *, kind: str = "gbt+seq", train_days: int = 21, holdout_days: int = 7,
                registry: ModelRegistry | None = None, name: str = "fraud", autotune: bool = True,
                promote: bool | None = True, seed: int = 0, description: str = "",
                compare_with_production: bool = False, extra_metrics: dict[str, Any] | None = None
                ) -> TrainResult:
    """Fit, measure on the held-out window, register; see the module docstring."""
    if LABEL not in frame.columns:
        raise InputValidationError("training needs a 'label' column (1 fraud, 0 genuine)")
    frame = frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    frame[LABEL] = pd.to_numeric(frame[LABEL], errors="coerce").fillna(0).astype("int8")
    spec = feature_spec_for(frame)
    if not spec.card_history and "seq" in parse_kind(kind):
        log.warning("no card ids in the data: training gbt+mlp instead of %s (a card sequence needs cards)", kind)
        kind = "gbt+mlp"
    model = FraudModel(kind=kind, spec=spec, seed=seed)
    table = FeatureTable.compute(frame, spec, sequences=spec.card_history)
    train, hold = _windows(frame, train_days, holdout_days, spec.delay_days if spec.card_history else 0)
    x_train, seq_train = table.rows(train, model.needs_sequence)
    model.fit(x_train, frame[LABEL].to_numpy()[train], seq_train,
              order=frame[TIMESTAMP].to_numpy()[train])
    if autotune:
        model.build_runtimes(autotune=True)
    metrics = _measure(model, table, frame, hold)
    metrics.update(extra_metrics or {})
    metrics.update(train_rows=len(train), train_frauds=int(frame[LABEL].to_numpy()[train].sum()),
                   train_from=str(frame[TIMESTAMP].iloc[train[0]].date()),
                   train_to=str(frame[TIMESTAMP].iloc[train[-1]].date()))
    registry = registry or ModelRegistry()
    compared = None
    if compare_with_production:
        try:
            current, rec = FraudModel.load(registry, name, "production", runtime=False)
            compared = {"version": rec.version, **_measure(current, table, frame, hold)}
        except RegistryError:
            compared = None
    if promote is None:  # decide by the comparison
        promote = compared is None or metrics.get("average_precision", 0.0) >= compared.get("average_precision", 0.0)
    record = model.register(registry, name, metrics=metrics, training_data=frame.iloc[train][[TRANSACTION_ID, LABEL]],
                            aliases=("production",) if promote else (), description=description,
                            profile=_reference_profile(model, table, frame, holdout_days))
    return TrainResult(model, record, metrics, bool(promote), compared)


def _reference_profile(model: FraudModel, table: FeatureTable, frame: pd.DataFrame, holdout_days: int
                       ) -> dict[str, Any]:
    """The monitoring reference: every row of the held-out days (cards already known compromised
    included, as production sees them), never trained on, with the model's scores on them."""
    from trillium.finance.monitoring import reference_profile

    day = frame[TIMESTAMP].to_numpy().astype("datetime64[D]")
    idx = np.flatnonzero(day >= day.max() + 1 - holdout_days)
    x, seq = table.rows(idx, model.needs_sequence)
    return reference_profile(model, x, seq, meta={"window": f"last {holdout_days} days to {day.max()}",
                                                  "rows_from": str(day[idx].min())})


def merge_feedback(frame: pd.DataFrame, db: Database | None = None) -> tuple[pd.DataFrame, int]:
    """``frame`` with labels from analyst feedback applied; returns (frame, labels applied)."""
    labels = feedback_labels(db or connect())
    out = frame.copy()
    if LABEL not in out.columns:
        out[LABEL] = pd.array([pd.NA] * len(out), dtype="Int8")
    ids = out[TRANSACTION_ID].astype(str)
    hit = ids.isin(labels.index)
    out.loc[hit, LABEL] = labels.reindex(ids[hit]).to_numpy()
    out[LABEL] = pd.to_numeric(out[LABEL], errors="coerce").fillna(0).astype("int8")
    return out, int(hit.sum())


def retrain(frame: pd.DataFrame, *, db: Database | None = None, registry: ModelRegistry | None = None,
            name: str = "fraud", kind: str | None = None, force_promote: bool = False, **kwargs: Any
            ) -> tuple[TrainResult, int]:
    """Retrain on ``frame`` with analyst labels merged in; promote only if not worse."""
    db = db or connect()
    registry = registry or ModelRegistry(db)
    merged, applied = merge_feedback(frame, db)
    if kind is None:
        try:
            kind = FraudModel.load(registry, name, "production", runtime=False)[0].kind
        except RegistryError:
            kind = "gbt+seq"
    result = train_model(merged, kind=kind or "gbt+seq", registry=registry, name=name,
                         promote=True if force_promote else None, compare_with_production=True,
                         description=f"retrained with {applied} analyst labels",
                         extra_metrics={"feedback_labels_applied": applied}, **kwargs)
    db.audit("finance.retrain", target=f"{name}:v{result.record.version}", promoted=result.promoted,
             feedback_labels=applied)
    return result, applied
