"""Chest CT over HTTP: a zipped study in, ``202 Accepted`` and a study id out, the analysis in the background.

``ct_router(ctx)`` is included by the medical router (mounted at ``/v1/medical``), so its routes are:

- ``POST /v1/medical/ct/studies`` (scope ``medical:write``): a ``multipart/form-data`` body whose
  file field ``study`` is a zip of one CT series' DICOM files. The upload takes the guarded path
  of every upload (``trillium.core.untrusted`` through ``analyzer.save_study_upload``: size against
  ``upload_bytes``, then the archive's member count, names and expanded sizes) and then every
  member's DICOM header (``dicom_io.check_ct_series``: the checks ``load_ct`` makes before any
  pixel: DICOM at all, a CT series, whole tags and geometry). A refusal is a 4xx JSON error naming
  the member and the limit, and leaves no file. An accepted upload is saved under a name of ours,
  queued as a core ``Job`` (name ``ct-study``) and answered at once; no model runs in the request.
- ``GET /v1/medical/ct/studies/{id}`` (``medical:read``, audited): queued, running, done or
  failed (with the reason); when done the findings (centre in LPS mm, diameter, malignancy with
  its spread, Lung-RADS-style category), the model version and links to the files.
- ``GET /v1/medical/ct/studies/{id}/files/{name}`` (``medical:read``, audited): a heatmap PNG, the
  DICOM SEG or the DICOM SR of a done study; only names the analysis wrote into that study's folder.

Why a job table and not a task queue: the server already has a database every worker shares, and
a study is seconds to minutes of work, not thousands a second. Each worker process runs one
thread (started and stopped with the service) that claims a queued study with a conditional
``UPDATE jobs SET status='running' WHERE id=:id AND status='queued'`` (one winner, whatever the
number of workers), so whichever worker is free analyses it, and a ``GET`` to any worker reads the
status from the same row. The worker that accepted an upload is woken at once; the others look
every ``POLL_SECONDS``. While it analyses, the thread touches the row every ``HEARTBEAT_SECONDS``;
a study whose worker died (no heartbeat for ``STALE_SECONDS``) is queued again, and failed after
``MAX_ATTEMPTS`` such deaths, so a study that kills its worker cannot kill them all in turn.

The result is written the way the CT batch job writes it (the findings JSON, stored from that JSON
with ``store_study_json``), next to the heatmaps (``explain.explain_findings``) and the SEG and SR
(``dicom_export.export_findings``), in ``$TRILLIUM_HOME/service/ct/<study id>/``. The folder is built
under a temporary name and renamed into place before the study is stored, so a failure at any step
leaves no folder, no stored study and no upload behind: only the failed job with its message.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from trillium.core.access import KeyInfo
from trillium.core.config import home_dir
from trillium.core.db import Database, Job
from trillium.core.db.models import utcnow
from trillium.core.errors import InputValidationError, TrilliumError
from trillium.core.registry import ModelRecord
from trillium.core.service.context import ServiceContext
from trillium.core.service.errors import ERROR_RESPONSES, ErrorBody
from trillium.core.service.live import LiveModel
from trillium.core.untrusted import LimitExceededError
from trillium.medical.imaging.measure import lesion_kind

__all__ = ["CT_JOB", "CTStudyWorker", "claim_job", "ct_router", "requeue_stale"]

log = logging.getLogger(__name__)

#: The core ``Job.name`` of an uploaded study.
CT_JOB = "ct-study"
#: The upload route's full path (the core mounts the medical router at /v1/medical): its body may
#: be as large as ``upload_bytes`` rather than ``request_bytes``.
UPLOAD_PATH = "/v1/medical/ct/studies"
#: The registry model the analyses use (its ``production`` alias is followed without a restart).
MODEL_NAME = "chest-ct-nodules"
POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0
MAX_ATTEMPTS = 2
#: Study ids are the job table's integer ids (32-bit on PostgreSQL).
MAX_ID = 2**31 - 1
#: The files a study's folder may serve, by suffix.
MEDIA_TYPES = {".png": "image/png", ".dcm": "application/dicom"}
_FILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
RESULT_JSON = "result.json"

UPLOAD_DESCRIPTION = """\
Upload one chest CT series as a zip of its DICOM files, as `multipart/form-data` with the file in
the field `study` (for example `curl -H "X-API-Key: $KEY" -F study=@study.zip .../v1/medical/ct/studies`).
The body may be as large as the `upload_bytes` limit (TRILLIUM_LIMIT_UPLOAD_BYTES, default 4 GiB).

