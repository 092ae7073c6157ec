"""``trillium medical records``: structure clinical notes, index them, find similar cases, evaluate."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from trillium.core.cli_options import address_option, engine_option, max_failed_chunks_option, workers_option

app = typer.Typer(
    help="Clinical notes: synth, extract (sections, entities, negation), batch (a resumable job), reference (for "
         "drift), index, similar, negex-eval, negex-coverage, specialty-eval.",
    no_args_is_help=True,
)

CATALOG = "catalog.json"


def _audit_reads(action: str, reads: Any, **details: Any) -> None:
    """Notes this command read (patients' text), one audit row per patient, attributed to the OS
    account running it: the command line's reads are as attributable as the dashboard's."""
    from trillium.core.audit import audit_patients, cli_actor
    from trillium.core.db import connect

    audit_patients(connect(), action, reads, actor=cli_actor(), id_key="notes", **details)


def _write_json(path: str | None, payload: Any) -> None:
    if path and path != "-":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str))
    else:
        typer.echo(json.dumps(payload, indent=2, default=str))


def _load(inputs: list[str], text_column: str, patient_column: str | None, id_column: str | None,
          max_bytes: int | None) -> tuple[list[Any], list[Any]]:
    from trillium.medical.records.notes import load_notes, read_notes_csv

    if patient_column or id_column:
        notes, rejected = [], []
        for item in inputs:
            if item.lower().endswith(".csv"):
                n, r = read_notes_csv(item, text_column=text_column, id_column=id_column,
                                      patient_column=patient_column, max_chars=max_bytes)
            else:
                n, r = load_notes(item, text_column=text_column, max_bytes=max_bytes)
            notes += n
            rejected += r
        return notes, rejected
    return load_notes(inputs, text_column=text_column, max_bytes=max_bytes)


@app.command("synth")
def synth_cmd(
    out: str = typer.Argument(..., help="Folder for one .txt per note, truth.json and mtsamples.csv."),
    n: int = typer.Option(40, "--n", help="Number of notes."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same notes."),
) -> None:
    """Write synthetic clinical notes (several specialties) with their true entities."""
    from trillium.medical.records.synth import synthetic_notes, write_mtsamples_csv, write_notes_folder

    notes = synthetic_notes(n, seed=seed)
    paths = write_notes_folder(notes, out)
    csv_path = write_mtsamples_csv(notes, Path(out) / "mtsamples.csv")
    typer.echo(json.dumps({"notes": len(paths), "folder": str(out), "mtsamples_csv": str(csv_path),
                           "patients": len({x.patient_id for x in notes})}, indent=2))


@app.command("extract")
def extract_cmd(
    inputs: list[str] = typer.Argument(..., help="Note files (.txt), folders of notes, or CSV files."),
    json_out: str = typer.Option("-", "--json", help="Write the structured notes here (JSON; '-' for stdout)."),
    text_column: str = typer.Option("transcription", "--text-column", help="CSV column holding the note text."),
    patient_column: str = typer.Option(None, "--patient-column", help="CSV column holding the patient id."),
    id_column: str = typer.Option(None, "--id-column", help="CSV column holding the note id."),
    store: bool = typer.Option(True, "--store/--no-store", help="Store notes and entities in the database."),
    max_bytes: int = typer.Option(None, "--max-bytes", help="Refuse notes larger than this many bytes "
                                  "(default: TRILLIUM_LIMIT_TEXT_BYTES, else 2,000,000)."),
    summary_only: bool = typer.Option(False, "--summary", help="Write per-note counts instead of every entity."),
    fhir_out: str = typer.Option(None, "--fhir", help="Also write the notes as FHIR R4 (a Bundle of Bundles, "
                                 "one per note, validated by fhir.resources) to this path."),
) -> None:
    """Structure notes: sections, sentences, entities with spans and negation/uncertainty/history/family."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.medical.records.structurer import RecordStructurer
    from trillium.medical.store import store_notes

    try:
        notes, rejected = _load(inputs, text_column, patient_column, id_column, max_bytes)
        structurer = RecordStructurer()
        structured = [structurer.structure(n) for n in notes]
        _audit_reads("medical.notes.extract", ((n.patient_id, n.note_id) for n in notes), stored=bool(store))
        if store and structured:
            store_notes(structured)
        if fhir_out and structured:
            from trillium.medical.records.fhir import to_fhir_bundle

            bundles = [to_fhir_bundle(s) for s in structured]
            payload_fhir = bundles[0] if len(bundles) == 1 else {
                "resourceType": "Bundle", "type": "collection",
                "entry": [{"fullUrl": f"urn:uuid:{b['id']}", "resource": b} for b in bundles]}
            _write_json(fhir_out, payload_fhir)
    except TrilliumError as exc:
        fail(exc)
        return
    for r in rejected:
        typer.echo(f"quarantined {r.source}: {r.reason}", err=True)
    payload = {
        "notes": [s.summary() if summary_only else s.to_dict() for s in structured],
        "quarantined": [{"source": r.source, "reason": r.reason} for r in rejected],
        "stored": bool(store and structured),
    }
    _write_json(json_out, payload)
    if json_out != "-":
        typer.echo(f"structured {len(structured)} notes ({sum(len(s.entities) for s in structured)} entities), "
                   f"quarantined {len(rejected)}; wrote {json_out}", err=True)
    if not structured:
        from trillium.core.errors import InputValidationError

        fail(InputValidationError(f"no note could be read from {', '.join(inputs)}: all {len(rejected)} quarantined"))


@app.command("batch")
def batch_cmd(
    inputs: list[str] = typer.Argument(..., help="Note files (.txt), folders of notes (recursive), or CSV files."),
    output: str = typer.Option(..., "--output", help="Summary rows and structured notes: a .csv file or a folder "
                                                     "of Parquet parts."),
    chunk_rows: int = typer.Option(200, "--chunk-rows", help="Notes per checkpoint."),
    text_column: str = typer.Option("transcription", "--text-column", help="CSV column holding the note text."),
    patient_column: str = typer.Option(None, "--patient-column", help="CSV column holding the patient id."),
    id_column: str = typer.Option(None, "--id-column", help="CSV column holding the note id."),
    max_bytes: int = typer.Option(None, "--max-bytes", help="Quarantine notes larger than this many bytes "
                                  "(default: TRILLIUM_LIMIT_TEXT_BYTES, else 2,000,000)."),
    store: bool = typer.Option(True, "--store/--no-store", help="Store the notes in the database after the job."),
    restart: bool = typer.Option(False, "--restart", help="Start over instead of resuming."),
    engine: str = engine_option(),
    address: str | None = address_option(),
    workers: int | None = workers_option(),
    max_failed_chunks: int | None = max_failed_chunks_option(),
) -> None:
    """Structure notes as a resumable batch job; unreadable notes go to the job's quarantine file."""
    from trillium.core.audit import cli_actor
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.core.jobs import check_engine, failed_chunk_limit
    from trillium.medical.records.batch import structure_folder
    from trillium.medical.records.structurer import RecordStructurer

    try:
        check_engine(engine)
        res = structure_folder(RecordStructurer(), inputs, output, chunk_rows=chunk_rows, store=store,
                               resume=not restart, engine=engine, address=address, workers=workers,
                               max_failed_chunks=failed_chunk_limit(max_failed_chunks), text_column=text_column,
                               id_column=id_column, patient_column=patient_column, max_bytes=max_bytes,
                               actor=cli_actor())
    except TrilliumError as exc:
        fail(exc)
        return
    job = res.job
    typer.echo(f"{job.status}: {job.rows_out} notes structured, {job.rows_quarantined} quarantined "
               f"({job.quarantine}), {res.stored} stored -> {res.output} (job {job.job_id}, {res.structurer})")


@app.command("reference")
def reference_cmd(
    inputs: list[str] = typer.Argument(..., help="Note files, folders or CSV files from the departments the "
                                                 "structurer was checked on (at least 40 notes)."),
    text_column: str = typer.Option("transcription", "--text-column", help="CSV column holding the note text."),
    max_bytes: int = typer.Option(None, "--max-bytes", help="Skip notes larger than this many bytes."),
) -> None:
    """Register the notes' monitoring reference (vocabulary, sections, concepts and their profile)
    as the next ``note-structurer`` version; later batch jobs are checked against it."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.medical.records.monitoring import register_reference
    from trillium.medical.records.structurer import RecordStructurer

    try:
        notes, rejected = _load(inputs, text_column, None, None, max_bytes)
        structurer = RecordStructurer()
        record = register_reference([structurer.structure(n) for n in notes], structurer,
                                    description=f"notes reference from {', '.join(inputs)[:200]}")
        # the notes were read (patients' text): which ones, attributable to the OS account running it
        _audit_reads("medical.notes.reference", ((n.patient_id, n.note_id) for n in notes),
                     reference=f"{record.name}:v{record.version}", sources=list(inputs)[:20])
    except TrilliumError as exc:
        fail(exc)
        return
    typer.echo(f"registered {record.name} v{record.version} (production): {record.metrics['reference_notes']} notes, "
               f"vocabulary {record.metrics['vocabulary']} words; {len(rejected)} skipped")


@app.command("index")
def index_cmd(
    inputs: list[str] = typer.Argument(..., help="Note files, folders or CSV files to index."),
    out: str = typer.Option(..., "--out", help="Folder to write the index to (JSON + numpy, sha256 manifest)."),
    text_column: str = typer.Option("transcription", "--text-column", help="CSV column holding the note text."),
    method: str = typer.Option("hybrid", "--method", help="hybrid (BM25 text + concepts), bm25 or tfidf."),
    concept_weight: float = typer.Option(0.5, "--concept-weight", help="Share of the score from concepts (hybrid)."),
) -> None:
    """Build and save a similar-case index of notes."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.medical.records.retrieval import SimilarCaseIndex
    from trillium.medical.records.structurer import RecordStructurer

    try:
        notes, rejected = _load(inputs, text_column, None, None, None)
        if len(notes) < 2:
            raise TrilliumError(f"an index needs at least 2 notes; {len(notes)} read from {', '.join(inputs)}")
        structurer = RecordStructurer()
        concepts = [structurer.structure(n).concepts() for n in notes] if method == "hybrid" else None
        index = SimilarCaseIndex(method=method, concept_weight=concept_weight)
        index.fit([n.text for n in notes], [n.note_id for n in notes], concepts)
        path = index.save(out)
        _audit_reads("medical.notes.index", ((n.patient_id, n.note_id) for n in notes), index=str(path))
    except TrilliumError as exc:
        fail(exc)
        return
    catalog = {n.note_id: {"patient_id": n.patient_id, "source": n.source,
                           "specialty": n.metadata.get("medical_specialty") or n.metadata.get("specialty"),
                           "preview": " ".join(n.text.split())[:160]} for n in notes}
    (path / CATALOG).write_text(json.dumps(catalog, indent=1))
    for r in rejected:
        typer.echo(f"quarantined {r.source}: {r.reason}", err=True)
    typer.echo(json.dumps({"index": str(path), "notes": len(notes), "method": method,
                           "quarantined": len(rejected)}, indent=2))


@app.command("similar")
def similar_cmd(
    index_dir: str = typer.Option(..., "--index", help="Folder written by 'records index'."),
    text: str = typer.Argument(None, help="Query text (or use --file / --note-id)."),
    file: str = typer.Option(None, "--file", help="Read the query note from this file."),
    note_id: str = typer.Option(None, "--note-id", help="Neighbours of an indexed note."),
    k: int = typer.Option(5, "-k", "--k", help="How many similar notes."),
    json_out: str = typer.Option("-", "--json", help="Write the hits here (JSON; '-' for stdout)."),
) -> None:
    """Top-k notes most similar to a query note, with scores."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.medical.records.notes import read_note
    from trillium.medical.records.retrieval import SimilarCaseIndex
    from trillium.medical.records.structurer import RecordStructurer

    try:
        if sum(x is not None for x in (text, file, note_id)) != 1:
            raise TrilliumError("give exactly one query: TEXT, --file PATH or --note-id ID")
        index = SimilarCaseIndex.load(index_dir)
        if note_id is not None:
            hits = index.neighbours(note_id, k=k)
        else:
            query = read_note(file).text if file else text
            if query == "-":
                query = sys.stdin.read()
            concepts = RecordStructurer().structure(query).concepts()
            hits = index.query(query, k=k, concepts=concepts)
    except TrilliumError as exc:
        fail(exc)
        return
    catalog_path = Path(index_dir) / CATALOG
    catalog = json.loads(catalog_path.read_text()) if catalog_path.is_file() else {}
    # the hits show other patients' notes (ids, previews): one row per patient shown
    _audit_reads("medical.note.similar", ((catalog.get(h.note_id, {}).get("patient_id"), h.note_id) for h in hits),
                 query=note_id or file or "text", k=k)
    _write_json(json_out, {"hits": [{"rank": h.rank, "note_id": h.note_id, "score": round(h.score, 4),
                                     **catalog.get(h.note_id, {})} for h in hits]})


@app.command("negex-eval")
def negex_eval_cmd(
    tsv: str = typer.Option(..., "--tsv", help="The NegEx annotated sentences (rsAnnotations-1-120-random.tsv)."),
    json_out: str = typer.Option("-", "--json", help="Write the report here."),
    errors: int = typer.Option(0, "--errors", help="Include this many misclassified sentences per half."),
) -> None:
    """Negation (and temporality, experiencer) on the public NegEx set, against NegEx's published figures."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.medical.records.evaluate import negex_eval

    try:
        report = negex_eval(tsv, errors=errors)
    except TrilliumError as exc:
        fail(exc)
        return
    _write_json(json_out, report)
    neg = report["held_out"]["negation"]
    typer.echo(f"held-out negation: sensitivity {neg['sensitivity']:.3f}, specificity {neg['specificity']:.3f}, "
               f"PPV {neg['ppv']:.3f} (NegEx published 0.778 / 0.945 / 0.845)", err=True)


@app.command("negex-coverage")
def negex_coverage_cmd(
    tsv: str = typer.Option(..., "--tsv", help="The NegEx annotated sentences (rsAnnotations-1-120-random.tsv)."),
    json_out: str = typer.Option("-", "--json", help="Write the report here."),
    sample: int = typer.Option(0, "--sample", help="Also draw this many extracted entities (fixed seed) for judging."),
    sample_tsv: str | None = typer.Option(None, "--sample-tsv", help="Write the drawn entities here, unjudged."),
    seed: int = typer.Option(2026, "--seed", help="Seed of the draw."),
) -> None:
    """End to end on the NegEx set: annotated conditions found as entities, and their negation,
    with the terminologies and with the hand lexicon only, in one run."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.medical.records.evaluate import negex_coverage_eval

    try:
        report = negex_coverage_eval(tsv, sample=sample, seed=seed)
    except TrilliumError as exc:
        fail(exc)
        return
    drawn = report.pop("sample", [])
    if sample_tsv and drawn:
        import csv

        with Path(sample_tsv).open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(["n", "line", "kind", "text", "normalized", "code_system", "code", "sentence"])
            for n, d in enumerate(drawn, 1):
                w.writerow([n, d["line"], d["kind"], d["text"], d["normalized"], d["code_system"], d["code"],
                            " ".join(d["sentence"].split())])
    _write_json(json_out, report)
    for name in ("terminology", "hand_lexicon_only"):
        h = report[name]["held_out"]
        neg = h["negation_on_found"]
        typer.echo(f"{name}: held-out coverage {h['coverage']:.3f} ({h['found']}/{h['n']}), negation on found: "
                   f"sensitivity {neg['sensitivity']:.3f}, specificity {neg['specificity']:.3f}", err=True)


@app.command("specialty-eval")
def specialty_eval_cmd(
    csv_path: str = typer.Option(..., "--csv", help="MTSamples-layout CSV (medical_specialty, transcription, ...)."),
    json_out: str = typer.Option("-", "--json", help="Write the report here."),
    k: int = typer.Option(3, "-k", "--k", help="Neighbours per note."),
) -> None:
    """Top-k specialty hit rate of similar-case retrieval against a plain TF-IDF baseline."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.medical.records.evaluate import specialty_eval

    try:
        report = specialty_eval(csv_path, k=k)
    except TrilliumError as exc:
        fail(exc)
        return
    _write_json(json_out, report)
    typer.echo(f"top-{k} specialty hit rate: ours {report['hit_rate']:.3f}, TF-IDF baseline "
               f"{report['baseline_hit_rate']:.3f} ({report['n_notes']} notes)", err=True)
