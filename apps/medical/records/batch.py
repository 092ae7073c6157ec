"""Many clinical notes at once on the core batch-job engine (resumable, unreadable notes quarantined).

The flow every vertical has: source -> predictor -> sink -> store. The source has one row per
note: every note file under the folders given (``discover_notes``: recursive, sorted), every
note file given by name, and every data row of every CSV export given (one row per CSV row, its
text read here, once, by ``read_notes_csv``). Chunk N is the same notes after a restart, and the
fingerprint (each file's size and modification time, plus the reading settings) changes when a
file changes, so a changed input is a new job rather than a resume.

Each chunk reads its note files (binary, oversized, undecodable or empty ones, and CSV rows or
files that cannot be used, go to the job's quarantine file with the reason, never only to a
log) and structures the notes into one summary row each (``StructuredNote.to_rows``) plus a
``json`` column holding the whole structured note with its text. Once the job is done, with
``store``, the notes are stored from that output (not from inside the workers), with the job id
and the structurer's version in each note's metadata; storing replaces a note by ``note_id``, so
a resumed or rerun job stores no duplicates.

With ``engine="ray"`` the chunks are structured on a Ray cluster: each worker rebuilds the
caller's structurer from its rules and lexicons (it has no registered model) and reads the note
files on storage every node mounts at the same path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from trillium.core.audit import audit_patients
from trillium.core.contract import PredictorFactory, check_shippable
from trillium.core.db import Database, connect
from trillium.core.errors import InputValidationError, JobError, TrilliumError
from trillium.core.jobs import (
    DEFAULT_MAX_FAILED_CHUNKS,
    CsvSink,
    JobResult,
    ParquetSink,
    ProcessResult,
    Source,
    check_engine,
    output_sink,
    read_output,
    run_batch,
)
from trillium.core.jobs.sources import check_chunk_rows
from trillium.medical.records.entities import KINDS
from trillium.medical.records.notes import Note, NoteReadError, discover_notes, read_note, read_notes_csv
from trillium.medical.records.structurer import RecordStructurer, StructuredNote

__all__ = [
    "JOB_NAME",
    "OUTPUT_COLUMNS",
    "NoteSource",
    "StructureJobResult",
    "iter_structured",
    "read_structured",
    "store_output",
    "structure_chunk",
    "structure_folder",
]

log = logging.getLogger(__name__)

JOB_NAME = "medical-records-batch"
OUTPUT_COLUMNS = ["note_id", "patient_id", "source", "chars", "encoding", "n_sections", "sections", "n_sentences",
                  "n_entities", *[f"n_{k}" for k in KINDS], "n_negated", "no_known_allergies", "structurer", "json"]
"""A job's output: ``StructuredNote.to_rows``, the structurer's version, and the note as JSON."""
SOURCE_COLUMNS = ["note_id", "source", "path", "row", "text", "patient_id", "metadata", "error"]
_QUARANTINE_FIELDS = ["note_id", "source"]  # a rejected note is named, its text is not copied
_STORE_BATCH = 200


def _text_limit(max_bytes: int | None) -> int:
    from trillium.core.untrusted import limits

    return limits().text_bytes if max_bytes is None else max_bytes


class NoteSource(Source):
    """Every note of ``inputs`` (folders, note files, CSV exports), one row each, in a fixed order.

    Rows: ``note_id`` (unique across the inputs: a repeated one gets ``-2``, ``-3``, ...),
    ``source`` (the file, or ``"file.csv:row n"``), ``path`` and ``row`` (the CSV data row, 0 for
    a note file), ``text``, ``patient_id`` and ``metadata`` (JSON) for a CSV note (a note file
    is read by the processor), and ``error``: why a CSV row or CSV file cannot be used ("" if
    it can; the processor quarantines the row with it). A missing input is a user error (``NoteReadError``) before any work is done.
    """

    def __init__(self, inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 chunk_rows: int = 200, *, text_column: str = "transcription", id_column: str | None = None,
                 patient_column: str | None = None, max_bytes: int | None = None) -> None:
        items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
        if not items:
            raise InputValidationError("no input given: name note files, folders of notes or CSV files")
        self.inputs = [Path(p).expanduser().resolve() for p in items]
        for p in self.inputs:
            if not p.exists():
                raise NoteReadError(str(p), "input not found")
        self.chunk_rows = check_chunk_rows(chunk_rows)
        self.text_column, self.id_column, self.patient_column = text_column, id_column, patient_column
        self.max_bytes = _text_limit(max_bytes)
        self._files: list[tuple[Path, str]] | None = None
        self._rows: pd.DataFrame | None = None

    @property
    def uri(self) -> str:
        names = "|".join(str(p) for p in self.inputs)
        if len(names) <= 1000:
            return names
        return f"{self.inputs[0]}|...({len(self.inputs)} inputs, {hashlib.sha256(names.encode()).hexdigest()[:16]})"

    def files(self) -> list[tuple[Path, str]]:
        """(file, "csv" | "note") for every file the inputs name, in input order, folders sorted."""
        if self._files is None:
            found: list[tuple[Path, str]] = []
            for p in self.inputs:
                if p.is_dir():
                    found += [(f.resolve(), "note") for f in discover_notes(p)]
                else:
                    found.append((p, "csv" if p.suffix.lower() == ".csv" else "note"))
            self._files = found
        return self._files

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([self.text_column, self.id_column, self.patient_column,
                                       self.max_bytes]).encode())
        for f, _ in self.files():
            try:
                st = f.stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            except OSError as exc:  # unreadable now: the processor quarantines it; still part of the input
                h.update(f"{f}:{type(exc).__name__}\n".encode())
        return f"{len(self.files())} files:{h.hexdigest()[:16]}"

    def rows(self) -> pd.DataFrame:
        """Every note row (CSV files are parsed here, once)."""
        if self._rows is None:
            rows: list[dict[str, Any]] = []
            for f, kind in self.files():
                if kind == "note":
                    rows.append(_row(f.stem, str(f), f, 0))
                else:
                    rows.extend(self._csv_rows(f))
            used: set[str] = set()
            for r in rows:
                if r["note_id"]:
                    r["note_id"] = _unique(r["note_id"], used, r["source"])
            self._rows = pd.DataFrame(rows, columns=SOURCE_COLUMNS)
        return self._rows

    def _csv_rows(self, path: Path) -> list[dict[str, Any]]:
        try:
            notes, rejected = read_notes_csv(path, text_column=self.text_column, id_column=self.id_column,
                                             patient_column=self.patient_column, max_chars=self.max_bytes)
        except NoteReadError as exc:
            return [_row("", str(path), path, 0, error=exc.cause)]
        out: list[tuple[int, dict[str, Any]]] = []
        for n in notes:
            number = _row_number(n.source)
            out.append((number, _row(n.note_id, n.source, path, number, text=n.text, patient_id=n.patient_id,
                                     metadata=n.metadata)))
        for r in rejected:
            number = _row_number(r.source)
            out.append((number, _row("", r.source, path, number, error=r.reason)))
        return [r for _, r in sorted(out, key=lambda x: x[0])]

    def total_rows(self) -> int | None:
        return len(self.rows())

    def chunks(self, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
        size = check_chunk_rows(chunk_rows or self.chunk_rows)
        frame = self.rows()
        for start in range(0, len(frame), size):
            yield frame.iloc[start:start + size].reset_index(drop=True)


def _row(note_id: str, source: str, path: Path, row: int, *, text: str = "", patient_id: str | None = None,
         metadata: dict[str, Any] | None = None, error: str = "") -> dict[str, Any]:
    return {"note_id": note_id, "source": source, "path": str(path), "row": row, "text": text,
            "patient_id": patient_id or "", "metadata": json.dumps(metadata or {}, default=str), "error": error}


def _row_number(source: str) -> int:
    return int(source.rsplit(":row ", 1)[1])


def _unique(note_id: str, used: set[str], source: str) -> str:
    """``note_id``, or with ``-2``, ``-3``, ... when an earlier note has it (as ``load_notes`` does)."""
    if note_id in used:
        k = 2
        while f"{note_id}-{k}" in used:
            k += 1
        log.warning("duplicate note id %r from %s renamed to %r", note_id, source, f"{note_id}-{k}")
        note_id = f"{note_id}-{k}"
    used.add(note_id)
    return note_id


def _note(rec: dict[str, Any], max_bytes: int) -> Note:
    """The row's note: a CSV note as read by the source, a note file read now."""
    if rec["error"]:
        raise NoteReadError(rec["source"], rec["error"])
    if int(rec["row"]):
        return Note(rec["note_id"], rec["text"], rec["patient_id"] or None, rec["source"], json.loads(rec["metadata"]))
    return read_note(rec["path"], note_id=rec["note_id"], max_bytes=max_bytes)


