"""Chest CT over HTTP against a real ``trillium serve`` (2 workers): ``/v1/medical/ct/studies``.

The seeded home holds a phantom CT series with its truth (``truth.json``) and a small registered
nodule model. The phantom is zipped and uploaded: the upload must be answered ``202`` at once
while a worker analyses it in the background, and the findings it reports must find the
phantom's nodule and equal what the in-process ``StudyAnalyzer`` gives for the same files. Then
the files (heatmaps, SEG, SR), access by scope, the audit trail, and every kind of bad upload:
each a 4xx JSON error naming the member and the limit, with nothing kept. The job claim and the
recovery from a dead worker are checked in-process on a database of their own.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import sqlite3
import struct
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from trillium.core import db as dbmod

URL = "/v1/medical/ct/studies"
POST_SECONDS = 2.0  # the upload's answer, while analyses run in the workers
DONE_SECONDS = 180.0  # a phantom study analyses in about 6 s on this 2-core machine; generous for load
ServiceProcess = object  # the harness's class (tests/service/conftest.py)


def headers(service_home: dict, who: str) -> dict[str, str]:
    """The API key of a role of the seeded home (as the harness's ``headers``)."""
    return {"X-API-Key": service_home["keys"][who]}


def _client(service: ServiceProcess) -> httpx.Client:
    return httpx.Client(base_url=service.url, timeout=120)  # type: ignore[attr-defined]


def _zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _series(service_home: dict, edit: Callable[[int, pydicom.Dataset], None] | None = None) -> dict[str, bytes]:
    """The seeded phantom's DICOM files as zip members (``series/<n>.dcm``), each edited by ``edit``."""
    folder = Path(service_home["seed"]["medical"]["ct_folder"])
    members = {}
    for n, path in enumerate(sorted(folder.glob("*.dcm"))):
        if edit is None:
            members[f"series/{path.name}"] = path.read_bytes()
            continue
        ds = pydicom.dcmread(path)
        edit(n, ds)
        buf = io.BytesIO()
        ds.save_as(buf)
        members[f"series/{path.name}"] = buf.getvalue()
    return members


def _post(service: ServiceProcess, service_home: dict, data: bytes, *, who: str = "medical",
          filename: str = "study.zip") -> tuple[httpx.Response, float]:
    with _client(service) as c:
        t0 = time.perf_counter()
        r = c.post(URL, files={"study": (filename, data, "application/zip")}, headers=headers(service_home, who))
        return r, time.perf_counter() - t0


def _wait(service: ServiceProcess, service_home: dict, study_id: int, timeout: float = DONE_SECONDS) -> dict:
    deadline = time.monotonic() + timeout
    with _client(service) as c:
        while True:
            r = c.get(f"{URL}/{study_id}", headers=headers(service_home, "medical"))
            assert r.status_code == 200, r.text
            body = r.json()
            if body["status"] in ("done", "failed"):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"study {study_id} still {body['status']} after {timeout:.0f} s:\n"
                                     f"{service.log()[-3000:]}")  # type: ignore[attr-defined]
            time.sleep(0.3)


def _db(service_home: dict) -> sqlite3.Connection:
    return sqlite3.connect(service_home["home"] / "trillium.db", timeout=30)


def _uploads(service_home: dict) -> list[str]:
    folder = service_home["home"] / "uploads" / "ct"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _ct_jobs(service_home: dict) -> int:
    with _db(service_home) as conn:
        return conn.execute("SELECT COUNT(*) FROM jobs WHERE name = 'ct-study'").fetchone()[0]


@pytest.fixture(scope="module")
def study_zip(service_home: dict) -> bytes:
    return _zip(_series(service_home))


