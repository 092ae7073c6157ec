"""Entities of a clinical note: problems, medications (dose, route, frequency), allergies,
vital signs, lab values, procedures and exam/report findings, each with its character span and
ConText attributes; problems carry their ICD-10-CM or HPO code where the terminology index
(``terminology``) has one, findings their structure and qualifiers (``findings``).

Dictionary terms are matched on tokens (longest match wins, so "chest pain" beats "pain");
values (blood pressure, "creatinine 1.3 mg/dL") by patterns anchored on a lexicon name.
Short abbreviations collide with ordinary words ("MS" multiple sclerosis and "Ms." Smith,
"PE" and "PE:" the exam), so terms of three letters or fewer match only when written in
capitals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from trillium.medical.records import lexicon
from trillium.medical.records.context import DEFAULT_RULES, Assertion, ConTextRules, assert_targets, with_section
from trillium.medical.records.text import MEDICATION_SECTIONS, Section, Span, Token, tokenize
from trillium.medical.records.trie import build_trie, longest_matches

KINDS = ("problem", "medication", "allergy", "vital", "lab", "procedure", "finding")
CONCEPT_KINDS = frozenset({"problem", "medication", "procedure", "allergy"})


def concept_of(kind: str, normalized: str, *, negated: bool, uncertain: bool, hypothetical: bool,
               family: bool, code_system: str | None = None, code: str | None = None) -> str | None:
    """The retrieval concept of a mention ("problem:hypertension"), or None when the mention does
    not describe the patient (negated, uncertain, hypothetical, a relative's) or is a measurement.

    One rule for fresh notes (``StructuredNote.concepts``) and stored ones (``store``), so an
    index built from either agrees.
    """
    if kind not in CONCEPT_KINDS or negated or uncertain or hypothetical or family:
        return None
    if code_system and code:
        return f"{kind}:{code_system}:{code}"  # the code: "HTN" and "essential hypertension" agree
    return f"{kind}:{normalized}"


@dataclass(frozen=True)
class Entity:
    """One mention: ``note_text[start:end] == text``; ``normalized`` is the canonical name."""

    kind: str
    text: str
    start: int
    end: int
    normalized: str
    section: str = "preamble"
    sentence: int = -1
    negated: bool = False
    uncertain: bool = False
    hypothetical: bool = False
    historical: bool = False
    family: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    evidence: tuple[tuple[str, str], ...] = ()
    code_system: str | None = None  # "ICD-10-CM", "HPO" (``terminology``); None where no code exists
    code: str | None = None

    @property
    def affirmed(self) -> bool:
        """Present in the patient now: not negated, uncertain, hypothetical or a relative's."""
        return not (self.negated or self.uncertain or self.hypothetical or self.family)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["evidence"] = [list(e) for e in self.evidence]
        return out


class TermMatcher:
    """Longest-match lookup of multi-word terms over tokens, case-insensitive except for
    short abbreviations, with a plural form added for single words and final words."""

    def __init__(self, entries: Mapping[str, Sequence[str]], kind: str) -> None:
        self.kind = kind
        self._index: dict[tuple[str, ...], tuple[str, bool]] = {}
        abbreviation_plurals: list[tuple[tuple[str, ...], str]] = []
        for canonical, terms in entries.items():
            for term in terms:
                toks = tuple(t.lower for t in tokenize(term))
                if not toks:
                    continue
                caps_only = len(term.replace(" ", "")) <= 3 and term.isalpha()
                self._index.setdefault(toks, (canonical, caps_only))
                if caps_only:  # "DVTs", "CVAs": an abbreviation's plural, capitals then a small s
                    abbreviation_plurals.append(((*toks[:-1], toks[-1] + "s"), canonical))
                last = toks[-1]
                if last.isalpha() and len(last) > 3 and not last.endswith("s") and not caps_only:
                    self._index.setdefault((*toks[:-1], last + "s"), (canonical, False))
                if 2 <= len(toks) <= 4 and all(t.isalpha() for t in toks):
                    for i in range(len(toks) - 1):  # "esophagogastric-junction", "low-back pain"
                        self._index.setdefault((*toks[:i], f"{toks[i]}-{toks[i + 1]}", *toks[i + 2:]),
                                               (canonical, False))
        for key, canonical in abbreviation_plurals:  # after the written terms: "rubs" is a word, not "RUBs"
            self._index.setdefault(key, (canonical, True))
        self._trie = build_trie(self._index.items())  # one walk per start token (see ``trie``)

    def find(self, tokens: Sequence[Token]) -> list[tuple[int, int, str]]:
        """(first token, last token inclusive, canonical) of every non-overlapping match, the
        longest at each start whose capitals rule holds."""

        def capitals_hold(hit: tuple[str, bool], start: int) -> bool:
            if not hit[1]:
                return True
            word = tokens[start].text
            if word.lower() in _FUNCTION_WORDS and _in_capitals(tokens, start):
                return False  # "AS WAS THE ..." in a sentence written in capitals: the word, not aortic stenosis
            return word.isupper() or (word[-1] == "s" and word[:-1].isupper() and len(word) > 2)

        return [(a, b, hit[0]) for a, b, hit in longest_matches(self._trie, [t.lower for t in tokens], capitals_hold)]


_SLASH_JOINED = re.compile(r"[A-Za-z]{3,}(?:/[A-Za-z]{3,})+")


def split_slashes(tokens: Sequence[Token]) -> list[Token]:
    """Tokens with words joined by a slash split at it ("atelectasis/effusion"), for matching
    terms; "s/p", "w/o", "and/or" and "120/80" stay whole (a part shorter than 3 letters, or digits)."""
    if not any("/" in t.text for t in tokens):
        return list(tokens)
    out: list[Token] = []
    for t in tokens:
        if "/" not in t.text or not _SLASH_JOINED.fullmatch(t.text):
            out.append(t)
            continue
        pos = t.start
        for n, part in enumerate(t.text.split("/")):
            if n:
                out.append(Token("/", pos, pos + 1))
                pos += 1
            out.append(Token(part, pos, pos + len(part)))
            pos += len(part)
    return out


#: Word endings that make a clinical noun in the medical vocabulary's Greek and Latin: a
#: condition (-itis, -osis, -emia, -oma, -pathy, -algia, -megaly, -plegia ...) or a procedure
#: (-ectomy, -otomy, -ostomy, -plasty, -scopy). A word of this form that no dictionary matched
#: is still a clinical concept a reader wants found (uncoded, named by itself).
_CONDITION_FORM = re.compile(
    r"[a-z]{3,}(?:itis|osis|oses|iasis|emia|aemia|omas?|omata|pathy|pathies|algias?|plasias?|ectasis|ectasia|"
    r"megaly|rrhea|rrhoea|rrhagia|rrhage|penia|uria|plegia|paresis|trophy|cele|celes)", re.IGNORECASE)
_PROCEDURE_FORM = re.compile(r"[a-z]{3,}(?:ectomy|ectomies|otomy|otomies|ostomy|ostomies|plasty|plasties|scopy|scopies)",
                             re.IGNORECASE)
#: English words of those forms that are not clinical (general-dictionary knowledge, not from any note set).
_NOT_CLINICAL = frozenset(
    """diagnosis diagnoses prognosis prognoses hypnosis osmosis symbiosis metamorphosis apotheosis sympathy
    empathy telepathy antipathy nostalgia diploma diplomas aroma aromas stroma academia bohemia
    philanthropy""".split()  # noqa: SIM905
)


def clinical_word_kind(word: str) -> str | None:
    """"problem" or "procedure" for a word of clinical form (see ``_CONDITION_FORM``), else None."""
    if len(word) < 6 or not word.isalpha() or word.lower() in _NOT_CLINICAL:
        return None
    if _PROCEDURE_FORM.fullmatch(word):
        return "procedure"
    if _CONDITION_FORM.fullmatch(word):
        return "problem"
    return None


#: English words that are also short abbreviations of the lexicons ("AS", "IS", "NO"): in text
#: written in capitals their capitals say nothing, so they are read as the word.
_FUNCTION_WORDS = frozenset("as is it in on at to be do no or an us am me we he so up if of by my".split())  # noqa: SIM905


def _in_capitals(tokens: Sequence[Token], i: int) -> bool:
    """Whether a neighbouring word of token ``i`` is written in capitals too."""
    for j in (i - 1, i + 1):
        if 0 <= j < len(tokens):
            t = tokens[j].text
            if len(t) > 1 and t.isalpha() and t.isupper():
                return True
    return False


def _written_key(text: str) -> str:
    """A written form compared case- and space-insensitively ("GI  bleed" is "gi bleed")."""
    return " ".join(text.lower().split())


def _acronym(key: str) -> str:
    """Initials of a multi-word form ("chronic obstructive pulmonary disease" -> "copd")."""
    parts = key.split()
    return "".join(p[0] for p in parts) if len(parts) > 1 else ""


def _alternation(names: Sequence[str]) -> str:
    return "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in sorted(names, key=len, reverse=True))


def _variant_index(table: Mapping[str, Sequence[str]]) -> dict[str, str]:
    return {v.lower(): k for k, vs in table.items() for v in vs}


_ROUTE_OF = _variant_index(lexicon.ROUTES)
_FREQ_OF = _variant_index(lexicon.FREQUENCIES)
_UNIT_OF = _variant_index(lexicon.DOSE_UNITS)
_AS_NEEDED = {a.lower() for a in lexicon.AS_NEEDED}

_NUM = r"\d+(?:\.\d+)?"
_SEP = r"\s*(?:is|was|of|at|:|=|-|~)?\s*"
_DOSE_RE = re.compile(rf"(?P<dose>{_NUM}(?:\s*(?:-|to)\s*{_NUM})?)\s*(?P<unit>{_alternation(list(_UNIT_OF))})(?![A-Za-z])",
                      re.IGNORECASE)
_ROUTE_RE = re.compile(rf"(?<![A-Za-z])(?:{_alternation(list(_ROUTE_OF))})(?![A-Za-z])", re.IGNORECASE)
_FREQ_RE = re.compile(rf"(?<![A-Za-z])(?:{_alternation(list(_FREQ_OF))})(?![A-Za-z0-9])", re.IGNORECASE)
_ROUTE_BEFORE_RE = re.compile(rf"(?<![A-Za-z])({_alternation(list(_ROUTE_OF))})\s+$", re.IGNORECASE)
_QH_RE = re.compile(r"(?<![A-Za-z])(?:q\s*|every\s+)(\d{1,2})(?:\s*(?:-|to)\s*(\d{1,2}))?\s*(?:h|hr|hrs|hours?)\b",
                    re.IGNORECASE)
_PRN_RE = re.compile(rf"(?<![A-Za-z])(?:{_alternation(sorted(_AS_NEEDED))})(?![A-Za-z])", re.IGNORECASE)


def _value_patterns() -> list[tuple[str, re.Pattern[str]]]:
    """Vital-sign patterns: a name, a separator, then a value shaped for that vital."""
    names = lexicon.VITAL_NAMES

    def name_re(key: str) -> str:
        long = [n for n in names[key] if len(n) > 2]
        short = [n for n in names[key] if len(n) <= 2]
        parts = [f"(?i:{_alternation(long)})"] if long else []
        parts += [re.escape(s.upper()) for s in short]  # "T 98.6 P 72": capitals only
        return "(?<![A-Za-z0-9])(?P<name>" + "|".join(parts) + ")(?![A-Za-z])"

    unit_t = r"(?:\s*°\s*|\s*degrees?\s*|\s+)?(?P<unit>F|C|Fahrenheit|Celsius)?(?![A-Za-z])"
    return [
        ("blood_pressure", re.compile(name_re("blood_pressure") + _SEP
                                      + r"(?P<sys>\d{2,3})\s*/\s*(?P<dia>\d{2,3})(?:\s*(?P<unit>mm\s*hg))?",
                                      re.IGNORECASE)),
        ("temperature", re.compile(name_re("temperature") + _SEP + rf"(?P<value>{_NUM})" + unit_t)),
        ("heart_rate", re.compile(name_re("heart_rate") + _SEP
                                  + r"(?P<value>\d{2,3})(?:\s*(?P<unit>bpm|beats per minute|/min))?(?![\d/])")),
        ("respiratory_rate", re.compile(name_re("respiratory_rate") + _SEP
                                        + r"(?P<value>\d{1,2})(?:\s*(?P<unit>breaths per minute|/min))?(?![\d/.])")),
        ("oxygen_saturation", re.compile(name_re("oxygen_saturation") + r"\s*(?:is|was|of|at|:|=|-|~)?\s*"
                                         + r"(?P<value>\d{2,3})\s*(?P<unit>%)?"
                                         + r"(?:\s+on\s+(?P<o2>room air|RA|\d+(?:\.\d+)?\s*(?:L|liters?)\b[^,.;]{0,20}))?")),
        ("weight", re.compile(name_re("weight") + _SEP
                              + rf"(?P<value>{_NUM})\s*(?P<unit>kg|kilograms?|lbs?|pounds?)(?![A-Za-z])", re.IGNORECASE)),
        ("height", re.compile(name_re("height") + _SEP
                              + rf"(?P<value>{_NUM})\s*(?P<unit>cm|m|in|inches|ft|feet)(?![A-Za-z])", re.IGNORECASE)),
        ("bmi", re.compile(name_re("bmi") + _SEP + rf"(?P<value>{_NUM})")),
        ("pain_score", re.compile(name_re("pain_score") + r"\s*(?:score|scale)?\s*(?:is|was|of|:|=)?\s*"
                                  + r"(?P<value>\d{1,2})\s*/\s*10", re.IGNORECASE)),
    ]


VITAL_PATTERNS = _value_patterns()
_LAB_UNITS = r"mg/dl|g/dl|mmol/l|meq/l|ng/ml|ng/dl|pg/ml|u/l|iu/l|miu/l|uiu/ml|mu/l|k/ul|k/mm3|x\s*10\^?[39]/l|/ul|/mm3|%|mg/l|mm/hr|sec|seconds|ml/min(?:/1\.73\s*m2)?"

_LAB_UNIT_CANONICAL = {
    "mg/dl": "mg/dL", "g/dl": "g/dL", "mmol/l": "mmol/L", "meq/l": "mEq/L", "ng/ml": "ng/mL", "ng/dl": "ng/dL",
    "pg/ml": "pg/mL", "u/l": "U/L", "iu/l": "IU/L", "miu/l": "mIU/L", "uiu/ml": "uIU/mL", "mu/l": "mU/L",
    "k/ul": "K/uL", "mg/l": "mg/L", "mm/hr": "mm/h", "seconds": "s", "sec": "s",
}


def _lab_pattern() -> re.Pattern[str]:
    long = [t for terms in lexicon.LABS.values() for t in terms if len(t) > 3]
    short = [t for terms in lexicon.LABS.values() for t in terms if len(t) <= 3]
    short_forms = sorted({f for s in short for f in (s.upper(), s.capitalize())}, key=len, reverse=True)
    name = f"(?P<name>(?i:{_alternation(long)})|{'|'.join(re.escape(s) for s in short_forms)})"
    return re.compile(rf"(?<![A-Za-z0-9]){name}(?:\s+(?:level|value|count))?{_SEP}"
                      rf"(?P<value>[<>]?\s*{_NUM})(?!\s*/\s*\d)(?:\s*(?P<unit>(?i:{_LAB_UNITS})))?(?![A-Za-z0-9])")


LAB_PATTERN = _lab_pattern()
_LAB_OF = {t.lower(): name for name, terms in lexicon.LABS.items() for t in terms}

_NO_ALLERGY_RE = re.compile(r"\b(?:nkda|nka|no known (?:drug |medication )?allergies|no allergies|none known|"
                            r"no drug allergies|denies (?:any )?(?:drug )?allergies)\b|^\s*none\.?\s*$", re.IGNORECASE)
_ALLERGIC_TO_RE = re.compile(r"\b(?:allergic to|allergy to|allergies to|intolerant (?:of|to))\s+", re.IGNORECASE)
_REACTION_RE = re.compile(r"\(([^)]{1,60})\)|\b(?:causes?|caused|gives? (?:him|her|me)|->|-|with)\s+([a-z ]{3,40})$",
                          re.IGNORECASE)


@dataclass
class _Sentence:
    span: Span
    section: Section
    tokens: list[Token]


class EntityExtractor:
    """Finds the entities of a note given its sections and sentences (see ``structurer``)."""

    def __init__(
        self,
        problems: Mapping[str, Sequence[str]] = lexicon.PROBLEMS,
        medications: Mapping[str, Sequence[str]] = lexicon.MEDICATIONS,
        procedures: Mapping[str, Sequence[str]] = lexicon.PROCEDURES,
        rules: ConTextRules = DEFAULT_RULES,
        terminology: bool = True,
    ) -> None:
        self.problems = problems
        self.medications = medications
        self.procedures = procedures
        self.rules = rules
        self.terminology = terminology
        self._medication_matcher = TermMatcher(medications, "medication")
        self._matchers = [self._medication_matcher, TermMatcher(procedures, "procedure"),
                          TermMatcher(problems, "problem")]
        self._index = None
        self._findings = None
        self._codes: dict[str, tuple[str, str, str]] = {}
        self._borrowed: dict[str, tuple[tuple[str, str, str], str]] = {}
        #: written forms with a code of their own whatever entry matched them: every everyday
        #: word of ``lexicon.LAY_TERMS`` (true synonyms of their entry's name) and the written
        #: forms of ``lexicon.CODES`` ("numbness" under the broader "neuropathy")
        self._form_codes: dict[str, tuple[str, str, str]] = {}
        if terminology:
            from trillium.medical.records.terminology import default_index

            self._index = default_index()
            for table in (problems, lexicon.EXAM_FINDINGS, lexicon.LAY_TERMS):
                for canonical, terms in table.items():
                    # the code a coder gives the bare name (lexicon.CODES), else the canonical
                    # name's own code: it codes every synonym that has no code of its own
                    hit = lexicon.CODES.get(canonical) or self._index.lookup(canonical)
                    if hit is not None:
                        self._codes[canonical] = hit
                        continue
                    # else the first synonym, in the lexicon's order, that has a code: it codes
                    # only itself and its acronym ("COPD" for "chronic obstructive pulmonary
                    # disease"), since an entry also lists related concepts ("melena" under GI
                    # bleeding, "laceration" under wound) that must not lend their codes
                    for term in terms:
                        hit = self._index.lookup(term)
                        if hit is not None:
                            self._borrowed[canonical] = (hit, _written_key(term))
                            break
            for canonical, terms in lexicon.LAY_TERMS.items():
                if canonical in self._codes:
                    self._form_codes.update((_written_key(t), self._codes[canonical]) for t in terms)
            self._form_codes.update((_written_key(k), v) for k, v in lexicon.CODES.items())
            self._matchers.append(TermMatcher(lexicon.EXAM_FINDINGS, "problem"))
            self._matchers.append(TermMatcher(lexicon.LAY_TERMS, "problem"))  # "runny nose", "passed out"
            from trillium.medical.records.findings import FindingMatcher

            self._findings = FindingMatcher()

    def _entry_code(self, canonical: str, written: str) -> tuple[str, str, str] | None:
        """The code a hand-lexicon mention takes from its entry (see ``__init__``)."""
        if canonical in self._codes:
            return self._codes[canonical]
        if canonical not in self._borrowed:
            return None
        hit, source = self._borrowed[canonical]
        key = _written_key(written)
        same = key in (source, _acronym(source), _acronym(canonical)) or re.sub(r" (?:disease|disorder)$", "", key) == source
        return hit if same else None

    # -- per kind ---------------------------------------------------------------------------
    def _terms(self, text: str, sent: _Sentence) -> list[Entity]:
        """Dictionary mentions and exam/report findings, overlaps decided by one rule: the longest
        match in tokens ("iron deficiency anemia" is a problem, not the drug "iron"); at equal
        length medications first (so "Lasix" is a drug, not a problem), then the hand lexicons
        (procedures, problems, exam findings, everyday words) before the terminologies
        (ICD-10-CM, then HPO) before structure + qualifier findings (``findings``) before a lone
        word of clinical form (``clinical_word_kind``: "thyromegaly", "arthrosis"), uncoded."""
        taken: set[int] = set()
        out: list[Entity] = []
        cands: list[tuple[int, int, int, str, str, tuple[str, str, str] | None, dict[str, Any]]] = []
        tokens = split_slashes(sent.tokens)  # "atelectasis/effusion": two terms, not one word
        for prio, matcher in enumerate(self._matchers):
            for first, last, canonical in matcher.find(tokens):
                if prio == 0:  # medications: first at equal length; a longer term that holds one wins
                    cands.append((first, last, prio, "medication", canonical, None, {}))
                else:
                    written = text[tokens[first].start:tokens[last].end]
                    # an everyday word takes its entry's code, a form of lexicon.CODES its own
                    # (also where it is an entry's name: "kidney stones" under lumped stones and colic)
                    hit = self._form_codes.get(_written_key(written))
                    if hit is None and self._index is not None and written.lower() != canonical:
                        # a synonym that is itself a code's description or an HPO name ("hemoptysis"
                        # under "cough") keeps that code; otherwise the entry's code, the same for
                        # "HTN" and "hypertension" (a derived form such as "effusion" from "Effusion,
                        # unspecified joint" would recode the entry)
                        hit = self._index.lookup(written, exact=True)
                        if hit is None and "-" in written:  # "low-back pain" as "low back pain"
                            hit = self._index.lookup(written.replace("-", " "), exact=True)
                    cands.append((first, last, prio, matcher.kind, canonical, hit or self._entry_code(canonical, written),
                                  {}))
        if self._index is not None:
            from trillium.medical.records.terminology import normalize_token

            norm = [normalize_token(t.text) for t in tokens]
            for first, last, hit in self._index.find(norm):
                cands.append((first, last, len(self._matchers), "problem", hit[2].lower(), hit, {}))
        if self._findings is not None:
            for first, last, structure, values in self._findings.find(tokens, header=sent.section.header):
                cands.append((first, last, len(self._matchers) + 1, "finding", structure, None, values))
        if self._index is not None:  # with the terminologies: the long tail no dictionary lists
            for i, t in enumerate(tokens):
                kind = clinical_word_kind(t.text)
                if kind is not None:
                    cands.append((i, i, len(self._matchers) + 2, kind, normalize_token(t.text), None, {}))
        cands.sort(key=lambda c: (c[0] - c[1], c[2], c[0]))
        for first, last, _, kind, canonical, hit, values in cands:
            if any(i in taken for i in range(first, last + 1)):
                continue
            taken.update(range(first, last + 1))
            a, b = tokens[first].start, tokens[last].end
            system, code = (hit[0], hit[1]) if hit and hit[1] else (None, None)
            out.append(Entity(kind, text[a:b], a, b, canonical, sent.section.name, values=values,
                              code_system=system, code=code))
        return out

    @staticmethod
    def _medication_values(text: str, med: Entity, limit: int, start: int | None = None) -> dict[str, Any]:
        """Dose, unit, route, frequency and PRN written after the drug name, up to the next drug,
        an "and" (what follows it is another order: "prednisone 40 mg and nebulized albuterol"),
        or the end of the line or sentence; a route written just before the name ("IV vancomycin",
        "nebulized albuterol"; ``start``: where the text before it begins) when none follows."""
        window = text[med.end : limit]
        cut = re.search(r"[;\n]|\.\s+[A-Z]|\band\b", window)
        window = window[: cut.start()] if cut else window
        window = window[:90]
        values: dict[str, Any] = {}
        if (m := _DOSE_RE.search(window)) is not None and m.start() < 40:
            dose = m.group("dose")
            nums = [float(x) for x in re.findall(_NUM, dose)]
            values["dose"] = nums[0] if len(nums) == 1 else nums
            values["unit"] = _UNIT_OF[re.sub(r"\s+", " ", m.group("unit").lower())]
        if (m := _ROUTE_RE.search(window)) is not None:
            values["route"] = _ROUTE_OF[re.sub(r"\s+", " ", m.group().lower())]
        elif start is not None and (m := _ROUTE_BEFORE_RE.search(text[max(start, med.start - 40):med.start])):
            values["route"] = _ROUTE_OF[re.sub(r"\s+", " ", m.group(1).lower())]
        if (m := _QH_RE.search(window)) is not None:
            lo, hi = m.group(1), m.group(2)
            values["frequency"] = f"Q{lo}H" if not hi else f"Q{lo}-{hi}H"
            code = {"12": "BID", "8": "TID", "6": "QID"}.get(lo) if not hi else None
            values["frequency"] = code or values["frequency"]
        elif (m := _FREQ_RE.search(window)) is not None:
            values["frequency"] = _FREQ_OF[re.sub(r"\s+", " ", m.group().lower())]
        values["as_needed"] = bool(_PRN_RE.search(window))
        if values["as_needed"] and (m := re.search(r"\b(?:prn|as needed)\s+(?:for\s+)?([a-z][a-z ]{2,30}?)(?=[,.;]|$)",
                                                   window, re.IGNORECASE)):
            values["indication"] = m.group(1).strip()
        return values

    @staticmethod
    def _vitals(text: str, span: Span, section: str) -> list[Entity]:
        out = []
        for name, pattern in VITAL_PATTERNS:
            for m in pattern.finditer(text, span.start, span.end):
                values: dict[str, Any] = {}
                if name == "blood_pressure":
                    values = {"systolic": int(m.group("sys")), "diastolic": int(m.group("dia")), "unit": "mmHg"}
                    if not (50 <= values["systolic"] <= 300 and 20 <= values["diastolic"] <= 200):
                        continue
                else:
                    value = float(m.group("value"))
                    unit = (m.groupdict().get("unit") or "").strip()
                    if name == "temperature":
                        unit = (unit[:1].upper() if unit else ("C" if value < 45 else "F"))
                        if not (30 <= value <= 45 if unit == "C" else 86 <= value <= 113):
                            continue
                    elif name == "weight":
                        unit = "kg" if unit.lower().startswith("k") else "lb"
                    elif name == "height":
                        unit = {"inches": "in", "feet": "ft"}.get(unit.lower(), unit.lower())
                    elif name == "oxygen_saturation":
                        unit = "%"
                        if not 50 <= value <= 100:
                            continue
                        if m.group("o2"):
                            values["on"] = m.group("o2")
                    elif name == "heart_rate":
                        unit = "bpm"
                        if not 20 <= value <= 250:
                            continue
                    elif name == "respiratory_rate":
                        unit = "breaths/min"
                        if not 4 <= value <= 70:
                            continue
                    elif name == "pain_score":
                        unit = "/10"
                    values = {"value": value, "unit": unit or None, **values}
                a, b = m.start(), m.end()
                while b > a and text[b - 1] in " \t":
                    b -= 1
                out.append(Entity("vital", text[a:b], a, b, name, section, values=values))
        return out

    @staticmethod
    def _labs(text: str, span: Span, section: str) -> list[Entity]:
        out = []
        for m in LAB_PATTERN.finditer(text, span.start, span.end):
            raw = m.group("value").replace(" ", "")
            qualifier = raw[0] if raw[0] in "<>" else None
            unit = m.group("unit")
            values: dict[str, Any] = {"value": float(raw.lstrip("<>")),
                                      "unit": _LAB_UNIT_CANONICAL.get(unit.lower(), unit) if unit else None}
            if qualifier:
                values["qualifier"] = qualifier
            name = _LAB_OF[re.sub(r"\s+", " ", m.group("name").lower())]
            out.append(Entity("lab", text[m.start() : m.end()], m.start(), m.end(), name, section, values=values))
        return out

    def _allergies(self, text: str, sent: _Sentence) -> tuple[list[Entity], bool]:
        """Allergens of an allergy-section sentence or of "allergic to X"; True when the
        sentence states there are none (NKDA)."""
        span = sent.span
        body = text[span.start : span.end]
        if sent.section.name == "allergies":
            if _NO_ALLERGY_RE.search(body):
                return [], True
            items = [(m.start() + span.start, m.end() + span.start) for m in re.finditer(r"[^,;\n]+", body)]
            # "Penicillin and sulfa" -> two items
            split: list[tuple[int, int]] = []
            for a, b in items:
                pos = a
                for m in re.finditer(r"\s+(?:and|or)\s+", text[a:b]):
                    split.append((pos, a + m.start()))
                    pos = a + m.end()
                split.append((pos, b))
            items = split
        else:
            m = _ALLERGIC_TO_RE.search(body)
            if not m:
                return [], False
            rest_start = span.start + m.end()
            rest = text[rest_start : span.end]
            stop = re.search(r"[.;]|\s+(?:and|but|which|who)\s+(?!\w+\s*\))", rest)
            items = [(rest_start, rest_start + (stop.start() if stop else len(rest)))]
        out = []
        for a, b in items:
            item = text[a:b]
            lead = re.match(r"\s*(?:\d+[.)]\s*|[-*•]\s*|(?:she|he|patient|pt)?\s*(?:is\s+)?(?:allergic|allergy|"
                            r"allergies)\s+(?:to\s+)?|to\s+)?", item, re.IGNORECASE)
            a += lead.end() if lead else 0
            item = text[a:b]
            reaction = None
            if (rm := _REACTION_RE.search(item)) is not None:
                reaction = (rm.group(1) or rm.group(2) or "").strip() or None
                b = a + rm.start()
            while b > a and not text[b - 1].isalnum():
                b -= 1
            while a < b and not text[a].isalnum():
                a += 1
            if b - a < 2 or b - a > 60:
                continue
            allergen = text[a:b]
            toks = tokenize(text, a, b)
            normalized = allergen.lower()
            for first, _, canonical in self._medication_matcher.find(toks) if toks else []:
                if first == 0:
                    normalized = canonical
                    break
            values = {"reaction": reaction} if reaction else {}
            out.append(Entity("allergy", allergen, a, b, normalized, sent.section.name, values=values))
        return out, False

    # -- whole note -------------------------------------------------------------------------
    def extract(self, text: str, sentences: Sequence[tuple[Span, Section]]) -> tuple[list[Entity], bool]:
        """Entities in text order, and whether the note says the patient has no known allergies."""
        sents = [_Sentence(span, sec, tokenize(text, span.start, span.end)) for span, sec in sentences]
        entities: list[tuple[int, Entity]] = []
        no_allergies = False
        for si, sent in enumerate(sents):
            found: list[Entity] = []
            allergies, none = self._allergies(text, sent)
            no_allergies = no_allergies or none
            found.extend(allergies)
            if sent.section.name != "allergies":
                terms = self._terms(text, sent)
                found.extend(e for e in terms if not any(x.start <= e.start < x.end for x in allergies))
            vitals = self._vitals(text, sent.span, sent.section.name)
            labs = [lab for lab in self._labs(text, sent.span, sent.section.name)
                    if not any(v.start <= lab.start < v.end for v in vitals)]
            # A lab or vital value wins over a dictionary word inside it ("K" is not a problem)
            valued = vitals + labs
            found = [e for e in found if not any(v.start <= e.start < v.end for v in valued)] + valued
            meds = sorted((i for i, e in enumerate(found) if e.kind == "medication"), key=lambda i: found[i].start)
            for k, i in enumerate(meds):
                limit = found[meds[k + 1]].start if k + 1 < len(meds) else sent.span.end
                start = found[meds[k - 1]].end if k else sent.span.start
                found[i] = replace(found[i], values=self._medication_values(text, found[i], limit, start))
            if found:
                matches = self.rules.match(sent.tokens)
                asserted = assert_targets(sent.tokens, [(e.start, e.end) for e in found], self.rules, matches)
                for e, a in zip(found, asserted, strict=True):
                    if sent.section.name in MEDICATION_SECTIONS and e.kind == "medication":
                        a = Assertion()  # a medication list states what is taken; "as needed" is not doubt
                    a = with_section(a, sent.section)
                    entities.append((si, replace(e, sentence=si, negated=a.negated, uncertain=a.uncertain,
                                                  hypothetical=a.hypothetical, historical=a.historical,
                                                  family=a.family, evidence=a.evidence)))
        entities.sort(key=lambda p: (p[1].start, p[1].end))
        return [e for _, e in entities], no_allergies
