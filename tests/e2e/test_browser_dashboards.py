"""The dashboard in a real headless Chromium: each page loads, its main action is clicked through,
and the outcome is read back from the page and the database; every step leaves a screenshot.

AppTest (the per-page tests) checks the scripts; these check what an analyst's browser gets:
the multipage navigation, widgets that really respond to clicks, keys and uploads, images and
charts that really render, and no traceback anywhere.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.e2e.accounts import ACCOUNTS
from tests.finance.whatif import expected_alerts_per_day

try:
    from playwright.sync_api import Page, expect
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # `make test` requires it (dev extra); a bare pytest without it skips with the reason
    if os.environ.get("TRILLIUM_REQUIRE_BROWSER") == "1":
        raise
    pytest.skip("the playwright package is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.timeout(900)
# every expect retries for up to a minute: a rerun on two shared cores can take seconds
expect.set_options(timeout=60_000)

PAGES = {"home": "", "finance": "Finance", "medical": "Medical", "manufacturing": "Manufacturing",
         "monitoring": "Monitoring"}
TITLES = {"home": "Trillium", "finance": "Finance: fraud alerts",
          "medical": "Medical: CT studies, patients, records and similar cases",
          "manufacturing": "Manufacturing: visual inspection",
          "monitoring": "Monitoring: drift, data quality, performance"}


# ------------------------------------------------------------------ helpers
def settle(page: Page) -> None:
    """Wait until the Streamlit script has run to the end and the page shows no traceback.

    A click's rerun starts asynchronously: right after it the app still reads "notRunning" from
    the run before. So await the action's own outcome first (a retrying ``expect`` on what only
    the new run shows), then settle: no fixed sleep guesses when the rerun begins.
    """
    app = page.locator('[data-testid="stApp"]')
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED")
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=120_000)
    errors = page.locator('[data-testid="stException"]')
    try:
        expect(errors).to_have_count(0, timeout=5_000)
    except AssertionError as exc:  # say which
        raise AssertionError(f"the page shows an exception: {errors.all_inner_texts()}") from exc
    expect(page.locator("body")).not_to_contain_text("Traceback")


def shoot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank
    return path


def login(page: Page, base: str, user: str, password: str) -> None:
    """Log in through the form every page shows first (the home page is the app's root)."""
    page.goto(base)
    expect(page.get_by_role("heading", name="Log in", exact=True)).to_be_visible()
    settle(page)
    page.locator(".st-key-login_user input").fill(user)
    page.locator(".st-key-login_password input").fill(password)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.locator('[data-testid="stSidebar"]').get_by_text(f"Signed in as {user}")).to_be_visible()
    settle(page)


def nav_links(page: Page):
    """The sidebar's page links (the login gate draws those the user's roles open)."""
    return page.locator('[data-testid="stSidebar"] [data-testid="stPageLink-NavLink"]')


def open_page(page: Page, base: str, name: str, role: str = "admin") -> None:
    """Log in as the account of ROLE, then go through the sidebar navigation, as a user does."""
    login(page, base, *ACCOUNTS[role])
    expect(page.get_by_role("heading", name=TITLES["home"], exact=True)).to_be_visible()
    settle(page)
    if PAGES[name]:
        nav_links(page).filter(has_text=re.compile(rf"^{PAGES[name]}$")).click()
        page.wait_for_url(re.compile(rf"/{PAGES[name]}$"))
        expect(page.get_by_role("heading", name=TITLES[name], exact=True)).to_be_visible()  # the new page ran
        settle(page)


def choose(page: Page, key: str, option: str) -> None:
    """Pick OPTION in the selectbox with widget key KEY (await the rerun's outcome, then settle)."""
    box = page.locator(f".st-key-{key} [role='combobox']")
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(box).to_have_value(option)


def cell(page: Page, text: str):
    """A dataframe cell holding exactly TEXT (the grid is drawn on a canvas; its hidden table has the text)."""
    return page.locator("[data-testid='stDataFrame']:visible td").filter(has_text=re.compile(rf"^{re.escape(text)}$")).first


