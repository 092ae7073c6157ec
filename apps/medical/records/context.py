"""ConText: is a mentioned condition negated, uncertain, hypothetical, historical or someone else's?

Our own implementation of the algorithm the NegEx (Chapman et al., 2001) and ConText
(Harkema et al., 2009) papers describe: a lexicon of trigger phrases, each with a category
and a direction; a trigger modifies the targets inside its scope, which runs from the
trigger to the end of the sentence (forward triggers) or back to its start (backward ones),
cut short by termination terms ("but", "however", "which", "secondary to") and by a maximum
number of tokens. Pseudo-triggers ("no change", "gram negative", "not ruled out") are
matched first so the negation words inside them do not fire.

The trigger lists are written here from the categories those papers describe; the scope
window and a few list entries were chosen on a development half of the public NegEx
annotated sentences and are reported on the other half (see ``evaluate.negex_eval``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from trillium.medical.records.text import FAMILY_SECTIONS, HISTORICAL_SECTIONS, Section, Token, tokenize


class Category(StrEnum):
    NEGATED = "negated"
    UNCERTAIN = "uncertain"
    HYPOTHETICAL = "hypothetical"
    HISTORICAL = "historical"
    FAMILY = "family"
    PSEUDO = "pseudo"
    TERMINATE = "terminate"


class Direction(StrEnum):
    FORWARD = "forward"  # "no [fever]"
    BACKWARD = "backward"  # "[pneumonia] is ruled out"
    BOTH = "both"  # "[fever] unlikely" and "unlikely [fever]"


@dataclass(frozen=True, slots=True)
class Trigger:
    phrase: str
    category: Category
    direction: Direction = Direction.FORWARD
    blocks: frozenset[Category] = frozenset()
    """For termination terms: the categories whose scope they cut (empty: all)."""


def _triggers(category: Category, direction: Direction, phrases: str) -> list[Trigger]:
    return [Trigger(p.strip(), category, direction) for p in phrases.split("|") if p.strip()]


F, B, BOTH = Direction.FORWARD, Direction.BACKWARD, Direction.BOTH

NEGATION = _triggers(Category.NEGATED, F, """
    no|not|denies|denied|denying|deny|without|absence of|absent|free of|negative for|no evidence of|no evidence|
    no signs of|no sign of|no symptoms of|no history of|no complaints of|no findings of|no findings to suggest|
    no new|no suspicious|no abnormal|no acute|no significant|no definite|no obvious|no other|no further evidence of|
    not demonstrate|not demonstrated|does not demonstrate|did not demonstrate|not show|does not show|did not show|
    not appear|does not appear|did not appear|not have|does not have|did not have|doesn't have|has not had|
    never had|never|not see|not seen|cannot see|did not reveal|does not reveal|fails to reveal|failed to reveal|
    not reveal|not identified|no radiographic evidence of|no mammographic evidence of|no ct evidence of|
    no ultrasound evidence of|not associated with|no pain|with no|resolved|rules out|ruled out|rule him out|
    rule her out|ruled him out|ruled her out|negative|non|unremarkable for|is negative for|was negative for|
    were negative for|no longer|none|nor|not complain of|not complaining of|no complaint of|denial of|nil|
    no further|no focal|no gross|no appreciable|no detectable|no demonstrable|no residual|no recurrent|no evident|
    no visible|not feel|not felt|without any|without evidence of|without signs of|no cause of|not exhibit|
    no indication of|no report of|no reports of|absence|lack of|lacks|free from|not significant for
""")
NEGATION_POST = _triggers(Category.NEGATED, B, """
    free|are ruled out|is ruled out|was ruled out|were ruled out|have been ruled out|has been ruled out|
    been ruled out|was negative|is negative|were negative|are negative|negative|not seen|is absent|are absent|
    was absent|were absent|absent|not identified|not present|is not present|are not present|unlikely|
    was not seen|were not seen|is not seen|are not seen|not visualized|not demonstrated|not noted|denied|
    has resolved|have resolved|resolved|not appreciated|not detected|was not identified|were not identified|none
""")
UNCERTAIN = _triggers(Category.UNCERTAIN, F, """
    possible|possibly|probable|probably|likely|may|might|could|could be|may be|may represent|might represent|
    suspicious for|suspicious of|suspect|suspected|suspicion of|suspicion for|questionable|question of|
    cannot be excluded|cannot exclude|can not be excluded|cannot rule out|can not rule out|cannot be ruled out|
    can not be ruled out|not ruled out|not been ruled out|rule out|r/o|ro|to rule out|rule-out|versus|vs|
    concern for|concerning for|worrisome for|worrisome of|consider|considered|consistent with possible|
    differential diagnosis|ddx|evaluate for|evaluation for|eval for|to evaluate for|to exclude|exclude|
    is not excluded|not excluded|uncertain|unclear|equivocal|indeterminate|borderline|presumed|presumably|
    apparent|apparently|seems|appears to be|suggestive of|suggests|suggesting|compatible with|raises the question of|
    differential includes|in the differential|cannot be entirely excluded|may have|might have|?|question
