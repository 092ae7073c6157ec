"""``structure_folder`` and ``trillium medical records batch``: clinical notes as a resumable job.

The input is a folder of real text notes (hand-written ones in UTF-8, cp1252 with CRLF line ends
and UTF-16, the repository's admission note, and synthetic ones), with a binary file, an empty
file and one over the text limit among them, plus CSV exports. The good notes must come out
once each (in the output and in the database), the bad ones must be named in the job's
quarantine file with their reason, and a killed job must resume without duplicates.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from trillium.core.cli import app
from trillium.core.contract import Predictor, PredictorFactory, Result, check_shippable
from trillium.core.db import Database, connect
from trillium.core.errors import RegistryError
from trillium.core.jobs import read_quarantine
from trillium.medical.records.batch import read_structured, structure_folder
from trillium.medical.records.context import Category, ConTextRules
from trillium.medical.records.notes import read_note
from trillium.medical.records.structurer import RecordStructurer, StructuredNote
from trillium.medical.records.synth import synthetic_notes, write_mtsamples_csv, write_notes_folder
from trillium.medical.store import load_note
from trillium.medical.tables import ClinicalNote, NoteEntity

LIMIT = 6000  # TRILLIUM_LIMIT_TEXT_BYTES for these tests: every real note is under it, big.txt is not

DISCHARGE = """Patient ID: MRN-20417
DISCHARGE SUMMARY

CHIEF COMPLAINT: Shortness of breath.

HISTORY OF PRESENT ILLNESS: 71-year-old man with congestive heart failure and type 2 diabetes admitted with \
worsening dyspnea and bilateral leg swelling. He denies chest pain. Temperature 38.1 \u00b0C on arrival.

PAST MEDICAL HISTORY: Hypertension. Atrial fibrillation.

MEDICATIONS:
1. Furosemide 40 mg p.o. daily.
2. Metformin 500 mg p.o. b.i.d.
3. Warfarin 5 mg p.o. daily.

ALLERGIES: Penicillin (rash).

FAMILY HISTORY: Mother had breast cancer.

ASSESSMENT AND PLAN: Acute on chronic heart failure, improved with diuresis. No evidence of pneumonia.
"""

PROGRESS = """Patient ID: MRN-33105
PROGRESS NOTE

SUBJECTIVE: Follow-up of asthma and GERD. No wheezing since the last visit. Possible sinusitis.

MEDICATIONS: Albuterol inhaler 2 puffs q4h p.r.n. Omeprazole 20 mg daily.

VITAL SIGNS: BP 128/82, HR 76, SpO2 98%.