@dataclass(frozen=True)
class StructureJobResult:
    job: JobResult
    output: Path
    stored: int = 0
    structurer: str = ""


def structure_chunk(structurer: RecordStructurer, max_bytes: int, chunk: pd.DataFrame, _index: int) -> ProcessResult:
    """One chunk of notes: a summary row and the structured note (JSON) per note; a note that
    cannot be read is quarantined with the reason (which names the file or CSV row)."""
    rows: list[dict[str, Any]] = []
    kept: list[int] = []
    bad: list[int] = []
    reasons: list[str] = []
    version = structurer.version
    for idx, rec in zip(chunk.index, chunk.to_dict("records"), strict=True):
        try:
            note = _note(rec, max_bytes)
        except NoteReadError as exc:
            bad.append(idx)
            reasons.append(str(exc))
            continue
        structured = structurer.structure(note)
        rows.append({**structured.to_rows()[0], "structurer": version,
                     "json": json.dumps(structured.to_dict(with_text=True), ensure_ascii=False)})
        kept.append(idx)
    output = pd.DataFrame(rows, columns=OUTPUT_COLUMNS, index=kept)
    rejected = chunk.loc[bad, _QUARANTINE_FIELDS].copy()
    rejected["reason"] = reasons
    return ProcessResult(output, rejected)


