"""Evaluations of the records pipeline on real text, each written as a JSON report.

- ``negex_eval``: negation (and temporality, experiencer) on the public NegEx annotated
  sentences, against the figures NegEx published (Chapman et al., 2001).
- ``specialty_eval``: similar-case retrieval on the MTSamples CSV layout: the share of notes
  whose 3 nearest neighbours include one of the same specialty, for our index against a plain
  TF-IDF baseline in the same run.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trillium.core.errors import InputValidationError
from trillium.medical.records.context import (
    DEFAULT_RULES,
    DEFAULT_TRIGGERS,
    Category,
    ConTextRules,
    assert_targets,
    with_section,
)
from trillium.medical.records.text import find_sections, section_at, tokenize

log = logging.getLogger(__name__)

NEGEX_PUBLISHED = {"sensitivity": 0.778, "specificity": 0.945, "ppv": 0.845, "npv": 0.909,
                   "source": "Chapman et al. 2001, J Biomed Inform 34:301-310 (discharge summaries)"}


@dataclass(frozen=True)
class NegexRow:
    line: int
    condition: str
    sentence: str
    negation: str  # Negated / Affirmed / Possible
    temporality: str  # Recent / Historical / Not particular (hypothetical)
    experiencer: str  # Patient / Other / Family member


NEGEX_BASELINE_RULES = ConTextRules(
    triggers=tuple(t for t in DEFAULT_TRIGGERS if t.category in (Category.NEGATED, Category.PSEUDO)), max_scope=5,
    category_scope={},
)
"""Classic NegEx in our engine, run in the same evaluation as a baseline: negation and pseudo
triggers only, a five-token window, no termination terms and no clause breaks beyond ";" and ":"."""


def read_negex_tsv(path: str | Path) -> list[NegexRow]:
    """Rows of the NegEx annotated set (tab-separated, one header line)."""
    path = Path(path)
    if not path.is_file():
        raise InputValidationError(f"{path}: NegEx annotation file not found")
    rows: list[NegexRow] = []
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header or len(header) < 6:
            raise InputValidationError(f"{path}: expected 6 tab-separated columns in the header, got {header!r}")
        for n, rec in enumerate(reader, start=2):
            if not rec or not any(f.strip() for f in rec):
                continue
            if len(rec) < 6:
                raise InputValidationError(f"{path}:{n}: expected 6 tab-separated fields, got {len(rec)}")
            try:
                line = int(rec[0])
            except ValueError as exc:
                raise InputValidationError(f"{path}:{n}: line number {rec[0]!r} is not an integer") from exc
            rows.append(NegexRow(line, rec[1].strip(), rec[2], rec[3].strip(), rec[4].strip(), rec[5].strip()))
    if not rows:
        raise InputValidationError(f"{path}: no annotated rows")
    return rows


def locate(condition: str, sentence: str) -> tuple[int, int]:
    """The character span of ``condition`` in ``sentence``.

    The annotators copied conditions with other spacing and case, and sometimes with words
    that are not in the sentence; the fallbacks are a whitespace-insensitive match, then the
    longest run of the condition's tokens, then the whole sentence.
    """
    words = condition.split()
    if words:
        pattern = r"\s*".join(re.escape(w) for w in words)
        m = re.search(pattern, sentence, re.IGNORECASE)
        if m:
            return m.start(), m.end()
    s_tok = tokenize(sentence)
    c_low = [t.lower for t in tokenize(condition) if t.text.isalnum()]
    best = (0, 0, 0)
    for i in range(len(s_tok)):
        for j in range(len(c_low)):
            n = 0
            while i + n < len(s_tok) and j + n < len(c_low) and s_tok[i + n].lower == c_low[j + n]:
                n += 1
            if n > best[0]:
                best = (n, i, n)
    if best[0]:
        _, i, n = best
        return s_tok[i].start, s_tok[i + n - 1].end
    return 0, len(sentence)


def _binary(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, Any]:
    tp = sum(t and p for t, p in zip(truth, pred, strict=True))
    fp = sum((not t) and p for t, p in zip(truth, pred, strict=True))
    fn = sum(t and not p for t, p in zip(truth, pred, strict=True))
    tn = sum((not t) and not p for t, p in zip(truth, pred, strict=True))

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    sens, ppv = ratio(tp, tp + fn), ratio(tp, tp + fp)
    return {
        "n": len(truth), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "sensitivity": sens, "specificity": ratio(tn, tn + fp), "ppv": ppv, "npv": ratio(tn, tn + fn),
        "accuracy": ratio(tp + tn, len(truth)),
        "f1": (2 * sens * ppv / (sens + ppv)) if sens and ppv else None,
    }


def negex_eval(path: str | Path, rules: ConTextRules = DEFAULT_RULES, errors: int = 0) -> dict[str, Any]:
    """Negation, temporality and experiencer on the NegEx annotated sentences.

    Negation is the binary task NegEx reports (Negated against everything else). The set is
    split by line-number parity: odd lines were used to develop the trigger lists and the scope
    window, even lines were held out; both halves and the whole set are reported.
    ``errors`` > 0 adds that many misclassified rows per half to the report for review.
    """
    rows = read_negex_tsv(path)
    t0 = time.perf_counter()
    preds = []
    for r in rows:
        span = locate(r.condition, r.sentence)
        a = assert_targets(tokenize(r.sentence), [span], rules)[0]
        # Some sentences carry their section header ("PAST MEDICAL HISTORY: ... HYPERTENSION"):
        # apply it as the structurer does for whole notes.
        preds.append(with_section(a, section_at(find_sections(r.sentence), span[0])))
    elapsed = time.perf_counter() - t0
    baseline = [assert_targets(tokenize(r.sentence), [locate(r.condition, r.sentence)], NEGEX_BASELINE_RULES)[0]
                for r in rows]

    def report(subset: list[int]) -> dict[str, Any]:
        neg = _binary([rows[i].negation == "Negated" for i in subset], [preds[i].negated for i in subset])
        hist = _binary([rows[i].temporality == "Historical" for i in subset], [preds[i].historical for i in subset])
        hyp = _binary([rows[i].temporality == "Not particular" for i in subset],
                      [preds[i].hypothetical for i in subset])
        other = _binary([rows[i].experiencer != "Patient" for i in subset], [preds[i].family for i in subset])
        out = {"negation": neg, "historical": hist, "hypothetical": hyp, "experiencer_other": other,
               "negation_baseline_negex_window5": _binary([rows[i].negation == "Negated" for i in subset],
                                                           [baseline[i].negated for i in subset])}
        if errors:
            wrong = [i for i in subset if (rows[i].negation == "Negated") != preds[i].negated][:errors]
            out["negation_errors"] = [
                {"line": rows[i].line, "condition": rows[i].condition, "sentence": rows[i].sentence,
                 "truth": rows[i].negation, "evidence": [list(e) for e in preds[i].evidence]}
                for i in wrong
            ]
        return out

    dev = [i for i, r in enumerate(rows) if r.line % 2 == 1]
    held = [i for i, r in enumerate(rows) if r.line % 2 == 0]
    return {
        "dataset": str(path),
        "n_sentences": len(rows),
        "split": "development = odd line numbers, held out = even line numbers",
        "rules": {"max_scope": rules.max_scope, "n_triggers": len(rules.triggers),
                  "category_scope": {str(k): v for k, v in rules.category_scope.items()}},
        "all": report(list(range(len(rows)))),
        "development": report(dev),
        "held_out": report(held),
        "published_negex": NEGEX_PUBLISHED,
        "sentences_per_s": len(rows) / elapsed if elapsed > 0 else None,
    }


def specialty_eval(path: str | Path, *, k: int = 3, text_column: str = "transcription",
                   label_column: str = "medical_specialty", min_per_label: int = 2) -> dict[str, Any]:
    """Top-``k`` specialty hit rate on an MTSamples-layout CSV, leave-one-out.

    For every note, its ``k`` nearest other notes are found in an index of all notes; a hit is
    when one of them has the same specialty. Our index (hybrid BM25 text + ConText-filtered
    concepts) is compared with a plain TF-IDF cosine baseline and BM25 text alone in the same
    run. Notes without a specialty, and specialties with fewer than ``min_per_label`` notes
    (which cannot have a same-label neighbour), are left out and counted in the report.
    """
    from trillium.medical.records.hit_rates import hit_rate_by_label, top_k_label_hit_rate
    from trillium.medical.records.notes import read_notes_csv
    from trillium.medical.records.retrieval import SimilarCaseIndex
    from trillium.medical.records.structurer import RecordStructurer

    notes, rejected = read_notes_csv(path, text_column=text_column)
    labels_all = [str(n.metadata.get(label_column, "")).strip() for n in notes]
    counts: dict[str, int] = {}
    for lab in labels_all:
        counts[lab] = counts.get(lab, 0) + 1
    keep = [i for i, lab in enumerate(labels_all) if lab and counts[lab] >= min_per_label]
    if len(keep) <= k:
        raise InputValidationError(f"{path}: {len(keep)} notes with a usable {label_column!r}; need more than {k}")
    notes = [notes[i] for i in keep]
    labels = [labels_all[i] for i in keep]
    texts, ids = [n.text for n in notes], [n.note_id for n in notes]

    t0 = time.perf_counter()
    structurer = RecordStructurer()
    concepts = [structurer.structure(n).concepts() for n in notes]
    t_struct = time.perf_counter() - t0
    methods: dict[str, Any] = {}
    for name, index, conc in (
        ("tfidf_baseline", SimilarCaseIndex(method="tfidf"), None),
        ("bm25_text", SimilarCaseIndex(method="bm25"), None),
        ("hybrid_text", SimilarCaseIndex(method="hybrid"), None),
        ("hybrid_text_concepts", SimilarCaseIndex(method="hybrid"), concepts),
    ):
        t1 = time.perf_counter()
        index.fit(texts, ids, conc)
        nn = index.neighbours_all(k)
        methods[name] = {
            "top_k_hit_rate": top_k_label_hit_rate(nn, labels, k),
            "by_specialty": hit_rate_by_label(nn, labels, k),
            "seconds": time.perf_counter() - t1,
        }
    ours, base = methods["hybrid_text_concepts"]["top_k_hit_rate"], methods["tfidf_baseline"]["top_k_hit_rate"]
    return {
        "dataset": str(path), "k": k, "n_notes": len(notes), "n_specialties": len(set(labels)),
        "left_out": {"rejected_rows": len(rejected), "no_or_rare_specialty": len(labels_all) - len(keep)},
        "methods": methods, "ours": "hybrid_text_concepts", "baseline": "tfidf_baseline",
        "hit_rate": ours, "baseline_hit_rate": base, "difference": ours - base,
        "structuring_seconds": t_struct,
    }


def entity_eval(notes: Sequence[Any]) -> dict[str, Any]:
    """Entity precision/recall/F1 and attribute accuracy against synthetic notes' truth.

    A predicted entity matches a true one of the same kind when their spans overlap; attributes
    (negated, uncertain, hypothetical, historical, family) are scored on matched pairs. The notes
    come from ``synth``: this measures the pipeline on the phrasing the generator writes, not on
    real clinical text.
    """
    from trillium.medical.records.notes import Note
    from trillium.medical.records.structurer import RecordStructurer

    structurer = RecordStructurer()
    per_kind: dict[str, dict[str, int]] = {}
    attrs = ("negated", "uncertain", "hypothetical", "historical", "family")
    attr_hits = dict.fromkeys(attrs, 0)
    matched_total = 0
    for note in notes:
        pred = structurer.structure(Note(note_id=note.note_id, text=note.text)).entities
        used: set[int] = set()
        for t in note.entities:
            c = per_kind.setdefault(t.kind, {"tp": 0, "fn": 0, "fp": 0})
            j = next((j for j, p in enumerate(pred) if j not in used and p.kind == t.kind
                      and p.start < t.end and t.start < p.end), None)
            if j is None:
                c["fn"] += 1
                continue
            used.add(j)
            c["tp"] += 1
            matched_total += 1
            for a in attrs:
                attr_hits[a] += getattr(pred[j], a) == getattr(t, a)
        for j, p in enumerate(pred):
            if j not in used and p.kind in per_kind:
                per_kind[p.kind]["fp"] += 1

    def f1(c: dict[str, int]) -> dict[str, Any]:
        p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
        r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
        return {**c, "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}

    total = {k: sum(c[k] for c in per_kind.values()) for k in ("tp", "fn", "fp")}
    return {"notes": len(notes), "overall": f1(total), "by_kind": {k: f1(c) for k, c in sorted(per_kind.items())},
            "attribute_accuracy": {a: attr_hits[a] / matched_total if matched_total else None for a in attrs},
            "caveat": "synthetic notes written by trillium.medical.records.synth, not real clinical text"}


def negex_coverage_eval(path: str | Path, *, sample: int = 0, seed: int = 23) -> dict[str, Any]:
    """End to end on the NegEx sentences: how many annotated conditions the structurer finds as
    entities, and negation on the found ones, for the terminology-coded structurer and the
    hand-lexicon-only one (the path before the terminologies) in the same run.

    A condition is found when an entity of the structured sentence overlaps its span (``locate``);
    its negation is that of the overlapping entity with the most overlap. Negation is reported on
    the development half (odd lines) and the held-out half (even lines) as ``negex_eval`` does;
    the terminology index and the exam-finding lexicon were written without reading this set.
    ``sample`` > 0 adds that many entities drawn with ``seed`` from all entities extracted on the
    sentences, for the precision judgement (``benchmarks/results/medical_records_negex_precision.tsv``).
    """
    import random

    from trillium.medical.records.entities import EntityExtractor
    from trillium.medical.records.structurer import RecordStructurer

    rows = read_negex_tsv(path)
    dev = [i for i, r in enumerate(rows) if r.line % 2 == 1]
    held = [i for i, r in enumerate(rows) if r.line % 2 == 0]
    out: dict[str, Any] = {"dataset": str(path), "n_conditions": len(rows),
                           "split": "development = odd line numbers, held out = even line numbers",
                           "found_rule": "an entity of the structured sentence overlaps the annotated condition"}
    drawn: list[dict[str, Any]] = []
    cue_inside = [_negation_cue_inside(r.condition) for r in rows]
    for name, structurer in (("terminology", RecordStructurer()),
                             ("hand_lexicon_only", RecordStructurer(extractor=EntityExtractor(terminology=False)))):
        t0 = time.perf_counter()
        found: list[Any] = []
        all_entities: list[tuple[int, Any]] = []
        for i, r in enumerate(rows):
            note = structurer.structure(r.sentence, note_id=f"negex-{r.line}")
            a, b = locate(r.condition, r.sentence)
            best, overlap = None, 0
            for e in note.entities:
                ov = min(b, e.end) - max(a, e.start)
                if ov > overlap:
                    best, overlap = e, ov
            found.append(best)
            all_entities.extend((i, e) for e in note.entities)
        elapsed = time.perf_counter() - t0

        def part(subset: list[int], found: list[Any] = found) -> dict[str, Any]:
            hit = [i for i in subset if found[i] is not None]
            coded = [i for i in hit if found[i].code]
            outside = [i for i in hit if not cue_inside[i]]
            return {"n": len(subset), "found": len(hit), "coverage": len(hit) / len(subset) if subset else None,
                    "found_with_code": len(coded),
                    "negation_on_found": _binary([rows[i].negation == "Negated" for i in hit],
                                                 [found[i].negated for i in hit]),
                    # a breakdown, not the figure: conditions annotated with their own negation cue
                    # ("NO ACUTE DISEASE" marked Affirmed: the normal finding is affirmed, while the
                    # entity inside, "acute disease", is rightly negated)
                    "found_with_cue_inside_condition": len(hit) - len(outside),
                    "negation_on_found_cue_outside_condition": _binary(
                        [rows[i].negation == "Negated" for i in outside], [found[i].negated for i in outside])}

        by_system: dict[str, int] = {}
        for _, e in all_entities:
            key = e.code_system or f"uncoded:{e.kind}"
            by_system[key] = by_system.get(key, 0) + 1
        out[name] = {"all": part(list(range(len(rows)))), "development": part(dev), "held_out": part(held),
                     "entities_extracted": len(all_entities), "entities_by_code_system": by_system,
                     "sentences_per_s": len(rows) / elapsed if elapsed > 0 else None}
        if name == "terminology" and sample:
            rng = random.Random(seed)  # nosec B311 # a seeded sample to judge, reproduced by the precision script; no secret
            for i, e in rng.sample(all_entities, min(sample, len(all_entities))):
                drawn.append({"line": rows[i].line, "text": e.text, "kind": e.kind, "normalized": e.normalized,
                              "code_system": e.code_system or "", "code": e.code or "",
                              "sentence": rows[i].sentence})
    if sample:
        out["sample"] = drawn
    return out


def _negation_cue_inside(condition: str) -> bool:
    """Whether the annotated condition's own text holds a negation trigger of our ConText rules."""
    from trillium.medical.records.context import DEFAULT_RULES, Category
    from trillium.medical.records.text import tokenize

    return any(m.trigger.category == Category.NEGATED for m in DEFAULT_RULES.match(tokenize(condition)))
