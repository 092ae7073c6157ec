"""A structured note as a FHIR R4 Bundle: Condition, Observation, MedicationStatement,
AllergyIntolerance, validated by ``fhir.resources`` (BSD) before it is returned.

``fhir.resources`` 8 models R5 by default and R4B (4.3.0) under ``fhir.resources.R4B``; the four
resources written here have the R4 (4.0.1) structure in R4B, so R4B's models validate them.

What goes where, by the entity's ConText attributes:

- problems -> ``Condition`` coded with the entity's ICD-10-CM or HPO code (text otherwise):
  negated -> verificationStatus ``refuted``, uncertain -> ``provisional``, else ``confirmed``;
  clinicalStatus ``active`` only when confirmed and not historical (a refuted condition may not
  carry one, con-5). Hypothetical mentions and a relative's are left out: they assert nothing of
  the patient (a relative's belongs in FamilyMemberHistory).
- vital signs -> ``Observation`` (category vital-signs, LOINC code, UCUM quantity; blood pressure
  as two components); labs -> ``Observation`` (category laboratory, text code, quantity);
  exam/report findings -> ``Observation`` (category exam, the structure as code, the qualifiers
  as ``valueString``); negated, hypothetical and relatives' findings are left out.
- medications -> ``MedicationStatement`` (``not-taken`` when negated), with dose, route, frequency
  text and as-needed; allergies -> ``AllergyIntolerance`` with the reaction's manifestation.
"""

from __future__ import annotations

import uuid
from typing import Any

from trillium.core.errors import InputValidationError

__all__ = ["to_fhir_bundle"]

_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"
_LOINC = "http://loinc.org"
_VITALS = {  # LOINC code, display, UCUM unit by our unit
    "heart_rate": ("8867-4", "Heart rate", {"bpm": "/min"}),
    "respiratory_rate": ("9279-1", "Respiratory rate", {"breaths/min": "/min"}),
    "temperature": ("8310-5", "Body temperature", {"C": "Cel", "F": "[degF]"}),
    "oxygen_saturation": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", {"%": "%"}),
    "weight": ("29463-7", "Body weight", {"kg": "kg", "lb": "[lb_av]"}),
    "height": ("8302-2", "Body height", {"cm": "cm", "m": "m", "in": "[in_i]", "ft": "[ft_i]"}),
    "bmi": ("39156-5", "Body mass index (BMI) [Ratio]", {None: "kg/m2"}),
    "pain_score": ("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported", {"/10": "{score}"}),
}


def _concept(e: Any) -> dict[str, Any]:
    from trillium.medical.records.terminology import SYSTEM_URLS

    out: dict[str, Any] = {"text": e.text}
    if e.code_system and e.code:
        out["coding"] = [{"system": SYSTEM_URLS.get(e.code_system, e.code_system), "code": e.code,
                          "display": e.normalized}]
    return out


