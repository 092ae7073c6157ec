"""Many CT studies at once on the core batch-job engine (resumable, broken studies quarantined).

One row per study folder or zip under the root. A study that cannot be read or analysed goes
to the quarantine file with its reason (the loader's message names the file and the tag) and
the job goes on; a killed job resumes at its last committed chunk, like every core job.

The flow is the one every vertical has: source -> predictor -> sink -> store. Each chunk writes
a summary row and a findings JSON per study; once the job is done the studies are stored from
its output (re-analysis replaces a study's findings, so a resumed or rerun job stores no
duplicates), never from inside the workers.

With ``engine="ray"`` the studies are analysed on a Ray cluster: each worker loads the same
registered classifier version (sha256 checked) with the same threshold, reads the studies and
writes the findings JSON on storage every node mounts at the same path.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from trillium.core import jobs
from trillium.core.audit import audit_patients
from trillium.core.contract import PredictorFactory, job_output
from trillium.core.db import Database, connect
from trillium.core.errors import TrilliumError
from trillium.medical.imaging.analyzer import StudyAnalyzer, store_study_json, write_json
from trillium.medical.imaging.dicom_io import iter_study_dirs

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ["study", "path", "series_uid", "study_uid", "patient_id", "n_findings", "max_category",
                  "max_malignancy", "n_candidates", "seconds", "json"]


@dataclass(frozen=True)
class AnalyzeJobResult:
    job: jobs.JobResult
    output: Path
    json_dir: Path
    stored: int = 0


def analyze_chunk(analyzer: StudyAnalyzer, root: Path, json_dir: Path, chunk: pd.DataFrame,
                  _index: int) -> jobs.ProcessResult:
    """One chunk of studies: a summary row and a findings JSON per study; a study that cannot be
    read or analysed is quarantined with the reason."""
    rows, bad = [], []
    for idx, path in chunk["path"].items():
        try:
            result = analyzer.analyze(path)
            name = str(Path(path).relative_to(root)).replace(os.sep, "__")
            jpath = write_json(result, json_dir / f"{name}.json")
            rows.append((idx, {"study": name, "path": path, **result.to_rows()[0], "json": str(jpath)}))
        except (TrilliumError, ValueError, OSError) as exc:
            log.warning("study %s quarantined: %s", path, exc)
            bad.append((idx, f"{type(exc).__name__}: {exc}"))
    frame = pd.DataFrame([r for _, r in rows], columns=OUTPUT_COLUMNS, index=[i for i, _ in rows])
    rejected = chunk.loc[[i for i, _ in bad]].copy()
    rejected["reason"] = [r for _, r in bad]
    return jobs.ProcessResult(frame, rejected)


def analyze_folder(analyzer: StudyAnalyzer, root: str | os.PathLike[str], output: str | os.PathLike[str], *,
                   json_dir: str | os.PathLike[str] | None = None, chunk_rows: int = 4, db: Database | None = None,
                   store: bool = True, progress: bool = True, resume: bool = True, engine: str = "local",
                   address: str | None = None, workers: int | None = None,
                   max_failed_chunks: int | None = jobs.DEFAULT_MAX_FAILED_CHUNKS,
                   monitor: bool = True, actor: str | None = None) -> AnalyzeJobResult:
    """Analyse every study under ``root``: one summary row per study into ``output``, the full
    findings JSON per study into ``json_dir``, and (with ``store``) the findings into the database.

    ``engine="ray"`` analyses on a Ray cluster (``address``; ``workers`` actors) into a
    directory of Parquet parts; the classifier must come from the registry, where the workers
    load it, and the studies, output and JSON folder must be on storage every node mounts.
    ``monitor``: once the job is done, its studies' statistics and scores are checked against the
    classifier version's reference profile (``imaging.monitoring``; one run per job, alerts stored).
    Every study analysed is a read of a patient's CT: one audit row per patient names its series
    and the job, attributed to ``actor`` (default: the OS account).
    """
    out, sink = job_output(analyzer, output, engine)
    db = db or connect()
    source = jobs.FolderSource(root, chunk_rows, discover=iter_study_dirs)
    jdir = Path(json_dir) if json_dir is not None else out.with_name(out.stem + "_studies")
    jdir.mkdir(parents=True, exist_ok=True)
    if engine == "ray":
        jdir = jdir.resolve()  # workers do not share this process's working directory
    factory = PredictorFactory.of(analyzer, analyze_chunk, source.root, jdir, engine=engine)

    job = jobs.run_batch("medical-analyze-batch", source, factory, sink, engine=engine, address=address,
                         workers=workers, db=db, chunk_rows=chunk_rows, progress=progress, resume=resume,
                         max_failed_chunks=max_failed_chunks)
    stored = 0
    summary = read_summary(out)
    audit_patients(db, "medical.ct.analyze_batch", zip(summary["patient_id"], summary["series_uid"]),
                   actor=actor, id_key="series", job=job.job_id)
    if store and summary is not None:  # from the output, not from this run: a resumed job's earlier chunks count too
        for jpath in summary["json"]:
            store_study_json(json.loads(Path(jpath).read_text()), db=db)
            stored += 1
    if monitor and summary is not None:
        _monitor(analyzer, list(summary["json"]), db, job)
    log.info("analysed %d studies (%d quarantined), stored %d", job.rows_out, job.rows_quarantined, stored)
    return AnalyzeJobResult(job, out, jdir, stored)


def _monitor(analyzer: StudyAnalyzer, json_paths: list[str], db: Database, job: jobs.JobResult) -> None:
    """The monitoring check of a finished job; its failure is logged, never undoes the stored findings."""
    from trillium.medical.imaging.monitoring import monitor_job

    try:
        monitor_job(analyzer, json_paths, db=db, job_id=job.job_id, label=job.name)
    except TrilliumError:
        log.exception("monitoring of job %s failed; its findings are stored", job.name)


def read_summary(output: str | os.PathLike[str]) -> pd.DataFrame:
    """The summary rows a study-analysis job wrote (Parquet parts or CSV)."""
    return jobs.read_output(output, empty_columns=OUTPUT_COLUMNS)
