"""Entity precision on the NegEx sentences from a hand-judged sample (issue 23).

    .venv/bin/python benchmarks/medical_records_precision.py \
        --tsv /work/shared/data/medical-records/negex/rsAnnotations-1-120-random.tsv \
        --labels benchmarks/results/medical_records_negex_precision.tsv \
        --json benchmarks/results/medical_records_negex_precision.json

The labelled file holds 200 entities drawn with a fixed seed (``negex-coverage --sample 200
--seed 12``; earlier samples are kept as ``_seed7_v*.tsv`` and ``_seed11_v*.tsv``) from every entity the structurer extracts on the NegEx sentences, each judged by
hand under the rule written in its header. (The first sample, seed 2026, was judged before the
coding rules it exposed were fixed; it is kept as ``medical_records_negex_precision_seed2026.tsv``
and is no longer scored: its entities are those of the code before the fix.) This script draws the sample again with the current
code and refuses to score when the draw differs from the labelled rows (the labels would judge
entities the code no longer produces), then counts the labels: strict precision (``ok`` and
``ok_uncoded``) and lenient precision (``broader`` codes counted as right too).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

LABELS = ("ok", "ok_uncoded", "broader", "wrong_code", "wrong_normalization", "not_concept")


def read_labels(path: Path) -> list[dict[str, str]]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    for i, r in enumerate(rows, start=1):
        if r.get("label") not in LABELS:
            raise SystemExit(f"{path}: row {i}: label {r.get('label')!r} is not one of {LABELS}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tsv", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--json", default=None)
    ap.add_argument("--seed", type=int, default=12)
    args = ap.parse_args()
    from trillium.medical.records.evaluate import negex_coverage_eval

    rows = read_labels(Path(args.labels))
    drawn = negex_coverage_eval(args.tsv, sample=len(rows), seed=args.seed)["sample"]
    key = [(str(d["line"]), d["text"], d["code_system"], d["code"]) for d in drawn]
    have = [(r["line"], r["text"], r["code_system"], r["code"]) for r in rows]
    if key != have:
        diff = next(i for i, (a, b) in enumerate(zip(key, have, strict=True)) if a != b)
        sys.exit(f"{args.labels}: row {diff + 1} is {have[diff]} but the current code draws {key[diff]}: "
                 "judge a fresh sample")
    counts = Counter(r["label"] for r in rows)
    coded = [r for r in rows if r["code"]]
    coded_counts = Counter(r["label"] for r in coded)
    n = len(rows)
    report = {
        "labels_file": args.labels, "n": n, "seed": args.seed, "counts": dict(counts),
        "strict_precision": (counts["ok"] + counts["ok_uncoded"]) / n,
        "lenient_precision": (counts["ok"] + counts["ok_uncoded"] + counts["broader"]) / n,
        "coded": {"n": len(coded), "counts": dict(coded_counts),
                  "strict_precision": coded_counts["ok"] / len(coded) if coded else None},
        "goal": 0.90,
    }
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
