"""Operators' corrections of verdicts: stored against the verdict they judge, audited, and the
live performance they measure (reject precision, escape rate with its interval) by day and
version, in the monitoring report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from trillium.core.cli import app
from trillium.core.db import AuditEvent, connect
from trillium.core.errors import InputValidationError
from trillium.core.monitoring.report import live_performance as report_performance
from trillium.manufacturing.corrections import _wilson, live_performance, performance_for, record_correction
from trillium.manufacturing.linestats import store_inspections

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)


def _inspect(version_id: int | None = None) -> None:
    # day 1: parts a0..a9, a0..a3 rejected; day 2: b0..b4, all passed
    rows = [{"image_id": f"a{i}", "score": 0.9 if i < 4 else 0.1, "verdict": "defect" if i < 4 else "good",
             "inspected_at": T0 + timedelta(minutes=i)} for i in range(10)]
    rows += [{"image_id": f"b{i}", "score": 0.1, "verdict": "good", "inspected_at": T0 + timedelta(days=1, minutes=i)}
             for i in range(5)]
    store_inspections(rows, line="L1", model_version_id=version_id)


def test_corrections_measure_reject_precision_and_escapes_by_day() -> None:
    _inspect()
    for image, verdict in [("a0", "defect"), ("a1", "defect"), ("a2", "good"),  # 2 of 3 reviewed rejects right
                           ("a4", "good"), ("a5", "defect"),                     # 1 escape in 2 reviewed passes
                           ("b0", "defect"), ("b0", "good"), ("b1", "good")]:    # b0: the later look counts
        record_correction(image, verdict, operator="op-anna")
    perf = live_performance().set_index("day")
    d1, d2 = perf.loc["2026-03-02"], perf.loc["2026-03-03"]
    assert (d1["inspected"], d1["reviewed"], d1["overturned"]) == (10, 5, 2)
    assert d1["rejects_reviewed"] == 3 and d1["reject_precision"] == pytest.approx(2 / 3)
    assert (d1["passes_reviewed"], d1["escapes"], d1["escape_rate"]) == (2, 1, 0.5)
    assert (d1["escape_rate_low"], d1["escape_rate_high"]) == pytest.approx(_wilson(1, 2))
    assert d2["reviewed"] == 2 and d2["escapes"] == 0 and pd.isna(d2["reject_precision"])
    assert 0 < d2["escape_rate_high"] < 1 and d2["escape_rate_low"] == 0
    with connect().session() as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.action == "manufacturing.correction")).all()
    assert len(rows) == 8 and rows[2].actor == "op-anna" and rows[2].details["was"] == "defect"
    assert rows[2].details["verdict"] == "good"


def test_a_reinspected_part_is_unjudged_until_looked_at_again() -> None:
    _inspect()
    record_correction("a4", "defect", operator="op")
    store_inspections([{"image_id": "a4", "score": 0.95, "verdict": "defect", "inspected_at": T0}], line="L1")
    perf = live_performance().set_index("day")
    assert perf.loc["2026-03-02", "reviewed"] == 0  # the correction judged the earlier verdict


def test_bad_corrections_name_what_is_wrong() -> None:
    _inspect()
    with pytest.raises(InputValidationError, match="verdict must be one of"):
        record_correction("a0", "broken", operator="op")
    with pytest.raises(InputValidationError, match="image 'zz' has no stored inspection"):
        record_correction("zz", "good", operator="op")
    with pytest.raises(InputValidationError, match="needs the operator"):
        record_correction("a0", "good", operator="")


def test_the_report_shows_an_inspectors_performance_from_corrections() -> None:
    import numpy as np
    import torch

    from trillium.core.registry import ModelRegistry
    from trillium.manufacturing.detector import DefectDetector
    from trillium.manufacturing.pipeline import Inspector
    from trillium.manufacturing.synth import synthetic_images

    torch.manual_seed(0)
    good, _ = synthetic_images(16, size=32, seed=1)
    det = DefectDetector(size=32, width=4, steps=2, batch_size=4, pool=3, val_fraction=0.25)
    det.fit(good.transpose(0, 3, 1, 2))
    record = Inspector(det).register(ModelRegistry(connect()), name="line-inspector")
    _inspect(record.id)
    record_correction("a0", "good", operator="op")
    perf = performance_for("line-inspector")
    assert perf["version"].tolist() == [record.version] * 2 and perf["overturned"].sum() == 1
    assert performance_for("no-such-model").empty
    merged = report_performance("line-inspector")
    assert set(merged["domain"]) == {"manufacturing"} and np.isclose(merged["reject_precision"].iloc[0], 0.0)
    from trillium.core.audit import cli_actor

    # the operator is the OS account running the command; a typed name is not accepted
    r = CliRunner().invoke(app, ["manufacturing", "correct", "b2", "--verdict", "defect"])
    assert r.exit_code == 0 and f"b2 is defect (by {cli_actor()})" in r.output, r.output
    r = CliRunner().invoke(app, ["manufacturing", "correct", "b2", "--verdict", "defect", "--operator", "op-b"])
    assert r.exit_code != 0
    r = CliRunner().invoke(app, ["manufacturing", "correct", "nope", "--verdict", "defect"])
    assert r.exit_code != 0 and "no stored inspection" in r.output