@pytest.fixture(scope="module")
def uploaded(service: ServiceProcess, service_home: dict, study_zip: bytes) -> dict:
    """Two uploads of the phantom, the second sent while the first is being analysed; both done."""
    first, first_s = _post(service, service_home, study_zip)
    assert first.status_code == 202, first.text
    with _client(service) as c:
        early = c.get(f"{URL}/{first.json()['study_id']}", headers=headers(service_home, "medical")).json()
    second, second_s = _post(service, service_home, study_zip, filename="again.zip")
    assert second.status_code == 202, second.text
    t0 = time.perf_counter()
    done = [_wait(service, service_home, r.json()["study_id"]) for r in (first, second)]
    return {"accepted": first, "post_seconds": [first_s, second_s], "early": early, "done": done,
            "second": second.json(), "wait_seconds": time.perf_counter() - t0}


@pytest.fixture(scope="module")
def in_process(service_home: dict) -> dict:
    """The oracle: the production analyzer of the seeded registry, run in this process on the folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRILLIUM_HOME", str(service_home["home"]))
        mp.delenv("TRILLIUM_DB_URL", raising=False)
        dbmod.reset_connections()
        try:
            from trillium.core.registry import ModelRegistry
            from trillium.medical.imaging.analyzer import StudyAnalyzer

            analyzer = StudyAnalyzer.from_registry(registry=ModelRegistry(dbmod.connect()))
            result = analyzer.analyze(service_home["seed"]["medical"]["ct_folder"])
        finally:
            dbmod.reset_connections()
    return {"findings": result.findings, "model": analyzer.model_label, "monitoring": result.monitoring}


# --------------------------------------------------------------------------- the happy path

def test_upload_is_accepted_at_once_and_analysed_in_the_background(uploaded: dict, service_home: dict) -> None:
    r = uploaded["accepted"]
    body = r.json()
    assert set(body) == {"study_id", "status", "links"}
    assert body["status"] == "queued" and isinstance(body["study_id"], int)
    assert body["links"] == {"self": f"{URL}/{body['study_id']}"}
    assert r.headers["location"] == body["links"]["self"]
    # the request did not hold the analysis: right after it the study was not done yet ...
    assert uploaded["early"]["status"] in ("queued", "running"), uploaded["early"]
    assert uploaded["early"]["findings"] is None
    # ... and each answer came at once, the second while the first study was being analysed
    assert max(uploaded["post_seconds"]) < POST_SECONDS, uploaded["post_seconds"]
    assert [d["status"] for d in uploaded["done"]] == ["done", "done"], [d.get("error") for d in uploaded["done"]]
    assert uploaded["second"]["study_id"] != body["study_id"]
    # each study was checked against the classifier's reference profile: one monitoring run per study job
    with _db(service_home) as conn:
        runs = conn.execute("SELECT scope, rows, label, model_name FROM monitoring_runs WHERE job_id = ?",
                            (body["study_id"],)).fetchall()
    assert [tuple(r) for r in runs] == [("job", 1, "ct-study", "chest-ct-nodules")]


def test_studies_are_sampled_per_day_and_checked_for_drift(service: ServiceProcess, service_home: dict,
                                                           study_zip: bytes, in_process: dict, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside each study's own quality check, a worker samples the studies it analyses per day
    (server clock, UTC) on the numeric statistics, written at every study here
    (``TRILLIUM_MONITOR_FLUSH_SECONDS=0``) and at shutdown; the day is drift-tested against the
    classifier version's profile like a batch job."""
    from datetime import UTC, datetime

    from tests.service.conftest import copy_home
    from trillium.core.monitoring import store
    from trillium.core.monitoring.online import check_days, read_day, sampled_columns
    from trillium.core.registry import ModelRegistry
    from trillium.medical.imaging.monitoring import NUMERIC

    home = copy_home(service_home["home"], tmp_path / "home")
    server = type(service)(home, workers=1, env={"TRILLIUM_MONITOR_FLUSH_SECONDS": "0"}).wait_ready()
    try:
        ids = []
        for _ in range(3):
            r, _ = _post(server, service_home, study_zip)
            assert r.status_code == 202, r.text
            ids.append(r.json()["study_id"])
        done = [_wait(server, service_home, i) for i in ids]
        assert [d["status"] for d in done] == ["done"] * 3, [d.get("error") for d in done]
    finally:
        server.stop()
    monkeypatch.setenv("TRILLIUM_HOME", str(home))
    dbmod.reset_connections()
    registry = ModelRegistry(dbmod.connect())
    version = registry.get("chest-ct-nodules", "production").version
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    folder = home / "monitoring" / "online" / "chest-ct-nodules" / f"v{version}" / day
    x, scores, with_findings, seen = read_day(folder)
    assert seen == 3 and sampled_columns(folder) == list(NUMERIC) and x.shape == (3, len(NUMERIC))
    # the same study three times: each row the in-process analyzer's statistics of that study
    want = np.array([np.nan if in_process["monitoring"][c] is None else in_process["monitoring"][c] for c in NUMERIC])
    assert np.allclose(x, want, rtol=1e-6, equal_nan=True) and with_findings.all() == bool(in_process["findings"])
    assert np.allclose(scores, in_process["monitoring"]["mean_nodule_probability"], rtol=1e-6)
    (run_id,) = check_days("chest-ct-nodules", registry=registry, days=[(version, day)], performance=False)
    run = store.runs("chest-ct-nodules", scope="day").set_index("run_id").loc[run_id]
    assert run["label"] == "online" and run["day"] == day and run["rows"] == 3
    assert [c["name"] for c in run["columns"]] == list(NUMERIC)