""")
UNCERTAIN_POST = _triggers(Category.UNCERTAIN, B, """
    is possible|are possible|was possible|is not excluded|are not excluded|cannot be excluded|
    can not be excluded|cannot be ruled out|can not be ruled out|not ruled out|is suspected|was suspected|
    are suspected|is likely|is questionable|is considered|was considered|versus|vs|is in the differential|
    not excluded|suspected|questionable|?
""")
HYPOTHETICAL = _triggers(Category.HYPOTHETICAL, F, """
    if|return if|call if|call for|call also for|call with|call the office if|call the clinic if|should|should he|should she|should they|should the patient|in case of|in case|
    in the event of|as needed for|prn|p.r.n.|as needed|return for|return with|come back if|seek care if|
    seek medical attention if|go to the emergency room if|go to the er if|watch for|monitor for|at risk for|
    risk of|risk for|prevent|prevention of|to prevent|prophylaxis|prophylaxis for|precautions|warning signs of
""")
HISTORICAL = _triggers(Category.HISTORICAL, F, """
    history of|hx of|h/o|past history of|past medical history of|previous|previously|prior|
    in the past|status post|s/p|remote history of|longstanding|long-standing|
    known history of|was diagnosed with|years ago|in childhood|as a child|former
""")
HISTORICAL_POST = _triggers(Category.HISTORICAL, B, """
    years ago|months ago|in the past|previously|in childhood|as a child|in remission
""")
FAMILY = _triggers(Category.FAMILY, F, """
    family history|family history of|fh|fhx|mother|mother's|father|father's|sister|sisters|brother|brothers|
    sibling|siblings|aunt|uncle|grandmother|grandfather|grandparent|grandparents|cousin|son|daughter|children|
    parent|parents|maternal|paternal|family member|family members|mom|dad|niece|nephew|wife|husband|spouse|
    relatives|relative|twin
""")
PSEUDO = _triggers(Category.PSEUDO, F, """
    no increase|no increased|no suspicious change|no significant change|no change|no interval change|
    no definite change|no appreciable change|not extend|not cause|not drain|not certain if|not certain whether|
    gram negative|gram-negative|without difficulty|not necessarily|not only|no further change|without any change|
    not been ruled out|not ruled out|not be ruled out|cannot be ruled out|can not be ruled out|
    not excluded|cannot be excluded|cannot exclude|unremarkable except|negative except|no other than|
    history and physical|history and examination|history of present illness|family history of present illness|
    past history|social history|medical history|history taking|sudden onset of|no improvement|not improved|
    not resolved|has not resolved|not been resolved|not decreased|no decrease|without improvement|
    not well|not tolerate|not tolerated|did not tolerate|not respond|did not respond|failed to respond|
    not clear|not entirely clear|not definitely|no more than|not more than|not less than|no less than|
    whether or not|if not|and/or|with or without|not only|not just|not all|not always|no obvious change|
    no sign of change|negative for change|possible change
