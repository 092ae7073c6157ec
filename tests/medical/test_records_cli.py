"""``trillium medical records ...`` and ``trillium medical patient`` end to end, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED_DATA, require_shared
from trillium.core.cli import app
from trillium.medical.records.synth import synthetic_notes, write_mtsamples_csv, write_notes_folder

NEGEX = SHARED_DATA / "medical-records" / "negex" / "rsAnnotations-1-120-random.tsv"
runner = CliRunner()


def invoke(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


def audited(action: str) -> list[dict]:
    """The audit rows of ``action`` in this test's database, oldest first."""
    from trillium.core.audit import audit_rows
    from trillium.core.db import connect

    return [r for r in reversed(audit_rows(connect(), action=action)) if r["action"] == action]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    notes = synthetic_notes(60, seed=5)
    folder = tmp_path_factory.mktemp("notes")
    write_notes_folder(notes, folder)
    return folder, notes


def test_extract_stores_and_quarantines(corpus, tmp_path: Path) -> None:
    folder, notes = corpus
    bad = tmp_path / "broken.txt"
    bad.write_bytes(b"\x00\x01\x02binary\x00" * 50)
    out = tmp_path / "out.json"
    res = invoke("medical", "records", "extract", str(folder), str(bad), "--json", str(out))
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    assert len(payload["notes"]) == len(notes)
    assert [q["source"] for q in payload["quarantined"]] == [str(bad)]
    assert "broken.txt" in res.output  # the quarantine reason is printed, naming the file
    first = payload["notes"][0]
    file_text = (folder / f"{first['note_id']}.txt").read_text()
    assert first["entities"] and all(file_text[e["start"]:e["end"]] == e["text"] for e in first["entities"])
    assert first["patient_id"] == next(n.patient_id for n in notes if n.note_id == first["note_id"])
    from trillium.core.audit import cli_actor

    # every note read is attributable: one row per patient, naming its notes, by the OS account
    rows = audited("medical.notes.extract")
    assert {r["target"] for r in rows} == {n.patient_id for n in notes}
    assert {r["actor"] for r in rows} == {cli_actor()} and cli_actor().startswith("cli:")
    assert sorted(i for r in rows for i in r["details"]["notes"]) == sorted(n.note_id for n in notes)
    assert sum(r["details"]["count"] for r in rows) == len(notes)
    listed = invoke("medical", "patient")
    patients = json.loads(listed.output)["patients"]
    assert sum(p["notes"] for p in patients) == len(notes)
    assert [r["details"]["patients"] for r in audited("medical.patient.list")] == [len(patients)]
    view = json.loads(invoke("medical", "patient", patients[0]["patient_id"]).output)
    assert view["notes"] and view["patient_id"] == patients[0]["patient_id"]
    (seen,) = audited("medical.patient.view")
    assert seen["target"] == seen["details"]["patient"] == patients[0]["patient_id"]
    assert seen["details"]["notes"] == len(view["notes"]) and seen["actor"] == cli_actor()
    missing = invoke("medical", "patient", "no-such-patient")
    assert missing.exit_code == 2 and "no notes or CT studies stored for patient 'no-such-patient'" in missing.output


def test_index_and_similar(corpus, tmp_path: Path) -> None:
    folder, notes = corpus
    res = invoke("medical", "records", "index", str(folder), "--out", str(tmp_path / "idx"))
    assert res.exit_code == 0, res.output
    query = notes[0]
    query_text = (folder / f"{query.note_id}.txt").read_text()
    hits = json.loads(invoke("medical", "records", "similar", "--index", str(tmp_path / "idx"), query_text,
                             "-k", "4").output)["hits"]
    assert hits[0]["note_id"] == query.note_id and hits[0]["score"] == pytest.approx(1.0, abs=1e-6)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert hits[1]["preview"]  # the catalog written beside the index
    indexed = audited("medical.notes.index")
    assert sum(r["details"]["count"] for r in indexed) == len(notes)
    # the hits' previews are other patients' text: each patient shown has a row naming the notes shown
    patient_of = {n.note_id: n.patient_id for n in notes}
    shown = audited("medical.note.similar")
    assert {r["target"] for r in shown} == {patient_of[h["note_id"]] for h in hits}
    assert sorted(i for r in shown for i in r["details"]["notes"]) == sorted(h["note_id"] for h in hits)
    by_id = json.loads(invoke("medical", "records", "similar", "--index", str(tmp_path / "idx"), "--note-id",
                              query.note_id, "-k", "2").output)["hits"]
    assert query.note_id not in [h["note_id"] for h in by_id]
    missing = invoke("medical", "records", "similar", "--index", str(tmp_path / "nope"), "x")
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    both = invoke("medical", "records", "similar", "--index", str(tmp_path / "idx"), "x", "--note-id", "y")
    assert both.exit_code == 2 and "exactly one query" in both.output


def test_specialty_eval_beats_or_matches_tfidf_on_mtsamples_layout(tmp_path: Path) -> None:
    notes = synthetic_notes(160, seed=9)
    csv = write_mtsamples_csv(notes, tmp_path / "mtsamples.csv")
    assert list(pd.read_csv(csv).columns)[1:] == ["description", "medical_specialty", "sample_name",
                                                   "transcription", "keywords"]
    out = tmp_path / "spec.json"
    res = invoke("medical", "records", "specialty-eval", "--csv", str(csv), "--json", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["n_notes"] == 160 and report["k"] == 3
    assert set(report["methods"]) == {"tfidf_baseline", "bm25_text", "hybrid_text", "hybrid_text_concepts"}
    assert 0.5 < report["baseline_hit_rate"] <= 1 and 0.5 < report["hit_rate"] <= 1


def test_negex_eval_on_the_public_set(tmp_path: Path) -> None:
    require_shared(NEGEX, "the public NegEx annotations")
    out = tmp_path / "negex.json"
    res = invoke("medical", "records", "negex-eval", "--tsv", str(NEGEX), "--json", str(out), "--errors", "3")
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["n_sentences"] == 2376
    held = report["held_out"]["negation"]
    # NegEx as published: sensitivity 0.778, specificity 0.945, PPV 0.845 (another test set);
    # our held-out half must beat each, and beat the 5-token NegEx baseline's sensitivity here.
    assert held["sensitivity"] > 0.9 and held["specificity"] > 0.98 and held["ppv"] > 0.95
    assert held["sensitivity"] > report["held_out"]["negation_baseline_negex_window5"]["sensitivity"]
    assert len(report["held_out"]["negation_errors"]) == 3


def test_negex_eval_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("just one column\n")
    res = invoke("medical", "records", "negex-eval", "--tsv", str(bad))
    assert res.exit_code == 2 and "bad.tsv" in res.output
