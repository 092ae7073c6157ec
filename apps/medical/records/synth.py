"""Synthetic clinical notes with ground truth, for the demo, the tests and retrieval checks.

Notes are composed from specialty-specific pools (cardiology, orthopedics, ...) over a shared
general pool (hypertension, diabetes, metformin, ...), so specialty retrieval is not trivial.
Every entity is recorded with its exact span while the text is built, so
``text[start:end] == entity.text`` holds by construction. Phrasing varies through header
variants, trigger words for negation, uncertainty, history and hypotheticals, abbreviations
and medication formats. Everything is seeded; nothing is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TruthEntity:
    kind: str
    text: str
    start: int
    end: int
    negated: bool = False
    uncertain: bool = False
    historical: bool = False
    family: bool = False
    hypothetical: bool = False
    normalized: str = ""
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SyntheticNote:
    note_id: str
    patient_id: str
    specialty: str
    description: str
    sample_name: str
    keywords: str
    text: str
    entities: tuple[TruthEntity, ...]


# (written form, canonical) pairs
Term = tuple[str, str]

GENERAL_PROBLEMS: list[Term] = [
    ("hypertension", "hypertension"), ("HTN", "hypertension"), ("type 2 diabetes", "type 2 diabetes mellitus"),
    ("DM2", "type 2 diabetes mellitus"), ("hyperlipidemia", "hyperlipidemia"), ("high cholesterol", "hyperlipidemia"),
    ("obesity", "obesity"), ("GERD", "gastroesophageal reflux disease"), ("depression", "depression"),
    ("hypothyroidism", "hypothyroidism"), ("osteoarthritis", "osteoarthritis"), ("asthma", "asthma"),
    ("anxiety", "anxiety"), ("obstructive sleep apnea", "obstructive sleep apnea"),
]
SYMPTOMS: list[Term] = [
    ("fever", "fever"), ("chills", "chills"), ("night sweats", "night sweats"), ("weight loss", "weight loss"),
    ("nausea", "nausea"), ("vomiting", "vomiting"), ("shortness of breath", "shortness of breath"),
    ("chest pain", "chest pain"), ("headache", "headache"), ("dizziness", "dizziness"), ("cough", "cough"),
    ("diarrhea", "diarrhea"), ("abdominal pain", "abdominal pain"), ("syncope", "syncope"), ("rash", "rash"),
    ("palpitations", "arrhythmia"), ("dysuria", "dysuria"), ("hematuria", "hematuria"), ("edema", "edema"),
]
GENERAL_MEDS = [("lisinopril", "lisinopril", 10, "mg"), ("metformin", "metformin", 500, "mg"),
                ("atorvastatin", "atorvastatin", 40, "mg"), ("aspirin", "aspirin", 81, "mg"),
                ("Lipitor", "atorvastatin", 20, "mg"), ("Glucophage", "metformin", 1000, "mg"),
                ("levothyroxine", "levothyroxine", 75, "mcg"), ("omeprazole", "omeprazole", 20, "mg"),
                ("sertraline", "sertraline", 50, "mg"), ("amlodipine", "amlodipine", 5, "mg")]

SPECIALTIES: dict[str, dict[str, Any]] = {
    "Cardiovascular / Pulmonary": {
        "cc": [("chest pain", "chest pain"), ("shortness of breath", "shortness of breath"),
               ("palpitations", "arrhythmia"), ("dyspnea on exertion", "shortness of breath")],
        "problems": [("CAD", "coronary artery disease"), ("atrial fibrillation", "atrial fibrillation"),
                     ("afib", "atrial fibrillation"), ("CHF", "congestive heart failure"),
                     ("congestive heart failure", "congestive heart failure"), ("COPD", "copd"),
                     ("myocardial infarction", "myocardial infarction"), ("angina", "angina"),
                     ("pneumonia", "pneumonia"), ("pulmonary embolism", "pulmonary embolism")],
        "procedures": [("cardiac catheterization", "cardiac catheterization"), ("echocardiogram", "echocardiogram"),
                       ("stress test", "stress test"), ("CABG", "coronary artery bypass graft"),
                       ("chest x-ray", "chest x-ray")],
        "meds": [("metoprolol", "metoprolol", 25, "mg"), ("furosemide", "furosemide", 40, "mg"),
                 ("Lasix", "furosemide", 20, "mg"), ("clopidogrel", "clopidogrel", 75, "mg"),
                 ("warfarin", "warfarin", 5, "mg"), ("Eliquis", "apixaban", 5, "mg"),
                 ("albuterol inhaler", "albuterol", 2, "puffs")],
        "labs": [("troponin", "troponin", 0.04, "ng/mL"), ("BNP", "bnp", 450, "pg/mL")],
        "words": "heart lungs murmur rales cardiac pulmonary coronary ejection fraction wheezes oxygen",
    },
    "Orthopedic": {
        "cc": [("knee pain", "knee pain"), ("back pain", "back pain"), ("shoulder pain", "shoulder pain"),
               ("hip pain", "hip pain")],
        "problems": [("meniscal tear", "meniscal tear"), ("ACL tear", "acl tear"), ("fracture", "fracture"),
                     ("rotator cuff tear", "rotator cuff tear"), ("osteoarthritis", "osteoarthritis"),
                     ("herniated disc", "herniated disc"), ("sciatica", "radiculopathy")],
        "procedures": [("MRI of the knee", "mri"), ("total knee arthroplasty", "total knee arthroplasty"),
                       ("arthroscopy", "arthroscopy"), ("physical therapy", "physical therapy"),
                       ("x-rays", "x-ray")],
        "meds": [("ibuprofen", "ibuprofen", 600, "mg"), ("naproxen", "naproxen", 500, "mg"),
                 ("meloxicam", "meloxicam", 15, "mg"), ("cyclobenzaprine", "cyclobenzaprine", 10, "mg"),
                 ("tramadol", "tramadol", 50, "mg")],
        "labs": [("ESR", "esr", 22, "mm/hr")],
        "words": "joint range of motion tenderness effusion ligament weight bearing gait swelling",
    },
    "Gastroenterology": {
        "cc": [("abdominal pain", "abdominal pain"), ("rectal bleeding", "gastrointestinal bleeding"),
               ("diarrhea", "diarrhea"), ("dysphagia", "dysphagia")],
        "problems": [("GERD", "gastroesophageal reflux disease"), ("colon polyps", "colon polyps"),
                     ("diverticulitis", "diverticulitis"), ("Crohn's disease", "inflammatory bowel disease"),
                     ("cirrhosis", "cirrhosis"), ("pancreatitis", "pancreatitis"),
                     ("irritable bowel syndrome", "irritable bowel syndrome")],
        "procedures": [("colonoscopy", "colonoscopy"), ("EGD", "egd"), ("CT of the abdomen", "ct scan"),
                       ("cholecystectomy", "cholecystectomy")],
        "meds": [("pantoprazole", "pantoprazole", 40, "mg"), ("ondansetron", "ondansetron", 4, "mg"),
                 ("Prilosec", "omeprazole", 20, "mg"), ("docusate", "docusate", 100, "mg")],
        "labs": [("lipase", "lipase", 320, "U/L"), ("ALT", "alt", 88, "U/L")],
        "words": "bowel stool liver epigastric colon abdomen tender bloating gastric",
    },
    "Neurology": {
        "cc": [("headache", "headache"), ("dizziness", "dizziness"), ("numbness", "neuropathy"),
               ("seizure", "seizure")],
        "problems": [("migraine", "headache"), ("seizure disorder", "seizure"), ("stroke", "stroke"),
                     ("TIA", "transient ischemic attack"), ("multiple sclerosis", "multiple sclerosis"),
                     ("peripheral neuropathy", "neuropathy"), ("Parkinson's disease", "parkinson's disease")],
        "procedures": [("MRI of the brain", "mri"), ("EEG", "eeg"), ("lumbar puncture", "lumbar puncture"),
                       ("EMG", "emg")],
        "meds": [("levetiracetam", "levetiracetam", 500, "mg"), ("gabapentin", "gabapentin", 300, "mg"),
                 ("sumatriptan", "sumatriptan", 50, "mg"), ("topiramate", "topiramate", 25, "mg")],
        "labs": [],
        "words": "cranial nerves reflexes strength sensation gait neurologic cerebellar weakness",
    },
    "Urology": {
        "cc": [("hematuria", "hematuria"), ("dysuria", "dysuria"), ("flank pain", "renal colic"),
               ("urinary frequency", "urinary frequency")],
        "problems": [("BPH", "benign prostatic hyperplasia"), ("kidney stones", "kidney stones"),
                     ("UTI", "urinary tract infection"), ("prostate cancer", "prostate cancer"),
                     ("urinary incontinence", "urinary incontinence")],
        "procedures": [("cystoscopy", "cystoscopy"), ("prostate biopsy", "biopsy"), ("lithotripsy", "lithotripsy"),
                       ("renal ultrasound", "ultrasound")],
        "meds": [("tamsulosin", "tamsulosin", 0.4, "mg"), ("finasteride", "finasteride", 5, "mg"),
                 ("ciprofloxacin", "ciprofloxacin", 500, "mg"), ("oxybutynin", "oxybutynin", 5, "mg")],
        "labs": [("PSA", "psa", 6.2, "ng/mL"), ("creatinine", "creatinine", 1.3, "mg/dL")],
        "words": "bladder prostate urine kidney urethra voiding stream flank renal",
    },
    "Dermatology": {
        "cc": [("rash", "rash"), ("skin lesion", "skin lesion"), ("itching", "pruritus")],
        "problems": [("psoriasis", "psoriasis"), ("eczema", "dermatitis"), ("basal cell carcinoma",
                     "basal cell carcinoma"), ("melanoma", "melanoma"), ("actinic keratosis", "actinic keratosis"),
                     ("acne", "acne"), ("cellulitis", "cellulitis")],
        "procedures": [("skin biopsy", "biopsy"), ("shave biopsy", "biopsy"), ("excision", "excision"),
                       ("cryotherapy", "cryotherapy")],
        "meds": [("triamcinolone", "triamcinolone", 0.1, "%"), ("clobetasol", "clobetasol", 0.05, "%"),
                 ("doxycycline", "doxycycline", 100, "mg"), ("hydroxyzine", "hydroxyzine", 25, "mg")],
        "labs": [],
        "words": "plaque papule erythematous scale pigmented border lesion scalp dermatologic sun exposure",
    },
    "Obstetrics / Gynecology": {
        "cc": [("pelvic pain", "pelvic pain"), ("vaginal bleeding", "vaginal bleeding"),
               ("vaginal discharge", "vaginitis")],
        "problems": [("uterine fibroids", "uterine fibroids"), ("endometriosis", "endometriosis"),
                     ("ovarian cyst", "ovarian cyst"), ("preeclampsia", "preeclampsia"),
                     ("gestational diabetes", "gestational diabetes"), ("pregnancy", "pregnancy")],
        "procedures": [("pelvic ultrasound", "ultrasound"), ("hysterectomy", "hysterectomy"),
                       ("cesarean section", "cesarean section"), ("pap smear", "pap smear"), ("D&C", "dilation and curettage")],
        "meds": [("prenatal vitamins", "prenatal vitamins", 1, "tablets"), ("estradiol", "estradiol", 1, "mg"),
                 ("medroxyprogesterone", "medroxyprogesterone", 10, "mg"), ("ferrous sulfate", "ferrous sulfate", 325, "mg")],
        "labs": [("hemoglobin", "hemoglobin", 10.8, "g/dL")],
        "words": "uterus cervix adnexa gravida para menses gestation fetal pelvic obstetric",
    },
    "Endocrinology": {
        "cc": [("fatigue", "fatigue"), ("weight gain", "weight gain"), ("polyuria", "polyuria"),
               ("high blood sugar", "hyperglycemia")],
        "problems": [("type 2 diabetes mellitus", "type 2 diabetes mellitus"), ("hypothyroidism", "hypothyroidism"),
                     ("Graves disease", "hyperthyroidism"), ("thyroid nodule", "thyroid nodule"),
                     ("osteoporosis", "osteoporosis"), ("diabetic neuropathy", "neuropathy")],
        "procedures": [("thyroid ultrasound", "ultrasound"), ("fine needle biopsy", "biopsy")],
        "meds": [("insulin glargine", "insulin glargine", 20, "units"), ("Januvia", "sitagliptin", 100, "mg"),
                 ("levothyroxine", "levothyroxine", 100, "mcg"), ("methimazole", "methimazole", 10, "mg"),
                 ("alendronate", "alendronate", 70, "mg")],
        "labs": [("HbA1c", "hemoglobin a1c", 8.4, "%"), ("TSH", "tsh", 6.8, "mIU/L"), ("glucose", "glucose", 212, "mg/dL")],
        "words": "thyroid glucose insulin endocrine hormone metabolic sugars glycemic",
    },
}

ROUTE_FORMS = {"oral": ["p.o.", "PO", "by mouth", "orally"], "subcutaneous": ["subcutaneously", "subq"],
               "inhaled": ["inhaled"], "topical": ["topically"]}
FREQ_FORMS = {"daily": ["daily", "once daily", "q.d."], "BID": ["b.i.d.", "twice daily", "BID"],
              "TID": ["t.i.d.", "three times daily"], "QHS": ["at bedtime", "nightly", "q.h.s."]}
NEG_TRIGGERS = ["denies", "No", "Negative for", "There is no evidence of", "No history of", "without"]
UNC_TRIGGERS = ["possible", "suspicious for", "cannot rule out", "likely", "questionable"]
HEADERS = {
    "cc": ["CHIEF COMPLAINT:", "CC:", "REASON FOR VISIT:"],
    "hpi": ["HISTORY OF PRESENT ILLNESS:", "HPI:"],
    "pmh": ["PAST MEDICAL HISTORY:", "PMH:"],
    "psh": ["PAST SURGICAL HISTORY:"],
    "meds": ["MEDICATIONS:", "CURRENT MEDICATIONS:", "Medications:"],
    "allergies": ["ALLERGIES:", "DRUG ALLERGIES:"],
    "fh": ["FAMILY HISTORY:"],
    "sh": ["SOCIAL HISTORY:"],
    "ros": ["REVIEW OF SYSTEMS:", "ROS:"],
    "pe": ["PHYSICAL EXAMINATION:", "PHYSICAL EXAM:"],
    "labs": ["LABORATORY DATA:", "LABS:"],
    "ap": ["ASSESSMENT AND PLAN:", "IMPRESSION AND PLAN:", "ASSESSMENT/PLAN:"],
}
RELATIVES = ["Mother", "Father", "Sister", "Brother", "Maternal grandmother"]


class _Builder:
    """Appends text and records entity spans as it goes."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.entities: list[TruthEntity] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def ent(self, kind: str, text: str, normalized: str, **attrs: Any) -> None:
        self.entities.append(TruthEntity(kind, text, self.length, self.length + len(text),
                                         normalized=normalized, **attrs))
        self.add(text)

    def text(self) -> str:
        return "".join(self.parts)


