"""The CLI end to end: the demo stores a model, a finished job and alerts; the model commands
read them back; a tampered artifact makes ``models verify`` fail with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from trillium.core.db import Job, Prediction, connect

# The whole demo takes about 8 minutes on an idle 2-core machine; a loaded one (a CI dry run beside
# other work) took over 10, so the demo gets room beyond the suite's 600 s per test.
DEMO_TIMEOUT_S = 1500


def _cli(*args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRILLIUM_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "trillium.core.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def test_help_lists_every_command_group(trillium_home: Path) -> None:
    res = _cli("--help", home=trillium_home)
    assert res.returncode == 0
    for name in ("demo", "dashboard", "bench", "db", "models", "finance", "medical", "manufacturing", "users", "audit"):
        assert name in res.stdout


@pytest.mark.timeout(DEMO_TIMEOUT_S + 300)
def test_demo_then_models_commands(trillium_home: Path) -> None:
    res = _cli("demo", home=trillium_home, timeout=DEMO_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-3000:]
    db = connect()
    with db.session() as s:
        job = s.scalars(select(Job).where(Job.name.like("demo-score-%"))).one()
        alerts = s.scalar(select(func.count()).select_from(Prediction)
                          .where(Prediction.decision == "alert", Prediction.domain == "core-demo"))
        fin_job = s.scalars(select(Job).where(Job.name.like("finance-score:%"))).one()
        fin_alerts = s.scalar(select(func.count()).select_from(Prediction)
                              .where(Prediction.decision == "alert", Prediction.domain == "finance"))
    assert job.status == "done" and job.rows_in == 100_000 and job.rows_quarantined == 4
    assert job.rows_out == 99_996
    assert 500 < alerts < 2_000  # about 1 % of the scored rows
    # finance: 14 days scored with two broken records quarantined, alerts under 100 a day
    assert fin_job.status == "done" and fin_job.rows_quarantined == 2
    assert fin_job.rows_out == fin_job.rows_in - 2 > 100_000
    assert 0 < fin_alerts <= 14 * 100
    assert "fraud" in _cli("models", "list", "fraud", home=trillium_home).stdout
    # the dashboard's accounts: one per role, passwords only in an owner-only file whose path is printed
    accounts = trillium_home / "demo-accounts"
    assert str(accounts) in " ".join(res.stderr.split()) and (accounts.stat().st_mode & 0o777) == 0o600
    users = json.loads(_cli("users", "list", "--json", home=trillium_home).stdout)
    assert {u["name"] for u in users} >= {"demo-admin", "demo-viewer", "demo-clinician"}
    assert not [ln for ln in accounts.read_text().splitlines()[1:] if ln.split()[-1] in res.stdout + res.stderr]
    # manufacturing: 60 test images inspected as a job, the corrupt one quarantined, verdicts and
    # a simulated shift of 192 parts stored, phase-I limits fixed, the drifting lots flagged
    with db.session() as s:
        mfg_job = s.scalars(select(Job).where(Job.name == "manufacturing-inspect-demo-review")).one()
        verdicts = s.scalar(select(func.count()).select_from(Prediction).where(Prediction.domain == "manufacturing"))
    assert mfg_job.status == "done" and mfg_job.rows_quarantined == 1 and mfg_job.rows_out == 60
    assert verdicts == 60 + 192
    from trillium.manufacturing.linestats import p_chart

    chart = p_chart(line="demo-line", freq="1h", limits="stored")
    assert len(chart.points) == 8  # the shift's hourly lots; the review station is charted apart
    assert chart.points["out_of_control"].iloc[-2:].any() and not chart.points["out_of_control"].iloc[:4].any()
    assert "inspector" in _cli("models", "list", "inspector", home=trillium_home).stdout
    # medical records: 24 synthetic notes structured and stored, the binary file quarantined, a
    # patient with several notes viewable, the saved index answers a query from the CLI
    from trillium.medical.store import list_patients, patient_view

    patients = list_patients(db=db)
    assert sum(p["notes"] for p in patients) == 24
    busiest = max(patients, key=lambda p: p["notes"])
    view = patient_view(busiest["patient_id"], db=db)
    assert len(view["notes"]) >= 2 and view["problems"]["active"] and view["medications"]
    index_dir = trillium_home / "demo" / "medical" / "index"
    similar = _cli("medical", "records", "similar", "--index", str(index_dir), "chest pain and hypertension",
                   "-k", "3", home=trillium_home)
    assert similar.returncode == 0, similar.stderr
    hits = json.loads(similar.stdout)["hits"]
    assert len(hits) == 3 and hits[0]["score"] >= hits[-1]["score"] > 0

    # chest CT: a phantom written as DICOM for a patient with notes, analysed end to end (findings
    # JSON with patient coordinates, heatmaps, SEG/SR), stored, and joined in the patient view
    ct_dir = trillium_home / "demo" / "ct"
    payload = json.loads((ct_dir / "findings.json").read_text())
    truth = json.loads((ct_dir / "study" / "truth.json").read_text())
    assert payload["series_uid"] == truth["series_uid"] and payload["findings"]
    found = [n for n in truth["nodules"] if any(
        sum((a - b) ** 2 for a, b in zip(f["center_mm"], n["center_mm"], strict=True)) ** 0.5
        < max(n["diameter_mm"] / 2, 3.0) for f in payload["findings"])]
    assert len(found) >= 3, (payload["findings"], truth["nodules"])
    assert list((ct_dir / "heatmaps").glob("finding-*-gradcam.png")) and (ct_dir / "dicom" / "sr.dcm").exists()
    ct_view = patient_view(payload["patient_id"], db=db)
    assert ct_view["notes"] and len(ct_view["ct_studies"]) == 1
    assert "chest-ct-nodules" in _cli("models", "list", "chest-ct-nodules", home=trillium_home).stdout

    listed = _cli("models", "list", home=trillium_home)
    assert listed.returncode == 0 and "reference-mlp" in listed.stdout and "production" in listed.stdout
    shown = _cli("models", "show", "reference-mlp", "production", home=trillium_home)
    meta = json.loads(shown.stdout)
    assert meta["version"] == 1 and meta["autotune"]["choice"]["1"]
    assert _cli("models", "verify", "reference-mlp", home=trillium_home).returncode == 0

    weights = Path(meta["directory"]) / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    bad = _cli("models", "verify", "reference-mlp", home=trillium_home)
    assert bad.returncode == 2
    assert "modified after registration" in bad.stderr and "Traceback" not in bad.stderr


def test_db_status_and_missing_model_error(trillium_home: Path) -> None:
    st = _cli("db", "status", home=trillium_home)
    from trillium.core.db import head_revision

    head = head_revision()
    assert head is not None and head != "0001"  # later migrations exist (e.g. 0002 control_limits)
    assert st.returncode == 0 and "model_versions" in st.stdout and "control_limits" in st.stdout
    assert f"revision: {head}" in " ".join(st.stdout.split())
    missing = _cli("models", "show", "nope", home=trillium_home)
    assert missing.returncode == 2 and "no model 'nope'" in missing.stderr


def test_unreachable_or_malformed_database_gives_one_clear_line(trillium_home: Path) -> None:
    env_cases = {
        "postgresql+psycopg://nobody@127.0.0.1:1/none": "cannot reach or migrate the database",
        "notadb://x": "cannot use database URL",
    }
    for url, message in env_cases.items():
        for args in (("models", "list"), ("db", "status"), ("models", "verify", "m")):
            env = {**os.environ, "TRILLIUM_HOME": str(trillium_home), "TRILLIUM_DB_URL": url}
            res = subprocess.run([sys.executable, "-m", "trillium.core.cli", *args], env=env, text=True,
                                 capture_output=True, timeout=120, check=False)
            assert res.returncode == 2, (args, res.stderr[-1500:])
            assert message in " ".join(res.stderr.split()) and "Traceback" not in res.stderr