def structure_folder(structurer: RecordStructurer, inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                     output: str | os.PathLike[str], *, chunk_rows: int = 200, db: Database | None = None,
                     store: bool = True, progress: bool = True, resume: bool = True, engine: str = "local",
                     address: str | None = None, workers: int | None = None,
                     max_failed_chunks: int | None = DEFAULT_MAX_FAILED_CHUNKS, text_column: str = "transcription",
                     id_column: str | None = None, patient_column: str | None = None,
                     max_bytes: int | None = None, actor: str | None = None) -> StructureJobResult:
    """Structure every note of ``inputs`` (folders, note files, CSV exports) into ``output`` (a
    ``.csv`` file or a directory of Parquet parts) as a resumable job, then (with ``store``)
    store the notes from that output, with the job id and the structurer's version.

    Unreadable notes go to the job's quarantine file (``result.job.quarantine``) with the reason.
    ``max_bytes`` caps a note file (bytes) and a CSV note (characters); by default the
    configured text limit (``TRILLIUM_LIMIT_TEXT_BYTES``), read here so workers apply the same.
    ``engine="ray"`` structures on a Ray cluster (``address``; ``workers`` actors) into a
    directory of Parquet parts; the inputs must be on storage every node mounts.
    Every note structured is a read of a patient's text: one audit row per patient names its
    notes and the job, attributed to ``actor`` (default: the OS account).
    """
    check_engine(engine)
    out = Path(output)
    sink = output_sink(out, engine)
    check_shippable(structurer, engine)
    source = NoteSource(inputs, chunk_rows, text_column=text_column, id_column=id_column,
                        patient_column=patient_column, max_bytes=max_bytes)
    db = db or connect()
    factory = PredictorFactory.of(structurer, structure_chunk, source.max_bytes, engine=engine)
    job = run_batch(JOB_NAME, source, factory, sink, engine=engine, address=address, workers=workers, db=db,
                    chunk_rows=chunk_rows, progress=progress, resume=resume, max_failed_chunks=max_failed_chunks)
    if job.status != "done":
        raise JobError(f"note structuring job {job.name} (id {job.job_id}) ended {job.status}")
    stored = store_output(out, job.job_id, db=db) if store else 0
    audit_patients(db, "medical.notes.batch", iter_note_ids(out), actor=actor, id_key="notes", job=job.job_id)
    try:  # drift against the registered reference (none registered: nothing checked, said in the log)
        from trillium.medical.records.monitoring import monitor_job

        monitor_job(str(out), job_id=job.job_id, db=db, label=f"notes job {job.job_id}")
    except TrilliumError as exc:  # the job's output stands; a broken reference must not lose it
        log.warning("notes job %d: drift not checked: %s", job.job_id, exc)
    log.info("structured %d notes (%d quarantined, %s), stored %d", job.rows_out, job.rows_quarantined,
             job.quarantine, stored)
    return StructureJobResult(job, out, stored, structurer.version)