def _pick(rng: np.random.Generator, items: Sequence[Any], n: int = 1) -> list[Any]:
    idx = rng.choice(len(items), size=min(n, len(items)), replace=False)
    return [items[i] for i in idx]


def _one(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _join_entities(b: _Builder, kind: str, terms: Sequence[Term], conj: str = "or", **attrs: Any) -> None:
    for i, (text, norm) in enumerate(terms):
        if i:
            b.add(f" {conj} " if i == len(terms) - 1 else ", ")
        b.ent(kind, text, norm, **attrs)


def _medication(rng: np.random.Generator, b: _Builder, med: tuple[str, str, float, str]) -> None:
    name, norm, dose, unit = med
    route = {"puffs": "inhaled", "units": "subcutaneous", "%": "topical"}.get(unit, "oral")
    freq = _one(rng, list(FREQ_FORMS)) if route != "inhaled" else "Q4-6H"
    prn = route == "inhaled" or (route == "oral" and rng.random() < 0.1)
    values: dict[str, Any] = {"dose": float(dose), "unit": unit, "route": route,
                              "frequency": freq, "as_needed": prn}
    b.ent("medication", name.capitalize() if rng.random() < 0.5 and name.islower() else name, norm, values=values)
    dose_txt = f"{dose:g}"
    sep = "" if unit == "mg" and rng.random() < 0.3 else " "
    b.add(f" {dose_txt}{sep}{unit}")
    if route == "inhaled":
        b.add(" q4-6h prn wheezing")
        return
    b.add(f" {_one(rng, ROUTE_FORMS[route])} {_one(rng, FREQ_FORMS[freq])}")
    if prn:
        b.add(" as needed")


def synthetic_note(rng: np.random.Generator | int, *, specialty: str | None = None, patient_id: str | None = None,
                   note_id: str | None = None) -> SyntheticNote:
    """One note of ``specialty`` (random when None) with its true entities."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    specialty = specialty or _one(rng, list(SPECIALTIES))
    pool = SPECIALTIES[specialty]
    b = _Builder()
    age = int(rng.integers(22, 88))
    female = bool(rng.random() < 0.5) or specialty == "Obstetrics / Gynecology"
    he = "she" if female else "he"
    cc = _one(rng, pool["cc"])
    pmh = _pick(rng, GENERAL_PROBLEMS, 2) + _pick(rng, pool["problems"], 1)
    pmh = list({t[1]: t for t in pmh}.values())

    b.add(_one(rng, HEADERS["cc"]) + " ")
    b.ent("problem", cc[0].capitalize(), cc[1])
    b.add(".\n\n" + _one(rng, HEADERS["hpi"]) + " ")
    b.add(f"The patient is a {age}-year-old {'woman' if female else 'man'} with a history of ")
    _join_entities(b, "problem", pmh[:2], conj="and", historical=True)
    b.add(f" who presents with {int(rng.integers(2, 10))} days of ")
    b.ent("problem", cc[0], cc[1])
    b.add(". " + _one(rng, [f"{he.capitalize()} describes it as worse with activity.",
                             "Symptoms began gradually and have progressed.",
                             f"{he.capitalize()} was seen at an outside clinic last week."]) + " ")
    negs = [s for s in _pick(rng, SYMPTOMS, 3) if s[1] != cc[1]]
    trig = _one(rng, NEG_TRIGGERS)
    if trig == "denies":
        b.add(f"{he.capitalize()} denies ")
    elif trig == "without":
        b.add("The symptoms occur without ")
    else:
        b.add(trig + " ")
    _join_entities(b, "problem", negs, negated=True)
    b.add(". ")
    if rng.random() < 0.7:
        unc = _one(rng, pool["problems"])
        t = _one(rng, UNC_TRIGGERS)
        b.add(f"Outside imaging was read as {t} " if t != "cannot rule out" else "We cannot rule out ")
        b.ent("problem", unc[0], unc[1], uncertain=True)
        b.add(". ")
    b.add(f"{_one(rng, ['Recent workup included', 'Prior evaluation included', 'Records show'])} ")
    proc = _one(rng, pool["procedures"])
    b.ent("procedure", proc[0], proc[1])
    b.add(".\n\n" + _one(rng, HEADERS["pmh"]) + "\n")
    for i, (t, n) in enumerate(pmh, 1):
        b.add(f"{i}. ")
        b.ent("problem", t[0].upper() + t[1:] if t.islower() else t, n, historical=True)
        b.add(".\n")
    if rng.random() < 0.5:
        b.add("\n" + _one(rng, HEADERS["psh"]) + " ")
        p = _one(rng, [("appendectomy", "appendectomy"), ("cholecystectomy", "cholecystectomy"),
                       ("hernia repair", "hernia repair"), ("tonsillectomy", "tonsillectomy")])
        b.ent("procedure", p[0].capitalize(), p[1], historical=True)
        b.add(f" in {int(rng.integers(1975, 2020))}.\n")
    b.add("\n" + _one(rng, HEADERS["meds"]) + "\n")
    meds = _pick(rng, GENERAL_MEDS, 2) + _pick(rng, pool["meds"], 2)
    meds = list({m[1]: m for m in meds}.values())
    for m in meds:
        _medication(rng, b, m)
        b.add("\n" if b.parts[-1].endswith(".") else ".\n")
    b.add("\n" + _one(rng, HEADERS["allergies"]) + " ")
    if rng.random() < 0.4:
        b.add(_one(rng, ["NKDA.", "No known drug allergies."]))
    else:
        al = _pick(rng, [("Penicillin", "penicillin", "rash"), ("Sulfa", "sulfa", "hives"),
                         ("Codeine", "codeine", "nausea"), ("Latex", "latex", "itching")], 2)
        for i, (t, n, r) in enumerate(al):
            if i:
                b.add(", ")
            b.ent("allergy", t, n, values={"reaction": r})
            b.add(f" ({r})")
        b.add(".")
    b.add("\n\n" + _one(rng, HEADERS["fh"]) + " ")
    rel = _one(rng, RELATIVES)
    fam = _one(rng, [("breast cancer", "breast cancer"), ("coronary artery disease", "coronary artery disease"),
                     ("colon cancer", "colon cancer"), ("type 2 diabetes", "type 2 diabetes mellitus"),
                     ("stroke", "stroke")])
    b.add(f"{rel} with ")
    b.ent("problem", fam[0], fam[1], family=True)
    b.add(". ")
    b.add("\n\n" + _one(rng, HEADERS["sh"]) + " ")
    if rng.random() < 0.5:
        b.add(f"{he.capitalize()} denies ")
        b.ent("problem", "tobacco", "tobacco use", negated=True)
        b.add(" use. Drinks alcohol socially.")
    else:
        b.add("Former ")
        b.ent("problem", "smoker", "tobacco use", historical=True)
        b.add(f", quit {int(rng.integers(2, 30))} years ago.")
    if rng.random() < 0.5:
        b.add("\n\n" + _one(rng, HEADERS["ros"]) + " Negative for ")
        ros = [s for s in _pick(rng, SYMPTOMS, 2) if s[1] != cc[1] and s not in negs]
        _join_entities(b, "problem", ros or [("fever", "fever")], negated=True)
        b.add(". Otherwise negative.")
    b.add("\n\n" + _one(rng, HEADERS["pe"]) + "\nVITAL SIGNS: ")
    sys_bp, dia = int(rng.integers(104, 168)), int(rng.integers(62, 98))
    b.ent("vital", f"BP {sys_bp}/{dia}", "blood_pressure", values={"systolic": sys_bp, "diastolic": dia,
                                                                   "unit": "mmHg"})
    hr = int(rng.integers(56, 110))
    b.add(", ")
    b.ent("vital", f"HR {hr}", "heart_rate", values={"value": float(hr), "unit": "bpm"})
    temp = round(float(rng.uniform(97.0, 100.8)), 1)
    b.add(", ")
    b.ent("vital", f"Temp {temp} F", "temperature", values={"value": temp, "unit": "F"})
    sat = int(rng.integers(92, 100))
    b.add(", ")
    b.ent("vital", f"SpO2 {sat}%", "oxygen_saturation", values={"value": float(sat), "unit": "%"})
    b.add(".\nGeneral: Alert and oriented, in no acute distress.\n")
    b.add(f"Exam notable for findings of the {' '.join(_pick(rng, pool['words'].split(), 3))}.\n")
    labs = pool["labs"] + [("creatinine", "creatinine", 0.9, "mg/dL"), ("sodium", "sodium", 139, None)]
    chosen = _pick(rng, labs, 2)
    b.add("\n" + _one(rng, HEADERS["labs"]) + " ")
    for i, (t, n, v, u) in enumerate(chosen):
        if i:
            b.add(", ")
        value = round(float(v) * float(rng.uniform(0.8, 1.25)), 2 if v < 10 else 0)
        vtxt = f"{value:g}"
        b.ent("lab", f"{t} {vtxt}" + (f" {u}" if u else ""), n, values={"value": float(vtxt), "unit": u})
    b.add(".\n\n" + _one(rng, HEADERS["ap"]) + "\n1. ")
    b.ent("problem", cc[0].capitalize(), cc[1])
    plan_proc = _one(rng, pool["procedures"])
    b.add(_one(rng, [". Plan ", ", improving. Will obtain ", ". Next step: "]))
    b.ent("procedure", plan_proc[0], plan_proc[1])
    b.add(".\n2. Continue current medications.\n3. Return to clinic if ")
    hyp = _one(rng, [s for s in SYMPTOMS if s[1] != cc[1]])
    b.ent("problem", hyp[0], hyp[1], hypothetical=True)
    b.add(" develops.\n")
    text = b.text()
    keywords = ", ".join([specialty.split(" /")[0].lower(), cc[0], proc[0]] + [p[0] for p in pmh[-1:]])
    return SyntheticNote(
        note_id=note_id or "note", patient_id=patient_id or "P0000", specialty=specialty,
        description=f"{age}-year-old with {cc[0]}.", sample_name=f"{specialty.split(' /')[0]} - {cc[0].title()}",
        keywords=keywords, text=text, entities=tuple(b.entities),
    )


def synthetic_notes(n: int, seed: int = 0, specialties: Sequence[str] | None = None) -> list[SyntheticNote]:
    """``n`` notes over the specialties in turn; about n/2 patients, so some have several notes."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    names = list(specialties or SPECIALTIES)
    unknown = [s for s in names if s not in SPECIALTIES]
    if unknown:
        raise ValueError(f"unknown specialties {unknown}; known: {list(SPECIALTIES)}")
    n_patients = max(1, (n + 1) // 2)
    out = []
    for i in range(n):
        patient = f"P{int(rng.integers(n_patients)) + 1:04d}"
        out.append(synthetic_note(rng, specialty=names[i % len(names)], patient_id=patient,
                                  note_id=f"note-{seed}-{i:05d}"))
    return out


def write_notes_folder(notes: Sequence[SyntheticNote], out_dir: str | Path) -> list[Path]:
    """One ``<note_id>.txt`` per note whose first line is ``Patient ID: <id>``, then a blank line,
    then the note text; ``truth.json`` holds the entities with spans relative to the note text
    (``span_base`` says so) and the patient and specialty of each note."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for note in notes:
        path = out / f"{note.note_id}.txt"
        path.write_text(f"Patient ID: {note.patient_id}\n\n{note.text}", encoding="utf-8")
        paths.append(path)
    truth = {"span_base": "note text: the file content after its first two lines (Patient ID line, blank line)",
             "notes": [{"note_id": x.note_id, "patient_id": x.patient_id, "specialty": x.specialty,
                        "entities": [asdict(e) for e in x.entities]} for x in notes]}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return paths


def write_mtsamples_csv(notes: Sequence[SyntheticNote], path: str | Path) -> Path:
    """The notes as a CSV in the public mtsamples.csv layout (unnamed index column first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "description": [x.description for x in notes], "medical_specialty": [x.specialty for x in notes],
        "sample_name": [x.sample_name for x in notes], "transcription": [x.text for x in notes],
        "keywords": [x.keywords for x in notes],
    })
    frame.to_csv(path, index=True)
    return path
