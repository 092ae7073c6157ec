"""Chest-CT analysis end to end: phantom DICOM -> findings JSON, database, heatmaps, SEG/SR, batch.

A small classifier is trained once for the module on small phantoms (the product trains on
larger ones; see the README for the measured detection figures). The geometry and measurement
checks do not depend on that model: they use the truth of the phantoms directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import func, select

from trillium.core.db import connect
from trillium.core.metrics import fp_budget_threshold, froc_table
from trillium.core.registry import ModelRegistry
from trillium.medical.imaging.analyzer import StudyAnalyzer, detect_candidates
from trillium.medical.imaging.batch import analyze_folder, read_summary
from trillium.medical.imaging.phantom_training import _match, phantom_volume, train_nodule_model
from trillium.medical.tables import ImagingFinding, ImagingStudy

SMALL = (72, 160, 160)
SMALL_SPACING = (2.0, 1.6, 1.6)
CATEGORIES = {"2", "3", "4A", "4B"}
TYPES = {"solid", "part-solid", "ground-glass"}


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRILLIUM_HOME": str(home)}
    env.pop("TRILLIUM_DB_URL", None)
    return subprocess.run([sys.executable, "-m", "trillium.core.cli", *args], env=env, text=True,
                          capture_output=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def ct_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TRILLIUM_HOME holding a small trained nodule classifier as production."""
    home = tmp_path_factory.mktemp("cthome")
    db = connect(f"sqlite:///{home / 'trillium.db'}")
    registry = ModelRegistry(db, home / "registry")
    report = train_nodule_model(studies=3, val_studies=1, epochs=2, width=4, mc_samples=4, registry=registry,
                                shape=SMALL, spacing=SMALL_SPACING, profile_studies=3)
    assert report.record is not None and 0.0 < report.threshold < 1.0
    return home


def _phantom(tmp: Path, name: str, seed: int, *, nodules: int = 3, patient: str | None = None) -> tuple[Path, dict]:
    from trillium.medical.imaging.phantom import write_phantom

    folder = tmp / name
    truth = write_phantom(folder, nodules=nodules, seed=seed, shape=SMALL, spacing=SMALL_SPACING, patient_id=patient)
    return folder, truth


def test_candidates_and_measurements_meet_the_synthetic_goals_before_any_model() -> None:
    """Nearly every nodule of 5 mm or more gets a candidate whose refined measurement is within the
    issue's goals (centre 3 mm, diameter 20 %) on most nodules: the model can only choose among these."""
    found = total = good = 0
    for seed in (11, 12):
        vol, nodules = phantom_volume(8, seed)  # the product's default grid (1.5 mm slices, 1.4 mm pixels)
        cands, measurements, lungs = detect_candidates(vol)
        assert 1_000 < lungs.sum() * np.prod(vol.spacing) / 1000 < 12_000  # mL: two lungs, not the body
        for n_idx, nod in enumerate(nodules):
            if nod.diameter_mm < 5:
                continue
            total += 1
            hits = [(c, m) for c, m in zip(cands, measurements, strict=True)
                    if _match(c.center_kji, nodules, vol.spacing) == n_idx and m is not None]
            if not hits:
                continue
            found += 1
            m = hits[0][1]
            centre = np.linalg.norm((np.array(m.center_kji) - np.array(nod.center_kji)) * np.array(vol.spacing))
            if centre <= 3.0 and abs(m.diameter_mm - nod.diameter_mm) <= 0.2 * nod.diameter_mm:
                good += 1
    assert total >= 10
    assert found / total >= 0.9, (found, total)  # 14 of 15 here: a faint 5-6 mm ground-glass one is missed
    assert good / found >= 0.75, (good, found)  # small part-solid nodules are measured short (README)


