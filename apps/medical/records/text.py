"""Tokens, sentences and sections of a clinical note, all as character spans of the original text.

Every later step (entities, ConText scopes, the dashboard's highlighting) refers back to the
note by character offsets, so nothing here rewrites the text: it only finds boundaries.
Clinical notes break prose rules (headers without sentences, medication lists one per line,
"p.o. b.i.d." full of periods, wrapped lines), hence the rules below rather than a generic
sentence splitter.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|[A-Za-z]+(?:\.[A-Za-z])+\.?|\w+(?:['/-]\w+)*|[^\w\s]")
"""Numbers with decimals, dotted abbreviations ("b.i.d.", "p.o."), words with inner -'/ ("s/p",
"x-ray", "patient's"), and single punctuation marks."""


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    start: int
    end: int

    @property
    def lower(self) -> str:
        return self.text.lower()


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int

    def text(self, source: str) -> str:
        return source[self.start : self.end]


@dataclass(frozen=True, slots=True)
class Section:
    """A titled part of a note; ``name`` is canonical (``medications``), ``header`` as written."""

    name: str
    header: str
    start: int  # where the header begins
    body_start: int  # first character after "HEADER:"
    end: int


def tokenize(text: str, start: int = 0, end: int | None = None) -> list[Token]:
    """Tokens of ``text[start:end]`` with offsets into ``text``."""
    end = len(text) if end is None else end
    return [Token(m.group(), m.start(), m.end()) for m in TOKEN_RE.finditer(text, start, end)]


# -- sections -------------------------------------------------------------------------------

SECTION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "chief_complaint": ("chief complaint", "cc", "reason for visit", "reason for consultation", "reason for referral",
                        "presenting complaint", "complaint"),
    "history_present_illness": ("history of present illness", "hpi", "history of the present illness",
                                "present illness", "history of presenting illness", "interval history"),
    "past_medical_history": ("past medical history", "pmh", "medical history", "past history", "pmhx",
                             "past medical/surgical history", "past medical and surgical history", "problem list",
                             "active problems", "significant past medical history"),
    "past_surgical_history": ("past surgical history", "psh", "surgical history", "previous surgeries",
                              "past surgeries", "prior surgeries", "operative history"),
    "medications": ("medications", "current medications", "meds", "medications on admission",
                    "admission medications", "home medications", "outpatient medications", "medication",
                    "current meds", "medications at home", "present medications"),
    "discharge_medications": ("discharge medications", "medications on discharge", "discharge meds"),
    "allergies": ("allergies", "allergy", "drug allergies", "medication allergies", "allergies to medications",
                  "allergic reactions"),
    "family_history": ("family history", "fh", "family hx", "fhx", "family medical history"),
    "social_history": ("social history", "sh", "social hx", "habits", "social"),
    "review_of_systems": ("review of systems", "ros", "systems review"),
    "physical_exam": ("physical examination", "physical exam", "exam", "examination", "pe", "objective",
                      "general", "heent", "neck", "lungs", "chest", "heart", "cardiovascular", "abdomen",
                      "extremities", "neurologic", "neurological", "skin", "musculoskeletal", "psychiatric",
                      "genitourinary", "rectal", "pelvic", "breasts", "lymph nodes", "back", "head", "eyes", "ears",
                      "nose", "throat", "mouth", "constitutional"),
    "vital_signs": ("vital signs", "vitals", "vs"),
    "laboratory": ("laboratory data", "laboratory", "labs", "lab data", "laboratory studies", "laboratory values",
                   "laboratory results", "lab results", "pertinent labs", "data"),
    "imaging": ("imaging", "radiology", "imaging studies", "diagnostic studies", "studies", "x-rays", "radiographs",
                "ct scan", "mri", "ekg", "ecg", "echocardiogram", "diagnostic data"),
    "assessment": ("assessment", "diagnosis", "diagnoses", "clinical impression", "working diagnosis",
                   "final diagnosis", "discharge diagnosis", "discharge diagnoses", "admitting diagnosis",
                   "admission diagnosis", "preoperative diagnosis", "postoperative diagnosis", "pre-operative diagnosis",
                   "post-operative diagnosis", "preop diagnosis", "postop diagnosis", "impression"),
    "plan": ("plan", "recommendations", "recommendation", "treatment plan", "disposition", "follow-up", "follow up",
             "discharge instructions", "instructions", "discharge plan"),
    "assessment_and_plan": ("assessment and plan", "assessment/plan", "a/p", "impression and plan",
                            "impression/plan", "assessment & plan", "impression & plan"),
    "procedure": ("procedure", "procedures", "procedure performed", "operation", "operation performed",
                  "procedure in detail", "description of procedure", "description of the procedure",
                  "operative procedure", "name of procedure", "title of operation", "indications for procedure",
                  "anesthesia", "estimated blood loss", "complications", "specimens", "findings"),
    "hospital_course": ("hospital course", "course", "clinical course", "course in hospital", "ed course",
                        "emergency department course", "brief hospital course"),
    "subjective": ("subjective", "history"),
    "indication": ("indication", "indications", "clinical indication", "clinical history"),
}
"""Canonical section -> headers as clinicians write them (lower case, no colon)."""

HISTORICAL_SECTIONS = frozenset({"past_medical_history", "past_surgical_history"})
FAMILY_SECTIONS = frozenset({"family_history"})
MEDICATION_SECTIONS = frozenset({"medications", "discharge_medications"})

_HEADER_TO_SECTION = {h: name for name, hs in SECTION_SYNONYMS.items() for h in hs}
_LINE_HEADER_RE = re.compile(r"^[ \t]*(?P<h>[A-Za-z][A-Za-z /&,()\-]{0,60}?)[ \t]*:(?!\d)", re.MULTILINE)
_BARE_HEADER_LINE_RE = re.compile(r"^[ \t]*(?P<h>[A-Za-z][A-Za-z /&,()\-]{1,60}?)[ \t]*$", re.MULTILINE)
_INLINE_HEADER_RE = re.compile(r"(?:(?<=[.,;]\s)|(?<=[.,;]\s\s))(?P<h>[A-Z][A-Z /&\-]{1,50}[A-Z])[ \t]*:(?!\d)")


def _canonical_header(header: str) -> str | None:
    key = re.sub(r"\s+", " ", header.strip().lower())
    return _HEADER_TO_SECTION.get(key)


def _exam_line_word(name: str | None, header: str) -> bool:
    """One lower-case word that names both a section and a body part or exam line ("General",
    "History", "Neck", "Skin"): inside an exam it starts a line of the exam, not a new section."""
    return (name in ("physical_exam", "subjective") and not header.isupper() and len(header.split()) == 1
            and header.lower() in ("general", "history", "back", "head", "neck", "skin"))


def find_sections(text: str) -> list[Section]:
    """Sections in reading order; text before the first header is a section named ``preamble``.

    A header is "Words:" at a line start that is a known section name or written in capitals
    ("SOCIAL HISTORY:", "HPI:"), a known section name alone on its line without the colon
    ("HISTORY OF PRESENT ILLNESS"), or a known capitalised header inside a line after a sentence
    end, which is how the MTSamples transcriptions run their sections together. Unknown
    capitalised headers become section ``other`` so their body is not mistaken for the
    previous section.
    """
    found: dict[int, tuple[str, str, int]] = {}
    for m in _LINE_HEADER_RE.finditer(text):
        header = m.group("h")
        name = _canonical_header(header)
        words = header.split()
        if name is None and not (header.isupper() and len(header) >= 3 and len(words) <= 6):
            continue
        if _exam_line_word(name, header):
            continue  # "General: well appearing" is an exam line inside the exam section, not a new one
        found[m.start("h")] = (name or "other", header, m.end())
    for m in _BARE_HEADER_LINE_RE.finditer(text):
        # a known header alone on its line, without a colon ("HISTORY OF PRESENT ILLNESS" above its
        # paragraph), as many notes and templates write them: its words are not the note's content
        # ("illness" is not a problem of the patient)
        header = m.group("h")
        name = _canonical_header(header)
        if name is not None and m.start("h") not in found and not _exam_line_word(name, header):
            found[m.start("h")] = (name, header, m.end())
    for m in _INLINE_HEADER_RE.finditer(text):
        header = m.group("h")
        name = _canonical_header(header)
        if name is not None and m.start("h") not in found:
            found[m.start("h")] = (name, header, m.end())
    starts = sorted(found)
    sections: list[Section] = []
    if not starts or starts[0] > 0 and text[: starts[0]].strip():
        sections.append(Section("preamble", "", 0, 0, starts[0] if starts else len(text)))
    for i, s in enumerate(starts):
        name, header, body = found[s]
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        # Exam sub-headers (HEENT:, LUNGS:) stay inside the exam: keep the parent's name.
        if name == "physical_exam" and sections and sections[-1].name in ("physical_exam", "vital_signs") \
                and header.lower() not in ("physical examination", "physical exam"):
            name = "physical_exam"
        sections.append(Section(name, header, s, body, end))
    return sections


def section_at(sections: list[Section], offset: int) -> Section | None:
    """The section holding character ``offset`` (sections are sorted and contiguous)."""
    lo, hi = 0, len(sections) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        sec = sections[mid]
        if offset < sec.start:
            hi = mid - 1
        elif offset >= sec.end:
            lo = mid + 1
        else:
            return sec
    return None


# -- sentences ------------------------------------------------------------------------------

NO_SPLIT_AFTER = frozenset({"dr", "mr", "mrs", "ms", "vs", "approx", "st", "fig", "e.g", "i.e", "cf", "inc", "co"})
"""Abbreviations after which a period and a capital do not end the sentence ("Dr. Smith")."""
_SENT_END_RE = re.compile(r"[.?!]+[\"')\]]*(?=\s)")
_LIST_MARKER_RE = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,2}|[a-z])[.)][ \t]*$")


def _ends_sentence(text: str, dot: int, after: int) -> bool:
    """Whether the terminal punctuation at ``dot`` ends a sentence (``after`` = next non-space)."""
    if text[dot] in "?!" or after >= len(text):
        return True
    if _LIST_MARKER_RE.search(text[max(0, dot - 6) : dot + 1]):
        return False  # "1. Hypertension": a list number, not a sentence end
    if text[after].islower():
        return False  # "p.o. b.i.d." or "q.d. and": no capital follows
    word_m = re.search(r"([A-Za-z.]+?)\.?$", text[max(0, dot - 8) : dot])
    return not (word_m and word_m.group(1).lower() in NO_SPLIT_AFTER)


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Sentence spans of ``text[start:end]``, trimmed of surrounding whitespace.

    Splits at ``.?!`` followed by whitespace unless an abbreviation, a list number or a
    lower-case continuation says otherwise; at blank lines; and at line breaks unless the
    next line is a lower-case continuation of wrapped prose (medication and problem lists
    put one item per line without punctuation).
    """
    end = len(text) if end is None else end
    cuts = {start, end}
    for m in _SENT_END_RE.finditer(text, start, end):
        after = m.end()
        while after < end and text[after].isspace():
            after += 1
        if _ends_sentence(text, m.end() - 1, after):
            cuts.add(m.end())
    pos = text.find("\n", start, end)
    while pos != -1:
        nxt = pos + 1
        while nxt < end and text[nxt] in " \t":
            nxt += 1
        prev = pos - 1
        while prev >= start and text[prev] in " \t":
            prev -= 1
        wrapped = (nxt < end and text[nxt].islower() and prev >= start and text[prev] not in ".:;?!"
                   and pos - text.rfind("\n", start, pos) > 50)
        if not wrapped:
            cuts.add(pos)
        pos = text.find("\n", pos + 1, end)
    bounds = sorted(cuts)
    spans: list[Span] = []
    for a, b in itertools.pairwise(bounds):
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            spans.append(Span(a, b))
    return spans