def _status(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": f"{_TERMINOLOGY}/{system}", "code": code}]}


def _condition(e: Any, subject: dict[str, Any]) -> dict[str, Any] | None:
    if e.hypothetical or e.family:
        return None
    verification = "refuted" if e.negated else "provisional" if e.uncertain else "confirmed"
    res: dict[str, Any] = {
        "resourceType": "Condition", "subject": subject, "code": _concept(e),
        "verificationStatus": _status("condition-ver-status", verification),
        "category": [_status("condition-category",
                             "problem-list-item" if e.historical else "encounter-diagnosis")],
    }
    if verification == "confirmed" and not e.historical:
        res["clinicalStatus"] = _status("condition-clinical", "active")
    return res


def _observation(e: Any, subject: dict[str, Any]) -> dict[str, Any] | None:
    if e.negated or e.hypothetical or e.family:
        return None
    v = e.values
    res: dict[str, Any] = {"resourceType": "Observation", "status": "final", "subject": subject}
    if e.kind == "vital":
        res["category"] = [_status("observation-category", "vital-signs")]
        if e.normalized == "blood_pressure":
            res["code"] = {"coding": [{"system": _LOINC, "code": "85354-9", "display": "Blood pressure panel"}],
                           "text": e.text}
            res["component"] = [
                {"code": {"coding": [{"system": _LOINC, "code": code, "display": name}]},
                 "valueQuantity": {"value": v[key], "unit": "mmHg", "system": "http://unitsofmeasure.org",
                                   "code": "mm[Hg]"}}
                for code, name, key in (("8480-6", "Systolic blood pressure", "systolic"),
                                        ("8462-4", "Diastolic blood pressure", "diastolic"))]
            return res
        loinc = _VITALS.get(e.normalized)
        res["code"] = ({"coding": [{"system": _LOINC, "code": loinc[0], "display": loinc[1]}], "text": e.text}
                       if loinc else {"text": e.text})
        quantity: dict[str, Any] = {"value": v["value"]}
        if v.get("unit"):
            quantity["unit"] = v["unit"]
        ucum = loinc[2].get(v.get("unit")) if loinc else None
        if ucum:
            quantity.update(system="http://unitsofmeasure.org", code=ucum)
        res["valueQuantity"] = quantity
    elif e.kind == "lab":
        res["category"] = [_status("observation-category", "laboratory")]
        res["code"] = {"text": e.normalized}
        quantity = {"value": v["value"]}
        if v.get("unit"):
            quantity["unit"] = v["unit"]
        if v.get("qualifier"):
            quantity["comparator"] = v["qualifier"]
        res["valueQuantity"] = quantity
    else:  # finding
        res["category"] = [_status("observation-category", "exam")]
        res["code"] = {"text": v.get("structure", e.normalized)}
        res["valueString"] = ", ".join(v.get("qualifiers") or [e.text])
        res["note"] = [{"text": e.text}]
    return res


def _medication(e: Any, subject: dict[str, Any]) -> dict[str, Any] | None:
    if e.hypothetical or e.family:
        return None
    v = e.values
    dosage: dict[str, Any] = {"text": e.text}
    if v.get("route"):
        dosage["route"] = {"text": v["route"]}
    if v.get("frequency"):
        dosage["timing"] = {"code": {"text": v["frequency"]}}
    if "as_needed" in v:
        dosage["asNeededBoolean"] = bool(v["as_needed"])
    if isinstance(v.get("dose"), int | float) and v.get("unit"):
        dosage["doseAndRate"] = [{"doseQuantity": {"value": v["dose"], "unit": v["unit"]}}]
    return {"resourceType": "MedicationStatement", "status": "not-taken" if e.negated else "active",
            "subject": subject, "medicationCodeableConcept": {"text": e.normalized}, "dosage": [dosage]}


def _allergy(e: Any, patient: dict[str, Any]) -> dict[str, Any] | None:
    if e.negated or e.hypothetical or e.family:
        return None
    res: dict[str, Any] = {"resourceType": "AllergyIntolerance", "patient": patient,
                           "code": {"text": e.normalized},
                           "verificationStatus": _status("allergyintolerance-verification",
                                                         "unconfirmed" if e.uncertain else "confirmed")}
    if e.values.get("reaction"):
        res["reaction"] = [{"manifestation": [{"text": e.values["reaction"]}]}]
    return res


_BUILDERS = {"problem": _condition, "vital": _observation, "lab": _observation, "finding": _observation,
             "medication": _medication, "allergy": _allergy}


def to_fhir_bundle(note: Any, *, validate: bool = True) -> dict[str, Any]:
    """The note's entities as a FHIR R4 ``collection`` Bundle (JSON-ready dict).

    Entry ids are UUIDs derived from the note id and the entity's span, so the same note gives the
    same Bundle. With ``validate`` (the default) the Bundle is parsed by ``fhir.resources``'s R4B
    models first; a resource they reject is a bug here, reported with the entity it came from.
    """
    subject: dict[str, Any] = ({"reference": f"Patient/{note.patient_id}"} if note.patient_id
                               else {"display": f"patient of note {note.note_id}"})
    entries = []
    for e in note.entities:
        build = _BUILDERS.get(e.kind)
        res = build(e, subject) if build else None
        if res is None:
            continue
        rid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"trillium:note:{note.note_id}:{e.kind}:{e.start}:{e.end}"))
        res["id"] = rid
        entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": res})
    bundle = {"resourceType": "Bundle", "type": "collection",
              "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"trillium:note:{note.note_id}")), "entry": entries}
    if validate:
        validate_bundle(bundle)
    return bundle


def validate_bundle(bundle: dict[str, Any]) -> None:
    """Parse ``bundle`` with the R4B models of ``fhir.resources``; an ``InputValidationError``
    names the entry and the field when one is rejected."""
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise InputValidationError(f"FHIR Bundle {bundle.get('id')!r}: {where}: {first.get('msg')}") from exc
