"""Cost of the service's per-day drift sample in the request path (``core.monitoring.online``).

``OnlineDayCollector.observe`` runs once per batch of requests a worker scores. Measured: p50 and
p99 of one call for waves of 1 and 16 rows (24 columns, a full 20,000-row reservoir, one day),
against the first version's algorithm R vectorised with NumPy (random numbers per row, kept here
as the baseline), in the same run; and the seconds of one flush of a full day.

    python benchmarks/online_sampling.py --json benchmarks/results/online_sampling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from trillium.core.monitoring.online import SAMPLE_ROWS, OnlineDayCollector


class AlgorithmR:
    """The baseline: reservoir sampling with a uniform draw per row past the fill (NumPy)."""

    def __init__(self, size: int, width: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.x = np.empty((size, width), np.float32)
        self.p = np.empty(size)
        self.size, self.filled, self.seen = size, 0, 0

    def observe(self, _version: int, x: np.ndarray, p: np.ndarray, _alerted: np.ndarray, _secs: np.ndarray) -> None:
        m = len(p)
        take = min(self.size - self.filled, m)
        if take:
            self.x[self.filled:self.filled + take], self.p[self.filled:self.filled + take] = x[:take], p[:take]
            self.filled += take
        rest = np.arange(take, m)
        if len(rest):
            keep = rest[self.rng.random(len(rest)) < self.size / (self.seen + rest + 1)]
            slots = self.rng.integers(0, self.size, len(keep))
            self.x[slots], self.p[slots] = x[keep], p[keep]
        self.seen += m


def timed(observe, wave: int, calls: int, rng: np.random.Generator) -> dict[str, float]:
    x = rng.random((wave, 24)).astype(np.float32)
    p, alerted = rng.random(wave), np.zeros(wave, bool)
    secs = np.full(wave, 86_400 * 17_700)
    for _ in range(SAMPLE_ROWS // wave + 2_000):  # fill the reservoir, then measure the steady state
        observe(1, x, p, alerted, secs)
    t = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        observe(1, x, p, alerted, secs)
        t[i] = time.perf_counter() - t0
    return {"p50_us": float(np.percentile(t, 50) * 1e6), "p99_us": float(np.percentile(t, 99) * 1e6),
            "per_row_p50_us": float(np.percentile(t, 50) * 1e6 / wave)}


def notes_row_cost(notes: int = 300) -> dict:
    """The notes route's extra work per request: the note's profile row against the reference
    (``note_row``), timed against the request's own work, structuring the same note."""
    from trillium.medical.records.monitoring import NotesReference, note_row
    from trillium.medical.records.structurer import RecordStructurer
    from trillium.medical.records.synth import synthetic_notes

    structurer = RecordStructurer()
    reference = NotesReference.learn([structurer.structure(n.text) for n in synthetic_notes(60, seed=1)])
    row_t, structure_t = [], []
    for n in synthetic_notes(notes, seed=2):
        t0 = time.perf_counter()
        note = structurer.structure(n.text)
        t1 = time.perf_counter()
        note_row(note, reference)
        row_t.append(time.perf_counter() - t1)
        structure_t.append(t1 - t0)

    def pct(ts: list[float]) -> dict[str, float]:
        a = np.asarray(ts) * 1e6
        return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}

    row, structure = pct(row_t), pct(structure_t)
    return {"notes": notes, "row_us": row, "structure_us": structure, "share_p50": row["p50_us"] / structure["p50_us"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="benchmarks/results/online_sampling.json")
    ap.add_argument("--calls", type=int, default=20_000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    out: dict = {"benchmark": "online_sampling", "machine": platform.machine(), "cpu_count": os.cpu_count(),
                 "sample_rows": SAMPLE_ROWS, "columns": 24, "waves": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for wave in (1, 16):
            product = OnlineDayCollector("bench", root=tmp, flush_seconds=1e9, seed=0)
            base = timed(AlgorithmR(SAMPLE_ROWS, 24).observe, wave, args.calls, rng)
            prod = timed(product.observe, wave, args.calls, rng)
            out["waves"][str(wave)] = {"algorithm_L": prod, "algorithm_R_numpy": base,
                                       "speedup_p50": base["p50_us"] / prod["p50_us"]}
        t0 = time.perf_counter()
        product.flush()
        out["flush_full_day_s"] = time.perf_counter() - t0
    out["notes_row"] = notes_row_cost()
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=1)
    for wave, r in out["waves"].items():
        print(f"wave {wave}: algorithm L p50 {r['algorithm_L']['p50_us']:.1f} us (p99 {r['algorithm_L']['p99_us']:.1f}), "
              f"algorithm R {r['algorithm_R_numpy']['p50_us']:.1f} us: {r['speedup_p50']:.1f}x")
    nr = out["notes_row"]
    print(f"notes route: the sampled row {nr['row_us']['p50_us']:.0f} us p50 against {nr['structure_us']['p50_us']:.0f} us "
          f"to structure the note ({nr['share_p50']:.1%})")
    print(f"flush of a full day: {out['flush_full_day_s'] * 1000:.1f} ms -> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
