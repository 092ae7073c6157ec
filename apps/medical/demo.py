"""The medical part of ``trillium demo``: clinical notes structured, similar cases, and a chest-CT
phantom analysed end to end for the same patient (``trillium.medical.imaging.demo``).

Writes a few synthetic notes (several specialties, some patients with more than one note) as
text files, reads them back through the note adapter (one deliberately binary file is
quarantined), structures them, stores notes and entities in the database, builds and saves the
similar-case index, runs a similarity query for a new note, and prints one patient's view.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from trillium.core.config import home_dir
from trillium.core.db import connect

QUERY_NOTE = """CHIEF COMPLAINT: Chest pain.
HISTORY OF PRESENT ILLNESS: A 58-year-old man with hypertension and hyperlipidemia presents with exertional
substernal chest pressure for two weeks. He denies syncope. No shortness of breath at rest.
MEDICATIONS: Aspirin 81 mg daily. Atorvastatin 40 mg at bedtime.
ASSESSMENT AND PLAN: Possible unstable angina. Stress test and echocardiogram."""


def medical_demo(console: Console, n_notes: int = 24) -> dict[str, Any]:
    from trillium.medical.records.notes import load_notes
    from trillium.medical.records.retrieval import SimilarCaseIndex
    from trillium.medical.records.structurer import RecordStructurer
    from trillium.medical.records.synth import synthetic_notes, write_notes_folder
    from trillium.medical.store import patient_view, store_notes

    t0 = time.perf_counter()
    db = connect()
    work = home_dir() / "demo" / "medical"
    folder = work / "notes"
    synth = synthetic_notes(n_notes, seed=3)
    write_notes_folder(synth, folder)
    (folder / "scanned_fax.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # not a note
    notes, rejected = load_notes(folder)
    patients = {x.note_id: x.patient_id for x in synth}
    structurer = RecordStructurer()
    t1 = time.perf_counter()
    structured = [structurer.structure(n, patient_id=n.patient_id or patients.get(n.note_id)) for n in notes]
    t_struct = time.perf_counter() - t1
    store_notes(structured, db=db)
    index = SimilarCaseIndex(method="hybrid").fit([s.text for s in structured], [s.note_id for s in structured],
                                                  [s.concepts() for s in structured])
    index_dir = index.save(work / "index")
    query = structurer.structure(QUERY_NOTE, note_id="query")
    hits = index.query(QUERY_NOTE, k=3, concepts=query.concepts())
    specialty = {x.note_id: x.specialty for x in synth}
    counts: dict[str, int] = {}
    for s in structured:
        for e in s.entities:
            counts[e.kind] = counts.get(e.kind, 0) + 1
    multi = sorted({p for p in patients.values() if sum(v == p for v in patients.values()) > 1})
    patient = multi[0] if multi else structured[0].patient_id
    view = patient_view(patient, db=db)
    # monitoring: a reference from other synthetic notes of the same departments, then this batch
    from trillium.medical.records.monitoring import monitor_notes, register_reference

    write_notes_folder(synthetic_notes(200, seed=4), work / "reference-notes")  # read as the batch's notes are
    reference_notes = [structurer.structure(n) for n in load_notes(work / "reference-notes")[0]]
    reference = register_reference(reference_notes, structurer, description="demo: 200 synthetic notes (seed 4)")
    drift_runs = monitor_notes(structured, db=db, scope="batch", label="demo notes")
    db.audit("demo.medical", target=str(folder), notes=len(structured), quarantined=len(rejected))

    table = Table(title="medical records demo")
    table.add_column("step")
    table.add_column("result")
    table.add_row("notes", f"{len(structured)} structured from {folder}, {len(rejected)} quarantined"
                  + (f" ({rejected[0].reason[:60]})" if rejected else ""))
    table.add_row("entities", ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                  + f"; negated {sum(e.negated for s in structured for e in s.entities)}")
    table.add_row("speed", f"{len(structured) / t_struct:.0f} notes/s (one process)")
    table.add_row("query", "58-year-old with exertional chest pressure: "
                  + "; ".join(f"{h.note_id} ({specialty.get(h.note_id, '?')}, {h.score:.2f})" for h in hits))
    table.add_row(f"patient {patient}", f"{len(view['notes'])} notes; active problems: "
                  + ", ".join(p["problem"] for p in view["problems"]["active"][:5])
                  + f"; medications: {', '.join(m['normalized'] for m in view['medications'][:4])}")
    table.add_row("index", str(index_dir))
    table.add_row("monitoring", f"reference {reference.name} v{reference.version} ({len(reference_notes)} notes); "
                  f"the demo's notes checked: run(s) {drift_runs}")
    table.add_row("elapsed", f"{time.perf_counter() - t0:.1f} s")
    console.print(table)
    from trillium.medical.imaging.demo import imaging_demo

    ct = imaging_demo(console, patient_id=patient)
    return {"ct": ct, "notes": len(structured), "quarantined": len(rejected), "entities": counts,
            "hits": [(h.note_id, specialty.get(h.note_id), h.score) for h in hits], "patient": patient,
            "patient_view": view, "index": str(index_dir)}
