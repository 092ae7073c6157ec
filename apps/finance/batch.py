"""Batch scoring on the core job engine: resumable, with quarantine and progress.

Card features need the card's history, which a chunk alone does not hold. So the job first
validates the whole input and computes the features of every valid row at once (vectorized:
about a second per million rows), then runs the core engine over the raw input in chunks:
each chunk's rows are looked up by their input row number, scored, and written; rows the
validation rejected go to the quarantine with their reason. The features are deterministic,
so a killed job recomputes them and resumes at its last checkpoint with nothing lost and
nothing written twice. Validation on the whole file also catches a transaction id repeated
in two different chunks.

With ``engine="ray"`` the validation and features stay here (they need every card's whole
history) and the scoring, the costly part, runs on a Ray cluster: the features travel once
through Ray's object store, and each worker loads the same registered model version with the
same threshold from the registry, then scores its parts exactly as the local engine scores
its chunks.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trillium.core import jobs
from trillium.core.contract import PredictorFactory, job_output
from trillium.core.db import Database, connect
from trillium.core.errors import InputValidationError, JobError, TrilliumError
from trillium.finance.adapters import read_transactions, transaction_source
from trillium.finance.features import FeatureTable
from trillium.finance.formats import PROFILES, detect_format
from trillium.finance.pipeline import ALERT, REASONS, FraudScorer
from trillium.finance.store import SCORE_JOB_PREFIX, store_alerts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreJobResult:
    job: jobs.JobResult
    alerts_stored: int
    feature_seconds: float


def _raw_columns(path: str | os.PathLike[str]) -> list[str]:
    p = Path(path)
    if p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(p).names)
    return list(pd.read_csv(p, nrows=0).columns)


@dataclass(frozen=True)
class ScoringData:
    """What every chunk's scoring looks up: the valid rows, their features (whole-file card
    history), input row number -> feature row, and the validation's reason per rejected row."""

    valid: pd.DataFrame
    table: FeatureTable
    position: pd.Series
    reasons_by_row: pd.Series


def score_chunk(scorer: FraudScorer, data: ScoringData, reasons: str, chunk: pd.DataFrame,
                _index: int) -> jobs.ProcessResult:
    """One chunk of a scoring job: its rejected rows with their reasons, the rest scored."""
    rows = chunk.index
    bad = rows.intersection(data.reasons_by_row.index)
    rejected = chunk.loc[bad].assign(reason=data.reasons_by_row.loc[bad].to_numpy())
    good = rows.difference(bad, sort=False)
    pos = data.position.loc[good].to_numpy()
    x, seq = data.table.rows(pos)
    scored = scorer.score_features(data.valid.iloc[pos], x, seq, reasons)
    for col in ("transaction_id", "customer_id", "terminal_id"):
        scored[col] = scored[col].astype(str)  # one schema for every part, whatever the id types
    return jobs.ProcessResult(scored, rejected)


