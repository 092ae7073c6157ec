"""The manufacturing page: empty-database guidance, the gallery, KPIs, the p-chart, threshold
tuning against the registered validation scores, and inspecting an uploaded image."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from tests.dashboard_login import logged_in
from trillium import dashboards
from trillium.core.db import AuditEvent, connect
from trillium.manufacturing.detector import DefectDetector
from trillium.manufacturing.linestats import set_control_limits, store_inspections
from trillium.manufacturing.pipeline import Inspector
from trillium.manufacturing.synth import synthetic_images

PAGE = str(Path(dashboards.__file__).parent / "pages" / "3_Manufacturing.py")
T0 = datetime(2024, 3, 4, 6, 0, tzinfo=UTC)


def page() -> AppTest:
    return logged_in(AppTest.from_file(PAGE, default_timeout=60))


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r} among {[m.label for m in at.metric]}"
    return values[0]


def captions_of_images(at: AppTest) -> list[str]:
    return [img.caption for el in at.get("image") for img in el.proto.imgs]


def percent(text: str) -> float:
    return float(text.rstrip("%"))


def test_empty_database_shows_guidance_in_every_section() -> None:
    at = page().run()
    assert not at.exception
    infos = [i.value for i in at.info]
    assert sum("No inspections stored yet" in i for i in infos) == 3  # gallery, KPIs, p-chart
    assert sum("No inspector registered yet" in i and "trillium manufacturing train" in i for i in infos) == 2
    assert not at.get("image") and not at.metric


@pytest.fixture
def stored(tmp_path: Path) -> list[dict]:
    """12 inspections of line L1 over 4 hours (4 defects) with real overlay PNGs, except one whose
    file is gone, one corrupt and one without overlay; 2 good ones of line L2."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(12):
        overlay = tmp_path / f"overlay-{i:02d}.png"
        cv2.imwrite(str(overlay), rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
        bad = i in (1, 8, 9, 10)
        records.append({"image_id": f"/cam/L1/part-{i:02d}.png", "score": 0.9 if bad else 0.1 + i / 100,
                        "verdict": "defect" if bad else "good", "defect_type": "scratch" if bad else None,
                        "inspected_at": T0 + timedelta(minutes=20 * i), "overlay": str(overlay)})
    Path(records[3]["overlay"]).unlink()  # a vanished overlay file is skipped
    Path(records[5]["overlay"]).write_bytes(b"not a png")  # so is a corrupt one
    records[4]["overlay"] = None
    store_inspections(records, line="L1")
    store_inspections([{"image_id": f"/cam/L2/part-{i}.png", "score": 0.2, "verdict": "good",
                        "inspected_at": T0 + timedelta(hours=i)} for i in range(2)], line="L2")
    return records


def test_gallery_kpis_and_p_chart(stored: list[dict]) -> None:
    at = page().run()
    assert not at.exception
    assert [i.value for i in at.info if "No inspection" in i.value] == []  # only: no inspector registered
    captions = captions_of_images(at)
    assert len(captions) == 9  # 12 of L1 + 2 of L2, less the missing, the corrupt and the absent overlay
    assert sum(c.startswith("defect · score 0.900 · scratch") for c in captions) == 4
    assert any("part-03.png (overlay file missing or unreadable)" in c.value for c in at.caption)
    assert any("part-05.png (overlay file missing or unreadable)" in c.value for c in at.caption)
    assert any("part-04.png (no overlay stored)" in c.value for c in at.caption)
    assert metric(at, "inspected") == "14" and metric(at, "defects") == "4"

    at.selectbox(key="verdict").set_value("defect").run()
    assert not at.exception
    assert sorted(captions_of_images(at)) == sorted(
        f"defect · score 0.900 · scratch · part-{i:02d}.png" for i in (1, 8, 9, 10))

    at.selectbox(key="verdict").set_value("all")
    at.selectbox(key="line").set_value("L2").run()
    assert not at.exception
    assert not captions_of_images(at)  # L2's inspections have no overlay
    assert any(c.value.startswith("2 of the latest 2 inspections of line 'L2'") for c in at.caption)
    assert metric(at, "inspected") == "2" and metric(at, "defect rate") == "0.00%"

    # the p-chart of L1, hourly: 4 buckets against the data's own centre line
    at.selectbox(key="line").set_value("L1").run()
    assert not at.exception
    assert metric(at, "buckets") == "4" and metric(at, "p-bar (centre line)") == f"{4 / 12:.2%}"
    assert at.get("vega_lite_chart")
    at.radio(key="freq").set_value("1D").run()
    assert metric(at, "buckets") == "1"
    # stored limits: none yet -> a clear message, no traceback; then phase-I limits from the first hour
    at.checkbox(key="stored_limits").check().run()
    assert not at.exception
    assert any("No control limits are stored for line 'L1'" in i.value for i in at.info)
    set_control_limits(line="L1", start=T0, end=T0 + timedelta(hours=1))
    at.run()
    assert not at.exception and not any("No control limits" in i.value for i in at.info)
    assert metric(at, "p-bar (centre line)") == f"{1 / 3:.2%}"
    assert any("stored limits #1 of line 'L1'" in c.value for c in at.caption)


@pytest.fixture
def inspector(one_thread: None) -> Inspector:
    """A tiny inspector (32 px, 3 steps) registered as production, validated on good and defect images."""
    good, _ = synthetic_images(12, size=32, seed=1)
    defects, _ = synthetic_images(4, size=32, seed=2, defect="spot")
    det = DefectDetector(size=32, width=4, steps=3, batch_size=4, pool=3, val_fraction=0.5)
    det.fit(good.transpose(0, 3, 1, 2), val_defects=defects.transpose(0, 3, 1, 2))
    ins = Inspector(det)
    ins.register()
    return ins


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((image[..., 0] * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_threshold_tuning_and_upload(inspector: Inspector) -> None:
    at = page().run()
    assert not at.exception
    scores = inspector.detector.validation_scores_
    assert any(f"validation set: {len(scores['good'])} good and {len(scores['defect'])} defect" in c.value
               for c in at.caption)
    # the false-alarm rate on validation good never rises with the threshold, recall neither
    cuts = sorted({0.0, 1.0, *(round(s, 3) for s in scores["good"] + scores["defect"])})
    fars, recalls = [], []
    for t in cuts:
        at.slider(key="threshold").set_value(t).run()
        assert not at.exception
        fars.append(percent(metric(at, "false-alarm rate (validation good)")))
        recalls.append(percent(metric(at, "recall (validation defects)")))
    good, defect = np.asarray(scores["good"]), np.asarray(scores["defect"])
    assert fars == [round(100 * float(np.mean(good >= t)), 1) for t in cuts]
    assert recalls == [round(100 * float(np.mean(defect >= t)), 1) for t in cuts]
    assert fars[0] == 100.0 and fars[-1] == 0.0 and len(set(fars)) > 2
    assert all(a >= b for a, b in pairwise(fars)) and all(a >= b for a, b in pairwise(recalls))

    at.slider(key="threshold").set_value(0.25).run()
    at.button(key="apply_threshold").click().run()
    assert not at.exception
    assert any("Threshold 0.250 applied for inspector:v1" in s.value for s in at.success)
    assert any("Chosen threshold: 0.250" in m.value and "--threshold 0.250" in m.value for m in at.markdown)
    with connect().session() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "manufacturing.threshold")).all()
    assert [(e.target, e.actor, e.details["threshold"]) for e in events] == [("inspector:v1", "tester", 0.25)]

    # upload: a real image is inspected, with its overlay; a file that is no image is an error
    image, _ = synthetic_images(1, size=48, seed=3, defect="scratch")
    at.file_uploader(key="upload").set_value(("part.png", png(image[0]), "image/png")).run()
    assert not at.exception and not at.error
    assert metric(at, "verdict") in ("good", "defect")
    assert float(metric(at, "score")) == pytest.approx(inspector.inspect_arrays([image[0]])[0].score, abs=1e-4)
    assert "part.png: anomaly overlay" in captions_of_images(at)
    assert any("At your applied threshold 0.250 it would be flagged" in c.value for c in at.caption)
    at.file_uploader(key="upload").set_value(("broken.png", b"this is not an image", "image/png")).run()
    assert not at.exception
    (message,) = [e.value for e in at.error]
    assert message.startswith("Cannot inspect 'broken.png': not a readable image") and "trillium-upload-" not in message
    assert not at.get("image")


def test_an_operator_corrects_a_verdict_with_their_login(stored: list[dict]) -> None:
    from trillium.core.db import Feedback
    from trillium.manufacturing.corrections import live_performance

    at = page().run()
    assert not at.exception
    part = stored[1]["image_id"]  # a defect verdict
    at.selectbox(key="correct_image").set_value(part)
    at.radio(key="correct_verdict").set_value("good")
    at.button[[b.label for b in at.button].index("Record correction")].click().run()
    assert not at.exception
    assert any("is good (by tester)" in s.value for s in at.success), [s.value for s in at.success]
    with connect().session() as s:
        fb = s.scalars(select(Feedback).where(Feedback.entity_id == part)).one()
        row = s.scalars(select(AuditEvent).where(AuditEvent.action == "manufacturing.correction")).one()
    assert (fb.label, fb.analyst, fb.domain) == ("good", "tester", "manufacturing")
    assert row.actor == "tester" and row.details["was"] == "defect" and "origin" in row.details
    perf = live_performance()
    assert perf["overturned"].sum() == 1 and perf["reject_precision"].dropna().tolist() == [0.0]
    # a viewer sees the gallery but not the form
    viewer = logged_in(AppTest.from_file(PAGE, default_timeout=60), roles=("viewer",), name="a-viewer").run()
    assert not viewer.exception and "Record correction" not in [b.label for b in viewer.button]
    assert any("needs the manufacturing:write scope" in c.value for c in viewer.caption)
