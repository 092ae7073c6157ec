"""A batch job run in a child process, so that test_jobs.py can SIGKILL it mid-way.

Usage: ``python _jobs_worker.py '<json config>'`` with keys: db_url, connect_args, name, input,
chunk_rows, sink ("parquet" | "csv" | "sql_same" | "sql_other"), output, sleep (seconds per
chunk), die_after_chunk (optional: SIGKILL itself once that chunk's output *and* quarantine are
written but before its checkpoint commits: the worst moment to die).
The test module imports ``score`` and ``make_sink`` from here to resume the same job in-process.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from typing import Any

import pandas as pd

from trillium.core import jobs
from trillium.core.db import Database, connect


def score(frame: pd.DataFrame, chunk_index: int, sleep: float = 0.0) -> jobs.ProcessResult:
    """Validate ``amount`` (a number, not negative) and score the valid rows."""
    amount = pd.to_numeric(frame["amount"], errors="coerce")
    reasons = jobs.reasons_from({"amount is not a number": amount.isna(), "negative amount": amount < 0})
    valid, bad = jobs.split_valid(frame, reasons)
    good = amount[valid.index]
    output = pd.DataFrame({"id": valid["id"].astype("int64"), "amount": good, "score": good * 2})
    if sleep:
        time.sleep(sleep)
    return jobs.ProcessResult(output, bad)


def make_sink(kind: str, output: str, db: Database) -> jobs.Sink:
    if kind == "parquet":
        return jobs.ParquetSink(output)
    if kind == "csv":
        return jobs.CsvSink(output)
    if kind == "sql_same":
        return jobs.SqlSink(db, "scores")
    if kind == "sql_other":
        return jobs.SqlSink(f"sqlite:///{output}", "scores")
    raise ValueError(kind)


def _die_after(chunk: int) -> None:
    original = jobs.quarantine.QuarantineFile.write

    def write(self: Any, chunk_index: int, *args: Any, **kwargs: Any) -> int:
        offset = original(self, chunk_index, *args, **kwargs)
        if chunk_index == chunk:
            os.kill(os.getpid(), signal.SIGKILL)
        return offset

    jobs.quarantine.QuarantineFile.write = write  # type: ignore[method-assign]


def main(cfg: dict[str, Any]) -> None:
    db = connect(cfg["db_url"], connect_args=cfg.get("connect_args"))
    if cfg.get("die_after_chunk") is not None:
        _die_after(int(cfg["die_after_chunk"]))
    jobs.run_job(
        cfg["name"],
        jobs.ParquetSource(cfg["input"], cfg["chunk_rows"]),
        functools.partial(score, sleep=cfg.get("sleep", 0.0)),
        make_sink(cfg["sink"], cfg["output"], db),
        db=db,
        progress=False,
    )


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