def score_file(scorer: FraudScorer, input_path: str | os.PathLike[str], output: str | os.PathLike[str], *,
               fmt: str = "auto", history: str | os.PathLike[str] | None = None, chunk_rows: int = 100_000,
               db: Database | None = None, store: bool = True, progress: bool = True, reasons: str = "alerts",
               name: str | None = None, resume: bool = True, engine: str = "local", address: str | None = None,
               workers: int | None = None, max_failed_chunks: int | None = jobs.DEFAULT_MAX_FAILED_CHUNKS,
               monitor: bool = True) -> ScoreJobResult:
    """Score a transaction file into ``output`` (Parquet parts directory or .csv) as a job.

    ``engine="ray"`` scores on a Ray cluster (``address``; ``workers`` actors), into a directory
    of Parquet parts; the scorer must come from the registry, where the workers load it.
    """
    if reasons not in REASONS:  # refused now: inside the job it would quarantine every row
        raise InputValidationError(f"--reasons {reasons!r}: expected one of {', '.join(REASONS)}")
    _, sink = job_output(scorer, output, engine)  # an unregistered model on Ray is refused before reading
    db = db or connect()
    src = Path(input_path)
    if not src.exists():
        raise InputValidationError(f"input file {src} does not exist")
    fmt = detect_format(_raw_columns(src), source=str(src)) if fmt == "auto" else fmt
    if fmt not in PROFILES:
        raise InputValidationError(f"--format {fmt!r}: known formats are {sorted(PROFILES)}")
    t0 = time.perf_counter()
    valid, quarantined = read_transactions(src, fmt)
    hist = None
    if history is not None:
        hist, _ = read_transactions(history, "auto")
        hist = hist[hist["timestamp"] < valid["timestamp"].min()] if len(valid) else hist
    table = scorer.feature_table(valid, hist)
    feature_seconds = time.perf_counter() - t0
    position = pd.Series(np.arange(len(valid)), index=valid.index)  # input row number -> feature row
    reasons_by_row = quarantined["reason"] if len(quarantined) else pd.Series(dtype=object)
    data = ScoringData(valid, table, position, reasons_by_row)
    factory = PredictorFactory.of(scorer, score_chunk, data, reasons, engine=engine)

    source = transaction_source(src, chunk_rows=chunk_rows)
    result = jobs.run_batch(name or f"{SCORE_JOB_PREFIX}{src.name}", source, factory, sink, engine=engine,
                            address=address, workers=workers, db=db, chunk_rows=chunk_rows, progress=progress,
                            resume=resume, max_failed_chunks=max_failed_chunks)
    if result.status != "done":
        raise JobError(f"scoring job {result.name} ended {result.status}")
    stored = 0
    # read back from the output, not from this run: a resumed job's earlier chunks count too; once
    # for both the alerts and monitoring when both need it
    monitored = monitor and scorer.registry_ref is not None
    scored = read_scores(output) if monitored else None
    if store:
        alerts = (read_scores(output, decision=ALERT) if scored is None
                  else scored[scored["decision"] == ALERT].reset_index(drop=True))
        stored = store_alerts(alerts, db=db, job_id=result.job_id, model_version_id=scorer.model_version_id)
    if scored is not None:
        _monitor_job(scorer, scored, valid, table, db, result)
    return ScoreJobResult(result, stored, feature_seconds)


def _monitor_job(scorer: FraudScorer, scored: pd.DataFrame, valid: pd.DataFrame, table: FeatureTable,
                 db: Database, result: jobs.JobResult) -> None:
    """Drift and quality of the whole job's output (a resumed job's earlier chunks included)."""
    from trillium.finance.monitoring import monitor_scored

    position = pd.Series(np.arange(len(valid)), index=valid["transaction_id"].astype(str).to_numpy())
    at = position.reindex(scored["transaction_id"].astype(str).to_numpy()).to_numpy()
    ok = ~np.isnan(at)
    x, _ = table.rows(at[ok].astype(np.int64), sequences=False)
    try:
        monitor_scored(scorer, x, scored["probability"].to_numpy()[ok], scored["decision"].to_numpy()[ok],
                       scored["timestamp"].to_numpy()[ok], db=db, job_id=result.job_id, label=result.name)
    except TrilliumError:  # the scores are written and stored; a monitoring failure must not undo that
        log.exception("monitoring of job %s failed; its scores are stored", result.name)


def read_scores(output: str | os.PathLike[str], decision: str | None = None) -> pd.DataFrame:
    """A scoring job's output (Parquet parts or CSV); only the rows with ``decision`` if given."""
    return jobs.read_output(output, equals={"decision": decision} if decision is not None else None,
                       dtype={"transaction_id": str, "customer_id": str, "terminal_id": str},
                       parse_dates=["timestamp"])


__all__ = ["ScoreJobResult", "ScoringData", "read_scores", "score_chunk", "score_file"]