Before answering, the server checks the archive (member count, names, expanded sizes: a member that
climbs out with `../`, an archive or member expanding past `archive_bytes` / `member_bytes`) and
every member's DICOM header (a CT series, the tags and geometry the analysis needs); no pixel is
decoded and no model runs. A refusal is 413 (a limit) or 422 (anything else), naming the member and
the limit, and nothing is kept. An accepted study is answered `202 Accepted` with its id at once
and analysed in the background by whichever server worker is free: poll `links.self`.
"""

MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {
            "schema": {"type": "object", "required": ["study"], "properties": {
                "study": {"type": "string", "format": "binary", "contentMediaType": "application/zip",
                          "description": "A zip of the DICOM files of one CT series (sub-folders allowed)."}}},
        }},
    }
}

UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    202: {"description": "Accepted and queued; the analysis runs in the background: poll links.self."},
    400: {"model": ErrorBody, "description": "The multipart body is malformed."},
    415: {"model": ErrorBody, "description": "The body is not multipart/form-data."},
}

FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {"description": "The file: a heatmap overlay (PNG) or the DICOM SEG or SR of the findings.",
          "content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                      "application/dicom": {"schema": {"type": "string", "format": "binary"}}}},
}


# --------------------------------------------------------------------------- response bodies

class StudyLinks(BaseModel):
    """Where to look next."""

    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self", description="This study's status (poll it until done or failed).")
    seg: str | None = Field(None, description="The DICOM Segmentation of the findings (one segment per finding); "
                                              "absent before done, and when nothing was found.")
    sr: str | None = Field(None, description="The DICOM Comprehensive 3D SR measurement report (TID 1500); "
                                             "absent before done.")
    heatmaps: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Finding id -> attribution method (gradcam, ig) -> heatmap overlay PNG.")


class AcceptedLinks(BaseModel):
    """Where to poll."""

    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self", description="The study's status: poll it until done or failed.")


class StudyAccepted(BaseModel):
    """An upload that passed the checks and waits for a worker."""

    study_id: int = Field(description="The study's id (a core job id): GET /v1/medical/ct/studies/{study_id}.")
    status: Literal["queued"] = Field(description="Always queued: the analysis runs in the background.")
    links: AcceptedLinks


class ModelInfo(BaseModel):
    """The registered model version that produced the findings."""

    name: str = Field(description="Registry name.")
    version: int = Field(description="Registry version (the production alias when the analysis ran).")
    label: str = Field(description="name:vversion.")


class Finding(BaseModel):
    """One lung nodule (or mass, above 30 mm) found in the study."""

    id: int = Field(description="Finding number within the study, from 1, most probable nodule first.")
    center_mm: list[float] = Field(min_length=3, max_length=3,
                                   description="Centre in patient coordinates (DICOM LPS, mm): x, y, z.")
    center_kji: list[float] = Field(min_length=3, max_length=3,
                                    description="Centre as array indices of the series: slice, row, column.")
    kind: Literal["nodule", "mass"] = Field("nodule", description="A mass when the longest diameter exceeds 30 mm.")
    diameter_mm: float = Field(description="Longest axial diameter, mm.")
    short_axis_mm: float | None = Field(None, description="Longest diameter perpendicular to it in the same slice, mm.")
    craniocaudal_mm: float | None = Field(None, description="Extent along the body axis, mm (slices spanned).")
    mean_diameter_mm: float | None = Field(None, description="Mean of the long and short axes, mm (what Lung-RADS grades).")
    solid_diameter_mm: float | None = Field(None, description="Diameter of the solid part, mm (0 for ground glass).")
    volume_mm3: float | None = Field(None, description="Segmented volume, mm^3.")
    mean_hu: float | None = Field(None, description="Mean attenuation inside the nodule, Hounsfield units.")
    type: str = Field(description="Attenuation type: solid, part-solid or ground-glass.")
    category: str = Field(description="Lung-RADS-style category from size and type alone (2, 3, 4A, 4B; 4X for a "
                                      "solid or part-solid mass).")
    malignancy: float = Field(ge=0.0, le=1.0, description="The model's probability of malignancy.")
    malignancy_std: float | None = Field(None, ge=0.0, description="Its uncertainty: the standard deviation over "
                                                                   "Monte-Carlo dropout samples and folds.")
    nodule_probability: float | None = Field(None, ge=0.0, le=1.0, description="The detector's probability that "
                                                                              "the candidate is a nodule.")
    nodule_probability_std: float | None = Field(None, ge=0.0, description="Its standard deviation.")
    heatmaps: dict[str, str] = Field(default_factory=dict,
                                     description="Attribution method -> link to the heatmap overlay PNG.")


class StudyStatus(BaseModel):
    """An uploaded study: where its analysis stands and, once done, what it found."""

    study_id: int = Field(description="The study's id.")
    status: Literal["queued", "running", "done", "failed"] = Field(
        description="queued (waiting for a worker), running, done (findings below) or failed (error says why).")
    error: str | None = Field(None, description="Why the analysis failed (names the file); null otherwise.")
    submitted_at: datetime = Field(description="When the upload was accepted (UTC).")
    updated_at: datetime = Field(description="The last change of status, or the last heartbeat while running (UTC).")
    upload: str = Field(description="The client's file name of the upload (a label only).")
    series_uid: str = Field(description="SeriesInstanceUID of the analysed CT series.")
    study_uid: str = Field("", description="StudyInstanceUID.")
    patient_id: str | None = Field(None, description="PatientID of the series.")
    slices: int = Field(description="Slices in the series.")
    model: ModelInfo | None = Field(None, description="The model version that produced the findings (when done).")
    findings: list[Finding] | None = Field(None, description="The nodules found (when done; empty if none).")
    n_candidates: int | None = Field(None, description="Blob candidates the detector judged (when done).")
    timings_s: dict[str, float] | None = Field(None, description="Seconds per analysis step (when done).")
    warnings: list[str] = Field(default_factory=list, description="Warnings of the analysis (e.g. files skipped).")
    links: StudyLinks


# --------------------------------------------------------------------------- the job table

def claim_job(db: Database, job_id: int) -> bool:
    """Take a queued study for this worker: True for exactly one caller, whatever the number of workers."""
    with db.session() as s:
        result = s.execute(update(Job).where(Job.id == job_id, Job.name == CT_JOB, Job.status == "queued")
                           .values(status="running", updated_at=utcnow())
                           .execution_options(synchronize_session=False))
        return result.rowcount == 1  # type: ignore[attr-defined]


def _finish(db: Database, job_id: int, status: str, *, error: str | None = None, rows_out: int = 0) -> bool:
    """Close a running study (done or failed); False when it is no longer this worker's to close."""
    with db.session() as s:
        result = s.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                           .values(status=status, error=error, rows_out=rows_out, updated_at=utcnow())
                           .execution_options(synchronize_session=False))
        return result.rowcount == 1  # type: ignore[attr-defined]


