"""Medical-records benchmark: note structuring speed and similar-case queries, against baselines.

    .venv/bin/python benchmarks/medical_records.py --json benchmarks/results/medical_records_cpu.json

The goal is at least 200 notes/s of extraction on this 2-core CPU. Measured on synthetic notes
(``trillium medical records synth``; 150-450 words each, every section and entity kind):

1. Full structuring (sections, sentences, entities, values, ConText) one note at a time:
   notes/s and per-note p50/p99, single process; with the ICD-10-CM + HPO terminologies and
   exam findings (issue 23) and with the hand lexicon only (the path before), same run.
   Then the terminology index: build, JSON cache read, and its token trie against a dictionary
   of token tuples probed at every length.
2. The dictionary step against a naive baseline in the same run: our token-trie longest match
   against one compiled regular expression per lexicon term (what a first implementation
   does), on the same sentences; both must find the same problem mentions to count.
3. Similar-case index: build time and single-query latency p50/p99 (hybrid BM25 + concepts)
   against brute-force cosine over dense TF-IDF vectors.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentiles(times: list[float]) -> dict[str, float]:
    a = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(a)}


def structuring(notes: list, repeats: int, terminology: bool = True) -> dict:
    from trillium.medical.records.entities import EntityExtractor
    from trillium.medical.records.structurer import RecordStructurer

    s = RecordStructurer(extractor=EntityExtractor(terminology=terminology))
    for n in notes[:20]:
        s.structure(n)  # warm-up (regex caches)
    times = []
    t0 = time.perf_counter()
    n_entities = 0
    for _ in range(repeats):
        for n in notes:
            t1 = time.perf_counter()
            n_entities += len(s.structure(n).entities)
            times.append(time.perf_counter() - t1)
    total = time.perf_counter() - t0
    words = sum(len(n.text.split()) for n in notes) * repeats
    return {"notes_per_s": len(times) / total, "words_per_s": words / total, "per_note": percentiles(times),
            "entities_per_note": n_entities / len(times), "notes": len(times)}


def dictionary_step(notes: list) -> dict:
    """Trie matcher against one regex per term, on the same tokens/sentences."""
    from trillium.medical.records import lexicon
    from trillium.medical.records.entities import TermMatcher
    from trillium.medical.records.text import split_sentences, tokenize

    sentences = [(n.text, sp) for n in notes for sp in split_sentences(n.text)]
    matcher = TermMatcher(lexicon.PROBLEMS, "problem")
    t0 = time.perf_counter()
    ours = set()
    for text, sp in sentences:
        toks = tokenize(text, sp.start, sp.end)
        for first, last, _ in matcher.find(toks):
            ours.add((id(text), toks[first].start, toks[last].end))
    t_ours = time.perf_counter() - t0

    def pattern(t: str) -> re.Pattern[str]:
        short = len(t) <= 3 and t.isalpha()  # the same rule as ours: short abbreviations in capitals only
        body = re.escape(t.upper() if short else t).replace(r"\ ", r"\s+")
        return re.compile(r"(?<!\w)" + body + r"(?!\w)", 0 if short else re.IGNORECASE)

    terms = [(t, pattern(t)) for syns in lexicon.PROBLEMS.values() for t in syns]
    t0 = time.perf_counter()
    naive = set()
    for text, sp in sentences:
        for _, rx in terms:
            for m in rx.finditer(text, sp.start, sp.end):
                naive.add((id(text), m.start(), m.end()))
    t_naive = time.perf_counter() - t0
    # The naive scan reports overlapping mentions ("chest pain" and "pain"); the longest ones it
    # finds should all be ours.
    longest = {x for x in naive if not any(y != x and y[0] == x[0] and y[1] <= x[1] and y[2] >= x[2] for y in naive)}
    return {"sentences": len(sentences), "terms": len(terms), "ours_s": t_ours, "naive_regex_per_term_s": t_naive,
            "speedup": t_naive / t_ours, "ours_mentions": len(ours), "naive_longest_mentions": len(longest),
            "agreement": len(ours & longest) / max(len(longest), 1)}


def interleaved(notes: list, rounds: int) -> dict:
    """Both structurers over the same notes in alternating rounds, so that load from other
    processes on a shared machine falls on both alike; the ratio is the figure to read."""
    from trillium.medical.records.entities import EntityExtractor
    from trillium.medical.records.structurer import RecordStructurer

    pair = {"terminology": RecordStructurer(),
            "hand_lexicon_only": RecordStructurer(extractor=EntityExtractor(terminology=False))}
    for s in pair.values():
        for n in notes[:20]:
            s.structure(n)
    rates: dict[str, list[float]] = {k: [] for k in pair}
    for _ in range(rounds):
        for name, s in pair.items():
            t0 = time.perf_counter()
            for n in notes:
                s.structure(n)
            rates[name].append(len(notes) / (time.perf_counter() - t0))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return {"rounds": rounds, "notes_per_round": len(notes), "notes_per_s_by_round": rates,
            "median_notes_per_s": med, "ratio_terminology_over_hand": med["terminology"] / med["hand_lexicon_only"]}


def terminology_matcher(notes: list) -> dict:
    """The ICD-10-CM + HPO index: building it, reading its JSON cache, and its token trie against a
    dictionary of token tuples probed at every length (the hand lexicon's ``TermMatcher`` way),
    on the same normalised sentences; both must find the same matches."""
    from trillium.medical.records import terminology as T
    from trillium.medical.records.text import split_sentences, tokenize

    t0 = time.perf_counter()
    idx = T.TermIndex([*T.icd10cm_terms(), *T.hpo_terms()])
    build = time.perf_counter() - t0
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "index.json"
        idx.to_json(path)
        size = path.stat().st_size
        t0 = time.perf_counter()
        T.TermIndex.from_json(path)
        load = time.perf_counter() - t0
    sents = [[T.normalize_token(t.text) for t in tokenize(n.text, sp.start, sp.end)]
             for n in notes for sp in split_sentences(n.text)]
    t0 = time.perf_counter()
    trie = [idx.find(x) for x in sents]
    t_trie = time.perf_counter() - t0
    table, longest = idx.terms_, max(len(k) for k in idx.terms_)

    def probe(norm: list[str]) -> list:
        out, i = [], 0
        while i < len(norm):
            for n in range(min(longest, len(norm) - i), 0, -1):
                hit = table.get(tuple(norm[i:i + n]))
                if hit is not None:
                    out.append((i, i + n - 1, hit))
                    i += n - 1
                    break
            i += 1
        return out

    t0 = time.perf_counter()
    tup = [probe(x) for x in sents]
    t_tuple = time.perf_counter() - t0
    return {"terms": len(idx), "build_s": build, "json_cache_bytes": size, "json_cache_load_s": load,
            "sentences": len(sents), "trie_s": t_trie, "tuple_dict_s": t_tuple,
            "tuple_over_trie": t_tuple / t_trie, "same_matches": trie == tup,
            "matches": sum(map(len, trie))}


def retrieval(notes: list, queries: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from trillium.medical.records.retrieval import SimilarCaseIndex
    from trillium.medical.records.structurer import RecordStructurer

    s = RecordStructurer()
    concepts = [s.structure(n).concepts() for n in notes]
    texts, ids = [n.text for n in notes], [n.note_id for n in notes]
    t0 = time.perf_counter()
    index = SimilarCaseIndex(method="hybrid").fit(texts, ids, concepts)
    build = time.perf_counter() - t0
    q_times, s_times, b_times = [], [], []
    vec = TfidfVectorizer().fit(texts)
    dense = vec.transform(texts).toarray()
    for i in range(queries):
        n = notes[i % len(notes)]
        t1 = time.perf_counter()
        c = s.structure(n).concepts()
        t2 = time.perf_counter()
        index.query(n.text, k=5, concepts=c, exclude=[n.note_id])
        t3 = time.perf_counter()
        s_times.append(t3 - t1)
        q_times.append(t3 - t2)
        t1 = time.perf_counter()
        q = vec.transform([n.text]).toarray()[0]
        sims = dense @ q / (np.linalg.norm(dense, axis=1) * np.linalg.norm(q) + 1e-12)
        np.argsort(-sims)[:6]
        b_times.append(time.perf_counter() - t1)
    ours, base = percentiles(q_times), percentiles(b_times)
    return {"notes": len(notes), "build_s_given_concepts": build, "query": ours,
            "structure_and_query": percentiles(s_times),
            "baseline_dense_tfidf_bruteforce": base, "p50_ratio_baseline_over_ours": base["p50_ms"] / ours["p50_ms"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notes", type=int, default=400)
    ap.add_argument("--index-notes", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch  # noqa: F401 - imported by the package anyway; keep its thread setup out of the timings

    from trillium.medical.records.notes import Note
    from trillium.medical.records.synth import synthetic_notes

    log(f"generating {args.index_notes} synthetic notes")
    synth = synthetic_notes(max(args.notes, args.index_notes), seed=11)
    notes = [Note(note_id=x.note_id, text=x.text, patient_id=x.patient_id) for x in synth]
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "python": platform.python_version()},
              "goal_notes_per_s": 200}
    from trillium.medical.records.terminology import default_index

    default_index()  # built or read from its cache once per process, outside the timings
    log("structuring")
    report["structuring"] = structuring(notes[: args.notes], args.repeats)
    log(f"  {report['structuring']['notes_per_s']:.0f} notes/s")
    report["structuring_hand_lexicon_only"] = structuring(notes[: args.notes], args.repeats, terminology=False)
    log(f"  hand lexicon only (the path before issue 23): "
        f"{report['structuring_hand_lexicon_only']['notes_per_s']:.0f} notes/s")
    report["structuring_interleaved"] = interleaved(notes[:200], rounds=6)
    log(f"  interleaved: {report['structuring_interleaved']['median_notes_per_s']} "
        f"ratio {report['structuring_interleaved']['ratio_terminology_over_hand']:.2f}")
    log("terminology matcher: trie vs tuple dictionary")
    report["terminology_matcher"] = terminology_matcher(notes[: args.notes])
    log(f"  tuple/trie {report['terminology_matcher']['tuple_over_trie']:.2f}x")
    log("dictionary step vs regex per term")
    report["dictionary_step"] = dictionary_step(notes[: args.notes])
    log(f"  speedup {report['dictionary_step']['speedup']:.1f}x")
    log("similar-case index")
    report["retrieval"] = retrieval(notes[: args.index_notes], queries=200)
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