def store_output(output: str | os.PathLike[str], job_id: int, *, db: Database | None = None) -> int:
    """Store the notes a job wrote to ``output``, each with ``job_id`` and its structurer version
    in its metadata (the notes table has no job column); returns how many. Replaces by ``note_id``."""
    from trillium.medical.store import store_notes

    stored = 0
    batch: list[StructuredNote] = []
    for note, version in iter_structured(output):
        batch.append(replace(note, metadata={**note.metadata, "job_id": job_id, "structurer_version": version}))
        if len(batch) >= _STORE_BATCH:
            stored += store_notes(batch, db=db)
            batch = []
    if batch:
        stored += store_notes(batch, db=db)
    return stored


def _output_frames(output: str | os.PathLike[str], columns: list[str]) -> Iterator[pd.DataFrame]:
    """``columns`` of the rows a job wrote, one part (or CSV block) at a time, as strings."""
    sink = output_sink(output)
    if isinstance(sink, ParquetSink):
        yield from (pd.read_parquet(part, columns=columns) for part in sink.parts())
        return
    assert isinstance(sink, CsvSink)  # nosec B101 # type narrowing: one of two sinks
    if not sink.path.exists() or sink.path.stat().st_size == 0:
        return
    yield from pd.read_csv(sink.path, usecols=columns, dtype=str, keep_default_na=False, chunksize=_STORE_BATCH)


def iter_structured(output: str | os.PathLike[str]) -> Iterator[tuple[StructuredNote, str]]:
    """(structured note, structurer version) for every row a job wrote, in chunk order, one part
    (or CSV block) in memory at a time."""
    for frame in _output_frames(output, ["structurer", "json"]):
        for version, text in zip(frame["structurer"], frame["json"], strict=True):
            yield StructuredNote.from_dict(json.loads(text)), str(version)


def iter_note_ids(output: str | os.PathLike[str]) -> Iterator[tuple[str | None, str]]:
    """(patient id, note id) for every row a job wrote, without parsing the structured notes."""
    for frame in _output_frames(output, ["patient_id", "note_id"]):
        for patient, note in zip(frame["patient_id"], frame["note_id"], strict=True):
            yield (str(patient) if isinstance(patient, str) and patient else None), str(note)


def read_structured(output: str | os.PathLike[str]) -> pd.DataFrame:
    """The rows a note-structuring job wrote (Parquet parts or CSV), ids as strings."""
    return read_output(output, empty_columns=OUTPUT_COLUMNS,
                       dtype={"note_id": str, "patient_id": str, "source": str, "encoding": str, "sections": str})