def test_analyze_cli_writes_findings_stores_them_and_exports(ct_home: Path, tmp_path: Path) -> None:
    study, truth = _phantom(tmp_path, "study", seed=21, nodules=4, patient="P-CT-1")
    out = tmp_path / "findings.json"
    res = _cli("medical", "analyze", str(study), "--json", str(out), "--heatmaps", str(tmp_path / "heat"),
               "--dicom", str(tmp_path / "dicom"), home=ct_home)
    assert res.returncode == 0, res.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["series_uid"] == truth["series_uid"] and payload["patient_id"] == "P-CT-1"
    assert payload["n_candidates"] > 0 and payload["timings_s"]["total"] > 0
    for f in payload["findings"]:
        assert len(f["center_mm"]) == 3 and f["diameter_mm"] >= 3.0
        assert 0.0 <= f["malignancy"] <= 1.0 and f["malignancy_std"] >= 0.0
        assert f["type"] in TYPES and f["category"] in CATEGORIES
        assert set(f["heatmaps"]) == {"gradcam", "ig"}
        for png in f["heatmaps"].values():
            assert (tmp_path / "heat" / png).stat().st_size > 1000
    # centre_mm is in patient coordinates (LPS mm): the findings on the phantom's nodules sit within
    # their radius (all 4 of seed 21: 0.1-2.1 mm from the truth centres, radii 4.8-8.2 mm), no two on
    # one nodule, and most of the nodules are found. This module's model (2 epochs on 3 small
    # phantoms, with nodules against the pleura among them) also calls up to two wall-adjacent
    # candidates nodules; the product-size model's false findings are measured in
    # benchmarks/results/ct_juxtapleural.json (0 per scan on interior phantoms at its threshold)
    assert payload["findings"], "the analysis of a phantom with 4 nodules reported no finding"
    truth_mm = np.array([n["center_mm"] for n in truth["nodules"]])
    radius = np.array([n["diameter_mm"] / 2 for n in truth["nodules"]])
    hit, false = [], []
    for f in payload["findings"]:
        dist = np.linalg.norm(truth_mm - np.array(f["center_mm"]), axis=1)
        nearest = int(np.argmin(dist))
        if dist[nearest] <= radius[nearest]:
            hit.append(nearest)
        else:
            false.append((f["id"], f["center_mm"], round(float(dist[nearest]), 1)))
            assert dist[nearest] > 2 * radius[nearest], f"a finding beside a nodule, off its centre: {false[-1]}"
    assert len(false) <= 2, false
    assert len(set(hit)) == len(hit), f"two findings on one nodule: {hit}"
    assert len(hit) >= len(truth["nodules"]) - 1, f"found {len(hit)} of {len(truth['nodules'])} nodules"
    db = connect(f"sqlite:///{ct_home / 'trillium.db'}")
    with db.session() as s:
        stored = s.scalars(select(ImagingStudy).where(ImagingStudy.series_uid == truth["series_uid"])).one()
        n = s.scalar(select(func.count()).select_from(ImagingFinding).where(ImagingFinding.study_pk == stored.id))
    assert stored.patient_id == "P-CT-1" and n == len(payload["findings"])
    sr = pydicom.dcmread(payload["dicom"]["sr"])
    assert sr.StudyInstanceUID == truth["study_uid"]
    seg = pydicom.dcmread(payload["dicom"]["seg"])
    assert len(seg.SegmentSequence) == len(payload["findings"])
    # analysing again replaces the study instead of duplicating it
    again = _cli("medical", "analyze", str(study), "--json", str(out), home=ct_home)
    assert again.returncode == 0, again.stderr[-2000:]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ImagingStudy)
                        .where(ImagingStudy.series_uid == truth["series_uid"])) == 1
    # each read of the patient's CT is attributable: the OS account, the series, the patient
    from trillium.core.audit import audit_rows, cli_actor

    reads = [r for r in audit_rows(db, action="medical.ct.analyze") if r["target"] == truth["series_uid"]]
    assert len(reads) == 2 and {r["actor"] for r in reads} == {cli_actor()}
    assert {r["details"]["patient"] for r in reads} == {"P-CT-1"} and reads[-1]["details"]["source"] == str(study)


