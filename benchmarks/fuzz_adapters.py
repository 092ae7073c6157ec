"""Fuzzing the input adapters at scale: Hypothesis cases on generated and mutated files.

    .venv/bin/python benchmarks/fuzz_adapters.py --json benchmarks/results/fuzz_adapters.json

Runs the properties of ``tests/fuzz/strategies.py`` (the same strategies and checks as
``tests/fuzz/test_fuzz_adapters.py``) with ``--examples`` cases per adapter (default 1,000):

- finance_csv / finance_parquet: ``read_transactions`` (+ ``write_transactions`` of what it
  accepts, + the batch path ``transaction_source(...).chunks()`` with ``normalize``);
- images: ``read_image`` and ``load_batch`` (PNG, JPEG, BMP, TIFF; 8/16 bit; grey, colour, alpha,
  palette, bilevel, float);
- dicom: ``load_ct`` and ``list_series`` on a folder, a zip or a file list;
- notes: ``decode_text``, ``read_note`` / ``read_notes_csv`` and ``load_notes``.

Unlike the test, a failing case does not stop the run: every case is run, failures are counted
by signature (exception type and where it was raised) and the first reproducers of each are kept
(the input bytes as base64, with how the case was made). A failure is an untyped exception, a
broken property (message without the file name, input folder changed, half-written output,
insane accepted result) or a hang: each case gets ``--timeout`` seconds (an alarm inside the
process), and each adapter runs in a child process with ``--adapter-budget`` seconds, so a hang
in native code or a crash is reported with the case that was running instead of stopping the
benchmark.

The JSON report has, per adapter: the examples run, accepted and refused counts, the typed
error classes seen (with counts), per-example time p50 / p99 / max (and the slowest case),
wall time, and the failures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # ``tests`` is a namespace package under the repository root


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


ENTRY_POINTS = {
    "finance_csv": "read_transactions; write_transactions (.parquet, .csv) of the accepted rows; "
                   "transaction_source(...).chunks() + normalize",
    "finance_parquet": "read_transactions; write_transactions (.parquet, .csv) of the accepted rows; "
                       "transaction_source(...).chunks() + normalize",
    "images": "read_image; load_batch",
    "dicom": "load_ct (folder, zip or file list); list_series",
    "notes": "decode_text; read_note or read_notes_csv; load_notes",
}


class ExampleTimeout(Exception):
    """One case ran past --timeout."""


def _alarm(signum: int, frame: Any) -> None:
    raise ExampleTimeout


def _signature(exc: BaseException) -> str:
    """Exception type and the innermost frame of the project (or of the library) that raised it."""
    tb = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in tb if "/apps/" in f.filename or "/core/" in f.filename]
    frame = (ours or tb or [None])[-1]
    where = f"{Path(frame.filename).name}:{frame.lineno} {frame.name}" if frame else "?"
    return f"{type(exc).__name__} at {where}"


def run_child(adapter: str, examples: int, seed: int, timeout: float, out: Path) -> None:
    """Run one adapter's cases in this process and write the statistics to ``out``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(out.parent / "hypothesis")  # its caches: in the run's temporary folder, not ./

    from tests.fuzz.strategies import STRATEGIES, PropertyFailure, run_case

    warnings.simplefilter("ignore")  # pydicom / Pillow warn about every invalid value: the point here
    current = out.with_suffix(".current.json")
    times: list[float] = []
    slowest: dict[str, Any] = {"seconds": 0.0}
    accepted = refused = 0
    errors: collections.Counter[str] = collections.Counter()
    failures: dict[str, dict[str, Any]] = {}
    signal.signal(signal.SIGALRM, _alarm)
    # Warm-up, not counted: the first case pays for importing the adapter and its decoders.
    try:
        run_case(adapter, STRATEGIES[adapter].example())
    except Exception:  # noqa: BLE001,S110 - the counted run reports whatever this case does
        pass
    t_start = time.perf_counter()

    def record_failure(kind: str, exc: BaseException, case: Any, seconds: float) -> None:
        sig = f"{kind}: {_signature(exc)}" if kind != "hang" else f"hang: over {timeout:g} s"
        entry = failures.setdefault(sig, {"kind": kind, "count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < 3:
            entry["examples"].append({
                "exception": f"{type(exc).__name__}: {str(exc)[:600]}",
                "traceback": traceback.format_exception(exc)[-4:] if kind != "hang" else [],
                "seconds": round(seconds, 4),
                "case": case.reproducer(),
            })

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate], print_blob=False)
    @hseed(seed)
    @given(case=STRATEGIES[adapter])
    def body(case: Any) -> None:
        nonlocal accepted, refused
        current.write_text(json.dumps(case.reproducer()))
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            outcome = run_case(adapter, case)
        except ExampleTimeout as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            record_failure("hang", exc, case, time.perf_counter() - t0)
            return
        except PropertyFailure as exc:
            signal.setitimer(signal.ITIMER_REAL, 0)
            record_failure("property", exc, case, time.perf_counter() - t0)
            return
        except Exception as exc:  # noqa: BLE001 - an untyped exception is the finding
            signal.setitimer(signal.ITIMER_REAL, 0)
            record_failure("untyped", exc, case, time.perf_counter() - t0)
            return
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            dt = time.perf_counter() - t0
            times.append(dt)
            if dt > slowest["seconds"]:
                slowest.update(seconds=round(dt, 4), how=case.how)
        if outcome.accepted:
            accepted += 1
        else:
            refused += 1
            errors[outcome.error or "?"] += 1

    body()
    a = np.asarray(times) * 1000 if times else np.zeros(1)
    report = {
        "entry_points": ENTRY_POINTS[adapter],
        "examples": len(times),
        "accepted": accepted,
        "refused": refused,
        "failed": sum(f["count"] for f in failures.values()),
        "error_types": dict(errors.most_common()),
        "per_example_ms": {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
                           "max": round(float(a.max()), 3), "mean": round(float(a.mean()), 3)},
        "slowest": slowest,
        "wall_s": round(time.perf_counter() - t_start, 2),
        "failures": failures,
    }
    out.write_text(json.dumps(report, indent=2))
    current.unlink(missing_ok=True)