ASSESSMENT: Asthma, well controlled. Rule out sinusitis.
"""

BAD = {"big.txt": "over the limit", "bin.txt": "binary data", "empty.txt": "empty note"}


@pytest.fixture(autouse=True)
def text_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRILLIUM_LIMIT_TEXT_BYTES", str(LIMIT))


def _notes_folder(root: Path) -> tuple[Path, list[str]]:
    """The folder of notes (recursive) and the ids of its good notes; bad files lie among them."""
    folder = root / "notes"
    (folder / "ward-b").mkdir(parents=True)
    (folder / "discharge.txt").write_bytes(DISCHARGE.replace("\n", "\r\n").encode("cp1252"))
    (folder / "ward-b" / "progress.txt").write_bytes(PROGRESS.encode("utf-16"))  # with its byte-order mark
    shutil.copy(Path(__file__).with_name("admission_note.txt"), folder / "ward-b" / "admission.txt")
    synth = synthetic_notes(5, seed=3)
    write_notes_folder(synth, folder / "synth")  # also writes truth.json: not a note, never read
    (folder / "bin.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 40)
    (folder / "empty.txt").write_text("   \n\n")
    (folder / "big.txt").write_text("Patient ID: MRN-1\nHISTORY: chest pain.\n" + "Stable. " * LIMIT)
    (folder / ".hidden.txt").write_text("an editor's file: not a note")
    return folder, sorted(["discharge", "progress", "admission", *[n.note_id for n in synth]])


def _db(tmp_path: Path) -> Database:
    return connect(f"sqlite:///{tmp_path / 'notes.db'}")


def _stored(db: Database) -> dict[str, tuple[dict[str, Any], int]]:
    """note_id -> (metadata, number of entities) of every stored note; fails on a duplicate id."""
    with db.session() as s:
        rows = s.execute(select(ClinicalNote.note_id, ClinicalNote.note_metadata, func.count(NoteEntity.id))
                         .outerjoin(NoteEntity).group_by(ClinicalNote.id)).all()
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), f"a note stored twice: {ids}"
    return {r[0]: (r[1], r[2]) for r in rows}


def _entity_rows(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(NoteEntity)))


def _quarantined(path: Path) -> dict[str, str]:
    """file name -> reason of each quarantined note file (each must appear once)."""
    q = read_quarantine(path)
    names = [Path(json.loads(r)["source"]).name for r in q["record"]]
    assert len(names) == len(set(names)), f"a note quarantined twice: {names}"
    return dict(zip(names, q["reason"], strict=True))


def test_the_structurer_implements_the_vertical_contract() -> None:
    s = RecordStructurer(rules=ConTextRules(disabled=frozenset({Category.NEGATED})))
    assert isinstance(s, Predictor) and s.registry_ref is None
    with pytest.raises(RegistryError, match="RecordStructurer has no registered model"):
        RecordStructurer.from_registry("records")
    check_shippable(s, "ray")  # no registered model is needed: workers build it from its rules
    import pickle

    worker = pickle.loads(pickle.dumps(PredictorFactory.of(s, structure_folder, engine="ray"))).predictor()
    assert worker is not s and worker.version == s.version != RecordStructurer().version
    note = worker.structure(DISCHARGE)
    assert not any(e.negated for e in note.entities)  # the caller's rules, not the defaults
    assert any(e.negated for e in RecordStructurer().structure(DISCHARGE).entities)
    assert isinstance(note, Result)
    [row] = note.to_rows()
    assert row["n_medication"] == 3 and row["n_entities"] == len(note.entities) and row["patient_id"] == ""
    again = StructuredNote.from_dict(json.loads(json.dumps(note.to_dict(with_text=True))))
    assert again == note


def test_a_folder_job_outputs_the_good_notes_quarantines_the_bad_and_stores_each_once(tmp_path: Path) -> None:
    folder, good = _notes_folder(tmp_path)
    db = _db(tmp_path)
    structurer = RecordStructurer()
    res = structure_folder(structurer, folder, tmp_path / "out", chunk_rows=3, db=db, progress=False)

    assert res.job.status == "done" and res.job.rows_in == len(good) + 3
    out = read_structured(tmp_path / "out")
    assert sorted(out["note_id"]) == good
    assert set(out["structurer"]) == {structurer.version}
    discharge = out.set_index("note_id").loc["discharge"]
    assert discharge["encoding"] == "cp1252" and discharge["patient_id"] == "MRN-20417"
    assert discharge["n_medication"] == 3 and discharge["n_negated"] == 2
    assert out.set_index("note_id").loc["progress", "encoding"] == "utf-16-le"

    quarantined = _quarantined(res.job.quarantine)
    assert set(quarantined) == set(BAD)
    for name, why in BAD.items():
        assert why in quarantined[name] and str(folder / name) in quarantined[name]

    stored = _stored(db)
    assert sorted(stored) == good and res.stored == len(good)
    for note_id, (meta, n_entities) in stored.items():
        assert meta["job_id"] == res.job.job_id and meta["structurer_version"] == structurer.version
        assert n_entities == out.set_index("note_id").loc[note_id, "n_entities"] > 0
    # what is stored is what the structurer gives for the file, spans into the file's text
    direct = structurer.structure(read_note(folder / "discharge.txt"))
    kept = load_note("discharge", db=db)
    assert kept["text"] == direct.text and "\r" not in kept["text"]
    assert [(e["kind"], e["start"], e["end"], e["negated"]) for e in kept["entities"]] == \
        [(e.kind, e.start, e.end, e.negated) for e in sorted(direct.entities, key=lambda e: e.start)]
    entities = _entity_rows(db)

    again = structure_folder(structurer, folder, tmp_path / "out", chunk_rows=3, db=db, progress=False)
    assert again.job.job_id == res.job.job_id and again.job.chunks_processed == 0
    assert sorted(read_structured(tmp_path / "out")["note_id"]) == good
    assert len(read_quarantine(again.job.quarantine)) == 3
    assert sorted(_stored(db)) == good and _entity_rows(db) == entities

    # a rewritten note is another input: a new job, whose output and store have the new text
    (folder / "discharge.txt").write_text(DISCHARGE.replace("No evidence of pneumonia.", "Pneumonia."))
    changed = structure_folder(structurer, folder, tmp_path / "out", chunk_rows=3, db=db, progress=False)
    assert changed.job.job_id != res.job.job_id and changed.job.chunks_processed == changed.job.chunks
    assert read_structured(tmp_path / "out").set_index("note_id").loc["discharge", "n_negated"] == 1
    assert _stored(db)["discharge"][0]["job_id"] == changed.job.job_id and sorted(_stored(db)) == good
    assert load_note("discharge", db=db)["text"].endswith("Pneumonia.\n")


CHILD = """
import json, os, signal, sys
from trillium.core import jobs
from trillium.core.db import connect
from trillium.medical.records.batch import structure_folder
from trillium.medical.records.structurer import RecordStructurer