def metric_value(page: Page, label: str):
    return page.locator('[data-testid="stMetric"]').filter(has_text=label).locator('[data-testid="stMetricValue"]')


def tab(page: Page, name: str) -> None:
    """Switch to tab NAME (tabs switch in the browser, no rerun)."""
    t = page.get_by_role("tab", name=name)
    t.click()
    expect(t).to_have_attribute("aria-selected", "true")


def grid_row(grid, *cells: str):
    """The rows of dataframe GRID whose first cells read exactly CELLS (from its hidden table)."""
    row = grid.locator("tbody tr")
    for i, text in enumerate(cells, start=1):
        row = row.filter(has=grid.page.locator(f"td[aria-colindex='{i}']",
                                                has_text=re.compile(rf"^{re.escape(text)}$")))
    return row


def expect_images_decoded(page: Page, images, timeout_ms: int = 60_000) -> None:
    """Wait until every image in IMAGES has been fetched and decoded (naturalWidth > 0).

    An <img> is in the DOM as soon as the script has run, but its bytes arrive afterwards; on a
    loaded machine reading naturalWidth at once sees 0. A broken image (fetch or decode failed)
    never gets there, so on timeout the message lists each image's state.
    """
    handle = images.element_handles()
    try:
        page.wait_for_function("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)", arg=handle,
                               timeout=timeout_ms)
    except PlaywrightTimeout as exc:  # report which image is pending or broken, not just "timeout"
        states = images.evaluate_all(
            "imgs => imgs.map(i => ({src: i.currentSrc, complete: i.complete, width: i.naturalWidth}))")
        raise AssertionError(f"images not decoded after {timeout_ms} ms: {states}") from exc


def db_url(home: Path) -> str:
    return f"sqlite:///{home / 'trillium.db'}"


# ------------------------------------------------------------------ empty database
@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_explains_an_empty_database(page: Page, empty_dashboard: str, screenshots: Path,
                                               name: str) -> None:
    open_page(page, empty_dashboard, name)
    expected = {"home": "No model registered yet", "finance": "No finance alerts yet",
                "medical": "No CT studies yet", "manufacturing": "No inspections stored yet",
                "monitoring": "No monitoring runs yet"}[name]
    expect(page.get_by_text(expected).first).to_be_visible()
    shoot(page, screenshots, f"empty-{name}")


