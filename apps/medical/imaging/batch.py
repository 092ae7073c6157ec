"""Many CT studies at once on the core batch-job engine (resumable, broken studies quarantined).

One row per study folder or zip under the root. A study that cannot be read or analysed goes
to the quarantine file with its reason (the loader's message names the file and the tag) and
the job goes on; a killed job resumes at its last committed chunk, like every core job.

With ``engine="ray"`` the studies are analysed on a Ray cluster: each worker loads the same
registered classifier version (sha256 checked) with the same threshold, reads the studies and
writes the findings JSON on storage every node mounts at the same path, and stores each study
in the job's database (re-analysis replaces a study's findings, so a retried part stores no
duplicates).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from trillium.core.db import Database, DatabaseRef, connect
from trillium.core.errors import InputValidationError, JobError, TrilliumError
from trillium.core.jobs import (
    DEFAULT_MAX_FAILED_CHUNKS,
    FolderSource,
    JobResult,
    Processor,
    ProcessResult,
    check_engine,
    output_sink,
    run_batch,
)
from trillium.core.registry import ModelRef
from trillium.medical.imaging.analyzer import StudyAnalyzer, store_result, write_json
from trillium.medical.imaging.dicom_io import iter_study_dirs

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ["study", "path", "series_uid", "study_uid", "patient_id", "n_findings", "max_category",
                  "max_malignancy", "n_candidates", "seconds", "json"]
_CATEGORY_ORDER = ["", "2", "3", "4A", "4B", "4X"]


class StudyFolderSource(FolderSource):
    """Every study (a folder of DICOM files, or a zip) under ``root``, one row each: ``path``."""

    def __init__(self, root: str | os.PathLike[str], chunk_rows: int = 4) -> None:
        super().__init__(root, chunk_rows)

    def discover(self) -> list[Path]:
        return iter_study_dirs(self.root)


@dataclass(frozen=True)
class AnalyzeJobResult:
    job: JobResult
    output: Path
    json_dir: Path


def analyze_chunk(analyzer: StudyAnalyzer, root: Path, json_dir: Path, store: bool, db: Database,
                  chunk: pd.DataFrame, _index: int) -> ProcessResult:
    """One chunk of studies: a summary row and a findings JSON per study (stored in ``db`` with
    ``store``); a study that cannot be read or analysed is quarantined with the reason."""
    rows, bad = [], []
    for idx, path in chunk["path"].items():
        try:
            result = analyzer.analyze(path)
            name = str(Path(path).relative_to(root)).replace(os.sep, "__")
            jpath = write_json(result, json_dir / f"{name}.json")
            if store:
                store_result(result, db=db)
            cats = [f["category"] for f in result.findings]
            rows.append((idx, {
                "study": name, "path": path, "series_uid": result.series_uid, "study_uid": result.study_uid,
                "patient_id": result.patient_id or "", "n_findings": len(result.findings),
                "max_category": max(cats, key=_CATEGORY_ORDER.index, default=""),
                "max_malignancy": max((f["malignancy"] for f in result.findings), default=0.0),
                "n_candidates": result.n_candidates, "seconds": round(result.timings.get("total", 0.0), 3),
                "json": str(jpath),
            }))
        except (TrilliumError, ValueError, OSError) as exc:
            log.warning("study %s quarantined: %s", path, exc)
            bad.append((idx, f"{type(exc).__name__}: {exc}"))
    frame = pd.DataFrame([r for _, r in rows], columns=OUTPUT_COLUMNS, index=[i for i, _ in rows])
    rejected = chunk.loc[[i for i, _ in bad]].copy()
    rejected["reason"] = [r for _, r in bad]
    return ProcessResult(frame, rejected)


@dataclass
class AnalyzeFactory:
    """The job's processor factory: the caller's analyzer and database locally; on Ray, each
    worker loads ``model`` (an exact version, sha256 checked) at the caller's ``threshold`` and
    connects to ``db`` itself."""

    model: ModelRef | None
    threshold: float
    root: str
    json_dir: str
    store: bool
    db: DatabaseRef
    analyzer: StudyAnalyzer | None = None  # the local engine's; never shipped to workers
    database: Database | None = None  # likewise

    def __call__(self) -> Processor:
        analyzer = self.analyzer or self._load()
        return partial(analyze_chunk, analyzer, Path(self.root), Path(self.json_dir), self.store,
                       self.database or self.db.connect())

    def _load(self) -> StudyAnalyzer:
        if self.model is None:
            raise JobError("a worker cannot load an unregistered classifier: use StudyAnalyzer.from_registry")
        analyzer = StudyAnalyzer.from_registry(self.model.name, self.model.version, registry=self.model.registry())
        analyzer.threshold = self.threshold
        return analyzer


def analyze_folder(analyzer: StudyAnalyzer, root: str | os.PathLike[str], output: str | os.PathLike[str], *,
                   json_dir: str | os.PathLike[str] | None = None, chunk_rows: int = 4, db: Database | None = None,
                   store: bool = True, progress: bool = True, resume: bool = True, engine: str = "local",
                   address: str | None = None, workers: int | None = None,
                   max_failed_chunks: int | None = DEFAULT_MAX_FAILED_CHUNKS) -> AnalyzeJobResult:
    """Analyse every study under ``root``: one summary row per study into ``output``, the full
    findings JSON per study into ``json_dir``, and (with ``store``) the findings into the database.

    ``engine="ray"`` analyses on a Ray cluster (``address``; ``workers`` actors) into a
    directory of Parquet parts; the classifier must come from the registry, where the workers
    load it, and the studies, output and JSON folder must be on storage every node mounts.
    """
    check_engine(engine)
    out = Path(output)
    sink = output_sink(out, engine)
    if engine == "ray" and analyzer.registry_ref is None:
        raise InputValidationError("the ray engine's workers load the classifier from the registry: use a "
                                   "registered one (StudyAnalyzer.from_registry)")
    db = db or connect()
    source = StudyFolderSource(root, chunk_rows)
    jdir = Path(json_dir) if json_dir is not None else out.with_name(out.stem + "_studies")
    jdir.mkdir(parents=True, exist_ok=True)
    if engine == "ray":
        jdir = jdir.resolve()  # workers do not share this process's working directory
    local = engine == "local"
    factory = AnalyzeFactory(analyzer.registry_ref, analyzer.threshold, str(source.root), str(jdir), store,
                             DatabaseRef.of(db), analyzer if local else None, db if local else None)

    job = run_batch("medical-analyze-batch", source, factory, sink, engine=engine, address=address,
                    workers=workers, db=db, chunk_rows=chunk_rows, progress=progress, resume=resume,
                    max_failed_chunks=max_failed_chunks)
    log.info("analysed %d studies (%d quarantined)", job.rows_out, job.rows_quarantined)
    return AnalyzeJobResult(job, out, jdir)


def read_summary(output: str | os.PathLike[str]) -> pd.DataFrame:
    out = Path(output)
    if out.suffix.lower() == ".csv":
        return pd.read_csv(out) if out.exists() else pd.DataFrame(columns=OUTPUT_COLUMNS)
    parts = sorted(out.glob("part-*.parquet")) if out.is_dir() else []
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else \
        pd.DataFrame(columns=OUTPUT_COLUMNS)


def load_study_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
