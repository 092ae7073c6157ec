"""The quarantine: the records a job rejected, with the reason, in one CSV file per job.

Its rows are ``chunk_index, row_index, reason, record`` (the record as JSON), written the same
way by both engines (``quarantine_rows``, ``encode_quarantine``), and read back with
``read_quarantine``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from trillium.core.jobs.sinks import AppendFile, native_value
from trillium.core.jobs.sources import Rejected

__all__ = ["QUARANTINE_COLUMNS", "QuarantineFile", "encode_quarantine", "quarantine_rows", "read_quarantine"]


QUARANTINE_COLUMNS = ("chunk_index", "row_index", "reason", "record")


def _jsonable(value: Any) -> Any:
    value = native_value(value)
    if isinstance(value, float) and math.isinf(value):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def quarantine_rows(chunk_index: int, quarantined: pd.DataFrame, rejected: Sequence[Rejected]) -> list[list[Any]]:
    """The quarantine file's rows for one chunk: [chunk_index, row_index, reason, record JSON].

    Shared by both engines so that a record rejected on a Ray worker is written exactly as the
    local engine writes it (same row number, reason and JSON).
    """
    rows: list[list[Any]] = []
    if len(quarantined):
        fields = [c for c in quarantined.columns if c != "reason"]
        for row_index, reason, record in zip(
            quarantined.index,
            quarantined["reason"],
            quarantined[fields].to_dict("records"),
        ):
            try:
                number = int(row_index)
            except (TypeError, ValueError):
                number = -1
            payload = {str(k): _jsonable(v) for k, v in record.items()}
            rows.append([chunk_index, number, str(reason), json.dumps(payload, default=str, ensure_ascii=False)])
    for item in rejected:
        record = [_jsonable(v) for v in item.record] if isinstance(item.record, list) else _jsonable(item.record)
        rows.append([chunk_index, item.row_index, item.reason, json.dumps(record, default=str, ensure_ascii=False)])
    return rows


def encode_quarantine(rows: list[list[Any]]) -> bytes:
    """Quarantine rows as the CSV bytes of the quarantine file (UTF-8, ``\\n`` line ends)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


class QuarantineFile:
    """The rejected records of a job, as CSV: chunk_index, row_index, reason, record (JSON).

    Public because the local engine (``engine.run_job``) writes each chunk's rejects through it,
    truncated back to the last checkpoint on resume, as a ``CsvSink`` is.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = AppendFile(path)

    def prepare(self, resume_from: int, offset: int) -> None:
        self._file.open(resume_from, offset)
        if self._file.offset == 0:
            self._file.append(self._encode([list(QUARANTINE_COLUMNS)]))

    @staticmethod
    def _encode(rows: list[list[Any]]) -> bytes:
        return encode_quarantine(rows)

    def write(self, chunk_index: int, quarantined: pd.DataFrame, rejected: Sequence[Rejected]) -> int:
        rows = quarantine_rows(chunk_index, quarantined, rejected)
        return self._file.append(self._encode(rows)) if rows else self._file.offset

    def close(self) -> None:
        self._file.close()


def read_quarantine(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A quarantine file as a DataFrame (``record`` left as JSON text)."""
    return pd.read_csv(
        path,
        dtype={"chunk_index": "int64", "row_index": "int64", "reason": str, "record": str},
        keep_default_na=False,
    )