def run_adapter(adapter: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One adapter in a child process, so a crash or a native hang is a reported failure."""
    out = work / f"{adapter}.json"
    cmd = [sys.executable, __file__, "--child", adapter, "--examples", str(args.examples), "--seed", str(args.seed),
           "--timeout", str(args.timeout), "--child-out", str(out)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.adapter_budget, cwd=REPO, check=False)
        problem = None if proc.returncode == 0 and out.is_file() else f"child exited with {proc.returncode}"
        tail = proc.stderr[-3000:]
    except subprocess.TimeoutExpired as exc:
        problem = f"child ran past --adapter-budget {args.adapter_budget} s"
        tail = (exc.stderr or b"")[-3000:].decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
    if problem is None:
        return json.loads(out.read_text())
    current = out.with_suffix(".current.json")
    return {
        "examples": None,
        "failed": 1,
        "wall_s": round(time.perf_counter() - t0, 2),
        "failures": {f"crash: {problem}": {
            "kind": "crash", "count": 1,
            "examples": [{"case": json.loads(current.read_text()) if current.is_file() else None,
                          "stderr_tail": tail}],
        }},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=1000, help="cases per adapter")
    ap.add_argument("--adapters", default=None, help="comma-separated subset of the adapters (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="Hypothesis seed (the same seed gives the same cases)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds one case may take before it is a hang")
    ap.add_argument("--adapter-budget", type=float, default=900.0, help="seconds one adapter's child may run")
    ap.add_argument("--json", default=None, help="write the report here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    from tests.fuzz.strategies import ADAPTERS

    if args.child:
        run_child(args.child, args.examples, args.seed, args.timeout, Path(args.child_out))
        return
    adapters = args.adapters.split(",") if args.adapters else list(ADAPTERS)
    unknown = sorted(set(adapters) - set(ADAPTERS))
    if unknown:
        ap.error(f"unknown adapters {unknown}; known: {', '.join(ADAPTERS)}")
    report: dict[str, Any] = {
        "benchmark": "fuzz_adapters",
        "examples_per_adapter": args.examples,
        "seed": args.seed,
        "timeout_s": args.timeout,
        "python": platform.python_version(),
        "hypothesis": __import__("hypothesis").__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "adapters": {},
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-bench-") as tmp:
        for adapter in adapters:
            log(f"{adapter}: {args.examples} examples")
            res = run_adapter(adapter, args, Path(tmp))
            report["adapters"][adapter] = res
            log(f"{adapter}: {res.get('examples')} run, {res.get('accepted')} accepted, {res.get('refused')} refused, "
                f"{res.get('failed')} failed; p50 {res.get('per_example_ms', {}).get('p50')} ms, "
                f"p99 {res.get('per_example_ms', {}).get('p99')} ms, wall {res.get('wall_s')} s")
    report["total_wall_s"] = round(time.perf_counter() - t0, 2)
    report["total_failed"] = sum(r.get("failed") or 0 for r in report["adapters"].values())
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
        log(f"wrote {args.json}")
    else:
        print(text)


if __name__ == "__main__":
    main()
