"""The chest-CT part of ``trillium demo``: a phantom study analysed end to end.

Trains the nodule classifier on phantom studies when no production model is registered (a
few minutes on two cores; later demos reuse it), writes a fresh phantom as a DICOM series for
the demo patient, analyses it (findings, heatmaps, DICOM SEG and SR), stores it so the patient
view joins it with the patient's notes, and compares the findings with the phantom's truth.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from trillium.core.config import home_dir
from trillium.core.db import connect
from trillium.core.errors import RegistryError

DEMO_TRAIN = {"studies": 8, "val_studies": 2, "epochs": 6, "profile_studies": 4}


def imaging_demo(console: Console, patient_id: str | None = None) -> dict[str, Any]:
    from trillium.core.registry import ModelRegistry
    from trillium.medical.imaging.analyzer import StudyAnalyzer, store_result, write_json
    from trillium.medical.imaging.classifier import DEFAULT_MODEL_NAME
    from trillium.medical.imaging.dicom_export import export_findings
    from trillium.medical.imaging.explain import explain_findings
    from trillium.medical.imaging.phantom import write_phantom
    from trillium.medical.imaging.phantom_training import train_nodule_model

    t0 = time.perf_counter()
    db = connect()
    registry = ModelRegistry(db)
    work = home_dir() / "demo" / "ct"
    trained = None
    try:
        analyzer = StudyAnalyzer.from_registry(DEFAULT_MODEL_NAME, registry=registry)
    except RegistryError:
        console.print("training the chest-CT nodule classifier on phantom studies (first demo only) ...")
        trained = train_nodule_model(**DEMO_TRAIN, registry=registry)
        analyzer = StudyAnalyzer.from_registry(DEFAULT_MODEL_NAME, registry=registry)
    study_dir = work / "study"
    truth = write_phantom(study_dir, nodules=5, seed=4242, patient_id=patient_id or "PHANTOM-4242")
    result = analyzer.analyze(study_dir)
    heat = explain_findings(result, analyzer.classifier, work / "heatmaps")
    result.heatmap_dir = str((work / "heatmaps").resolve())
    masks = [m.full_mask(result.shape) for m in result.measurements]
    exported = export_findings(result.volume, result.findings, masks, work / "dicom")
    json_path = write_json(result, work / "findings.json")
    study_id = store_result(result, db=db)
    from trillium.medical.imaging.monitoring import monitor_study

    monitor_study(analyzer, result.as_json(), db=db, job_id=None, label="demo study")  # the Monitoring page's CT run
    db.audit("demo.ct", target=str(study_dir), findings=len(result.findings))

    matched = 0
    for n in truth["nodules"]:
        if any(np.linalg.norm(np.array(f["center_mm"]) - np.array(n["center_mm"])) < max(n["diameter_mm"] / 2, 3.0)
               for f in result.findings):
            matched += 1
    table = Table(title=f"chest-CT demo: {result.shape[0]} slices, {result.n_candidates} candidates, "
                        f"{result.timings['total']:.1f} s")
    for col in ("id", "centre (LPS mm)", "diameter", "type", "Lung-RADS", "malignancy", "nodule p"):
        table.add_column(col)
    for f in result.findings:
        table.add_row(str(f["id"]), ", ".join(f"{v:.0f}" for v in f["center_mm"]), f"{f['diameter_mm']:.1f} mm",
                      f["type"], f["category"], f"{f['malignancy']:.2f} ± {f['malignancy_std']:.2f}",
                      f"{f['nodule_probability']:.2f} ± {f['nodule_probability_std']:.2f}")
    console.print(table)
    console.print(f"truth: {matched} of {len(truth['nodules'])} phantom nodules found; "
                  f"heatmaps {work / 'heatmaps'}; SEG/SR {', '.join(exported.values())}; JSON {json_path}; "
                  f"stored as study {study_id} for patient {result.patient_id} "
                  f"({time.perf_counter() - t0:.1f} s{', training included' if trained else ''})")
    return {"findings": result.findings, "truth": truth, "matched": matched, "json": str(json_path),
            "heatmaps": heat, "dicom": exported, "study_id": study_id, "patient_id": result.patient_id,
            "trained": trained.metrics if trained else None, "study_dir": str(study_dir)}