def _heartbeat(db: Database, job_id: int) -> None:
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(updated_at=utcnow())
                  .execution_options(synchronize_session=False))


def requeue_stale(db: Database, stale_seconds: float = STALE_SECONDS, max_attempts: int = MAX_ATTEMPTS) -> list[int]:
    """Studies left running by a worker that died (no heartbeat for ``stale_seconds``): queued again,
    or failed once ``max_attempts`` workers died on them. Returns the ids taken back."""
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    with db.session() as s:
        rows = s.execute(select(Job.id, Job.params, Job.input_uri).where(
            Job.name == CT_JOB, Job.status == "running", Job.updated_at < cutoff)).all()
    taken = []
    for job_id, params, upload in rows:
        attempts = int((params or {}).get("attempts", 1))
        give_up = attempts >= max_attempts
        values: dict[str, Any] = {"updated_at": utcnow()}
        if give_up:
            values.update(status="failed", error=f"the analysis stopped {attempts} times without finishing (its "
                                                 "server worker was killed or restarted); upload the study again")
        else:
            values.update(status="queued")
        with db.session() as s:  # conditional: a heartbeat since the read keeps it with its worker
            won = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.updated_at < cutoff)
                            .values(**values).execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]
        if won:
            taken.append(job_id)
            log.warning("CT study %d: no heartbeat for %.0f s; %s", job_id, stale_seconds,
                        "failed" if give_up else "queued again")
            if give_up:
                Path(upload).unlink(missing_ok=True)
                _remove_outputs(_output_root(), job_id)
    return taken