def test_findings_find_the_phantoms_nodules(uploaded: dict, service_home: dict) -> None:
    truth = json.loads((Path(service_home["seed"]["medical"]["ct_folder"]) / "truth.json").read_text())
    body = uploaded["done"][0]
    assert body["series_uid"] == truth["series_uid"] == service_home["seed"]["medical"]["series_uid"]
    assert body["patient_id"] == truth["patient_id"] and body["slices"] == truth["shape"][0]
    name, version, _ = service_home["seed"]["medical"]["model"]
    assert body["model"] == {"name": name, "version": version, "label": f"{name}:v{version}"}
    assert body["findings"], "no findings"
    for nodule in truth["nodules"]:
        near = [f for f in body["findings"]
                if np.linalg.norm(np.subtract(f["center_mm"], nodule["center_mm"])) <= nodule["diameter_mm"] / 2]
        assert near, f"true nodule {nodule['id']} at {nodule['center_mm']} (d {nodule['diameter_mm']} mm) not found " \
                     f"in {[f['center_mm'] for f in body['findings']]}"
        assert abs(near[0]["diameter_mm"] - nodule["diameter_mm"]) <= max(2.5, 0.25 * nodule["diameter_mm"])
        assert near[0]["type"] == nodule["type"]
    for f in body["findings"]:
        assert 0.0 <= f["malignancy"] <= 1.0 and f["malignancy_std"] >= 0.0
        assert f["category"] in ("2", "3", "4A", "4B")


def test_findings_equal_the_in_process_analyzer(uploaded: dict, in_process: dict) -> None:
    served = uploaded["done"][0]
    assert served["model"]["label"] == in_process["model"]
    expected = in_process["findings"]
    assert [f["id"] for f in served["findings"]] == [f["id"] for f in expected]
    for got, want in zip(served["findings"], expected, strict=True):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-3), (got["id"], key)
    # the second upload of the same files was analysed alike
    assert [f["center_mm"] for f in uploaded["done"][1]["findings"]] == [f["center_mm"] for f in served["findings"]]


