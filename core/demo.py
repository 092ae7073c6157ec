"""``trillium demo``: the core end to end, then each domain's demo as the domains land.

The core part trains the reference scorer on synthetic tabular data, autotunes it, registers
it as ``reference-mlp`` (alias ``production``), scores a Parquet file through the batch-job
engine with a few broken records quarantined, and stores the alerts as predictions.
Everything goes to ``$TRILLIUM_HOME`` and its database; rerunning adds a model version and
re-scores (the job key changes with the new input file).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from sklearn.metrics import average_precision_score, roc_auc_score

from trillium.core.config import home_dir
from trillium.core.db import Prediction, connect
from trillium.core.errors import TrilliumError
from trillium.core.jobs import ParquetSink, ParquetSource, ProcessResult, reasons_from, run_job, split_valid
from trillium.core.models.reference import TabularMLP
from trillium.core.registry import ModelRegistry, data_fingerprint
from trillium.core.runtime import InferenceRuntime, TuneSettings
from trillium.core.verticals import load_ref, verticals

N_FEATURES = 32
ALERT_RATE = 0.01


def make_tabular(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic rows whose label depends non-linearly on a few features (about 3 % positive)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    logit = 1.5 * x[:, 0] - 1.2 * x[:, 1] * x[:, 2] + np.where(x[:, 3] > 1.5, 2.5, 0.0) + 0.8 * np.sin(3 * x[:, 4]) - 4.2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(N_FEATURES)])
    frame.insert(0, "entity_id", [f"e{seed}-{i:07d}" for i in range(n)])
    return frame, y


def train_reference(x: np.ndarray, y: np.ndarray, epochs: int = 4, seed: int = 0) -> TabularMLP:
    torch.manual_seed(seed)
    model = TabularMLP(n_features=N_FEATURES)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(np.array(x, np.float32)), torch.from_numpy(np.array(y, np.float32))
    pos_weight = torch.tensor(float((1 - y).sum() / max(y.sum(), 1)) ** 0.5)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(512):
            opt.zero_grad()
            loss_fn(model(xt[idx]).squeeze(1), yt[idx]).backward()
            opt.step()
    return model.eval()


def scoring_processor(runtime: InferenceRuntime, threshold: float) -> Callable[[pd.DataFrame, int], ProcessResult]:
    """Validate, score and decide; broken rows go to quarantine with the rule they break."""
    cols = [f"f{i}" for i in range(N_FEATURES)]

    def process(chunk: pd.DataFrame, _index: int) -> ProcessResult:
        feats = chunk[cols].apply(pd.to_numeric, errors="coerce")
        reasons = reasons_from({
            "missing entity_id": chunk["entity_id"].isna() | (chunk["entity_id"].astype(str).str.strip() == ""),
            "non-numeric or missing feature": feats.isna().any(axis=1),
            "infinite feature": pd.Series(~np.isfinite(feats.fillna(0).to_numpy()).all(axis=1), index=chunk.index),
        })
        valid, rejected = split_valid(chunk, reasons)
        x = torch.from_numpy(np.ascontiguousarray(feats.loc[valid.index].to_numpy(np.float32)))
        score = torch.sigmoid(runtime(x)).squeeze(1).numpy() if len(x) else np.empty(0, np.float32)
        out = pd.DataFrame({
            "entity_id": valid["entity_id"].to_numpy(),
            "score": score,
            "decision": np.where(score >= threshold, "alert", "pass"),
        })
        return ProcessResult(out, rejected)

    return process


def core_demo(console: Console) -> dict[str, Any]:
    t0 = time.perf_counter()
    db = connect()
    home = home_dir()
    work = home / "demo"
    work.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]Trillium demo[/] in {home} (database {db.safe_url})")

    with console.status("core: generating synthetic data and training the reference scorer"):
        train, y_train = make_tabular(60_000, seed=1)
        valid, y_valid = make_tabular(20_000, seed=2)
        cols = [f"f{i}" for i in range(N_FEATURES)]
        model = train_reference(train[cols].to_numpy(), y_train)
        with torch.no_grad():
            p_valid = torch.sigmoid(model(torch.from_numpy(valid[cols].to_numpy()))).squeeze(1).numpy()
        metrics = {
            "auc_roc": float(roc_auc_score(y_valid, p_valid)),
            "average_precision": float(average_precision_score(y_valid, p_valid)),
        }
        threshold = float(np.quantile(p_valid, 1 - ALERT_RATE))
    console.print(f"core: trained reference-mlp, validation AUC {metrics['auc_roc']:.3f}, AP {metrics['average_precision']:.3f}")

    example = torch.from_numpy(valid[cols].to_numpy()[:256])
    rt = InferenceRuntime(model, example, device="cpu")
    with console.status("core: autotuning backends") as status:
        # torch.compile is left out of the demo's search to keep it short (it costs ~15 s to
        # build here and lost on both sizes); `trillium bench core` measures it.
        report = rt.autotune(TuneSettings(sizes=(1, 16, 4096), include_compile=False, budget_s=0.2),
                             progress=lambda n: status.update(f"core: autotuning {n}"))
    console.print(f"core: autotune chose {report['choice']['1']} for single rows, {report['choice']['4096']} for batches")

    registry = ModelRegistry(db)
    rec = registry.register_torch(
        "reference-mlp", model, example, init_kwargs={"n_features": N_FEATURES},
        onnx=rt.onnx_bytes, metrics=metrics, autotune=report, aliases=["production"],
        data_fingerprint=data_fingerprint(train), extra={"threshold": threshold, "alert_rate": ALERT_RATE},
        description="Reference tabular scorer trained by `trillium demo` on synthetic data.",
    )
    console.print(f"core: registered reference-mlp v{rec.version} (alias production)")

    # Score a fresh file with a few broken rows, through the resumable batch engine.
    score_in, _ = make_tabular(100_000, seed=3 + rec.version)
    score_in = score_in.astype({c: object for c in cols[:2]})
    score_in.loc[[17, 4_242], "entity_id"] = None
    score_in.loc[[9_001], "f0"] = "n/a"
    score_in.loc[[50_000], "f1"] = float("inf")
    input_path = work / f"to_score_v{rec.version}.parquet"
    score_in.astype({c: str for c in cols[:2]}).to_parquet(input_path, index=False)

    served = registry.load_runtime("reference-mlp", "production", device="cpu")  # sha256 checked
    threshold = registry.get("reference-mlp", "production").extra["threshold"]
    result = run_job(
        f"demo-score-v{rec.version}", ParquetSource(input_path, chunk_rows=20_000),
        scoring_processor(served, threshold), ParquetSink(work / f"scores_v{rec.version}"), db=db,
    )
    if result.rows_quarantined > 10:
        raise TrilliumError(f"demo scoring quarantined {result.rows_quarantined} rows; see {result.quarantine}")
    scores = pd.read_parquet(work / f"scores_v{rec.version}")
    alerts = scores[scores["decision"] == "alert"]
    with db.session() as s:
        s.add_all(
            Prediction(domain="core-demo", entity_id=str(r.entity_id), model_version_id=rec.id, job_id=result.job_id,
                       score=float(r.score), decision="alert", details={"threshold": threshold})
            for r in alerts.itertuples()
        )
    db.audit("demo.run", target=f"reference-mlp:v{rec.version}", alerts=len(alerts))

    table = Table(title="core demo")
    table.add_column("step")
    table.add_column("result")
    table.add_row("model", f"reference-mlp v{rec.version}, AUC {metrics['auc_roc']:.3f}")
    table.add_row("backends", f"1 row: {report['choice']['1']}; 4096 rows: {report['choice']['4096']}")
    table.add_row("batch job", f"{result.rows_in} rows in, {result.rows_out} scored, {result.rows_quarantined} quarantined")
    table.add_row("quarantine", str(result.quarantine))
    table.add_row("alerts stored", f"{len(alerts)} predictions in the database")
    table.add_row("elapsed", f"{time.perf_counter() - t0:.1f} s")
    console.print(table)
    return {"model_version": rec.version, "job": result, "alerts": len(alerts), "metrics": metrics}


def demo_steps() -> list[tuple[str, Callable[[Console], Any]]]:
    """The core part, then each installed vertical's part (``trillium.verticals`` entry points), in order."""
    steps: list[tuple[str, Callable[[Console], Any]]] = [("core", core_demo)]
    for vertical in verticals():
        if vertical.demo:
            steps.append((vertical.name, partial(_vertical_demo, vertical.demo)))
    from trillium.core.access_demo import accounts_demo

    steps.append(("accounts", accounts_demo))  # the dashboard needs a login
    if any(v.service for v in verticals()):
        from trillium.core.service.demo import service_demo

        steps.append(("service", service_demo))
    return steps


def _vertical_demo(ref: str, console: Console) -> Any:
    return load_ref(ref)(console)


def run_demo(console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    return {name: step(console) for name, step in demo_steps()}


