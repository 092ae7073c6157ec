"""Inspecting folders of images on the core batch-job engine: resumable, with quarantine.

The job's input is the sorted list of image files under a folder (one row per file, so chunk N
is the same files after a restart); its fingerprint changes when a file is added, removed or
rewritten. Each chunk is read, inspected, its overlays written, and its rows written to the
output (Parquet parts or CSV); a file that cannot be read goes to the quarantine with the
reason and the job goes on. After the job, the inspections are stored in the database for the
line's statistics (idempotent per job, so a rerun writes no duplicates).

With ``engine="ray"`` the chunks of files are inspected on a Ray cluster: each worker loads
the same registered inspector version (sha256 checked) with the same threshold, reads the
images and writes the overlays on storage every node mounts at the same path, and the
verdicts are stored here afterwards from the output, as for the local engine.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from trillium.core import jobs
from trillium.core.contract import PredictorFactory, job_output
from trillium.core.db import Database, connect
from trillium.manufacturing.images import discover_images
from trillium.manufacturing.linestats import store_inspections
from trillium.manufacturing.pipeline import Inspector

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ["image_id", "path", "verdict", "score", "threshold", "defect_type", "type_confidence", "overlay"]


@dataclass(frozen=True)
class InspectJobResult:
    job: jobs.JobResult
    stored: int
    output: Path


def inspect_chunk(inspector: Inspector, root: Path, overlays: Path, chunk: pd.DataFrame, _index: int) -> jobs.ProcessResult:
    """One chunk of files: a row per inspected image, unreadable files quarantined with the reason."""
    results, bad = inspector.inspect_files(list(chunk["path"]), overlay_dir=overlays)
    frame = pd.DataFrame([row for r in results for row in r.to_rows()],
                         columns=[c for c in OUTPUT_COLUMNS if c != "path"])
    frame.insert(1, "path", frame["image_id"])
    frame["image_id"] = [str(Path(p).relative_to(root)) for p in frame["path"]]
    frame.index = chunk.index[chunk["path"].isin(frame["path"]).to_numpy()]
    reasons = dict(bad)
    rejected = chunk[chunk["path"].isin(reasons)].copy()
    rejected["reason"] = rejected["path"].map(reasons)
    return jobs.ProcessResult(frame[OUTPUT_COLUMNS], rejected)


def inspect_folder(inspector: Inspector, root: str | os.PathLike[str], output: str | os.PathLike[str], *,
                   overlay_dir: str | os.PathLike[str] | None = None, line: str = "default",
                   chunk_rows: int = 64, db: Database | None = None, store: bool = True,
                   progress: bool = True, resume: bool = True, engine: str = "local", address: str | None = None,
                   workers: int | None = None,
                   max_failed_chunks: int | None = jobs.DEFAULT_MAX_FAILED_CHUNKS) -> InspectJobResult:
    """Inspect every image under ``root`` into ``output`` as a resumable job; store the verdicts.

    ``engine="ray"`` inspects on a Ray cluster (``address``; ``workers`` actors) into a
    directory of Parquet parts; the inspector must come from the registry, where the workers
    load it, and the folder, output and overlays must be on storage every node mounts.
    """
    out, sink = job_output(inspector, output, engine)
    db = db or connect()
    source = jobs.FolderSource(root, chunk_rows, discover=discover_images)
    overlays = Path(overlay_dir) if overlay_dir is not None else out.with_name(out.stem + "_overlays")
    if engine == "ray":
        overlays = overlays.resolve()  # workers do not share this process's working directory
    factory = PredictorFactory.of(inspector, inspect_chunk, source.root, overlays, engine=engine)

    name = f"manufacturing-inspect-{line}"
    job = jobs.run_batch(name, source, factory, sink, engine=engine, address=address, workers=workers, db=db,
                         chunk_rows=chunk_rows, progress=progress, resume=resume, max_failed_chunks=max_failed_chunks)
    stored = 0
    if store:
        frame = read_inspections(out)
        if len(frame):
            model_version = inspector.record.id if inspector.record is not None else None
            stored = store_inspections(frame[["image_id", "score", "verdict", "defect_type", "overlay", "threshold"]],
                                       db=db, line=line, model_version_id=model_version, job_id=job.job_id)
            _monitor(inspector, frame, db, job)
    log.info("inspected %d images (%d quarantined), stored %d", job.rows_out, job.rows_quarantined, stored)
    return InspectJobResult(job, stored, out)


def _monitor(inspector: Inspector, frame: pd.DataFrame, db: Database, job: jobs.JobResult) -> None:
    """Drift of the lot's images and scores against the inspector's profile (after the verdicts are stored)."""
    from trillium.core.errors import TrilliumError
    from trillium.manufacturing.monitoring import monitor_job

    try:
        monitor_job(inspector, frame, db=db, job_id=job.job_id, label=job.name)
    except TrilliumError:  # the verdicts are stored; a monitoring failure must not undo that
        log.exception("monitoring of job %s failed; its verdicts are stored", job.name)


def read_inspections(output: str | os.PathLike[str]) -> pd.DataFrame:
    """The rows a folder-inspection job wrote (Parquet parts or CSV)."""
    return jobs.read_output(output, empty_columns=OUTPUT_COLUMNS)