def test_files_download_seg_sr_and_heatmaps(service: ServiceProcess, service_home: dict, uploaded: dict) -> None:
    body = uploaded["done"][0]
    links = body["links"]
    assert links["seg"] and links["sr"] and links["heatmaps"]
    with _client(service) as c:
        seg = c.get(links["seg"], headers=headers(service_home, "medical"))
        sr = c.get(links["sr"], headers=headers(service_home, "viewer"))
        pngs = [c.get(url, headers=headers(service_home, "medical"))
                for maps in links["heatmaps"].values() for url in maps.values()]
    assert seg.status_code == 200 and seg.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(seg.content))
    assert ds.Modality == "SEG" and len(ds.SegmentSequence) == len(body["findings"])
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == body["series_uid"]
    report = pydicom.dcmread(io.BytesIO(sr.content))
    assert sr.status_code == 200 and report.Modality == "SR" and report.StudyInstanceUID == body["study_uid"]
    assert len(pngs) == 2 * len(body["findings"])  # gradcam and integrated gradients per finding
    for r in pngs:
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size[0] > 0
    for f in body["findings"]:
        assert f["heatmaps"] == links["heatmaps"][str(f["id"])]


@pytest.mark.parametrize("name", [
    "..%2F..%2F..%2Ftrillium.db",  # decoded to slashes: no such route
    "%2E%2E%2F%2E%2E%2Ftrillium.db",
    "..",
    "%2E%2E",
    "..%5C..%5Ctrillium.db",  # a backslash: not a file name
    "%2Fetc%2Fpasswd",
    ".hidden",
    "result.json",  # in the study's folder, but not one of its files (it names server paths)
    "seg.dcm%00.png",
    "nothing.png",
])
def test_files_route_refuses_anything_but_the_studys_files(service: ServiceProcess, service_home: dict,
                                                          uploaded: dict, name: str) -> None:
    study_id = uploaded["done"][0]["study_id"]
    # http.client sends the path byte for byte (an HTTP client library would resolve the dot segments)
    conn = http.client.HTTPConnection("127.0.0.1", int(service.url.rsplit(":", 1)[1]), timeout=30)  # type: ignore[attr-defined]
    try:
        conn.request("GET", f"{URL}/{study_id}/files/{name}", headers=headers(service_home, "medical"))
        r = conn.getresponse()
        content = r.read()
    finally:
        conn.close()
    assert r.status in (404, 422), (name, r.status, content[:200])
    assert r.getheader("content-type") == "application/json"
    assert json.loads(content)["error"] in ("not_found", "invalid_input")
    assert b"SQLite format" not in content and b"root:" not in content


def test_unknown_or_malformed_ids(service: ServiceProcess, service_home: dict, uploaded: dict) -> None:
    with _client(service) as c:
        missing = c.get(f"{URL}/2000000000", headers=headers(service_home, "medical"))
        files = c.get(f"{URL}/2000000000/files/seg.dcm", headers=headers(service_home, "medical"))
        bad = [c.get(f"{URL}/{v}", headers=headers(service_home, "medical")) for v in ("abc", "0", "-1", "1e3", "9" * 30)]
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert "2000000000" in missing.json()["message"]
    assert files.status_code == 404
    assert [r.status_code for r in bad] == [422] * 5, [r.text for r in bad]


# --------------------------------------------------------------------------- access and audit

def test_access_by_scope(service: ServiceProcess, service_home: dict, uploaded: dict, study_zip: bytes) -> None:
    study = uploaded["done"][0]
    status_url = f"{URL}/{study['study_id']}"
    before = _ct_jobs(service_home)
    with _client(service) as c:
        assert c.get(status_url).status_code == 401
        assert c.get(study["links"]["seg"]).status_code == 401
        assert c.get(status_url, headers={"X-API-Key": "trl_000000000000_" + "x" * 43}).status_code == 401
        assert c.get(status_url, headers=headers(service_home, "finance")).status_code == 403
        assert c.get(study["links"]["sr"], headers=headers(service_home, "manufacturing")).status_code == 403
        viewer = c.get(status_url, headers=headers(service_home, "viewer"))
        admin = c.get(status_url, headers=headers(service_home, "admin"))
    assert viewer.status_code == 200 and viewer.json()["findings"] == study["findings"]
    assert admin.status_code == 200
    no_key = httpx.post(service.url + URL, files={"study": ("s.zip", study_zip)}, timeout=60)  # type: ignore[attr-defined]
    assert no_key.status_code == 401 and no_key.json()["error"] == "unauthorized"
    for who in ("viewer", "finance"):
        r, _ = _post(service, service_home, study_zip, who=who)
        assert r.status_code == 403 and r.json()["error"] == "forbidden" and "medical:write" in r.json()["message"]
    assert _ct_jobs(service_home) == before  # refused callers queued nothing


