"""Notes monitoring: a reference registered from notes of some departments; a batch job of the
same departments passes, a batch job of a department the reference never saw raises alerts,
and ``trillium monitor report`` shows both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trillium.core.cli import app
from trillium.core.db import connect
from trillium.core.errors import InputValidationError
from trillium.core.monitoring import store
from trillium.core.monitoring.profile import PROFILE_FILE
from trillium.core.registry import ModelRegistry
from trillium.medical.records.batch import structure_folder
from trillium.medical.records.monitoring import (
    MODEL_NAME,
    NotesReference,
    monitor_notes,
    note_stats,
    reference_profile,
    register_reference,
)
from trillium.medical.records.notes import load_notes
from trillium.medical.records.structurer import RecordStructurer
from trillium.medical.records.synth import SPECIALTIES, synthetic_notes, write_notes_folder

HELD_OUT = "Dermatology"
REF_SPECS = [s for s in SPECIALTIES if s != HELD_OUT]


@pytest.fixture(scope="module")
def structurer() -> RecordStructurer:
    return RecordStructurer()


def test_note_stats_measure_words_sections_and_concepts_against_the_reference(structurer) -> None:
    known = structurer.structure("HPI: Patient with hypertension and diabetes.\n\nMEDICATIONS: metformin 500 mg.",
                                 note_id="a")
    reference = NotesReference.learn([known, known])  # every word in two notes: all vocabulary
    odd = structurer.structure("Zorbleflax quintessential gribbleworts. Denies hypertension.", note_id="b")
    stats = note_stats([known, odd], reference)
    assert stats.loc[0, "oov"] == 0 and stats.loc[0, "unseen_sections"] == 0 and stats.loc[0, "unseen_concepts"] == 0
    # zorbleflax, quintessential, gribbleworts, denies: 4 of 5 words unknown
    assert stats.loc[1, "oov"] == pytest.approx(4 / 5)
    assert stats.loc[1, "negated_share"] == 1.0 and stats.loc[0, "negated_share"] == 0.0
    assert stats.loc[0, "words"] == len([w for w in known.text.lower().split() if len(w.strip(".:")) >= 3
                                         and w.strip(".:").isalpha()])
    assert stats.loc[0, "medication_per_100_words"] > 0 == stats.loc[1, "medication_per_100_words"]


def test_a_reference_needs_enough_notes(structurer) -> None:
    notes = [structurer.structure(n.text) for n in synthetic_notes(10, seed=1)]
    with pytest.raises(InputValidationError, match="at least 40 notes, got 10"):
        reference_profile(notes)


def _job(folder: Path, notes: list, output: Path, structurer: RecordStructurer):
    write_notes_folder(notes, folder)
    return structure_folder(structurer, folder, output, progress=False, store=False)


def test_batch_jobs_are_checked_against_the_registered_reference(tmp_path: Path, structurer) -> None:
    db = connect()
    registry = ModelRegistry(db)
    # no reference yet: a job is not checked, and says so only in the log
    res = _job(tmp_path / "early", synthetic_notes(5, seed=2), tmp_path / "early.csv", structurer)
    assert res.job.status == "done" and store.runs(MODEL_NAME).empty

    # the reference is read from files as the jobs' notes are (the files carry a "Patient ID:" line)
    write_notes_folder(synthetic_notes(200, seed=3, specialties=REF_SPECS), tmp_path / "ref")
    ref = [structurer.structure(n) for n in load_notes(tmp_path / "ref")[0]]
    record = register_reference(ref, structurer, registry=registry)
    assert PROFILE_FILE in record.files and registry.get(MODEL_NAME, "production").version == record.version
    assert record.extra["structurer_version"] == structurer.version

    same = _job(tmp_path / "same", synthetic_notes(60, seed=40, specialties=REF_SPECS), tmp_path / "same.csv",
                structurer)
    new = _job(tmp_path / "new", synthetic_notes(60, seed=41, specialties=[HELD_OUT]), tmp_path / "new.csv",
               structurer)
    runs = store.runs(MODEL_NAME).set_index("job_id")
    assert runs.loc[same.job.job_id, "status"] == "ok" and runs.loc[same.job.job_id, "rows"] == 60
    assert runs.loc[new.job.job_id, "status"] != "ok"
    alerts = store.alerts(MODEL_NAME)
    assert set(alerts["job_id"]) == {new.job.job_id}
    assert {"oov", "unseen_concepts"} <= set(alerts["feature"])

    out = tmp_path / "report.json"
    r = CliRunner().invoke(app, ["monitor", "report", "--model", MODEL_NAME, "--json", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["runs"] == 2 and len(report["alerts"]) == len(alerts)
    assert [t["status"] == "ok" for t in report["timeline"]] == [True, False]


def test_monitor_notes_without_a_reference_stores_nothing(structurer) -> None:
    notes = [structurer.structure(n.text) for n in synthetic_notes(3, seed=5)]
    assert monitor_notes(notes) == [] and store.runs(MODEL_NAME).empty


def test_the_reference_command_registers_from_a_folder(tmp_path: Path) -> None:
    write_notes_folder(synthetic_notes(50, seed=6), tmp_path / "ref")
    r = CliRunner().invoke(app, ["medical", "records", "reference", str(tmp_path / "ref")])
    assert r.exit_code == 0, r.output
    assert f"registered {MODEL_NAME} v1 (production): 50 notes" in r.output
    from sqlalchemy import select

    from trillium.core.db import AuditEvent

    with connect().session() as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.action == "medical.notes.reference")).all()
    # one row per patient whose notes were read, each naming the reference they went into
    assert {r.details["reference"] for r in rows} == {f"{MODEL_NAME}:v1"}
    assert sum(r.details["count"] for r in rows) == 50 and all(r.target == r.details["patient"] for r in rows)
    r = CliRunner().invoke(app, ["medical", "records", "reference", str(tmp_path / "ref" / "nothing-here")])
    assert r.exit_code != 0
