"""Each sink reads back what a job wrote through it (``Sink.read``, ``read_output``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from trillium.core import jobs
from trillium.core.db import connect


def _source(tmp_path: Path) -> jobs.ParquetSource:
    frame = pd.DataFrame({"id": range(10), "decision": ["alert" if i % 3 == 0 else "ok" for i in range(10)]})
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    return jobs.ParquetSource(tmp_path / "in.parquet", chunk_rows=4)


def _skip_first_chunk(chunk: pd.DataFrame, index: int) -> pd.DataFrame:
    return chunk.iloc[:0] if index == 0 else chunk  # chunk 0 writes no rows (no part, no CSV lines)


@pytest.mark.parametrize("name", ["out", "out.csv"])
def test_read_output_gives_back_the_rows_in_chunk_order(tmp_path: Path, name: str) -> None:
    db = connect(f"sqlite:///{tmp_path / 'jobs.db'}")
    output = tmp_path / name
    assert list(jobs.read_output(output, empty_columns=["id", "decision"]).columns) == ["id", "decision"]
    jobs.run_job("read", _source(tmp_path), _skip_first_chunk, jobs.output_sink(output), db=db, progress=False)

    assert jobs.read_output(output)["id"].tolist() == list(range(4, 10))
    alerts = jobs.read_output(output, equals={"decision": "alert"}, dtype={"decision": str})
    assert alerts["id"].tolist() == [6, 9] and alerts.index.tolist() == [0, 1]


def test_sql_sink_reads_its_table_without_the_chunk_column(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'jobs.db'}")
    sink = jobs.SqlSink(db, "scores")
    assert sink.read().empty
    jobs.run_job("sql", _source(tmp_path), _skip_first_chunk, sink, db=db, progress=False)

    assert list(sink.read().columns) == ["id", "decision"]
    assert sorted(sink.read()["id"]) == list(range(4, 10))
    assert sorted(sink.read(equals={"decision": "alert"})["id"]) == [6, 9]
