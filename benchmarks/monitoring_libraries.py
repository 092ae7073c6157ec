"""Evidently and NannyML against plain NumPy + SciPy for Trillium's drift checks, on the fraud data.

What it measures, per library: the install size it adds to the project's environment (the
distributions its environment has that ``.venv`` lacks), the import time in a fresh process, and
the time to check one day of the fraud model's 24 input columns against the reference week.
Evidently and NannyML run in their own virtual environments (they pin other versions of shared
packages), made with::

    python3.11 -m venv /tmp/ev20 && /tmp/ev20/bin/pip install evidently
    python3.11 -m venv /tmp/nm20 && /tmp/nm20/bin/pip install nannyml
    .venv/bin/python benchmarks/monitoring_libraries.py --evidently /tmp/ev20/bin/python \\
        --nannyml /tmp/nm20/bin/python --json benchmarks/results/monitoring_libraries.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNIPPETS = {
    "numpy+scipy (trillium.core.monitoring)": ("import trillium.core.monitoring.drift", """
import pandas as pd, time, json, sys
from trillium.core.monitoring.profile import build_profile
from trillium.core.monitoring.drift import compare
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])
t0 = time.perf_counter(); prof = build_profile(ref); t1 = time.perf_counter()
rep = compare(prof, cur, one_day=True); t2 = time.perf_counter()
for _ in range(4): compare(prof, cur, one_day=True)
t3 = time.perf_counter()
print(json.dumps({"profile_s": t1 - t0, "check_s": (t3 - t1) / 5, "drifted": [c.name for c in rep.drifted]}))
"""),
    "evidently": ("from evidently import Report; from evidently.presets import DataDriftPreset", """
import pandas as pd, time, json, sys
from evidently import Report
from evidently.presets import DataDriftPreset
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])
t1 = time.perf_counter()
for _ in range(5):
    snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
t3 = time.perf_counter()
d = snap.dict()
print(json.dumps({"check_s": (t3 - t1) / 5, "version": __import__("evidently").__version__,
                  "metrics": len(d.get("metrics", []))}))
"""),
    "nannyml": ("import nannyml", """
import pandas as pd, time, json, sys
import nannyml as nml
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])
cols = list(ref.columns)
t0 = time.perf_counter()
calc = nml.UnivariateDriftCalculator(column_names=cols, chunk_size=len(cur),
                                     continuous_methods=["kolmogorov_smirnov", "jensen_shannon"],
                                     categorical_methods=["chi2"])
calc.fit(ref); t1 = time.perf_counter()
for _ in range(5):
    res = calc.calculate(cur)
t3 = time.perf_counter()
print(json.dumps({"profile_s": t1 - t0, "check_s": (t3 - t1) / 5, "version": nml.__version__}))
"""),
}


def _dists(python: str) -> dict[str, int]:
    """name -> installed bytes of every distribution of that interpreter's environment."""
    code = ("import importlib.metadata as m, json, os\n"
            "out = {}\n"
            "for d in m.distributions():\n"
            "    n = 0\n"
            "    for f in d.files or []:\n"
            "        p = d.locate_file(f)\n"
            "        n += os.path.getsize(p) if os.path.isfile(p) else 0\n"
            "    out[d.metadata['Name'].lower().replace('_', '-')] = n\n"
            "print(json.dumps(out))")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def _import_s(python: str, stmt: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([python, "-c", stmt], check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    base = min(_timed(python, "pass") for _ in range(repeats))
    return best - base


def _timed(python: str, stmt: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([python, "-c", stmt], check=True, capture_output=True)
    return time.perf_counter() - t0


def export_frames(folder: Path) -> tuple[Path, Path]:
    """The reference week's and one later day's fraud features (the benchmark bank, seed 101)."""
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(Path(__file__).parent))
    from monitoring import N_DAYS, REF_DAYS, _finance_bank  # the same bank as the evaluation

    from trillium.finance.features import FeatureTable
    from trillium.finance.monitoring import feature_frame

    sim, model, _ = _finance_bank(101, 2000)
    table = FeatureTable.compute(sim.drop(columns=["fraud_scenario"]), model.spec, sequences=False)
    day = sim["timestamp"].to_numpy().astype("datetime64[D]")
    start = day.min()
    ref = np.flatnonzero((day >= start + REF_DAYS - 7) & (day < start + REF_DAYS))
    cur = np.flatnonzero(day == start + REF_DAYS + 5)
    assert N_DAYS > REF_DAYS + 5
    paths = folder / "reference.parquet", folder / "day.parquet"
    feature_frame(model, table.x[ref]).to_parquet(paths[0])
    feature_frame(model, table.x[cur]).to_parquet(paths[1])
    pd.read_parquet(paths[0])
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evidently", required=True, help="python of a venv with evidently installed")
    ap.add_argument("--nannyml", required=True, help="python of a venv with nannyml installed")
    ap.add_argument("--json", default="benchmarks/results/monitoring_libraries.json")
    args = ap.parse_args(argv)
    ours = _dists(sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        ref, cur = export_frames(Path(tmp))
        results = {}
        for (name, (stmt, code)), python in zip(SNIPPETS.items(), (sys.executable, args.evidently, args.nannyml),
                                                strict=True):
            env_dists = _dists(python)
            extra = {k: v for k, v in env_dists.items() if k not in ours}
            run = subprocess.run([python, "-c", code, str(ref), str(cur)], capture_output=True, text=True, check=False)
            if run.returncode != 0:
                raise SystemExit(f"{name} failed: {run.stderr[-2000:]}")
            results[name] = {
                "added_install_mb": round(sum(extra.values()) / 1e6, 1),
                "added_distributions": len(extra),
                "largest_added": sorted(extra, key=extra.get, reverse=True)[:6],
                "import_s": round(_import_s(python, stmt), 3),
                **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in json.loads(run.stdout).items()},
            }
        rows = len(__import__("pandas").read_parquet(cur))
        ref_rows = len(__import__("pandas").read_parquet(ref))
    out = {"benchmark": "monitoring_libraries", "reference_rows": ref_rows, "day_rows": rows, "columns": 24,
           "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    for name, r in results.items():
        print(f"{name}: +{r['added_install_mb']} MB ({r['added_distributions']} distributions), import "
              f"{r['import_s']:.2f} s, one day's check {r['check_s']:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