cfg = json.loads(sys.argv[1])
write = jobs.quarantine.QuarantineFile.write

def write_then_die(self, chunk_index, *args, **kwargs):
    offset = write(self, chunk_index, *args, **kwargs)
    if chunk_index == cfg["die_after_chunk"]:  # output and quarantine written, checkpoint not committed
        os.kill(os.getpid(), signal.SIGKILL)
    return offset

jobs.quarantine.QuarantineFile.write = write_then_die
structure_folder(RecordStructurer(), cfg["inputs"], cfg["output"], chunk_rows=cfg["chunk_rows"],
                 db=connect(cfg["db"]), progress=False)
"""


def test_a_job_killed_mid_way_resumes_without_duplicates(tmp_path: Path) -> None:
    folder, good = _notes_folder(tmp_path)
    out = tmp_path / "out"
    db_url = f"sqlite:///{tmp_path / 'notes.db'}"
    cfg = {"inputs": [str(folder)], "output": str(out), "chunk_rows": 2, "db": db_url, "die_after_chunk": 1}
    # chunk 0 is big.txt and bin.txt, chunk 1 discharge.txt and empty.txt (sorted paths)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], check=False, capture_output=True,
                          timeout=300, env=os.environ.copy())
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (out / "part-00001.parquet").exists()  # chunk 1 was written, not checkpointed
    db = connect(db_url)
    assert _stored(db) == {}  # the store step comes after the job

    res = structure_folder(RecordStructurer(), folder, out, chunk_rows=2, db=db, progress=False)
    assert res.job.status == "done" and res.job.resumed_from_chunk == 1
    assert res.job.chunks_processed == res.job.chunks - 1
    assert sorted(read_structured(out)["note_id"]) == good
    assert set(_quarantined(res.job.quarantine)) == set(BAD)
    assert res.job.rows_out == len(good) and res.job.rows_quarantined == 3
    assert sorted(_stored(db)) == good and res.stored == len(good)


def test_csv_exports_one_note_per_row_a_bad_row_and_a_bad_file_quarantined(tmp_path: Path) -> None:
    notes = synthetic_notes(5, seed=8)
    csv = write_mtsamples_csv(notes, tmp_path / "mtsamples.csv")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame.loc[2, "transcription"] = "  "  # data row 3
    frame.to_csv(csv, index=False)
    other = tmp_path / "other.csv"
    other.write_text("note,text\n1,Chest pain.\n")  # no 'transcription' column
    db = _db(tmp_path)
    res = structure_folder(RecordStructurer(), [csv, other], tmp_path / "out.csv", chunk_rows=2, db=db,
                           progress=False)

    out = read_structured(tmp_path / "out.csv")
    assert list(out["note_id"]) == ["mtsamples-00001", "mtsamples-00002", "mtsamples-00004", "mtsamples-00005"]
    assert list(out["source"]) == [f"{csv.resolve()}:row {n}" for n in (1, 2, 4, 5)]
    q = read_quarantine(res.job.quarantine)
    assert len(q) == 2
    assert q["reason"][0] == f"{csv.resolve()}:row 3: empty text in column 'transcription'"
    assert str(other.resolve()) in q["reason"][1] and "no text column 'transcription'" in q["reason"][1]
    stored = _stored(db)
    assert sorted(stored) == sorted(out["note_id"])
    meta = stored["mtsamples-00004"][0]
    assert meta["medical_specialty"] == notes[3].specialty and meta["job_id"] == res.job.job_id
    assert load_note("mtsamples-00004", db=db)["text"] == notes[3].text


def test_the_ray_engine_gives_the_local_engine_output(ray_cluster: Any, tmp_path: Path) -> None:
    folder, good = _notes_folder(tmp_path)
    csv = write_mtsamples_csv(synthetic_notes(3, seed=4), tmp_path / "mtsamples.csv")
    db = _db(tmp_path)
    structurer = RecordStructurer(rules=ConTextRules(disabled=frozenset({Category.NEGATED})))  # must travel
    local = structure_folder(structurer, [folder, csv], tmp_path / "local", chunk_rows=3, db=db, progress=False)
    ray = structure_folder(structurer, [folder, csv], tmp_path / "ray", chunk_rows=3, db=db, progress=False,
                           engine="ray", workers=2)

    assert ray.job.status == "done" and ray.job.params["engine"] == "ray" and ray.job.chunks == local.job.chunks
    lo, ro = read_structured(tmp_path / "local"), read_structured(tmp_path / "ray")
    pd.testing.assert_frame_equal(ro, lo)
    assert len(lo) == len(good) + 3
    # the caller's rules ran on the workers: nothing negated ("He denies chest pain" is, by default)
    assert ro["n_negated"].sum() == 0 and (ro.set_index("note_id").loc["discharge", "n_entities"] > 0)
    assert RecordStructurer().structure(read_note(folder / "discharge.txt")).to_rows()[0]["n_negated"] == 2
    pd.testing.assert_frame_equal(read_quarantine(ray.job.quarantine), read_quarantine(local.job.quarantine))
    assert set(_quarantined(ray.job.quarantine)) == set(BAD)  # the driver's text limit applied on the workers
    assert len(_stored(db)) == len(lo) and ray.stored == len(lo)


def test_the_batch_command_end_to_end(tmp_path: Path) -> None:
    runner = CliRunner()
    folder, good = _notes_folder(tmp_path)
    out = tmp_path / "notes.csv"
    args = ["medical", "records", "batch", str(folder), "--output", str(out), "--chunk-rows", "4"]
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    quarantine = tmp_path / "notes.quarantine.csv"  # the CSV sink's default, beside the output
    [line] = res.output.strip().splitlines()
    assert line.startswith(f"done: {len(good)} notes structured, 3 quarantined ({quarantine}), "
                           f"{len(good)} stored -> {out} (job 1, lexicon-")
    assert sorted(read_structured(out)["note_id"]) == good
    assert set(_quarantined(quarantine)) == set(BAD)
    assert sorted(_stored(connect())) == good  # the default database (TRILLIUM_HOME)
    from trillium.core.audit import audit_rows, cli_actor

    # every note the job read is attributable: a row per patient, by the OS account, naming the job
    reads = audit_rows(connect(), action="medical.notes.batch")
    assert {r["actor"] for r in reads} == {cli_actor()} and {r["details"]["job"] for r in reads} == {1}
    assert sorted(n for r in reads for n in r["details"]["notes"]) == good
    assert "MRN-20417" in {r["target"] for r in reads}
    view = json.loads(runner.invoke(app, ["medical", "patient", "MRN-20417"]).output)
    assert [n["note_id"] for n in view["notes"]] == ["discharge"]

    rerun = runner.invoke(app, args, catch_exceptions=False)
    assert rerun.exit_code == 0 and "(job 1, " in rerun.output
    assert sorted(_stored(connect())) == good

    for bad_args, message in (
        ([str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")], "nowhere: input not found"),
        ([str(folder), "--output", str(out), "--engine", "ray"], "the ray engine writes a directory of Parquet"),
        ([str(folder), "--output", str(tmp_path / "o"), "--chunk-rows", "0"], "chunk_rows must be a positive"),
        ([str(folder), "--output", str(tmp_path / "o.json")], "a .csv file or a directory of Parquet parts"),
    ):
        failed = runner.invoke(app, ["medical", "records", "batch", *bad_args])
        assert failed.exit_code == 2, failed.output
        assert message in failed.output and len(failed.output.strip().splitlines()) == 1, failed.output