def _output_root() -> Path:
    return home_dir() / "service" / "ct"


def _remove_outputs(root: Path, job_id: int) -> None:
    shutil.rmtree(root / str(job_id), ignore_errors=True)
    for partial in root.glob(f".{job_id}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


def _client_message(message: str, upload: str, label: str) -> str:
    """An error message for the client: the server's path of the upload replaced by the client's name."""
    return " ".join(message.replace(upload, label).split())


def _clean_label(name: str | None) -> str:
    """The client's file name as a label for messages: printable, valid UTF-8, at most 120 characters."""
    name = (name or "").encode("utf-8", "replace").decode("utf-8")
    label = "".join(ch for ch in name if ch.isprintable()).strip()[:120]
    return label or "study.zip"


# --------------------------------------------------------------------------- the background worker

class CTStudyWorker:
    """One per server worker process: a thread that claims queued studies and analyses them."""

    def __init__(self, db: Database, model: LiveModel, *, poll_seconds: float = POLL_SECONDS,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS, stale_seconds: float = STALE_SECONDS) -> None:
        self.db = db
        self.model = model
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reap = 0.0
        self.online: Any = None  # the per-day sample (``core.monitoring.online``), set at startup

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="ct-study-worker", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Look for queued studies now (this worker just accepted one)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """No new study is taken; a running one is waited for up to ``timeout`` s (after that, if the
        process exits, the study is queued again once its heartbeat is stale)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reap()
                if self.model.ready:
                    while not self._stop.is_set() and self.run_next():
                        pass
            except Exception:  # a database blip must not end the thread
                log.exception("CT study worker: poll failed; trying again in %.1f s", self.poll_seconds)
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _reap(self) -> None:
        now = time.monotonic()
        if now - self._last_reap >= max(self.heartbeat_seconds, 1.0):
            self._last_reap = now
            requeue_stale(self.db, self.stale_seconds)

    def run_next(self) -> bool:
        """Claim and analyse the oldest queued study; False when there was none to claim."""
        with self.db.session() as s:
            queued = s.scalars(select(Job.id).where(Job.name == CT_JOB, Job.status == "queued")
                               .order_by(Job.id).limit(16)).all()
        for job_id in queued:
            if claim_job(self.db, job_id):
                self._run(job_id)
                return True
        return False

    def _run(self, job_id: int) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None  # nosec B101 # type narrowing: a claimed job's row
            params = dict(job.params or {})
            params["attempts"] = int(params.get("attempts", 0)) + 1
            params["worker_pid"] = os.getpid()
            job.params = params
            upload, output = job.input_uri, job.output_uri
        label = params.get("label", "study.zip")
        analyzer = self.model.current  # read once: the whole study is answered by one version
        record: ModelRecord | None = analyzer.record
        self.db.audit("medical.ct.analyze", target=str(params.get("series_uid", "")),
                      actor=params.get("owner") or None, study_id=job_id, patient=params.get("patient_id"),
                      model=analyzer.model_label, worker_pid=os.getpid(), attempt=params["attempts"])
        stop_beat = threading.Event()

        def beat() -> None:
            while not stop_beat.wait(self.heartbeat_seconds):
                try:
                    _heartbeat(self.db, job_id)
                except Exception:  # the next beat tries again
                    log.warning("CT study %d: heartbeat failed", job_id, exc_info=True)

        beater = threading.Thread(target=beat, name=f"ct-study-{job_id}-heartbeat", daemon=True)
        beater.start()
        t0 = time.perf_counter()
        stored = False
        try:
            payload = analyze_study(analyzer, Path(upload), Path(output).parent, job_id=job_id, record=record)
            from trillium.medical.imaging.analyzer import store_study_json

            store_study_json(payload, db=self.db)
            stored = True
            _monitor_study(analyzer, payload, self.db, job_id)
            if self.online is not None and record is not None:
                _sample_online(self.online, record.version, payload)
            if not _finish(self.db, job_id, "done", rows_out=len(payload["findings"])):
                log.warning("CT study %d was taken back from this worker before it finished", job_id)
            log.info("CT study %d done in %.1f s: %d findings (%s)", job_id, time.perf_counter() - t0,
                     len(payload["findings"]), analyzer.model_label)
        except Exception as exc:  # every failure ends as a failed study with its reason
            if stored:  # whole and stored, only the status is missing: the stale check analyses it again
                log.exception("CT study %d: analysed and stored, but its status could not be recorded", job_id)
                return
            if isinstance(exc, TrilliumError | ValueError | OSError):
                text = str(exc) if isinstance(exc, TrilliumError) else f"{type(exc).__name__}: {exc}"
                message = _client_message(text, upload, label).replace(str(home_dir()), "$TRILLIUM_HOME")
                log.warning("CT study %d failed: %s", job_id, message)
            else:
                ref = uuid.uuid4().hex[:12]
                message = f"internal error while analysing the study (reference {ref} in the server log)"
                log.error("CT study %d failed (ref %s)", job_id, ref, exc_info=exc)
            _remove_outputs(Path(output).parent.parent, job_id)
            Path(upload).unlink(missing_ok=True)
            try:
                _finish(self.db, job_id, "failed", error=message)
            except Exception:  # the stale check fails it later
                log.exception("CT study %d: could not record its failure", job_id)
        finally:
            stop_beat.set()
            beater.join(timeout=5)


def _sample_online(collector: Any, version: int, payload: dict[str, Any]) -> None:
    """The study's numeric statistics and mean nodule probability into the day's sample (a study
    analysed before monitoring existed has none: not sampled). A failure here is logged: the study
    is stored already and must still be marked done."""
    import numpy as np

    from trillium.medical.imaging.monitoring import NUMERIC, study_frame

    stats = payload.get("monitoring")
    if not isinstance(stats, dict):
        return
    try:
        frame, score = study_frame([stats])
        collector.observe(version, frame[list(NUMERIC)].to_numpy(np.float64), score,
                          np.array([bool(payload.get("findings"))]), np.array([time.time()]))
    except Exception:  # the sample must never keep a stored study from being finished
        log.exception("CT study: its statistics could not be sampled for monitoring")


def _monitor_study(analyzer: Any, payload: dict[str, Any], db: Database, job_id: int) -> None:
    """The study's monitoring check (``imaging.monitoring.monitor_study``); a failure is logged and
    never fails the study, which is stored already."""
    from trillium.medical.imaging.monitoring import monitor_study

    try:
        monitor_study(analyzer, payload, db=db, job_id=job_id)
    except TrilliumError:
        log.exception("CT study %d: its monitoring check failed; the findings are stored", job_id)


def analyze_study(analyzer: Any, upload: Path, out_dir: Path, *, job_id: int,
                  record: ModelRecord | None) -> dict[str, Any]:
    """Analyse an accepted upload into ``out_dir`` (findings JSON, heatmaps, SEG and SR); returns the
    findings JSON. Built under a temporary name and renamed into place, so it is whole or absent."""
    from trillium.medical.imaging.dicom_export import export_findings
    from trillium.medical.imaging.explain import explain_findings

    root = out_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{job_id}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        result = analyzer.analyze(upload)
        explain_findings(result, analyzer.classifier, partial)
        result.heatmap_dir = str(out_dir)
        masks = [m.full_mask(result.shape) for m in result.measurements]
        export_findings(result.volume, result.findings, masks, partial)
        payload = result.as_json()
        payload.update(job_id=job_id, model_name=record.name if record else None,
                       model_version=record.version if record else None,
                       files=sorted(p.name for p in partial.iterdir() if p.suffix in MEDIA_TYPES))
        (partial / RESULT_JSON).write_text(json.dumps(payload, indent=2))
        if out_dir.exists():  # an earlier attempt whose worker died after the rename
            shutil.rmtree(out_dir)
        os.replace(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return payload


# --------------------------------------------------------------------------- the routes

def _load_analyzer(record: ModelRecord, _previous: Any) -> Any:
    from trillium.core.registry import ModelRegistry
    from trillium.medical.imaging.analyzer import StudyAnalyzer

    return StudyAnalyzer.from_registry(record.name, record.version, registry=ModelRegistry())


def _accept(db: Database, data: bytes, label: str, key: KeyInfo, model: str) -> tuple[int, dict[str, Any]]:
    """Check and save an upload and queue it; a refusal raises (naming the member) and keeps nothing."""
    from trillium.medical.imaging.analyzer import save_study_upload
    from trillium.medical.imaging.dicom_io import check_ct_series

    try:
        path = save_study_upload(data, label)
    except TrilliumError as exc:
        raise _refusal(exc, None, label) from None
    try:
        try:
            series = check_ct_series(path)
        except TrilliumError as exc:
            raise _refusal(exc, path, label) from None
        out_root = _output_root()
        params = {"label": label, "owner": key.owner, "key_id": key.key_id, "model": model,
                  "series_uid": series["series_uid"], "study_uid": series["study_uid"],
                  "patient_id": series["patient_id"], "study_date": series["study_date"],
                  "slices": series["slices"], "skipped": [_client_message(s, str(path), label)
                                                          for s in series["skipped"]][:20], "attempts": 0}
        with db.session() as s:
            job = Job(key=f"{CT_JOB}:{uuid.uuid4().hex}", name=CT_JOB, status="queued", input_uri=str(path),
                      output_uri="", params=params, rows_in=series["slices"], updated_at=utcnow())
            s.add(job)
            s.flush()
            job.output_uri = str(out_root / str(job.id) / RESULT_JSON)
            job_id = int(job.id)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return job_id, params


def _refusal(exc: TrilliumError, path: Path | None, label: str) -> TrilliumError:
    """A refused upload's error as the client sees it: its file name for the server's path, and the
    form field (or, for a limit, the limit) at fault."""
    if path is not None:
        exc.args = (_client_message(str(exc), str(path), label),)
    if not getattr(exc, "fields", None) and not isinstance(exc, LimitExceededError):
        exc.fields = ["study"]  # type: ignore[attr-defined]
    return exc


def _links(request: Request, job_id: int, payload: dict[str, Any] | None) -> StudyLinks:
    links = StudyLinks(self_=str(request.app.url_path_for("ct_study_status", study_id=str(job_id))))
    if payload is None:
        return links
    files = set(payload.get("files") or [])

    def url(name: str) -> str:
        return str(request.app.url_path_for("ct_study_file", study_id=str(job_id), name=name))

    links.seg = url("seg.dcm") if "seg.dcm" in files else None
    links.sr = url("sr.dcm") if "sr.dcm" in files else None
    for f in payload.get("findings") or []:
        maps = {m: url(n) for m, n in (f.get("heatmaps") or {}).items() if n in files}
        if maps:
            links.heatmaps[str(f["id"])] = maps
    return links


def _utc(moment: datetime) -> datetime:
    """SQLite hands back the stored UTC times without their zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _finding(f: dict[str, Any], heatmaps: dict[str, str]) -> Finding:
    return Finding(
        id=int(f["id"]), center_mm=[float(v) for v in f["center_mm"]],
        center_kji=[float(v) for v in f.get("center_kji", [0.0, 0.0, 0.0])],
        diameter_mm=float(f["diameter_mm"]), kind=f.get("kind") or lesion_kind(float(f["diameter_mm"])),
        **{k: _number(f.get(k)) for k in ("short_axis_mm", "craniocaudal_mm", "mean_diameter_mm", "solid_diameter_mm",
                                          "volume_mm3",
                                          "mean_hu", "malignancy_std", "nodule_probability",
                                          "nodule_probability_std")},
        type=str(f.get("type", "")), category=str(f.get("category", "")), malignancy=float(f["malignancy"]),
        heatmaps=heatmaps)


def ct_router(ctx: ServiceContext) -> APIRouter:
    """The chest-CT routes (prefix ``/ct``) and this worker's background analysis thread."""
    router = APIRouter(prefix="/ct")
    live = ctx.live_model(MODEL_NAME, _load_analyzer)
    worker = CTStudyWorker(ctx.db, live)

    def start() -> None:
        from trillium.core.monitoring.online import service_collector
        from trillium.medical.imaging.monitoring import NUMERIC, THRESHOLDS

        # the studies this worker analyses, sampled per day (server clock, UTC) on the numeric
        # statistics: a closed day is drift-tested like a batch job (each study alone meets the
        # quality rules at once, categorical ones such as an unseen kernel included)
        worker.online = service_collector(ctx, MODEL_NAME, names=NUMERIC, thresholds=THRESHOLDS, performance=False)
        worker.start()

    ctx.on_startup(start)
    ctx.on_shutdown(worker.stop)
    ctx.allow_large_upload(UPLOAD_PATH)
    db = ctx.db

    def load_job(study_id: int) -> tuple[Job, dict[str, Any]]:
        with db.session() as s:
            job = s.get(Job, study_id)
            if job is None or job.name != CT_JOB:
                raise HTTPException(404, f"no CT study with id {study_id}")
            s.expunge(job)
        return job, dict(job.params or {})

    def load_result(job: Job) -> dict[str, Any]:
        try:
            return json.loads(Path(job.output_uri).read_text())
        except (OSError, ValueError):
            log.error("CT study %d is done but its result %s cannot be read", job.id, job.output_uri)
            raise HTTPException(404, f"the result of CT study {job.id} is no longer on the server") from None

    def audit(request: Request, key: KeyInfo, job: Job, params: dict[str, Any], **details: Any) -> None:
        ctx.audit(request, key, "medical.ct.read", target=str(params.get("series_uid", "")),
                  patient=params.get("patient_id"), study_id=job.id, **details)

    @router.post("/studies", status_code=202, response_model=StudyAccepted, responses=UPLOAD_RESPONSES,
                 summary="Upload a zipped CT study for analysis (202; analysed in the background)",
                 description=UPLOAD_DESCRIPTION, openapi_extra=MULTIPART_BODY, name="ct_study_upload")
    async def upload_study(request: Request, response: Response,
                           key: KeyInfo = ctx.require("medical:write")) -> StudyAccepted:
        live.current  # noqa: B018 - 503 before reading a body the server cannot analyse
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise HTTPException(415, f"the body must be multipart/form-data with the zip in the field 'study' "
                                     f"(got {content_type or 'no Content-Type'})")
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("study")
            if not isinstance(upload, UploadFile):
                refused = InputValidationError("the form field 'study' must be a file: the zip of the DICOM series")
                refused.fields = ["study"]  # type: ignore[attr-defined]
                raise refused
            label = _clean_label(upload.filename)
            data = await upload.read()
        job_id, params = await run_in_threadpool(_accept, db, data, label, key, live.label)
        del data
        worker.wake()
        ctx.audit(request, key, "medical.ct.upload", target=str(params["series_uid"]),
                  patient=params["patient_id"], study_id=job_id, upload=label, slices=params["slices"])
        self_url = _links(request, job_id, None).self_
        response.headers["Location"] = self_url
        return StudyAccepted(study_id=job_id, status="queued", links=AcceptedLinks(self_=self_url))

    @router.get("/studies/{study_id}", response_model=StudyStatus, responses=ERROR_RESPONSES,
                summary="A CT study's status and, once done, its findings", name="ct_study_status")
    def study_status(request: Request, study_id: int = PathParam(ge=1, le=MAX_ID, description="The study's id."),
                     key: KeyInfo = ctx.require("medical:read")) -> StudyStatus:
        job, params = load_job(study_id)
        payload = load_result(job) if job.status == "done" else None
        audit(request, key, job, params, status=job.status)
        links = _links(request, study_id, payload)
        body = StudyStatus(
            study_id=study_id, status=job.status, error=job.error if job.status == "failed" else None,  # type: ignore[arg-type]
            submitted_at=_utc(job.created_at), updated_at=_utc(job.updated_at), upload=str(params.get("label", "")),
            series_uid=str(params.get("series_uid", "")), study_uid=str(params.get("study_uid", "")),
            patient_id=params.get("patient_id"), slices=int(params.get("slices", 0)), links=links,
            warnings=[f"skipped {s}" for s in params.get("skipped", [])])
        if payload is not None:
            if payload.get("model_name") and payload.get("model_version") is not None:
                body.model = ModelInfo(name=payload["model_name"], version=int(payload["model_version"]),
                                       label=f"{payload['model_name']}:v{payload['model_version']}")
            body.findings = [_finding(f, links.heatmaps.get(str(f["id"]), {})) for f in payload["findings"]]
            body.n_candidates = int(payload.get("n_candidates", 0))
            body.timings_s = {k: float(v) for k, v in (payload.get("timings_s") or {}).items()}
            body.warnings += [str(w) for w in payload.get("warnings") or []]
        return body

    @router.get("/studies/{study_id}/files/{name}", response_class=FileResponse, responses=FILE_RESPONSES,
                summary="A heatmap PNG, the DICOM SEG or the DICOM SR of a done CT study", name="ct_study_file")
    def study_file(request: Request, study_id: int = PathParam(ge=1, le=MAX_ID, description="The study's id."),
                   name: str = PathParam(pattern=_FILE_NAME, description="A file name from the study's links."),
                   key: KeyInfo = ctx.require("medical:read")) -> FileResponse:
        job, params = load_job(study_id)
        if job.status != "done":
            raise HTTPException(404, f"CT study {study_id} is {job.status}; its files exist once it is done")
        payload = load_result(job)
        folder = Path(job.output_uri).parent.resolve()
        path = (folder / name).resolve()
        suffix = path.suffix.lower()
        if (name not in (payload.get("files") or []) or suffix not in MEDIA_TYPES
                or not path.is_relative_to(folder) or not path.is_file()):
            raise HTTPException(404, f"CT study {study_id} has no file {name!r}")
        audit(request, key, job, params, file=name)
        return FileResponse(path, media_type=MEDIA_TYPES[suffix], filename=name,
                            headers={"Cache-Control": "no-store"})

    return router