""")
# Tumour markers read "HER2 negative", "ER-positive": the negative belongs to the marker, not to the
# cancer named before it ("invasive ductal carcinoma, HER2 negative"). Written from oncology
# reporting (receptor, driver-mutation and viral markers), not from any evaluation set.
_MARKERS = ("er", "pr", "er/pr", "her2", "her2/neu", "her-2", "egfr", "alk", "ros1", "kras", "braf", "pd-l1",
            "brca", "brca1", "brca2", "msi", "mmr", "p16", "hpv", "psa", "cd20", "cd30", "kit", "triple",
            "hormone receptor", "estrogen receptor", "progesterone receptor")
PSEUDO += [Trigger(f"{m}{sep}{word}", Category.PSEUDO, F)
           for m in _MARKERS for sep in (" ", "-") for word in ("negative", "positive")]
TERMINATION = [Trigger(p.strip(), Category.TERMINATE, F) for p in ["\n    but", "however", "although", "though", "aside from", "apart from", "except", "except for", "yet", "which", "who", "whose", "\n    cause of", "cause for", "causes of", "causes for", "source of", "sources of", "reason of", "reason for", "reasons of", "reasons for", "\n    etiology of", "etiology for", "origin of", "origins of", "secondary to", "due to", "presenting", "presents", "presented", "\n    patient", "pt", "trigger event for", "still", "nevertheless", "nonetheless", "otherwise", "other than", "remains", "remained", "\n    with the exception of", "complains of", "complaining of", "c/o", "reports", "reported", "reporting", "notes", "noted", "states", "stated", "\n    admits", "admitted", "positive for", "positive", "significant for", "consistent with", "revealed", "reveals", "shows", "showed", "demonstrated", "\n    demonstrates", "are present", "is present", "was present", "were present", "has", "have", "had", "\n    now", "today", "currently", "recently", "since", "after", "given", "treated with", "treatment of", "on", "started on\n"] if p.strip()]
"""Terms that end a trigger's scope. Affirming verbs ("reports", "has", "positive for") and
clause starters are included because in clinical text they begin a new assertion. "positive"
alone too: in "invasive ductal carcinoma, ER positive, HER2 negative" the backward "negative"
belongs to HER2, and its scope ran back over the carcinoma."""

_DURATION_RE = re.compile(
    r"(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|several|few|many)[- ]?"
    r"(?:hour|day|week|month|year)s?|hours?|days?|weeks?|months?"
)

DEFAULT_TRIGGERS: tuple[Trigger, ...] = tuple(
    NEGATION + NEGATION_POST + UNCERTAIN + UNCERTAIN_POST + HYPOTHETICAL + HISTORICAL + HISTORICAL_POST
    + FAMILY + PSEUDO + TERMINATION
)

# Scopes of these triggers are not cut by these termination terms: "history of ... who had"
_TERMINATION_EXEMPT: dict[Category, frozenset[str]] = {
    Category.HISTORICAL: frozenset({"had", "has", "have", "since", "after", "on", "now", "today", "currently",
                                    "recently"}),
    Category.HYPOTHETICAL: frozenset({"has", "had", "have", "now", "currently"}),
    Category.FAMILY: frozenset({"has", "had", "have", "since", "after", "on", "now", "currently", "recently",
                                "who", "whose", "which", "significant for", "positive for"}),
}


@dataclass(frozen=True, slots=True)
class TriggerMatch:
    trigger: Trigger
    first: int  # token index
    last: int  # token index, inclusive
    start: int  # char offset
    end: int


@dataclass(frozen=True)
class Assertion:
    """The ConText attributes of one target, with the triggers that set them (for audit)."""

    negated: bool = False
    uncertain: bool = False
    hypothetical: bool = False
    historical: bool = False
    family: bool = False
    evidence: tuple[tuple[str, str], ...] = ()  # (category, trigger phrase as written)

    def as_dict(self) -> dict[str, bool]:
        return {"negated": self.negated, "uncertain": self.uncertain, "hypothetical": self.hypothetical,
                "historical": self.historical, "family": self.family}


@dataclass
class ConTextRules:
    """A trigger lexicon compiled for longest-match lookup, and the scope settings.

    ``max_scope`` is the number of tokens a trigger reaches (NegEx used 5 words originally;
    later versions run to the sentence end); ``None`` means the whole sentence, cut only by
    termination terms. ``category_scope`` overrides it per category: relatives ("her husband")
    are mentioned in passing, so family triggers reach only a few tokens.
    """

    triggers: Sequence[Trigger] = DEFAULT_TRIGGERS
    max_scope: int | None = None
    category_scope: Mapping[Category, int | None] = field(default_factory=lambda: {Category.FAMILY: 6})
    disabled: frozenset[Category] = frozenset()
    _index: dict[tuple[str, ...], list[Trigger]] = field(init=False, repr=False)
    _longest: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {}
        for trig in self.triggers:
            key = tuple(t.lower for t in tokenize(trig.phrase))
            if key:
                self._index.setdefault(key, []).append(trig)
        self._longest = max(len(k) for k in self._index)

    def match(self, tokens: Sequence[Token]) -> list[TriggerMatch]:
        """Non-overlapping trigger matches, longest first at each position, pseudo-triggers winning ties."""
        lowers = [t.lower for t in tokens]
        out: list[TriggerMatch] = []
        i = 0
        while i < len(tokens):
            hit = None
            for n in range(min(self._longest, len(tokens) - i), 0, -1):
                cands = self._index.get(tuple(lowers[i : i + n]))
                if cands:
                    hit = (n, cands)
                    break
            if hit is None:
                i += 1
                continue
            n, cands = hit
            if i > 0 and _DURATION_RE.fullmatch(lowers[i - 1]) and lowers[i] in ("history", "hx", "h/o"):
                i += n  # "a two-day history of fever" is the present illness, not the past
                continue
            if any(c.category == Category.PSEUDO for c in cands):
                cands = [c for c in cands if c.category == Category.PSEUDO]
            for c in cands:
                if c.category not in self.disabled:
                    out.append(TriggerMatch(c, i, i + n - 1, tokens[i].start, tokens[i + n - 1].end))
            i += n
        return out


DEFAULT_RULES = ConTextRules()


def _scope_end(matches: Sequence[TriggerMatch], trig: TriggerMatch, n_tokens: int, max_scope: int | None) -> int:
    """Last token index (inclusive) a forward trigger reaches."""
    limit = n_tokens - 1 if max_scope is None else min(n_tokens - 1, trig.last + max_scope)
    exempt = _TERMINATION_EXEMPT.get(trig.trigger.category, frozenset())
    for m in matches:
        if m.first > trig.last and m.first <= limit and m.trigger.category == Category.TERMINATE \
                and m.trigger.phrase not in exempt:
            return m.first - 1
    return limit


def _scope_start(matches: Sequence[TriggerMatch], trig: TriggerMatch, max_scope: int | None) -> int:
    limit = 0 if max_scope is None else max(0, trig.first - max_scope)
    exempt = _TERMINATION_EXEMPT.get(trig.trigger.category, frozenset())
    for m in reversed(matches):
        if m.last < trig.first and m.last >= limit and m.trigger.category == Category.TERMINATE \
                and m.trigger.phrase not in exempt:
            return m.last + 1
    return limit


_CLAUSE_BREAKS = frozenset({";", ":"})


def assert_targets(
    tokens: Sequence[Token],
    targets: Iterable[tuple[int, int]],
    rules: ConTextRules = DEFAULT_RULES,
    matches: Sequence[TriggerMatch] | None = None,
) -> list[Assertion]:
    """ConText attributes for each target, given as a (start, end) character span in the sentence.

    ``tokens`` are the sentence's tokens; ``matches`` may be passed when several target sets
    share a sentence so the triggers are matched once.
    """
    matches = rules.match(tokens) if matches is None else matches
    # Semicolons and colons end a clause: treat them as termination for every category.
    breaks = [TriggerMatch(Trigger(t.text, Category.TERMINATE), i, i, t.start, t.end)
              for i, t in enumerate(tokens) if t.text in _CLAUSE_BREAKS]
    all_matches = sorted([*matches, *breaks], key=lambda m: m.first)
    modifiers = [m for m in all_matches if m.trigger.category not in (Category.PSEUDO, Category.TERMINATE)]
    results: list[Assertion] = []
    for start, end in targets:
        first = next((i for i, t in enumerate(tokens) if t.end > start), len(tokens))
        last = max((i for i, t in enumerate(tokens) if t.start < end), default=first)
        flags: dict[str, bool] = {}
        evidence: list[tuple[str, str]] = []
        for m in modifiers:
            cat, direction = m.trigger.category, m.trigger.direction
            if m.start < end and m.end > start:
                # A trigger that runs into the target ("no acute" before "acute distress") still
                # modifies it when it starts first; one that starts inside it is the target's own
                # wording ("negative" in "gram negative rods").
                if m.start < start and direction != Direction.BACKWARD:
                    flags[cat.value] = True
                    evidence.append((cat.value, m.trigger.phrase))
                continue
            hit = False
            reach = rules.category_scope.get(cat, rules.max_scope)
            if direction in (Direction.FORWARD, Direction.BOTH) and m.last < first:
                hit = _scope_end(all_matches, m, len(tokens), reach) >= first
            if not hit and direction in (Direction.BACKWARD, Direction.BOTH) and m.first > last:
                hit = _scope_start(all_matches, m, reach) <= last
            if hit:
                flags[cat.value] = True
                evidence.append((cat.value, m.trigger.phrase))
        results.append(Assertion(
            negated=flags.get("negated", False), uncertain=flags.get("uncertain", False),
            hypothetical=flags.get("hypothetical", False), historical=flags.get("historical", False),
            family=flags.get("family", False), evidence=tuple(evidence),
        ))
    return results


def assert_in_sentence(sentence: str, target: tuple[int, int], rules: ConTextRules = DEFAULT_RULES) -> Assertion:
    """ConText attributes of one target span in a single sentence (the NegEx evaluation's unit)."""
    return assert_targets(tokenize(sentence), [target], rules)[0]


def with_section(assertion: Assertion, section: Section | None) -> Assertion:
    """Add what the section says about every mention in it: past history is historical,
    family history belongs to a relative."""
    if section is None:
        return assertion
    evidence = list(assertion.evidence)
    historical, family = assertion.historical, assertion.family
    if section.name in HISTORICAL_SECTIONS and not historical:
        historical = True
        evidence.append(("historical", f"section {section.header}"))
    if section.name in FAMILY_SECTIONS and not family:
        family = True
        evidence.append(("family", f"section {section.header}"))
    return replace(assertion, historical=historical, family=family, evidence=tuple(evidence))