def test_reads_and_downloads_are_audited_with_the_key_owner(service: ServiceProcess, service_home: dict,
                                                            uploaded: dict) -> None:
    study = uploaded["done"][0]
    with _db(service_home) as conn:
        last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_log").fetchone()[0]
    with _client(service) as c:
        assert c.get(f"{URL}/{study['study_id']}", headers=headers(service_home, "viewer")).status_code == 200
        assert c.get(study["links"]["seg"], headers=headers(service_home, "medical")).status_code == 200
        assert c.get(f"{URL}/{study['study_id']}").status_code == 401  # no key: nothing read, nothing audited
    with _db(service_home) as conn:
        rows = conn.execute("SELECT actor, action, target, details FROM audit_log WHERE id > ? ORDER BY id",
                            (last,)).fetchall()
        analysed = conn.execute("SELECT actor, details FROM audit_log WHERE action = 'medical.ct.analyze'").fetchall()
        uploads = conn.execute("SELECT actor, details FROM audit_log WHERE action = 'medical.ct.upload'").fetchall()
    reads = [(actor, target, json.loads(details)) for actor, action, target, details in rows
             if action == "medical.ct.read"]
    assert [(a, t) for a, t, _ in reads] == [("viewer-caller", study["series_uid"]),
                                            ("medical-caller", study["series_uid"])], rows
    patient = service_home["seed"]["medical"]["ct_patient"]
    assert all(d["patient"] == patient and d["study_id"] == study["study_id"] for _, _, d in reads)
    assert reads[1][2]["file"] == "seg.dcm" and reads[0][2]["client"] == "127.0.0.1"
    # the upload and the analysis are on record too: each accepted study analysed by exactly one worker
    for done in uploaded["done"]:
        runs = [a for a, d in analysed if json.loads(d)["study_id"] == done["study_id"]]
        assert runs == ["medical-caller"], runs
        assert [a for a, d in uploads if json.loads(d)["study_id"] == done["study_id"]] == ["medical-caller"]


# --------------------------------------------------------------------------- bad uploads

def _patch_declared_sizes(data: bytes, size: int) -> bytes:
    """Make each central-directory entry declare ``size`` expanded bytes (what a zip bomb declares)."""
    out, pos = bytearray(data), 0
    while (pos := out.find(b"PK\x01\x02", pos)) >= 0:
        out[pos + 24:pos + 28] = struct.pack("<I", size)
        pos += 4
    return bytes(out)


def _patch_member_count(data: bytes, count: int) -> bytes:
    out = bytearray(data)
    pos = out.rfind(b"PK\x05\x06")
    out[pos + 8:pos + 12] = struct.pack("<HH", count, count)
    return bytes(out)


def _lying_member() -> bytes:
    """A member of 5 MB of zeros whose headers declare 1,000 bytes."""
    data = _zip({"bomb.dcm": b"\0" * 5_000_000})
    out, pos = bytearray(data), 0
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = out.find(sig)
        out[pos + offset:pos + offset + 4] = struct.pack("<I", 1000)
    return bytes(out)


def _without(tag: str, slice_index: int) -> Callable[[int, pydicom.Dataset], None]:
    def edit(n: int, ds: pydicom.Dataset) -> None:
        if n == slice_index:
            delattr(ds, tag)
    return edit