def test_analyze_cli_bad_input_is_one_clear_line(ct_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "not-dicom"
    folder.mkdir()
    (folder / "scan.dcm").write_text("this is a report, not an image")
    res = _cli("medical", "analyze", str(folder), home=ct_home)
    assert res.returncode == 2 and res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    assert "scan.dcm" in res.stderr and "not a DICOM file" in res.stderr and "Traceback" not in res.stderr


def test_analyze_without_a_model_says_how_to_train(tmp_path: Path) -> None:
    study, _ = _phantom(tmp_path, "s", seed=3, nodules=1)
    res = _cli("medical", "analyze", str(study), home=tmp_path / "empty-home")
    assert res.returncode == 2 and "trillium medical train" in res.stderr and "Traceback" not in res.stderr


def test_a_study_end_to_end_gives_the_same_findings_on_the_torch_path(ct_home: Path, tmp_path: Path) -> None:
    """Issue 22: DICOM folder to findings with the SciPy and the torch candidate filters (torch on
    the CPU here): same candidates, same findings, each stage timed."""
    study, truth = _phantom(tmp_path, "s", seed=41, nodules=3)
    db = connect(f"sqlite:///{ct_home / 'trillium.db'}")
    analyzer = StudyAnalyzer.from_registry(registry=ModelRegistry(db, ct_home / "registry"), backend="scipy")
    ref = analyzer.analyze(study)
    analyzer.backend, analyzer.device = "torch", "cpu"
    ours = analyzer.analyze(study)
    assert ref.n_candidates == ours.n_candidates > len(truth["nodules"])
    assert [f["center_mm"] for f in ours.findings] == [f["center_mm"] for f in ref.findings]
    assert [(f["diameter_mm"], f["category"], f["type"]) for f in ours.findings] == \
        [(f["diameter_mm"], f["category"], f["type"]) for f in ref.findings]
    assert np.allclose([f["nodule_probability"] for f in ours.findings],
                       [f["nodule_probability"] for f in ref.findings], atol=1e-3)
    assert {"load", "lungs", "candidates", "measure", "classify", "findings", "total"} <= set(ours.timings)


def test_an_unknown_backend_is_one_clear_line(tmp_path: Path) -> None:
    res = _cli("medical", "detect-eval", "--backend", "numba", home=tmp_path / "h")
    assert res.returncode == 2 and "--backend" in res.stderr and "'numba'" in res.stderr
    assert "Traceback" not in res.stderr


def test_analyze_batch_quarantines_a_broken_study_and_resumes_without_duplicates(ct_home: Path,
                                                                                 tmp_path: Path) -> None:
    root = tmp_path / "studies"
    _phantom(root, "a", seed=31, nodules=2)
    _phantom(root, "b", seed=32, nodules=2)
    broken, _ = _phantom(root, "c-missing-slice", seed=33, nodules=1)
    files = sorted(broken.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    files[len(files) // 2].unlink()
    db = connect(f"sqlite:///{ct_home / 'trillium.db'}")
    analyzer = StudyAnalyzer.from_registry(registry=ModelRegistry(db, ct_home / "registry"))
    out = tmp_path / "summary.csv"
    res = analyze_folder(analyzer, root, out, db=db, progress=False, chunk_rows=2, actor="cli:tester")
    assert res.job.status == "done" and res.job.rows_out == 2 and res.job.rows_quarantined == 1
    text = res.job.quarantine.read_text()
    assert "c-missing-slice" in text and "missing slice" in text and "(0020,0032)" in text
    summary = read_summary(out)
    assert sorted(summary["study"]) == ["a", "b"]
    assert all(Path(p).exists() for p in summary["json"])
    from trillium.core.audit import audit_rows

    # the job's reads of each patient's CT are attributable: a row per patient naming its series
    reads = [r for r in audit_rows(db, action="medical.ct.analyze_batch") if r["details"]["job"] == res.job.job_id]
    assert {r["actor"] for r in reads} == {"cli:tester"}
    assert {r["target"] for r in reads} == {str(p) for p in summary["patient_id"]}
    assert sorted(s for r in reads for s in r["details"]["series"]) == sorted(summary["series_uid"])
    again = analyze_folder(analyzer, root, out, db=db, progress=False, chunk_rows=2)
    assert again.job.rows_out == 2 and len(read_summary(out)) == 2


def test_registered_classifier_carries_its_ct_reference_profile(ct_home: Path) -> None:
    from trillium.core.monitoring.store import profile_of
    from trillium.medical.imaging.monitoring import COLUMNS, SCORE_KEY

    db = connect(f"sqlite:///{ct_home / 'trillium.db'}")
    profile = profile_of(ModelRegistry(db, ct_home / "registry"), "chest-ct-nodules")
    assert profile["rows"] == 3 and profile["meta"]["domain"] == "medical-imaging"
    assert set(profile["features"]) == set(COLUMNS)
    assert profile["features"]["kernel"]["proportions"] == {"B30f": 1.0}
    assert profile["features"]["slice_spacing_mm"]["min"] == SMALL_SPACING[0]
    noise = profile["features"]["lung_noise_hu"]
    assert 3.0 < noise["min"] <= noise["max"] < 20.0
    assert 0.0 < profile["score"]["mean"] < 1.0 and SCORE_KEY == "mean_nodule_probability"


def test_analyze_batch_stores_a_monitoring_run_and_alerts_only_for_the_shifted_batch(ct_home: Path,
                                                                                     tmp_path: Path) -> None:
    from trillium.core.monitoring import store
    from trillium.medical.imaging.phantom import write_phantom

    db = connect(f"sqlite:///{ct_home / 'trillium.db'}")
    analyzer = StudyAnalyzer.from_registry(registry=ModelRegistry(db, ct_home / "registry"))
    analyzer.threshold = 1.01  # no findings to measure: monitoring reads the statistics made before that step
    clean, shifted = tmp_path / "clean", tmp_path / "shifted"
    for seed in (41, 42):
        _phantom(clean, f"s{seed}", seed=seed, nodules=2)
    write_phantom(shifted / "sharp", nodules=2, seed=43, shape=SMALL, spacing=SMALL_SPACING, kernel="B70f",
                  noise_sigma=0.35, noise_hu=35.0)
    ok = analyze_folder(analyzer, clean, tmp_path / "clean.csv", db=db, progress=False, store=False)
    bad = analyze_folder(analyzer, shifted, tmp_path / "shifted.csv", db=db, progress=False, store=False)
    runs = store.runs("chest-ct-nodules", db=db)
    mine = runs[runs["job_id"].isin([ok.job.job_id, bad.job.job_id])].set_index("job_id")
    assert mine.loc[ok.job.job_id, "rows"] == 2 and mine.loc[ok.job.job_id, "status"] == "ok"
    assert mine.loc[bad.job.job_id, "rows"] == 1 and mine.loc[bad.job.job_id, "status"] == "act"
    alerts = store.alerts("chest-ct-nodules", db=db)
    assert set(alerts["job_id"]) >= {bad.job.job_id} and ok.job.job_id not in set(alerts["job_id"])
    kernel = alerts[(alerts["job_id"] == bad.job.job_id) & (alerts["rule"] == "unseen_category")]
    assert list(kernel["feature"]) == ["kernel"] and "B70f" in kernel["message"].iloc[0]
    # the report of ``trillium monitor report`` (and of the page) has the CT runs and the alert
    res = _cli("monitor", "report", "--model", "chest-ct-nodules", "--json", str(tmp_path / "rep.json"), home=ct_home)
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert {r["job_id"] for r in rep["timeline"]} >= {ok.job.job_id, bad.job.job_id}
    assert any(a["rule"] == "unseen_category" and a["feature"] == "kernel" for a in rep["alerts"])
    assert "unseen_category" in res.stdout


def test_froc_table_and_threshold_rules() -> None:
    scored = [(0.99, True), (0.9, False), (0.8, True), (0.7, False), (0.6, False), (0.5, True)]
    rows = {r["fp_per_scan"]: r["sensitivity"] for r in froc_table(scored, n_truth=4, scans=2)}
    assert rows[0.125] == 0.25 and rows[0.5] == 0.5 and rows[1.0] == 0.5 and rows[2.0] == 0.75
    prob = np.array([0.9, 0.8, 0.3, 0.2, 0.95])
    y = np.array([0, 0, 0, 0, 1])
    groups = np.array([1, 1, 2, 2, 1])
    t = fp_budget_threshold(prob, y, groups, max_fp_per_group=0.5)  # 1 FP allowed over 2 scans
    assert ((prob >= t) & (y == 0)).sum() == 1 and (prob[y == 1] >= t).all()


def test_deid_cli_leaves_no_phi_and_keeps_the_series_loadable(tmp_path: Path) -> None:
    from trillium.medical.imaging.dicom_io import load_ct

    study, truth = _phantom(tmp_path, "phi", seed=41, nodules=1, patient="MRN-12345678")
    out = tmp_path / "deid"
    salt = tmp_path / "salt"
    salt.write_text("test-salt-5f1c\n")
    salt.chmod(0o644)  # readable by others: refused, naming the file, before anything is written
    res = _cli("medical", "deid", str(study), str(out), "--salt-file", str(salt), home=tmp_path / "home")
    assert res.returncode != 0 and str(salt) in res.stderr and "chmod 600" in res.stderr and not out.exists()
    # the secret never comes from the command line (ps, shell histories)
    assert _cli("medical", "deid", str(study), str(out), "--salt", "x", home=tmp_path / "home").returncode != 0
    salt.chmod(0o600)
    res = _cli("medical", "deid", str(study), str(out), "--salt-file", str(salt), home=tmp_path / "home")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "test-salt-5f1c" not in res.stderr + res.stdout
    files = list(out.rglob("*.dcm"))
    assert len(files) == SMALL[0]
    for p in files[:5]:
        ds = pydicom.dcmread(p)
        text = "".join(str(e.value) for e in ds.iterall() if e.VR not in ("OB", "OW"))
        assert "MRN-12345678" not in text and "Phantom" not in text and truth["series_uid"] not in text
        assert "MRN-12345678" not in str(p) and ds.PatientIdentityRemoved == "YES"
    vol = load_ct(out)
    original = load_ct(study)
    assert np.array_equal(vol.hu, original.hu) and np.allclose(vol.affine, original.affine)
    assert "truth.json" in res.stderr  # the non-DICOM file is reported as skipped, never copied
    assert not list(out.rglob("truth.json"))
    # the same salt from the environment gives the same pseudonyms: runs can be joined
    env_out = tmp_path / "deid-env"
    env = {**os.environ, "TRILLIUM_HOME": str(tmp_path / "home"), "TRILLIUM_DEID_SALT": "test-salt-5f1c"}
    env.pop("TRILLIUM_DB_URL", None)
    again = subprocess.run([sys.executable, "-m", "trillium.core.cli", "medical", "deid", str(study), str(env_out)],
                           env=env, text=True, capture_output=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    first = pydicom.dcmread(files[0])
    twin = next(pydicom.dcmread(p) for p in env_out.rglob("*.dcm") if p.name == files[0].name)
    assert twin.PatientID == first.PatientID and twin.SOPInstanceUID == first.SOPInstanceUID


def test_nodule_eval_cli_on_a_file_of_the_medmnist_layout(tmp_path: Path) -> None:
    from trillium.medical.imaging.nodule_eval import write_synthetic_npz

    npz = tmp_path / "nodulemnist3d.npz"
    write_synthetic_npz(npz, n_train=60, n_val=16, n_test=20, seed=1)
    out = tmp_path / "eval.json"
    res = _cli("medical", "nodule-eval", "--npz", str(npz), "--json", str(out), "--epochs", "3", "--width", "4",
               home=tmp_path / "home")
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["n_train"] == 60 and report["n_test"] == 20
    # the same bar as the API test (test_nodule_eval.py) on its own small file: seeded, AUC 0.96 here
    assert 0.0 <= report["acc"] <= 1.0 and report["auc"] > 0.9, report
    assert report["anchor"]["best_3d_auc"] == 0.886
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((2, 28, 28, 28), np.uint8))
    res = _cli("medical", "nodule-eval", "--npz", str(bad), home=tmp_path / "home")
    assert res.returncode == 2 and "bad.npz" in res.stderr and "Traceback" not in res.stderr


def _lidc_xml(folder: Path, truth: dict) -> int:
    """An LIDC-IDRI XML of four readers outlining every truth nodule on its central slice (a
    circle of its diameter), written into the series folder; returns how many it outlines."""
    from trillium.medical.imaging.dicom_io import load_ct

    vol = load_ct(folder)
    sy, sx = vol.spacing[1], vol.spacing[2]
    rois = []
    for n in truth["nodules"]:
        k, j, i = (round(v) for v in n["center_kji"])
        r = n["diameter_mm"] / 2
        pts = "".join(f"<edgeMap><xCoord>{i + r / sx * np.cos(t):.0f}</xCoord><yCoord>{j + r / sy * np.sin(t):.0f}"
                      f"</yCoord></edgeMap>" for t in np.linspace(0, 2 * np.pi, 24, endpoint=False))
        rois.append(f"<roi><imageZposition>0</imageZposition><imageSOP_UID>{vol.sop_instance_uids[k]}</imageSOP_UID>"
                    f"<inclusion>TRUE</inclusion>{pts}</roi>")
    sessions = "".join(
        f"<readingSession><servicingRadiologistID>R{r}</servicingRadiologistID>"
        + "".join(f"<unblindedReadNodule><noduleID>N{n}</noduleID>{roi}</unblindedReadNodule>"
                  for n, roi in enumerate(rois)) + "</readingSession>" for r in range(4))
    (folder / "reads.xml").write_text(
        f'<?xml version="1.0"?><LidcReadMessage xmlns="http://www.nih.gov"><ResponseHeader><SeriesInstanceUid>'
        f"{vol.series_uid}</SeriesInstanceUid></ResponseHeader>{sessions}</LidcReadMessage>")
    return len(rois)


def test_real_eval_scores_a_series_against_its_readers_marks(ct_home: Path, tmp_path: Path) -> None:
    study, truth = _phantom(tmp_path, "marked", seed=33, nodules=4, patient="P-EVAL-1")
    outlined = _lidc_xml(study, truth)
    out = tmp_path / "real.json"
    res = _cli("medical", "real-eval", str(study), "--min-readers", "3", "--json", str(out), home=ct_home)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    (series,) = report["series"]
    assert series["format"] == "lidc" and series["series_uid"] == truth["series_uid"]
    counted = [n for n in truth["nodules"] if n["diameter_mm"] >= 3.0]
    assert series["counted_lesions"] == len(counted) <= outlined and series["all_marked_lesions"] == outlined
    assert all(les["readers"] == 4 for les in series["lesions"])
    assert series["hits"] + series["missed"] == len(counted) and series["hits"] >= 1
    assert series["hits"] + len(series["false_findings"]) + len(series["ignored_findings"]) <= series["findings"]
    for les in series["lesions"]:
        if les["hit"]:
            assert les["centre_error_mm"] <= max(les["diameter_mm"] / 2, 5.0)
    assert report["summary"]["lesions"] == len(counted) and report["summary"]["found"] == series["hits"]
    assert f"{series['hits']}/{len(counted)} lesions found" in res.stderr
    from trillium.core.db import AuditEvent

    with connect(f"sqlite:///{ct_home / 'trillium.db'}").session() as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.action == "medical.ct.real_eval")).all()
    assert [r.target for r in rows] == [truth["series_uid"]] and rows[0].details["findings"] == series["findings"]
    assert rows[0].details["patient"] == "P-EVAL-1" == series["patient_id"]  # `trillium audit --patient` finds it
