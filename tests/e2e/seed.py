"""Fill a TRILLIUM_HOME with what each dashboard page shows, through the domain APIs only.

Run as a script (``python seed.py HOME``) so the seeding process has its own TRILLIUM_HOME and
database connections, apart from the test process; it prints a JSON summary of what it stored
(transaction ids, patients, study ids, the registered models' name, version and kind, the scoring
job and its output folder) for the browser tests to look for.

- finance: a small fraud model trained on simulated transactions, a day scored as a batch job
  (alerts, reasons, the what-if's job output), and a shifted day checked by monitoring (alerts);
- medical: synthetic notes structured and stored, and a phantom CT series written as DICOM with
  one stored finding (the slice viewer reads the series from disk);
- manufacturing: a tiny inspector trained on synthetic good parts and registered, then good and
  defective parts inspected with overlays and stored on line L1 over four hours.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path


def seed_finance(work: Path) -> dict:
    from trillium.core.registry import ModelRegistry
    from trillium.finance.batch import score_file
    from trillium.finance.lifecycle import train_model
    from trillium.finance.pipeline import FraudScorer
    from trillium.finance.simulate import simulate_transactions
    from trillium.finance.store import alert_queue

    sim = simulate_transactions(n_customers=300, n_terminals=600, n_days=50, seed=4)
    history = sim[sim["timestamp"] < "2018-05-13"]
    trained = train_model(history, kind="gbt", train_days=21, holdout_days=7, autotune=False,
                          registry=ModelRegistry())
    today = sim[sim["timestamp"] >= "2018-05-13"].drop(columns=["label", "fraud_scenario"])
    today.to_csv(work / "today.csv", index=False)
    history.to_parquet(work / "history.parquet", index=False)
    scorer = FraudScorer.from_registry(alerts_per_day=20)
    job = score_file(scorer, work / "today.csv", work / "scores", history=work / "history.parquet",
                     progress=False).job
    # one shifted day checked by monitoring (amounts x2), so the Monitoring page has an alert
    from trillium.finance.monitoring import monitor_batch

    shifted = today[today["timestamp"] < "2018-05-14"].copy()
    shifted["amount"] = (shifted["amount"] * 2).round(2)
    monitor_batch(scorer, shifted, history=history.drop(columns=["fraud_scenario"]), label="seed: amounts x2")
    queue = alert_queue(budget=100)
    return {"alerts": [str(t) for t in queue["transaction_id"]],
            "model": [trained.record.name, trained.record.version, trained.record.kind],
            "job": {"name": job.name, "status": job.status, "rows_in": job.rows_in}, "scores": job.output}


def seed_medical(work: Path) -> dict:
    from trillium.core.db import connect
    from trillium.medical.imaging.phantom import write_phantom
    from trillium.medical.imaging.phantom_training import train_nodule_model
    from trillium.medical.records.notes import Note
    from trillium.medical.records.structurer import RecordStructurer
    from trillium.medical.records.synth import synthetic_notes
    from trillium.medical.store import store_ct_study, store_notes

    structurer = RecordStructurer()
    notes = synthetic_notes(8, seed=2)
    store_notes([structurer.structure(Note(note_id=n.note_id, text=n.text, patient_id=n.patient_id))
                 for n in notes], db=connect())
    folder = work / "ct"
    truth = write_phantom(folder, nodules=1, seed=7, shape=(30, 96, 96), spacing=(2.0, 2.5, 2.5),
                          patient_id=notes[0].patient_id)
    nodule = truth["nodules"][0]
    study_id = store_ct_study(
        truth["series_uid"],
        [{"id": 1, "center_mm": nodule["center_mm"], "diameter_mm": nodule["diameter_mm"], "malignancy": 0.8,
          "malignancy_std": 0.05, "type": nodule["type"], "category": "4A"}],
        patient_id=notes[0].patient_id, study_date="20250101", source=str(folder), db=connect())
    # a small nodule classifier (about 15 s), so that an uploaded study is analysed for real
    report = train_nodule_model(studies=2, val_studies=1, epochs=1, width=4, mc_samples=2, profile_studies=2,
                                shape=(48, 128, 128), spacing=(2.0, 2.0, 2.0))
    record = report.record
    return {"patients": sorted({n.patient_id for n in notes}), "notes": [n.note_id for n in notes],
            "ct_patient": notes[0].patient_id, "ct_study": study_id, "series_uid": truth["series_uid"],
            "ct_folder": str(folder), "model": [record.name, record.version, record.kind],
            "monitoring": seed_medical_monitoring(structurer)}


def seed_medical_monitoring(structurer: object) -> dict:
    """Monitoring runs of the two medical models, so that the Monitoring page shows them: three CT
    phantoms of a sharper kernel (tag B70f, noisier) checked against the classifier's profile, and
    a notes reference registered from four departments with a batch of a fifth checked against it."""
    from trillium.core.monitoring.store import check_batch
    from trillium.core.registry import ModelRegistry
    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.monitoring import study_frame
    from trillium.medical.imaging.phantom_training import phantom_volume
    from trillium.medical.records.monitoring import monitor_notes, register_reference
    from trillium.medical.records.synth import SPECIALTIES, synthetic_notes

    registry = ModelRegistry()
    analyzer = StudyAnalyzer.from_registry(registry=registry)
    stats = [analyzer.analyze_volume(phantom_volume(2, 700 + i, shape=(48, 128, 128), spacing=(2.0, 2.0, 2.0),
                                                    kernel="B70f", noise_sigma=0.35, noise_hu=35.0)[0]).monitoring
             for i in range(3)]
    frame, score = study_frame(stats)
    ct_runs = check_batch(registry, analyzer.record, frame, score, label="seed: sharper kernel")
    specialties = list(SPECIALTIES)
    known, absent = specialties[:4], specialties[4]

    def structured(n: int, seed: int, specs: list[str]) -> list:
        return [structurer.structure(x.text, note_id=x.note_id)
                for x in synthetic_notes(n, seed=seed, specialties=specs)]

    reference = register_reference(structured(60, 31, known), structurer, registry=registry)
    notes_runs = monitor_notes(structured(20, 32, [absent]), registry=registry, label=f"seed: {absent} notes")
    return {"ct_label": "seed: sharper kernel", "ct_runs": len(ct_runs), "notes_label": f"seed: {absent} notes",
            "notes_runs": len(notes_runs), "notes_reference": [reference.name, reference.version, reference.kind]}


def seed_manufacturing(work: Path) -> dict:
    from trillium.manufacturing.detector import DefectDetector
    from trillium.manufacturing.linestats import store_inspections
    from trillium.manufacturing.pipeline import Inspector
    from trillium.manufacturing.synth import synthetic_images

    good, _ = synthetic_images(12, size=32, seed=1)
    defects, _ = synthetic_images(4, size=32, seed=2, defect="spot")
    detector = DefectDetector(size=32, width=4, steps=3, batch_size=4, pool=3, val_fraction=0.5)
    detector.fit(good.transpose(0, 3, 1, 2), val_defects=defects.transpose(0, 3, 1, 2))
    inspector = Inspector(detector)
    record = inspector.register()
    parts, _ = synthetic_images(6, size=48, seed=5)
    scratched, _ = synthetic_images(2, size=48, seed=6, defect="scratch")
    images = [*parts, *scratched]
    ids = [f"/cam/L1/part-{i:02d}.png" for i in range(len(images))]
    results = inspector.inspect_arrays(images, ids, overlay_dir=work / "overlays")
    t0 = datetime(2026, 11, 2, 8, tzinfo=UTC)
    keep = ("image_id", "score", "verdict", "defect_type", "overlay", "threshold")
    store_inspections([{**{k: r.as_dict()[k] for k in keep}, "inspected_at": t0 + timedelta(minutes=30 * i)}
                       for i, r in enumerate(results)], line="L1")
    sample, _ = synthetic_images(1, size=48, seed=9, defect="scratch")
    upload = work / "upload-part.png"
    from PIL import Image

    Image.fromarray((sample[0][..., 0] * 255).round().astype("uint8")).save(upload)
    return {"inspections": len(results), "defects": sum(r.verdict == "defect" for r in results),
            "upload_image": str(upload), "model": [record.name, record.version, record.kind]}


def main(home: Path) -> dict:
    if os.environ.get("TRILLIUM_HOME") != str(home):
        raise SystemExit("run with TRILLIUM_HOME set to the home to seed")
    import torch

    torch.set_num_threads(1)
    work = home / "seed"
    work.mkdir(parents=True, exist_ok=True)
    return {"finance": seed_finance(work), "medical": seed_medical(work),
            "manufacturing": seed_manufacturing(work)}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