def _modality(value: str) -> Callable[[int, pydicom.Dataset], None]:
    def edit(_: int, ds: pydicom.Dataset) -> None:
        ds.Modality = value
    return edit


def _first_member(service_home: dict) -> str:
    return "series/" + min(Path(service_home["seed"]["medical"]["ct_folder"]).glob("*.dcm")).name


BAD_UPLOADS: dict[str, tuple[Callable[[dict], bytes], int, Callable[[dict], list[str]]]] = {
    # case: (the zip, the status, what the message must name)
    "not-a-zip": (lambda h: b"%PDF-1.4 this is not an archive", 422,
                  lambda h: ["bad.zip", "not a zip archive"]),
    "empty-zip": (lambda h: _zip({}), 422, lambda h: ["bad.zip", "holds no files"]),
    "no-dicom": (lambda h: _zip({"readme.txt": b"hello", "scans/photo.jpg": b"\xff\xd8\xff\xe0 jpeg"}), 422,
                 lambda h: ["bad.zip!readme.txt", "no DICOM files"]),
    "garbled-dicom": (lambda h: _zip({"slice1.dcm": b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" * 8}), 422,
                      lambda h: ["bad.zip!slice1.dcm"]),
    "climbs-out": (lambda h: _zip({"../escape.dcm": b"x", "ok.dcm": b"y"}), 422,
                   lambda h: ["../escape.dcm", "climbs out"]),
    "climbs-out-backslash": (lambda h: _zip({"series\\..\\..\\escape.dcm": b"x"}), 422,
                             lambda h: ["escape.dcm", "climbs out"]),
    "absolute-name": (lambda h: _zip({"/etc/cron.d/x.dcm": b"x"}), 422, lambda h: ["/etc/cron.d/x.dcm", "absolute"]),
    "member-bomb": (lambda h: _patch_declared_sizes(_zip({"bomb.dcm": b"\0" * 1000}), 0xF000_0000), 413,
                    lambda h: ["bad.zip!bomb.dcm", "4,026,531,840", "1,073,741,824", "TRILLIUM_LIMIT_MEMBER_BYTES"]),
    "archive-bomb": (lambda h: _patch_declared_sizes(_zip({f"s{i}.dcm": b"\0" for i in range(8)}), 0x3FFF_0000), 413,
                     lambda h: ["bad.zip", "members' declared expanded size", "TRILLIUM_LIMIT_ARCHIVE_BYTES"]),
    "member-count": (lambda h: _patch_member_count(_zip({"a.dcm": b"x"}), 60_000), 413,
                     lambda h: ["bad.zip", "member count is 60,000", "TRILLIUM_LIMIT_ARCHIVE_MEMBERS"]),
    "lying-header": (lambda h: _lying_member(), 422, lambda h: ["bad.zip!bomb.dcm", "corrupt archive member"]),
    "not-ct": (lambda h: _zip(_series(h, _modality("MR"))), 422,
               lambda h: ["bad.zip!series/", "Modality (0008,0060)", "MR"]),
    "missing-position": (lambda h: _zip(_series(h, _without("ImagePositionPatient", 0))), 422,
                         lambda h: [f"bad.zip!{_first_member(h)}", "missing tag ImagePositionPatient"]),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_upload_is_refused_naming_the_member_and_nothing_is_kept(service: ServiceProcess, service_home: dict,
                                                                      case: str) -> None:
    make, status, named = BAD_UPLOADS[case]
    data = make(service_home)
    uploads, jobs = _uploads(service_home), _ct_jobs(service_home)
    r, seconds = _post(service, service_home, data, filename="bad.zip")
    assert r.status_code == status, (case, r.status_code, r.text[:500])
    body = r.json()
    assert set(body) == {"error", "message", "fields"}
    assert body["error"] == ("too_large" if status == 413 else "invalid_input")
    assert body["fields"] == ([re.search(r"TRILLIUM_LIMIT_(\w+)", body["message"])[1].lower()]  # type: ignore[index]
                              if status == 413 else ["study"]), body
    for part in named(service_home):
        assert part in body["message"], (case, part, body["message"])
    assert str(service_home["home"]) not in body["message"]  # the client's name, never the server's path
    assert seconds < POST_SECONDS
    assert _uploads(service_home) == uploads and _ct_jobs(service_home) == jobs


def test_upload_form_errors(service: ServiceProcess, service_home: dict, study_zip: bytes) -> None:
    key = headers(service_home, "medical")
    with _client(service) as c:
        raw = c.post(URL, content=study_zip, headers={**key, "Content-Type": "application/zip"})
        no_field = c.post(URL, files={"other": ("s.zip", study_zip)}, headers=key)
        text_field = c.post(URL, data={"study": "not a file"}, files={"x": ("x", b"")}, headers=key)
    assert raw.status_code == 415 and "multipart/form-data" in raw.json()["message"]
    assert no_field.status_code == 422 and "'study'" in no_field.json()["message"]
    assert no_field.json()["fields"] == ["study"]
    assert text_field.status_code == 422 and "'study'" in text_field.json()["message"]


def test_upload_limit_is_upload_bytes_not_request_bytes(service: ServiceProcess, service_home: dict) -> None:
    """The CT route takes bodies past ``request_bytes`` (64 MiB), up to ``upload_bytes`` (4 GiB)."""
    junk = b"\x00not a zip" * (64 * 1024 * 1024 // 10 + 1000)  # just past 64 MiB
    r, _ = _post(service, service_home, junk, filename="big.zip")
    assert r.status_code == 422 and "big.zip: not a zip archive" in r.json()["message"], r.text[:300]
    # a declared 5 GiB body is refused from its Content-Length, before a byte of it is read
    conn = http.client.HTTPConnection("127.0.0.1", int(service.url.rsplit(":", 1)[1]), timeout=30)  # type: ignore[attr-defined]
    try:
        conn.putrequest("POST", URL)
        for name, value in {**headers(service_home, "medical"), "Content-Type": "multipart/form-data; boundary=x",
                            "Content-Length": str(5 * 1024**3)}.items():
            conn.putheader(name, value)
        conn.endheaders()  # and no body
        answer = conn.getresponse()
        refused = json.loads(answer.read())
    finally:
        conn.close()
    assert answer.status == 413, refused
    assert refused["fields"] == ["upload_bytes"] and "TRILLIUM_LIMIT_UPLOAD_BYTES" in refused["message"]


def test_a_failure_in_the_background_fails_the_study_and_stores_nothing(service: ServiceProcess,
                                                                         service_home: dict) -> None:
    """Headers fine (so accepted), one slice's pixel data cut short: the worker fails it, with the member."""
    series_uid = str(generate_uid())
    victim = 3

    def edit(n: int, ds: pydicom.Dataset) -> None:
        ds.SeriesInstanceUID = series_uid
        if n == victim:
            ds.PixelData = ds.PixelData[:1000]

    members = _series(service_home, edit)
    r, _ = _post(service, service_home, _zip(members), filename="cut.zip")
    assert r.status_code == 202, r.text
    study_id = r.json()["study_id"]
    body = _wait(service, service_home, study_id)
    assert body["status"] == "failed" and body["findings"] is None and body["model"] is None
    member = sorted(members)[victim]
    assert f"cut.zip!{member}" in body["error"] and "PixelData" in body["error"], body["error"]
    assert str(service_home["home"]) not in body["error"]
    with _db(service_home) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM imaging_studies WHERE series_uid = ?", (series_uid,)).fetchone()
        upload = conn.execute("SELECT input_uri FROM jobs WHERE id = ?", (study_id,)).fetchone()[0]
    assert stored[0] == 0
    assert not Path(upload).exists()
    assert not (service_home["home"] / "service" / "ct" / str(study_id)).exists()
    assert not list((service_home["home"] / "service" / "ct").glob(f".{study_id}.partial-*"))
    with _client(service) as c:
        files = c.get(f"{URL}/{study_id}/files/sr.dcm", headers=headers(service_home, "medical"))
    assert files.status_code == 404


def test_the_openapi_schema_documents_the_ct_routes(service: ServiceProcess) -> None:
    schema = httpx.get(service.url + "/openapi.json", timeout=30).json()  # type: ignore[attr-defined]
    post = schema["paths"][URL]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert "study" in post["requestBody"]["content"]["multipart/form-data"]["schema"]["required"]
    assert {"202", "400", "401", "403", "413", "415", "422", "503"} <= set(post["responses"])
    status = schema["paths"][URL + "/{study_id}"]["get"]["responses"]
    assert status["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/StudyStatus")
    assert status["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    files = schema["paths"][URL + "/{study_id}/files/{name}"]["get"]["responses"]
    assert {"image/png", "application/dicom"} <= set(files["200"]["content"])
    finding = schema["components"]["schemas"]["Finding"]["properties"]
    assert all(finding[k].get("description") for k in ("center_mm", "diameter_mm", "malignancy", "malignancy_std"))


# --------------------------------------------------------------------------- the job table, in-process

@pytest.fixture
def job_db(trillium_home: Path) -> Iterator[object]:
    yield dbmod.connect()


def _job(db: object, status: str, **fields: object) -> int:
    from trillium.core.db import Job
    from trillium.medical.imaging.service import CT_JOB

    with db.session() as s:  # type: ignore[attr-defined]
        job = Job(key=f"t-{time.perf_counter_ns()}", name=fields.pop("name", CT_JOB), status=status, input_uri="",
                  output_uri="", **fields)
        s.add(job)
        s.flush()
        return int(job.id)


def _status(db: object, job_id: int) -> tuple[str, str | None]:
    from trillium.core.db import Job

    with db.session() as s:  # type: ignore[attr-defined]
        job = s.get(Job, job_id)
        return job.status, job.error


def test_a_queued_study_is_claimed_by_exactly_one_of_many_workers(job_db: object) -> None:
    from trillium.medical.imaging.service import claim_job

    job_id = _job(job_db, "queued")
    other = _job(job_db, "queued", name="medical-analyze-batch")
    barrier = threading.Barrier(8)
    won: list[bool] = []

    def claim() -> None:
        barrier.wait()
        won.append(claim_job(job_db, job_id))  # type: ignore[arg-type]

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 7 + [True]
    assert _status(job_db, job_id)[0] == "running"
    assert claim_job(job_db, job_id) is False  # type: ignore[arg-type]
    assert claim_job(job_db, other) is False  # type: ignore[arg-type]  # not a CT study


def test_a_study_whose_worker_died_is_queued_again_then_failed(job_db: object, tmp_path: Path) -> None:
    from trillium.core.db import Job
    from trillium.core.db.models import utcnow
    from trillium.medical.imaging.service import requeue_stale

    old = utcnow() - timedelta(seconds=600)
    upload = tmp_path / "upload.zip"
    upload.write_bytes(b"zip")
    fresh = _job(job_db, "running", updated_at=utcnow(), params={"attempts": 1})
    first = _job(job_db, "running", updated_at=old, params={"attempts": 1})
    again = _job(job_db, "running", updated_at=old, params={"attempts": 2})
    with job_db.session() as s:  # type: ignore[attr-defined]
        s.get(Job, again).input_uri = str(upload)
    assert sorted(requeue_stale(job_db, stale_seconds=60, max_attempts=2)) == [first, again]  # type: ignore[arg-type]
    assert _status(job_db, fresh) == ("running", None)  # its heartbeat is recent: left alone
    assert _status(job_db, first) == ("queued", None)
    status, error = _status(job_db, again)
    assert status == "failed" and "stopped 2 times" in (error or "")
    assert not upload.exists()
