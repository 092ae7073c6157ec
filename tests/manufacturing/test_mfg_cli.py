"""``trillium manufacturing`` end to end, in process and small: synth -> train -> evaluate ->
inspect (a folder as a job, single files) -> pchart; mistakes end with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner, Result

from trillium.core.cli import app
from trillium.manufacturing.linestats import recent_inspections
from trillium.manufacturing.pipeline import png_bytes_to_array
from trillium.manufacturing.synth_defects import DEFECTS


def _run(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(app, ["manufacturing", *args])
    if ok:
        assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result


def _run_core(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _refused(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not an uncaught error
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "Traceback" not in text and text.startswith("error:")
    for needle in needles:
        assert needle in text


def test_synth_train_evaluate_inspect_pchart(one_thread: None, tmp_path: Path) -> None:
    data = tmp_path / "line"
    synth = _run("synth", str(data), "--size", "64", "--n-train", "8", "--n-test-good", "4", "--per-defect", "3")
    summary = json.loads(synth.output)
    assert summary["train_good"] == 8 and summary["test_defects"] == {d: 3 for d in DEFECTS}
    _refused(_run("synth", str(data), "--size", "64", ok=False), "not empty", "--overwrite")

    train_json = tmp_path / "train.json"
    _run(
        "train",
        "--data",
        str(data),
        "--detector",
        "segmenter",
        "--size",
        "64",
        "--steps",
        "12",
        "--batch-size",
        "4",
        "--shots",
        "2",
        "--no-autotune",
        "--json",
        str(train_json),
    )
    trained = json.loads(train_json.read_text())
    assert trained["name"] == "inspector" and trained["version"] == 1 and "production" in trained["aliases"]
    assert trained["classes"] == sorted(DEFECTS) and trained["backends"] is None
    assert trained["threshold_rule"].startswith("max Youden J") and 0 <= trained["threshold"] <= 1

    report_path = tmp_path / "eval" / "report.json"
    evaluated = _run("evaluate", "--data", str(data), "--json", str(report_path), "--shots", "2")
    report = json.loads(report_path.read_text())
    assert 0 <= report["image_auroc"] <= 1 and 0 <= report["pixel_auroc"] <= 1
    assert report["n_test"] == 4 + 5 * 3 - 5 * 2 and report["excluded_labelled_examples"] == 10
    assert set(report["per_type"]) == set(DEFECTS) and report["classification"]["n"] == 5
    assert report["model"] == {"name": "inspector", "version": 1}
    assert json.loads(evaluated.output)["n_test"] == report["n_test"]

    # adopt: the registered weights, registered again as if trained elsewhere, come out with the
    # same held-out split, threshold and classifier as train gave them
    weights = Path(json.loads(_run_core("models", "show", "inspector", "1").output)["directory"]) / "weights.safetensors"
    adopted_json = tmp_path / "adopt.json"
    _run("adopt", "--weights", str(weights), "--data", str(data), "--size", "64", "--shots", "2",
         "--json", str(adopted_json))
    adopted = json.loads(adopted_json.read_text())
    assert adopted["version"] == 2 and "production" in adopted["aliases"]
    assert adopted["threshold"] == trained["threshold"] and adopted["classes"] == trained["classes"]
    assert adopted["backends"] is not None  # adopt autotunes here
    again = _run("evaluate", "--data", str(data), "--json", str(tmp_path / "again.json"), "--shots", "2")
    assert json.loads(again.output)["image_auroc"] == json.loads(evaluated.output)["image_auroc"]
    _refused(_run("adopt", "--weights", str(tmp_path / "none.safetensors"), "--data", str(data), ok=False),
             "none.safetensors")

    # A folder runs as a job into --output; its verdicts are stored for the line.
    out_csv = tmp_path / "verdicts.csv"
    folder = _run("inspect", str(data / "test" / "hole"), "--output", str(out_csv))
    rows = pd.read_csv(out_csv)
    assert sorted(rows["image_id"]) == ["000.png", "001.png", "002.png"]
    assert "3 inspected, 0 quarantined" in folder.output
    assert all(Path(p).is_file() for p in rows["overlay"])

    # Single files, one of them unreadable: the other is inspected, the bad one reported.
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x00" * 64)
    single_json = tmp_path / "single.json"
    overlays = tmp_path / "overlays"
    single = _run(
        "inspect",
        str(data / "test" / "good" / "000.png"),
        str(broken),
        "--json",
        str(single_json),
        "--overlays",
        str(overlays),
        "--explain",
    )
    results = json.loads(single_json.read_text())
    # --explain: a captum Integrated Gradients overlay beside the anomaly overlay, same size as the image
    explanation = Path(results[0]["explanation"])
    assert explanation.parent == overlays and explanation.name.endswith(".ig.png")
    assert png_bytes_to_array(explanation.read_bytes()).shape[:2] == (64, 64)
    assert [r["verdict"] for r in results][1] == "unreadable" and results[0]["verdict"] in ("good", "defect")
    assert Path(results[0]["overlay"]).parent == overlays and Path(results[0]["overlay"]).is_file()
    assert "quarantined" in single.output and "broken.png" in single.output
    assert len(recent_inspections(line="default")) == 4  # 3 from the folder job, 1 file
    # --threshold overrides the registered one for this run (and is checked).
    forced = _run("inspect", str(data / "test" / "good" / "001.png"), "--threshold", "0", "--no-store")
    assert forced.output.startswith("defect")
    _refused(_run("inspect", str(data / "test" / "good" / "001.png"), "--threshold", "1.5", ok=False), "[0, 1]")

    chart_path = tmp_path / "pchart.json"
    _run("pchart", "--json", str(chart_path))
    chart = json.loads(chart_path.read_text())
    assert chart["line"] == "default" and sum(p["n"] for p in chart["points"]) == 4
    assert sum(p["defects"] for p in chart["points"]) == int((rows["verdict"] == "defect").sum()) + (
        results[0]["verdict"] == "defect"
    )

    # Mistakes: one line naming the problem, exit code 2, no traceback.
    _refused(
        _run("train", "--data", str(tmp_path / "nowhere"), "--size", "64", "--steps", "2", "--no-autotune", ok=False),
        "nowhere",
        "does not exist",
    )
    _refused(
        _run("evaluate", "--data", str(tmp_path / "nowhere"), "--json", str(tmp_path / "x.json"), ok=False), "nowhere"
    )
    _refused(_run("inspect", str(data / "test" / "good"), "--model", "no-such-model", ok=False), "no-such-model")


def test_missing_data_option_is_a_usage_error(tmp_path: Path) -> None:
    result = _run("train", "--size", "64", ok=False)
    assert result.exit_code == 2 and "--data" in result.output and "Traceback" not in result.output


def test_train_defaults_to_patchcore_the_measured_best(one_thread: None, tmp_path: Path) -> None:
    """A newcomer's `train` gets the detector that scored higher on an unseen line (Magnetic Tile
    0.957 vs 0.879) and fits in seconds; the segmenter stays one option away."""
    data = tmp_path / "line"
    _run("synth", str(data), "--size", "64", "--n-train", "8", "--n-test-good", "4", "--per-defect", "2")
    out = tmp_path / "train.json"
    _run("train", "--data", str(data), "--size", "64", "--shots", "2", "--no-autotune", "--json", str(out))
    from trillium.core.registry import ModelRegistry

    record = ModelRegistry().get("inspector", json.loads(out.read_text())["version"])
    assert record.extra["detector_params"]["model"] == "patchcore"
