"""The medical vertical's database side: structured notes, analysed CT studies, and the
patient view that joins both by patient id.

Writes are idempotent per natural key (a note's ``note_id``, a series' ``SeriesInstanceUID``):
structuring or analysing the same input again replaces its rows, so a rerun batch never
duplicates a patient's problems or findings. All SQL goes through the ORM (bound parameters).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, select, union
from sqlalchemy.orm import selectinload

from trillium.core.db import Database, connect
from trillium.core.errors import InputValidationError
from trillium.medical.records.entities import concept_of
from trillium.medical.records.structurer import SCHEMA_VERSION, StructuredNote
from trillium.medical.tables import ClinicalNote, ImagingFinding, ImagingStudy, NoteEntity

_FLAGS = ("negated", "uncertain", "hypothetical", "historical", "family")


def store_notes(notes: Iterable[StructuredNote], *, db: Database | None = None, source: str = "") -> int:
    """Store structured notes with their entities; returns how many were written."""
    db = db or connect()
    n = 0
    with db.session() as s:
        for note in notes:
            s.execute(delete(ClinicalNote).where(ClinicalNote.note_id == note.note_id))
            row = ClinicalNote(
                note_id=note.note_id, patient_id=note.patient_id, source=note.source or source,
                text=note.text, text_sha256=hashlib.sha256(note.text.encode()).hexdigest(),
                note_metadata={k: v for k, v in note.metadata.items() if isinstance(v, str | int | float | bool)},
                sections=[{"name": x.name, "header": x.header, "start": x.start, "body_start": x.body_start,
                           "end": x.end} for x in note.sections],
                no_known_allergies=note.no_known_allergies, schema_version=SCHEMA_VERSION,
            )
            row.entities = [
                NoteEntity(kind=e.kind, text=e.text, normalized=e.normalized, start=e.start, end=e.end,
                           section=e.section, values=_stored_values(e), **{f: bool(getattr(e, f)) for f in _FLAGS})
                for e in note.entities
            ]
            s.add(row)
            s.flush()
            n += 1
    return n


def store_ct_study(
    series_uid: str,
    findings: Sequence[Mapping[str, Any]],
    *,
    patient_id: str | None,
    study_uid: str = "",
    study_date: str | None = None,
    source: str = "",
    model_version_id: int | None = None,
    details: Mapping[str, Any] | None = None,
    db: Database | None = None,
) -> int:
    """Store an analysed CT series and its findings (``center_mm`` [x, y, z] in patient LPS mm,
    ``diameter_mm``, ``malignancy``, ``malignancy_std``, ``type``, ``category``; other keys go
    to ``details``); returns the study's row id. Re-analysing a series replaces it."""
    if not series_uid:
        raise InputValidationError("store_ct_study: series_uid is empty")
    db = db or connect()
    rows = []
    for i, f in enumerate(findings):
        try:
            x, y, z = (float(v) for v in f["center_mm"])
            diameter = float(f["diameter_mm"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputValidationError(
                f"store_ct_study: finding {i} of series {series_uid} needs center_mm [x, y, z] and diameter_mm ({exc})"
            ) from exc
        known = {"center_mm", "diameter_mm", "malignancy", "malignancy_std", "type", "category"}
        rows.append(ImagingFinding(
            center_x_mm=x, center_y_mm=y, center_z_mm=z, diameter_mm=diameter,
            malignancy=None if f.get("malignancy") is None else float(f["malignancy"]),
            malignancy_std=None if f.get("malignancy_std") is None else float(f["malignancy_std"]),
            type=str(f.get("type", "")), category=str(f.get("category", "")),
            details={k: v for k, v in f.items() if k not in known},
        ))
    with db.session() as s:
        s.execute(delete(ImagingStudy).where(ImagingStudy.series_uid == series_uid))
        study = ImagingStudy(series_uid=series_uid, study_uid=study_uid, patient_id=patient_id, study_date=study_date,
                             source=source, model_version_id=model_version_id, details=dict(details or {}))
        study.findings = rows
        s.add(study)
        s.flush()
        return study.id


def list_ct_studies(*, db: Database | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The analysed CT studies, newest first, with their findings (for the dashboard's study list)."""
    db = db or connect()
    with db.session() as s:
        studies = s.scalars(select(ImagingStudy).order_by(ImagingStudy.analyzed_at.desc(), ImagingStudy.id.desc())
                            .limit(limit)).all()
        return [{
            "id": st.id, "series_uid": st.series_uid, "study_uid": st.study_uid, "patient_id": st.patient_id,
            "study_date": st.study_date, "source": st.source, "details": dict(st.details or {}),
            "analyzed_at": st.analyzed_at.isoformat() if st.analyzed_at else None,
            "findings": [{
                "center_mm": [f.center_x_mm, f.center_y_mm, f.center_z_mm], "diameter_mm": f.diameter_mm,
                "malignancy": f.malignancy, "malignancy_std": f.malignancy_std, "type": f.type,
                "category": f.category, **(f.details or {}),
            } for f in st.findings],
        } for st in studies]


def list_patients(*, db: Database | None = None) -> list[dict[str, Any]]:
    """Every patient id with its note and CT-study counts, for the dashboard's patient picker."""
    db = db or connect()
    ids = union(select(ClinicalNote.patient_id).where(ClinicalNote.patient_id.is_not(None)),
                select(ImagingStudy.patient_id).where(ImagingStudy.patient_id.is_not(None))).subquery()
    with db.session() as s:
        patients = sorted(s.scalars(select(ids.c[0])).all())
        notes = dict(s.execute(select(ClinicalNote.patient_id, func.count()).group_by(ClinicalNote.patient_id)).all())
        studies = dict(s.execute(select(ImagingStudy.patient_id, func.count()).group_by(ImagingStudy.patient_id)).all())
    return [{"patient_id": p, "notes": notes.get(p, 0), "ct_studies": studies.get(p, 0)} for p in patients]


def recent_notes(*, db: Database | None = None, limit: int = 50) -> list[dict[str, Any]]:
    db = db or connect()
    with db.session() as s:
        rows = s.execute(
            select(ClinicalNote.note_id, ClinicalNote.patient_id, ClinicalNote.structured_at,
                   func.count(NoteEntity.id))
            .outerjoin(NoteEntity).group_by(ClinicalNote.id).order_by(ClinicalNote.structured_at.desc()).limit(limit)
        ).all()
    return [{"note_id": r[0], "patient_id": r[1], "structured_at": r[2].isoformat() if r[2] else None,
             "entities": r[3]} for r in rows]


def load_note(note_id: str, *, db: Database | None = None) -> dict[str, Any] | None:
    """A stored note with its text, sections and entities (for the record viewer)."""
    db = db or connect()
    with db.session() as s:
        note = s.scalars(select(ClinicalNote).where(ClinicalNote.note_id == note_id)).first()
        if note is None:
            return None
        entities = [_entity_dict(e) for e in sorted(note.entities, key=lambda e: e.start)]
        return {"note_id": note.note_id, "patient_id": note.patient_id, "text": note.text, "source": note.source,
                "sections": note.sections, "metadata": note.note_metadata, "entities": entities,
                "no_known_allergies": note.no_known_allergies}


def indexable_notes(*, db: Database | None = None) -> tuple[list[str], list[str], list[list[str]]]:
    """(texts, note ids, concepts) of every stored note, in one query, for a similar-case index
    built from the database (the dashboard's); concepts follow ``StructuredNote.concepts``."""
    db = db or connect()
    with db.session() as s:
        notes = s.scalars(select(ClinicalNote).options(selectinload(ClinicalNote.entities))
                          .order_by(ClinicalNote.id)).all()
        concepts = []
        for n in notes:
            found = (concept_of(e.kind, e.normalized, negated=e.negated, uncertain=e.uncertain,
                                hypothetical=e.hypothetical, family=e.family, code_system=(e.values or {}).get(
                                    "code_system"), code=(e.values or {}).get("code")) for e in n.entities)
            concepts.append(sorted({c for c in found if c}))
        return [n.text for n in notes], [n.note_id for n in notes], concepts


def _stored_values(e: Any) -> dict[str, Any]:
    """An entity's values as stored: its terminology code travels in the JSON ``values`` column
    (``code_system``, ``code``), so coded notes need no new column in existing databases."""
    values = dict(e.values)
    if getattr(e, "code", None):
        values.update(code_system=e.code_system, code=e.code)
    return values


def _entity_dict(e: NoteEntity) -> dict[str, Any]:
    return {"kind": e.kind, "text": e.text, "normalized": e.normalized, "start": e.start, "end": e.end,
            "section": e.section, "values": e.values, **{f: getattr(e, f) for f in _FLAGS}}


def patient_view(patient_id: str, *, db: Database | None = None) -> dict[str, Any]:
    """Everything known about one patient: record entities across notes joined with CT findings.

    Problems are split into active (affirmed now in some note), past (affirmed only as history),
    uncertain (only ever possible), ruled out (only ever negated) and family history; medications, vitals and labs keep their latest
    mention. Notes are ordered by when they were structured, so "latest" means the most
    recently stored note.
    """
    db = db or connect()
    with db.session() as s:
        notes = s.scalars(select(ClinicalNote).where(ClinicalNote.patient_id == patient_id)
                          .order_by(ClinicalNote.structured_at, ClinicalNote.id)).all()
        studies = s.scalars(select(ImagingStudy).where(ImagingStudy.patient_id == patient_id)
                            .order_by(ImagingStudy.analyzed_at, ImagingStudy.id)).all()
        mentions = [(n.note_id, e) for n in notes for e in sorted(n.entities, key=lambda e: e.start)]
        problems: dict[str, dict[str, Any]] = {}
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for note_id, e in mentions:
            if e.kind == "problem":
                code_system, code = (e.values or {}).get("code_system"), (e.values or {}).get("code")
                # one row per coded concept ("HTN" and "essential hypertension" are I10), else per name
                key = f"{code_system}:{code}" if code else e.normalized
                p = problems.setdefault(key, {"problem": e.normalized, "code_system": code_system, "code": code,
                                              "mentions": 0, "notes": [], "current": 0, "past": 0, "negated": 0,
                                              "uncertain": 0, "family": 0})
                p["mentions"] += 1
                if note_id not in p["notes"]:
                    p["notes"].append(note_id)
                affirmed = not (e.negated or e.uncertain or e.hypothetical or e.family)
                p["current"] += affirmed and not e.historical
                p["past"] += affirmed and e.historical
                p["negated"] += bool(e.negated and not e.family)
                p["uncertain"] += bool(e.uncertain and not (e.negated or e.family))
                p["family"] += bool(e.family)
            elif e.kind in ("medication", "vital", "lab", "allergy", "procedure") and not (e.negated or e.family):
                latest[(e.kind, e.normalized)] = {**_entity_dict(e), "note_id": note_id}
        ct = [{
            "series_uid": st.series_uid, "study_uid": st.study_uid, "study_date": st.study_date,
            "analyzed_at": st.analyzed_at.isoformat() if st.analyzed_at else None, "source": st.source,
            "findings": [{
                "center_mm": [f.center_x_mm, f.center_y_mm, f.center_z_mm], "diameter_mm": f.diameter_mm,
                "malignancy": f.malignancy, "malignancy_std": f.malignancy_std, "type": f.type,
                "category": f.category, **f.details,
            } for f in st.findings],
        } for st in studies]
        note_list = [{"note_id": n.note_id, "source": n.source, "specialty": n.note_metadata.get("specialty")
                      or n.note_metadata.get("medical_specialty"),
                      "structured_at": n.structured_at.isoformat() if n.structured_at else None,
                      "entities": len(n.entities)} for n in notes]

    def problem_group(pred: Any) -> list[dict[str, Any]]:
        return sorted((p for p in problems.values() if pred(p)), key=lambda p: (-p["mentions"], p["problem"]))

    by_kind = {k: [v for (kind, _), v in latest.items() if kind == k]
               for k in ("medication", "vital", "lab", "allergy", "procedure")}
    return {
        "patient_id": patient_id,
        "notes": note_list,
        "problems": {
            "active": problem_group(lambda p: p["current"] > 0),
            "past": problem_group(lambda p: p["current"] == 0 and p["past"] > 0),
            "uncertain": problem_group(lambda p: p["current"] + p["past"] == 0 and p["uncertain"] > 0),
            "ruled_out": problem_group(lambda p: p["current"] + p["past"] + p["uncertain"] == 0 and p["negated"] > 0),
            "family_history": problem_group(lambda p: p["family"] > 0),
        },
        "medications": by_kind["medication"],
        "allergies": by_kind["allergy"],
        "no_known_allergies": any(n.no_known_allergies for n in notes) and not by_kind["allergy"],
        "vitals": by_kind["vital"],
        "labs": by_kind["lab"],
        "procedures": by_kind["procedure"],
        "ct_studies": ct,
        "summary": {"notes": len(note_list), "ct_studies": len(ct), "ct_findings": sum(len(c["findings"]) for c in ct),
                    "largest_nodule_mm": max((f["diameter_mm"] for c in ct for f in c["findings"]), default=None)},
    }
