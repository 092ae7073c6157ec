"""``POST /v1/manufacturing/inspect`` over HTTP against a real ``trillium serve``.

The oracle is the in-process ``Inspector`` loaded from the same seeded registry: for the same
image bytes the service must give the same verdict, score and threshold, whichever format the
bytes are in, alone or under concurrent load (when requests share batched model calls).
"""

from __future__ import annotations

import base64
import io
import re
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from tests.service.conftest import copy_home
from trillium.core import db as dbmod

URL = "/v1/manufacturing/inspect"
SIZE = 48
ServiceProcess = Any  # the harness's class (tests/service/conftest.py), reached as ``type(service)``


def headers(service_home: dict, who: str) -> dict[str, str]:
    """The API key of a role of the seeded home (as the harness's ``headers``)."""
    return {"X-API-Key": service_home["keys"][who]}


@pytest.fixture(scope="module")
def inspector(service_home: dict) -> Iterator[object]:
    """The seeded production inspector, loaded in this process (the oracle)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRILLIUM_HOME", str(service_home["home"]))
        mp.delenv("TRILLIUM_DB_URL", raising=False)
        dbmod.reset_connections()
        from trillium.core.registry import ModelRegistry
        from trillium.manufacturing.pipeline import Inspector

        loaded = Inspector.from_registry(registry=ModelRegistry(dbmod.connect()))
        dbmod.reset_connections()
    yield loaded


def _part(seed: int, defect: str | None = None, colour: bool = False) -> np.ndarray:
    from trillium.manufacturing.synth import synthetic_images

    images, _ = synthetic_images(1, size=SIZE, seed=seed, defect=defect, colour=colour)
    return images[0]


def encode(img: np.ndarray, fmt: str) -> tuple[str, bytes]:
    """(file name, bytes) of a float (H, W, C) image in [0, 1] in one of the accepted formats."""
    grey = img[..., 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    rgb = img if img.shape[2] == 3 else np.repeat(img, 3, axis=2)
    u8, u16 = (grey * 255).round().astype(np.uint8), (grey * 65535).round().astype(np.uint16)
    buf = io.BytesIO()
    if fmt == "png8":
        Image.fromarray(u8).save(buf, "PNG")
    elif fmt == "png16":
        Image.fromarray(u16).save(buf, "PNG")
    elif fmt == "png16-rgb":  # 16-bit colour: OpenCV reads it (Pillow would cut it to 8 bits)
        ok, enc = cv2.imencode(".png", (rgb[..., ::-1] * 65535).round().astype(np.uint16))
        assert ok
        return "part.png", enc.tobytes()
    elif fmt == "tiff16":
        Image.fromarray(u16).save(buf, "TIFF")
        return "part.tiff", buf.getvalue()
    elif fmt == "tiff8-rgb":
        Image.fromarray((rgb * 255).round().astype(np.uint8)).save(buf, "TIFF")
        return "part.tif", buf.getvalue()
    elif fmt == "jpeg":
        Image.fromarray(u8).save(buf, "JPEG", quality=95)
        return "part.jpg", buf.getvalue()
    elif fmt == "bmp-rgb":
        Image.fromarray((rgb * 255).round().astype(np.uint8)).save(buf, "BMP")
        return "part.bmp", buf.getvalue()
    else:
        raise ValueError(fmt)
    return "part.png", buf.getvalue()


def in_process(inspector: object, name: str, data: bytes, tmp: Path, **kw: object) -> object:
    path = tmp / f"{uuid.uuid4().hex}{Path(name).suffix}"
    path.write_bytes(data)
    return inspector.inspect(path, **kw)  # type: ignore[attr-defined]


def post(service: ServiceProcess, service_home: dict, name: str, data: bytes, who: str = "manufacturing",
         client: httpx.Client | None = None, **form: str) -> httpx.Response:
    sender = client if client is not None else httpx
    return sender.post(service.url + URL, files={"image": (name, data, "application/octet-stream")}, data=form,
                       headers=headers(service_home, who), timeout=60)


def assert_same(body: dict, expected: object, version: int) -> None:
    assert body["score"] == pytest.approx(expected.score, rel=1e-5, abs=1e-7)
    assert body["threshold"] == pytest.approx(expected.threshold, rel=1e-9)
    if abs(expected.score - expected.threshold) > 1e-5:  # float rounding of a batch cannot flip it
        assert body["verdict"] == expected.verdict
    assert body["verdict"] == ("defect" if body["score"] >= body["threshold"] else "good")
    assert body["defect_type"] == expected.defect_type
    assert body["model_version"] == version
    assert body["model"] == f"inspector:v{version}"


def seeded_version(service_home: dict) -> int:
    name, version, _ = service_home["seed"]["manufacturing"]["model"]
    assert name == "inspector"
    return int(version)


# --------------------------------------------------------------------------- results


@pytest.mark.parametrize("fmt", ["png8", "png16", "png16-rgb", "tiff16", "tiff8-rgb", "jpeg", "bmp-rgb"])
def test_each_format_matches_the_in_process_inspector(service, service_home, inspector, tmp_path, fmt) -> None:
    img = _part(5, "scratch", colour=fmt.endswith("rgb"))
    name, data = encode(img, fmt)
    r = post(service, service_home, name, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_same(body, in_process(inspector, name, data, tmp_path), seeded_version(service_home))
    assert (body["height"], body["width"]) == (SIZE, SIZE)
    assert body["channels"] == (3 if fmt.endswith("rgb") else 1)
    assert body["image_id"] == name and body["stored"] is False and body["line"] is None
    assert body["overlay_png"] is None


def test_a_defective_part_scores_above_the_same_part_without_the_defect(service, service_home, inspector,
                                                                       tmp_path) -> None:
    """Parts of the line the seeded inspector was trained on (seed 1, 32 px), with and without a hole.

    The seeded inspector is tiny (3 training steps), so only a clear defect on its own line
    separates; these two parts do by 0.06 or more, far past float noise."""
    from trillium.manufacturing.synth import synthetic_images

    good, _ = synthetic_images(6, size=32, seed=1, start=50)
    holed, _ = synthetic_images(6, size=32, seed=1, start=50, defect="hole")
    for i in (0, 4):
        scores = {}
        for label, img in (("good", good[i]), ("defect", holed[i])):
            name, data = encode(img, "png8")
            r = post(service, service_home, name, data)
            assert r.status_code == 200, r.text
            body = r.json()
            assert_same(body, in_process(inspector, name, data, tmp_path), seeded_version(service_home))
            scores[label] = body["score"]
        assert scores["defect"] > scores["good"] + 0.01, (i, scores)


def test_overlay_is_the_in_process_overlay(service, service_home, inspector, tmp_path) -> None:
    name, data = encode(_part(6, "crack"), "png8")
    r = post(service, service_home, name, data, overlay="true")
    assert r.status_code == 200, r.text
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["overlay_png"]))).convert("RGB"))
    expected = in_process(inspector, name, data, tmp_path, overlay_dir=tmp_path / "overlays")
    want = np.asarray(Image.open(expected.overlay).convert("RGB"))
    assert got.shape == want.shape == (SIZE, SIZE, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # the same map, up to a batch's float rounding
    # as a query parameter too; a form field wins over it
    h = headers(service_home, "manufacturing")
    r = httpx.post(service.url + URL + "?overlay=1", files={"image": (name, data)}, headers=h, timeout=60)
    assert r.status_code == 200 and r.json()["overlay_png"], r.text
    r = httpx.post(service.url + URL + "?overlay=1", files={"image": (name, data)}, data={"overlay": "false"},
                   headers=h, timeout=60)
    assert r.status_code == 200 and r.json()["overlay_png"] is None, r.text


def _stored_rows(service_home: dict, line: str) -> list[object]:
    from trillium.core.db import Prediction

    db = dbmod.connect(f"sqlite:///{service_home['home'] / 'trillium.db'}")
    with db.session() as s:
        rows = s.scalars(select(Prediction).where(Prediction.domain == "manufacturing")).all()
        return [r for r in rows if (r.details or {}).get("line") == line]


def test_line_stores_one_complete_row_and_needs_write(service, service_home, inspector, tmp_path) -> None:
    line = f"L-{uuid.uuid4().hex[:8]}"
    name, data = encode(_part(7, "hole"), "png8")
    # read-only keys may inspect, not store
    r = post(service, service_home, name, data, who="viewer", line=line)
    assert r.status_code == 403, r.text
    assert "manufacturing:write" in r.json()["message"]
    r = post(service, service_home, name, data, who="viewer")
    assert r.status_code == 200 and r.json()["stored"] is False
    assert _stored_rows(service_home, line) == []

    r = post(service, service_home, name, data, line=line, image_id="serial-0042")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] is True and body["line"] == line and body["image_id"] == "serial-0042"
    rows = _stored_rows(service_home, line)
    assert len(rows) == 1
    row = rows[0]
    assert row.entity_id == "serial-0042" and row.decision == body["verdict"]
    assert row.score == pytest.approx(body["score"])
    assert row.details["threshold"] == pytest.approx(body["threshold"])
    from trillium.core.registry import ModelRegistry

    record = ModelRegistry(dbmod.connect(f"sqlite:///{service_home['home'] / 'trillium.db'}")).get(
        "inspector", body["model_version"])
    assert row.model_version_id == record.id


# --------------------------------------------------------------------------- access and bad input


def test_auth(service, service_home) -> None:
    name, data = encode(_part(8), "png8")
    r = httpx.post(service.url + URL, files={"image": (name, data)}, timeout=30)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = httpx.post(service.url + URL, files={"image": (name, data)}, headers={"X-API-Key": "trl_nope"}, timeout=30)
    assert r.status_code == 401
    r = post(service, service_home, name, data, who="finance")
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert post(service, service_home, name, data, who="viewer").status_code == 200
    assert post(service, service_home, name, data, who="admin").status_code == 200


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` grey pixels, with a few bytes of data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize(("width", "height"), [(8_000, 7_000), (100_000, 100_000)])
def test_a_frame_past_the_pixel_limit_is_refused_before_decoding(service, service_home, width, height) -> None:
    r = post(service, service_home, "bomb.png", png_header(width, height))
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"] == "too_large" and body["fields"] == ["image", "image_pixels"]
    assert "image 'bomb.png'" in body["message"] and "TRILLIUM_LIMIT_IMAGE_PIXELS" in body["message"]


def test_bad_images_are_422_naming_the_field(service, service_home) -> None:
    _, png = encode(_part(9), "png8")
    _, jpeg = encode(_part(9), "jpeg")
    cases = {
        "notes.txt": b"Patient denies chest pain.\n" * 20,
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "garbage.bmp": b"BM" + bytes(range(256)) * 4,
    }
    for name, data in cases.items():
        r = post(service, service_home, name, data)
        assert r.status_code == 422, (name, r.text)
        body = r.json()
        assert body["error"] == "invalid_input" and body["fields"] == ["image"], (name, body)
        assert name in body["message"], body
        assert "/tmp" not in body["message"]  # our file name for it is never shown


def test_wrong_requests_are_4xx_naming_the_field(service, service_home) -> None:
    h = headers(service_home, "manufacturing")
    _, png = encode(_part(9), "png8")
    r = httpx.post(service.url + URL, json={"image": base64.b64encode(png).decode()}, headers=h, timeout=30)
    assert r.status_code == 422 and r.json()["fields"] == ["body.image"], r.text
    r = httpx.post(service.url + URL, data={"image": "not a file"}, headers=h, timeout=30)
    assert r.status_code == 422 and "body.image" in r.json()["fields"], r.text
    r = httpx.post(service.url + URL, content=png, headers={**h, "content-type": "image/png"}, timeout=30)
    assert r.status_code == 422 and "body.image" in r.json()["fields"], r.text
    r = post(service, service_home, "p.png", png, line="bad\nline")
    assert r.status_code == 422 and r.json()["fields"] == ["body.line"], r.text
    r = post(service, service_home, "p.png", png, overlay="perhaps")
    assert r.status_code == 422 and r.json()["fields"] == ["body.overlay"], r.text
    r = httpx.post(service.url + URL + "?line=bad%00line", files={"image": ("p.png", png)}, headers=h, timeout=30)
    assert r.status_code == 422 and r.json()["fields"] == ["query.line"], r.text
    # a broken multipart body is a 4xx, never a 500
    r = httpx.post(service.url + URL, content=b"--xyz\r\nContent-Disposition: form-data; name=\"image\"\r\n",
                   headers={**h, "content-type": "multipart/form-data; boundary=xyz"}, timeout=30)
    assert 400 <= r.status_code < 500, r.text


# --------------------------------------------------------------------------- concurrency, batching


def _metric(text: str, name: str, model: str) -> float:
    m = re.search(rf'^{name}\{{model="{model}"\}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_concurrent_requests_are_each_answered_right_and_share_batches(service, service_home, inspector,
                                                                       tmp_path) -> None:
    uploads = []
    for i in range(32):
        img = _part(20 + i % 8, None if i % 2 else "spot", colour=i % 3 == 0)
        uploads.append(encode(img, ["png8", "png16", "jpeg", "bmp-rgb"][i % 4]))
    expected = [in_process(inspector, name, data, tmp_path) for name, data in uploads]
    before = httpx.get(service.url + "/metrics", timeout=30).text
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=16)) as client, \
            ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda u: post(service, service_home, *u, client=client), uploads))
    after = httpx.get(service.url + "/metrics", timeout=30).text
    for r, want in zip(responses, expected, strict=True):
        assert r.status_code == 200, r.text
        assert_same(r.json(), want, seeded_version(service_home))
    images = _metric(after, "trillium_batch_size_sum", "inspector") - _metric(before, "trillium_batch_size_sum",
                                                                               "inspector")
    calls = _metric(after, "trillium_batch_size_count", "inspector") - _metric(before, "trillium_batch_size_count",
                                                                                "inspector")
    assert images == len(uploads)  # every image went through the batcher ...
    assert calls < len(uploads), f"{calls:.0f} model calls for {len(uploads)} concurrent images"  # ... shared


# --------------------------------------------------------------------------- the production alias moves


def test_a_moved_production_alias_is_served_without_restart_or_failed_request(service, service_home, inspector,
                                                                              tmp_path, monkeypatch) -> None:
    home = copy_home(service_home["home"], tmp_path / "home-copy")
    server = type(service)(home, workers=1, args=("--fields", "manufacturing")).wait_ready()
    try:
        name, data = encode(_part(11, "scratch"), "png8")
        v1 = seeded_version(service_home)
        probe = in_process(inspector, name, data, tmp_path)
        seen: list[tuple[int, int, str, float]] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    r = post(server, service_home, name, data, client=client)
                    body = r.json()
                    seen.append((r.status_code, body.get("model_version", 0), body.get("verdict", ""),
                                 body.get("threshold", 0.0)))

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        # v2: the same weights deciding at a threshold on the other side of the probe's score
        monkeypatch.setenv("TRILLIUM_HOME", str(home))
        dbmod.reset_connections()
        from trillium.core.registry import ModelRegistry
        from trillium.manufacturing.pipeline import Inspector

        v2 = Inspector.from_registry(registry=ModelRegistry(dbmod.connect()))
        new_threshold = probe.score - 0.01 if probe.verdict == "good" else min(probe.score + 0.01, 1.0)
        v2.detector.set_threshold(new_threshold)
        record = v2.register()
        dbmod.reset_connections()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(v == record.version for _, v, _, _ in seen[-3:]):
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        server.stop()
    assert record.version == v1 + 1
    assert seen and all(status == 200 for status, *_ in seen), [s for s in seen if s[0] != 200][:3]
    versions = [v for _, v, _, _ in seen]
    assert set(versions) == {v1, record.version}
    for _, version, verdict, threshold in seen:
        if version == v1:
            assert verdict == probe.verdict and threshold == pytest.approx(probe.threshold)
        else:
            assert verdict != probe.verdict and threshold == pytest.approx(new_threshold)


def test_inspections_are_sampled_per_day_and_checked_for_drift(service, service_home, tmp_path, monkeypatch) -> None:
    """Each worker samples the parts it inspects per day (server clock, UTC): their image
    statistics, scores and verdicts; written at every batch here (``TRILLIUM_MONITOR_FLUSH_SECONDS=0``)
    and at shutdown; the day is then checked against the version's profile on those columns."""
    from datetime import UTC, datetime

    from trillium.core.monitoring import store
    from trillium.core.monitoring.online import check_days, read_day, sampled_columns
    from trillium.core.registry import ModelRegistry
    from trillium.manufacturing.monitoring import STATS, reference_profile
    from trillium.manufacturing.pipeline import Inspector

    home = copy_home(service_home["home"], tmp_path / "home")
    monkeypatch.setenv("TRILLIUM_HOME", str(home))
    dbmod.reset_connections()
    registry = ModelRegistry(dbmod.connect())
    seeded = Inspector.from_registry(registry=registry, runtime=False)
    good = np.stack([seeded.prepare(_part(s)) for s in range(30)])
    record = seeded.register(registry, profile=reference_profile(seeded, good))  # the new production
    dbmod.reset_connections()
    server = type(service)(home, workers=1, env={"TRILLIUM_MONITOR_FLUSH_SECONDS": "0"}).wait_ready()
    try:
        for s in range(8):
            name, data = encode(_part(100 + s), "png8")
            r = post(server, service_home, name, data)
            assert r.status_code == 200 and r.json()["model_version"] == record.version, r.text
    finally:
        server.stop()
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    folder = home / "monitoring" / "online" / "inspector" / f"v{record.version}" / day
    _, scores, defects, seen = read_day(folder)
    assert seen == 8 and sampled_columns(folder) == list(STATS) and len(scores) == 8
    assert 0 <= defects.sum() <= 8 and np.all((scores >= 0) & (scores <= 1))
    dbmod.reset_connections()
    registry = ModelRegistry(dbmod.connect())
    (run_id,) = check_days("inspector", registry=registry, days=[(record.version, day)], performance=False)
    runs = store.runs("inspector", scope="day").set_index("run_id")
    run = runs.loc[run_id]
    assert run["label"] == "online" and run["day"] == day and run["rows"] == 8
    assert [c["name"] for c in run["columns"]] == list(STATS) and "estimated_precision" not in run["performance"]