# ------------------------------------------------------------------ seeded
def test_home_lists_models_and_jobs(page: Page, seeded_dashboard: str, seeded: dict, screenshots: Path) -> None:
    open_page(page, seeded_dashboard, "home", role="viewer")  # (an admin's home also lists the audit log)
    expect(nav_links(page)).to_have_text(["Home", "Finance", "Medical", "Manufacturing", "Monitoring"])
    expect(page.get_by_role("heading", name="Models", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Batch jobs", exact=True)).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Deploy")  # the viewer toolbar: no developer menu for analysts
    grids = page.locator('[data-testid="stDataFrame"]')
    expect(grids).to_have_count(2)
    models, jobs = grids.nth(0), grids.nth(1)
    # exactly the models seed.py registered (name, version, kind) and its scoring job
    seeded_models = [seeded["finance"]["model"], seeded["manufacturing"]["model"], seeded["medical"]["model"],
                     seeded["medical"]["monitoring"]["notes_reference"]]
    expect(models.locator("tbody tr")).to_have_count(len(seeded_models))
    for name, version, kind in seeded_models:
        expect(grid_row(models, name, str(version), kind)).to_have_count(1)
    job = seeded["finance"]["job"]
    expect(jobs.locator("tbody tr")).to_have_count(1)
    expect(grid_row(jobs, job["name"], job["status"], str(job["rows_in"]))).to_have_count(1)
    expect(metric_value(page, "model versions")).to_have_text(str(len(seeded_models)))
    expect(metric_value(page, "jobs")).to_have_text("1")
    # the latest open drift and quality alerts are listed, newest first (the seed's medical checks
    # came last: the CT phantoms of a sharper kernel, then the notes batch of an absent department)
    from trillium.core.monitoring.store import alerts as stored_alerts

    expect(page.get_by_role("heading", name="Monitoring alerts", exact=True)).to_be_visible()
    newest = stored_alerts(db=connect_home(seeded["home"]), open_only=True, limit=5)
    shown = page.locator('[data-testid="stAlert"]')
    expect(shown).to_have_count(len(newest))
    for i, a in enumerate(newest.itertuples()):
        expect(shown.nth(i)).to_contain_text(f"{a.model} v{a.version} · {a.rule}: {a.message}")
    assert newest["model"].tolist()[:4] == ["note-structurer"] * 3 + ["chest-ct-nodules"], newest["model"].tolist()
    shoot(page, screenshots, "home")


def test_finance_label_an_alert_and_move_the_threshold(page: Page, seeded_dashboard: str, seeded: dict,
                                                       screenshots: Path) -> None:
    from trillium.core.db import Feedback, connect

    open_page(page, seeded_dashboard, "finance")
    expect(page.get_by_text(re.compile(r"alerts awaiting review"))).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    # the first alert in the queue is the one shown; its reasons chart renders
    heading = page.get_by_role("heading", name=re.compile(r"^Transaction \d+"))
    chosen = heading.inner_text().split()[-1]
    assert chosen in seeded["finance"]["alerts"]
    expect(page.locator('[data-testid="stVegaLiteChart"]:visible').first).to_be_visible()
    shoot(page, screenshots, "finance-queue")

    page.locator(".st-key-comment input").fill("confirmed with the card holder")
    page.locator(".st-key-label_fraud button").click()
    expect(page.get_by_text(f"Transaction {chosen} labelled fraud")).to_be_visible()
    settle(page)
    shoot(page, screenshots, "finance-labelled")
    with connect(db_url(seeded["home"])).session() as s:
        labels = [(f.entity_id, f.label, f.comment, f.analyst) for f in s.scalars(select(Feedback))]
    assert labels == [(chosen, "fraud", "confirmed with the card holder", ACCOUNTS["admin"][0])]  # who is logged in

    # the what-if shows the mean alerts per day of the job's stored probabilities at each threshold,
    # computed here from the job's output; the slider is moved with the keyboard
    scores = Path(seeded["finance"]["scores"])
    at_start, raised = expected_alerts_per_day(scores, 0.5), expected_alerts_per_day(scores, 0.8)
    assert at_start != raised  # tells a slider that does nothing from one that works
    tab(page, "Threshold what-if")
    metric = metric_value(page, "alerts per day")
    thumb = page.locator(".st-key-threshold input[type='range']")
    expect(thumb).to_have_value("0.5")
    expect(metric).to_have_text(at_start)
    thumb.focus()
    for _ in range(30):
        thumb.press("ArrowRight")
    expect(thumb).to_have_value("0.8")
    expect(metric).to_have_text(raised)
    settle(page)
    expect(metric).to_have_text(raised)  # and still so once every rerun is over
    shoot(page, screenshots, "finance-whatif")


def test_monitoring_drift_alerts_and_acknowledge(page: Page, seeded_dashboard: str, seeded: dict,
                                                screenshots: Path) -> None:
    from trillium.core.monitoring.store import alerts as stored_alerts

    db = connect_home(seeded["home"])
    before = stored_alerts("fraud", db=db)
    shifted = before[before["message"].str.startswith("seed: amounts x2")]
    assert "amount" in set(shifted["feature"])  # what the page must show
    open_page(page, seeded_dashboard, "monitoring")
    choose(page, "model", "fraud")  # the models are listed by name: the medical ones come first
    expect(metric_value(page, "open alerts")).to_have_text(str(len(before)))
    expect(page.locator('[data-testid="stVegaLiteChart"]:visible').first).to_be_visible()  # drift over time
    expect(cell(page, "amount")).to_be_attached()  # among the columns that moved
    shoot(page, screenshots, "monitoring-drift")
    tab(page, "Alerts")
    expect(cell(page, shifted.iloc[0]["message"])).to_be_attached()
    newest = int(before.iloc[0]["alert_id"])
    page.locator(".st-key-ack button").click()  # as the logged-in user: no name field
    expect(metric_value(page, "open alerts")).to_have_text(str(len(before) - 1))
    settle(page)
    shoot(page, screenshots, "monitoring-acknowledged")
    after = stored_alerts("fraud", db=db).set_index("alert_id")
    assert bool(after.loc[newest, "acknowledged"]) and int(after["acknowledged"].sum()) == 1
    from sqlalchemy import select

    from trillium.core.db import AuditEvent

    with db.session() as s:
        acks = s.scalars(select(AuditEvent).where(AuditEvent.action == "monitoring.alert.acknowledge")).all()
    assert [a.target for a in acks] == [str(newest)] and acks[0].actor


def test_monitoring_shows_the_ct_and_notes_runs(page: Page, seeded_dashboard: str, seeded: dict,
                                               screenshots: Path) -> None:
    """The page is the same for every model: the CT classifier's run on phantoms of a sharper kernel
    (an unseen kernel tag) and the notes reference's run on a department it never saw (words,
    concepts and procedures outside its range) show their runs, columns, quality and alerts."""
    from trillium.core.monitoring import store

    db = connect_home(seeded["home"])
    seeded_runs = seeded["medical"]["monitoring"]
    cases = [("chest-ct-nodules", seeded_runs["ct_label"], "kernel", "max_unseen"),
             ("note-structurer", seeded_runs["notes_label"], "oov", "max_out_of_range")]
    open_page(page, seeded_dashboard, "monitoring")
    for model, label, column, _rule in cases:
        runs = store.runs(model, db=db)
        alerts = store.alerts(model, db=db)
        assert len(runs) == 1 and runs.iloc[0]["label"] == label and len(alerts) >= 1
        assert column in {a for a in alerts["feature"]}  # what the page must show
        choose(page, "model", model)
        expect(metric_value(page, "runs")).to_have_text("1")
        expect(metric_value(page, "latest status")).to_have_text(runs.iloc[0]["status"])
        expect(metric_value(page, "open alerts")).to_have_text(str(len(alerts)))
        expect(cell(page, label)).to_be_attached()  # the runs table names the checked batch
        expect(cell(page, column)).to_be_attached()  # among the columns
        tab(page, "Data quality")
        expect(cell(page, column)).to_be_attached()
        tab(page, "Alerts")
        expect(cell(page, alerts.iloc[0]["message"])).to_be_attached()
        shoot(page, screenshots, f"monitoring-{model}")
        tab(page, "Drift over time")


def connect_home(home: Path):
    from trillium.core.db import connect

    return connect(db_url(home))


def test_medical_patient_record_ct_viewer_and_note_upload(page: Page, seeded_dashboard: str, seeded: dict,
                                                          screenshots: Path, tmp_path: Path) -> None:
    from trillium.core.db import connect
    from trillium.medical.store import load_note

    med = seeded["medical"]
    open_page(page, seeded_dashboard, "medical")
    # CT studies (first tab): the study opens on its finding's slice, the image renders, the slider moves it
    # dataframes draw on a canvas; their accessible grid holds the cell text
    expect(cell(page, "4A")).to_be_attached()
    image = page.locator('[data-testid="stImage"] img').first
    expect(image).to_be_visible()
    first_src = image.get_attribute("src")
    thumb = page.locator(f".st-key-ct-slice-{med['ct_study']} input[type='range']")
    start = int(thumb.input_value())
    assert start > 0
    thumb.focus()
    thumb.press("Home")
    expect(thumb).to_have_value("0")
    expect(page.get_by_text("axial slice 0", exact=True)).to_be_visible()
    expect(image).not_to_have_attribute("src", first_src)
    settle(page)
    slice0_src = image.get_attribute("src")
    page.locator(f".st-key-ct-window-{med['ct_study']}").get_by_text("mediastinum", exact=False).click()
    expect(image).not_to_have_attribute("src", slice0_src)  # the same slice, in the other window
    settle(page)
    shoot(page, screenshots, "medical-ct")
    # a "zip" that is no zip archive: a clear message, nothing stored, no traceback
    fake = tmp_path / "study.zip"
    fake.write_bytes(b"DICM but not really a zip archive")
    page.locator(".st-key-ct-upload input[type='file']").set_input_files(str(fake))
    page.locator(".st-key-ct-analyse button").click()  # waits until the upload's rerun shows the button
    expect(page.get_by_text(re.compile(r"Cannot analyse this upload: study\.zip:? (is )?not a zip archive"))
           ).to_be_visible()
    settle(page)
    shoot(page, screenshots, "medical-ct-bad-upload")
    # a real study uploaded under names that climb out of the uploads folder or are absolute: the client's
    # name is only a label, so nothing lands outside uploads/ct and the database stays the database
    from trillium.medical.imaging.phantom import write_phantom
    from trillium.medical.tables import ImagingStudy

    home = Path(seeded["home"])
    uploads = home / "uploads" / "ct"
    write_phantom(tmp_path / "upload-ct", nodules=1, seed=11, shape=(30, 96, 96), spacing=(2.0, 2.5, 2.5),
                  patient_id="upload-patient")
    study = io.BytesIO()
    with zipfile.ZipFile(study, "w") as zf:
        for f in sorted((tmp_path / "upload-ct").rglob("*.dcm")):
            zf.write(f, f"series/{f.name}")
    outside = tmp_path / "outside"
    # (Streamlit's uploader checks the extension in the browser, so the names end in .zip; without the
    # fix, the first landed at $TRILLIUM_HOME/escaped.zip, beside the database)
    for n, name in enumerate(["../../escaped.zip", f"{outside}/evil.zip"], start=1):
        before = {p for p in home.rglob("*") if p.is_file() and uploads not in p.parents}
        page.locator(".st-key-ct-upload input[type='file']").set_input_files(
            files=[{"name": name, "mimeType": "application/zip", "buffer": study.getvalue()}])
        # the upload's own rerun is over (the uploader shortens long names, its remove button names it whole)...
        expect(page.locator(".st-key-ct-upload").get_by_role("button", name=f"Remove {name}", exact=True)
               ).to_be_visible()
        settle(page)
        page.locator(".st-key-ct-analyse button").click()  # ...so the click is not lost in it
        expect(page.get_by_text(re.compile(r"Stored series [0-9.]+: \d+ findings"))).to_be_visible()
        settle(page)
        kept = sorted(uploads.glob("*"))
        assert len(kept) == n and all(re.fullmatch(r"[0-9a-f]{32}\.zip", p.name) for p in kept), kept
        assert all(p.read_bytes() == study.getvalue() for p in kept)
        after = {p for p in home.rglob("*") if p.is_file() and uploads not in p.parents}
        assert not [p for p in after - before if p.suffix == ".zip"], after - before
    assert not outside.exists() and not (home / "escaped.zip").exists() and not (home.parent / "escaped.zip").exists()
    with connect(db_url(home)).session() as s:  # the database file was not overwritten by the upload
        assert s.scalar(select(func.count()).select_from(ImagingStudy).where(
            ImagingStudy.patient_id == "upload-patient")) == 1
    shoot(page, screenshots, "medical-ct-upload-names")

    # the patient view joins the notes and the CT findings of the CT patient
    tab(page, "Patient view")
    choose(page, "patient", med["ct_patient"])
    expect(metric_value(page, "CT findings")).to_have_text("1")
    settle(page)
    page.locator("[data-testid='stDataFrame']:visible").last.scroll_into_view_if_needed()
    expect(cell(page, med["series_uid"])).to_be_attached()  # the grid renders the columns in view only
    expect(page.get_by_text("Problems")).to_be_visible()
    shoot(page, screenshots, "medical-patient")

    # the record viewer highlights entities and strikes negated ones through
    tab(page, "Record viewer")
    viewer = page.locator('[data-testid="stMarkdownContainer"] mark, [data-testid="stMarkdownContainer"] span'
                          '[style*="background"]')
    expect(viewer.first).to_be_visible()
    shoot(page, screenshots, "medical-record")

    # upload a note, see it structured, store it
    note = tmp_path / "upload-note.txt"
    note.write_text("HPI: 61 year old with cough. Denies fever.\nMedications: metformin 500 mg twice daily.\n"
                    "Vitals: BP 150/90, HR 88.\n")
    tab(page, "Upload a note")
    page.locator(".st-key-upload input[type='file']").set_input_files(str(note))
    expect(page.get_by_text(re.compile(r"\d+ entities \(read as"))).to_be_visible()
    settle(page)
    page.locator(".st-key-store-upload button").click()
    expect(page.get_by_text(re.compile(r"Stored upload-note with \d+ entities"))).to_be_visible()
    settle(page)
    shoot(page, screenshots, "medical-upload")
    stored = load_note("upload-note", db=connect(db_url(seeded["home"])))
    assert stored is not None and any(e["normalized"] == "metformin" for e in stored["entities"]
                                      if e.get("normalized"))
    # a bad upload (not text) is a clear message, no traceback
    bad = tmp_path / "binary.txt"
    bad.write_bytes(bytes(range(256)) * 64)
    page.locator(".st-key-upload input[type='file']").set_input_files(str(bad))
    expect(page.get_by_text("Cannot read this upload", exact=False)).to_be_visible()
    settle(page)
    shoot(page, screenshots, "medical-bad-upload")


def test_manufacturing_gallery_chart_threshold_and_upload(page: Page, seeded_dashboard: str, seeded: dict,
                                                          screenshots: Path, tmp_path: Path) -> None:
    from trillium.core.db import AuditEvent, connect

    man = seeded["manufacturing"]
    open_page(page, seeded_dashboard, "manufacturing")
    gallery = page.locator('[data-testid="stImage"] img')
    expect(gallery).to_have_count(man["inspections"])
    # every overlay really decoded in the browser (the img elements appear before their bytes arrive)
    expect_images_decoded(page, gallery)
    shoot(page, screenshots, "manufacturing-gallery")

    tab(page, "p-chart")
    expect(page.locator('[data-testid="stVegaLiteChart"]:visible').first).to_be_visible()
    shoot(page, screenshots, "manufacturing-pchart")

    tab(page, "Threshold tuning")
    thumb = page.locator(".st-key-threshold input[type='range']")
    thumb.focus()
    thumb.press("End")
    expect(page.get_by_text("At 1.000:", exact=False)).to_be_visible()
    settle(page)
    page.locator(".st-key-apply_threshold button").click()
    expect(page.get_by_text("Threshold 1.000 applied for inspector:v1")).to_be_visible()
    settle(page)
    shoot(page, screenshots, "manufacturing-threshold")
    with connect(db_url(seeded["home"])).session() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "manufacturing.threshold")).all()
    assert [(e.actor, e.details["threshold"]) for e in events] == [(ACCOUNTS["admin"][0], 1.0)]  # who is logged in

    tab(page, "Inspect an image")
    page.locator(".st-key-upload input[type='file']").set_input_files(man["upload_image"])
    expect(page.get_by_text("anomaly overlay", exact=False)).to_be_visible()
    expect(page.get_by_text("At your applied threshold 1.000 it would be", exact=False)).to_be_visible()
    settle(page)
    shoot(page, screenshots, "manufacturing-upload")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    page.locator(".st-key-upload input[type='file']").set_input_files(str(broken))
    expect(page.get_by_text("Cannot inspect 'broken.png'", exact=False)).to_be_visible()
    settle(page)
    shoot(page, screenshots, "manufacturing-bad-upload")

