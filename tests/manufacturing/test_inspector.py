"""The inspector layer: few-shot defect typing, files and overlays, the registry round trip,
the evaluation report, and folder inspection on the job engine with verdicts in the database."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sqlalchemy import func, select

from trillium.core.db import Database, Prediction
from trillium.core.errors import IntegrityError
from trillium.core.jobs import FailedChunksError, read_quarantine
from trillium.manufacturing.batch import OUTPUT_COLUMNS, inspect_folder, read_inspections
from trillium.manufacturing.defect_types import DefectTypeClassifier
from trillium.manufacturing.detector import DefectDetector
from trillium.manufacturing.evaluate import evaluate_inspector, few_shot_split
from trillium.manufacturing.images import ImageReadError, ImageSample, discover_mvtec, load_batch, mvtec_split
from trillium.manufacturing.linestats import recent_inspections
from trillium.manufacturing.pipeline import CLASSIFIER_FILE, Inspector, overlay_png, png_bytes_to_array
from trillium.manufacturing.synth import TRUTH_FILE, synthetic_images, write_synthetic_line

TYPES = ("contamination", "hole", "scratch")
SIZE = 64
SHOTS = 10
HELD_OUT = 20


@dataclass
class Fitted:
    root: Path
    inspector: Inspector
    labelled: list[ImageSample]  # the few-shot examples (drawn from the test split)
    rest: list[ImageSample]  # the other defect images of the test split
    x_rest: np.ndarray
    y_rest: np.ndarray


@pytest.fixture(scope="module")
def fitted(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    """One synthetic line (64 px) and an inspector fitted once for the whole module."""
    root = tmp_path_factory.mktemp("line") / "surface"
    write_synthetic_line(
        root,
        kind="surface",
        n_train=24,
        n_test_good=8,
        n_test_per_defect=SHOTS + HELD_OUT,
        size=SIZE,
        seed=0,
        defects=TYPES,
    )
    samples = discover_mvtec(root)
    x_good, _ = load_batch([s.path for s in mvtec_split(samples, "train")], (SIZE, SIZE), 1)
    detector = DefectDetector(size=SIZE, steps=60, batch_size=8, seed=0).fit(x_good)
    labelled, rest = few_shot_split(mvtec_split(samples, "test"), SHOTS, seed=0)
    x_lab, _ = load_batch([s.path for s in labelled], (SIZE, SIZE), 1)
    classifier = DefectTypeClassifier().fit(detector, x_lab, [s.label for s in labelled])
    x_rest, _ = load_batch([s.path for s in rest], (SIZE, SIZE), 1)
    return Fitted(root, Inspector(detector, classifier), labelled, rest, x_rest, np.array([s.label for s in rest]))


# --------------------------------------------------------------------------- few-shot typing


def test_few_shot_split_draws_up_to_shots_per_type_and_keeps_one_back(fitted: Fitted) -> None:
    test = mvtec_split(discover_mvtec(fitted.root), "test")
    defects = {str(s.path) for s in test if s.is_defect}
    picked, rest = fitted.labelled, fitted.rest
    assert [sum(s.label == t for s in picked) for t in TYPES] == [SHOTS] * 3
    assert {str(s.path) for s in picked}.isdisjoint(str(s.path) for s in rest)
    assert {str(s.path) for s in picked} | {str(s.path) for s in rest} == defects  # good images are in neither
    again, _ = few_shot_split(test, SHOTS, seed=0)
    other, _ = few_shot_split(test, SHOTS, seed=1)
    assert again == picked and other != picked
    greedy, left = few_shot_split(test, 1000, seed=0)
    assert len(greedy) == 3 * (SHOTS + HELD_OUT - 1) and sorted(s.label for s in left) == list(TYPES)


def test_classifier_names_held_out_defect_types_well_above_chance(fitted: Fitted) -> None:
    det, clf = fitted.inspector.detector, fitted.inspector.classifier
    assert clf is not None and clf.classes_ == list(TYPES)
    assert clf.n_per_type_ == {t: SHOTS for t in TYPES}
    pred = clf.predict(det, fitted.x_rest)
    accuracy = float(np.mean(np.array(pred.labels) == fitted.y_rest))
    # chance: 1/3 on 60 held-out images; measured 0.67 (40/60; other line and detector seeds: 0.62,
    # 0.50); the same bar as the patchcore inspector's (test_patchcore.py)
    assert accuracy > 1 / len(TYPES) + 0.2, accuracy
    hole = fitted.y_rest == "hole"
    assert np.mean(np.array(pred.labels)[hole] == "hole") >= 0.7
    assert pred.probabilities.shape == (3 * HELD_OUT, 3)
    assert np.allclose(pred.probabilities.sum(axis=1), 1) and np.all(pred.confidence <= 1)
    # Control: the same examples with their labels shuffled teach nothing.
    x_lab, _ = load_batch([s.path for s in fitted.labelled], (SIZE, SIZE), 1)
    shuffled = list(np.random.default_rng(1).permutation([s.label for s in fitted.labelled]))
    noise = DefectTypeClassifier().fit(det, x_lab, shuffled).predict(det, fitted.x_rest)
    assert float(np.mean(np.array(noise.labels) == fitted.y_rest)) < accuracy - 0.1


def test_classifier_budget_and_input_checks(fitted: Fitted) -> None:
    det = fitted.inspector.detector
    x_lab, _ = load_batch([s.path for s in fitted.labelled], (SIZE, SIZE), 1)
    labels = [s.label for s in fitted.labelled]
    small = DefectTypeClassifier(max_per_type=4).fit(det, x_lab, labels)
    assert small.n_per_type_ == {t: 4 for t in TYPES}
    with pytest.raises(ValueError, match="at least 2 defect types"):
        DefectTypeClassifier().fit(det, x_lab[:5], ["hole"] * 5)
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        DefectTypeClassifier().fit(det, x_lab[:5], labels[:4])
    with pytest.raises(RuntimeError, match="not fitted"):
        DefectTypeClassifier().predict(det, x_lab[:1])
    # Two types: the binary special case still gives one probability per type.
    two = [i for i, t in enumerate(labels) if t != "contamination"]
    binary = DefectTypeClassifier().fit(det, x_lab[two], [labels[i] for i in two])
    pred = binary.predict(det, fitted.x_rest)
    assert binary.classes_ == ["hole", "scratch"] and pred.probabilities.shape == (3 * HELD_OUT, 2)
    keep = fitted.y_rest != "contamination"
    assert np.mean(np.array(pred.labels)[keep] == fitted.y_rest[keep]) >= 0.7


def test_classifier_arrays_round_trip_predicts_the_same(fitted: Fitted) -> None:
    det, clf = fitted.inspector.detector, fitted.inspector.classifier
    assert clf is not None
    arrays = clf.to_arrays()
    assert set(arrays) == {"coef", "intercept", "mean", "scale"}
    assert all(isinstance(v, torch.Tensor) for v in arrays.values())
    back = DefectTypeClassifier.from_arrays(arrays, clf.classes_, C=clf.C, max_per_type=clf.max_per_type)
    a, b = clf.predict(det, fitted.x_rest), back.predict(det, fitted.x_rest)
    assert a.labels == b.labels and a.classes == b.classes
    assert np.allclose(a.probabilities, b.probabilities, atol=1e-4)


def test_verdicts_at_the_inspectors_threshold_agree_with_the_generators_ground_truth(fitted: Fitted) -> None:
    """Every test image of the line through ``inspect_files``, as a user would inspect them, at
    the inspector's own threshold; right or wrong is read from the generator's ``truth.json``,
    not from the folder names the inspector's own readers use."""
    truth = json.loads((fitted.root / TRUTH_FILE).read_text())
    test = [r for r in truth["images"] if r["split"] == "test"]
    results, unreadable = fitted.inspector.inspect_files([fitted.root / r["path"] for r in test])
    assert unreadable == [] and [r.image_id for r in results] == [str(fitted.root / r["path"]) for r in test]
    flagged = np.array([r.verdict == "defect" for r in results])
    label = np.array([r["label"] for r in test])
    good = label == "good"
    assert good.sum() == 8 and (~good).sum() == 3 * (SHOTS + HELD_OUT)
    recall, false_alarms = float(flagged[~good].mean()), float(flagged[good].mean())
    # Measured (line and detector seed 0): recall 59/90 (holes 29/30, contamination 16/30,
    # scratches 14/30) and 3 false alarms on 8 good parts. The threshold is the higher of only 2
    # held-out good scores (10 % of 24) after 60 steps at 64 px, so it moves a lot with the seed
    # (seed 1: recall 0.77, 4/8 false alarms; seed 2: 0.26, 0/8): these bounds hold for seed 0.
    assert recall >= 0.55, (recall, false_alarms)
    assert float(flagged[label == "hole"].mean()) >= 0.9, (recall, false_alarms)
    assert false_alarms <= 0.5, (recall, false_alarms)  # at most 4 of the 8 good parts


# --------------------------------------------------------------------------- files and overlays


def _write_grey(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.round(image[:, :, 0] * 255).astype(np.uint8))
    return path


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Path]:
    """96-pixel parts (larger than the network's input): one good, one holed, one corrupt file."""
    good, _ = synthetic_images(1, size=96, seed=0, start=500)
    holed, _ = synthetic_images(1, size=96, seed=0, defect="hole", start=501)
    bad = tmp_path / "parts" / "broken.png"
    paths = {
        "good": _write_grey(tmp_path / "parts" / "good.png", good[0]),
        "hole": _write_grey(tmp_path / "parts" / "hole.png", holed[0]),
        "broken": bad,
    }
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image" * 20)
    return paths


def test_inspect_files_quarantines_the_corrupt_file_and_inspects_the_rest(
    fitted: Fitted, parts: dict[str, Path], tmp_path: Path
) -> None:
    insp = fitted.inspector
    order = [parts["good"], parts["broken"], parts["hole"]]
    results, bad = insp.inspect_files(order, overlay_dir=tmp_path / "overlays")
    assert [r.image_id for r in results] == [str(parts["good"]), str(parts["hole"])]
    assert len(bad) == 1 and bad[0][0] == str(parts["broken"]) and "broken.png" in bad[0][1]
    # The same scores as inspecting each file alone, and as the detector on the prepared arrays.
    alone = insp.inspect(parts["hole"])
    assert alone.score == pytest.approx(results[1].score, abs=1e-6)
    for r in results:
        assert r.threshold == insp.threshold
        assert r.verdict == ("defect" if r.score >= insp.threshold else "good")
        if r.verdict == "defect":
            assert r.defect_type in TYPES and 0 < r.type_confidence <= 1
        else:
            assert r.defect_type is None and r.type_confidence is None
    assert results[1].score > results[0].score  # the holed part scores higher than the good one
    with pytest.raises(ImageReadError, match="broken.png"):
        insp.inspect(parts["broken"])


def test_overlay_is_the_image_where_the_map_is_low_and_heat_where_it_is_high() -> None:
    image = np.full((40, 60, 1), 0.5, np.float32)
    heat = np.zeros((10, 15), np.float32)
    heat[2:6, 3:9] = 1.0  # maps to rows 8-24, columns 12-36 of the image
    out = png_bytes_to_array(overlay_png(image, heat))
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert np.all(out[30:, :] == 128) and np.all(out[:, 45:] == 128)  # far from the map: untouched grey
    centre = out[12:20, 16:32].astype(int)
    assert np.abs(centre - 128).max(axis=2).min() > 40  # under the map: clearly coloured
    blank = png_bytes_to_array(overlay_png(image, np.zeros((10, 15), np.float32)))
    assert np.all(blank == 128)


def test_overlay_written_at_the_original_size_and_coloured_where_the_map_is_high(
    fitted: Fitted, parts: dict[str, Path], tmp_path: Path
) -> None:
    result = fitted.inspector.inspect(parts["hole"], overlay_dir=tmp_path / "ov")
    assert result.overlay is not None and Path(result.overlay).parent == tmp_path / "ov"
    overlay = png_bytes_to_array(Path(result.overlay).read_bytes())
    plain = cv2.imread(str(parts["hole"]), cv2.IMREAD_GRAYSCALE)
    assert overlay.shape == (96, 96, 3)  # the file's size, not the network's 64 px
    assert result.anomaly_map is not None and result.anomaly_map.shape == (SIZE, SIZE)
    heat = cv2.resize(result.anomaly_map, (96, 96), interpolation=cv2.INTER_LINEAR)
    change = np.abs(overlay.astype(int) - plain[:, :, None].astype(int)).max(axis=2)
    hot, cold = heat >= np.quantile(heat, 0.98), heat <= np.quantile(heat, 0.5)
    assert heat[hot].min() > heat[cold].max()
    assert change[hot].mean() > 1.5 * change[cold].mean() + 3


def test_inspection_dict_has_no_array_and_is_json(fitted: Fitted, parts: dict[str, Path]) -> None:
    result = fitted.inspector.inspect(parts["hole"])
    d = result.as_dict()
    assert "anomaly_map" not in d
    assert set(d) == {"image_id", "verdict", "score", "threshold", "defect_type", "type_confidence", "overlay"}
    assert json.loads(json.dumps(d)) == d
    assert result.anomaly_map is not None  # the object keeps it; the dict does not


def test_inspect_arrays_ids_colour_input_and_empty(fitted: Fitted) -> None:
    insp = fitted.inspector
    grey, _ = synthetic_images(2, size=SIZE, seed=0, start=600)
    assert insp.inspect_arrays([]) == []
    out = insp.inspect_arrays(list(grey), keep_maps=True)
    assert [r.image_id for r in out] == ["image-0", "image-1"] and out[0].overlay is None
    assert out[0].anomaly_map is not None and out[0].anomaly_map.shape == (SIZE, SIZE)
    # A colour camera showing the same grey part gives the same score.
    colour = insp.inspect_arrays([np.repeat(grey[0], 3, axis=2)], ["rgb"])
    assert colour[0].score == pytest.approx(out[0].score, abs=1e-5)
    assert insp.inspect_arrays(list(grey))[0].anomaly_map is None


# --------------------------------------------------------------------------- registry


def test_registry_round_trip_keeps_scores_threshold_classes_and_backends(fitted: Fitted) -> None:
    det = copy.deepcopy(fitted.inspector.detector)
    runtime = det.use_runtime(sizes=(1, 8))  # the core autotune: measured here, stored with the model
    original = Inspector(det, fitted.inspector.classifier)
    record = original.register(metrics={"note": "test"})
    assert record.version == 1 and "production" in record.aliases and CLASSIFIER_FILE in record.files

    loaded = Inspector.from_registry()
    assert loaded.record is not None and loaded.record.version == 1
    assert loaded.threshold == original.threshold
    assert loaded.detector.get_params() == det.get_params()
    assert loaded.detector.validation_scores_ == det.validation_scores_
    assert loaded.classifier is not None and loaded.classifier.classes_ == list(TYPES)
    assert loaded.classifier.n_per_type_ == {t: SHOTS for t in TYPES}
    assert loaded.detector.runtime_.report["choice"] == runtime.report["choice"]
    for n in (1, 8):
        assert loaded.detector.runtime_.backend_for(n) == runtime.backend_for(n)

    x = fitted.x_rest[:12]
    a, b = det.predict(x), loaded.detector.predict(x)
    assert np.allclose(a.scores, b.scores, atol=1e-5) and np.allclose(a.maps, b.maps, atol=1e-5)
    assert np.array_equal(a.defective, b.defective)
    pa = original.classifier.predict(det, x)
    pb = loaded.classifier.predict(loaded.detector, x)
    assert pa.labels == pb.labels and np.allclose(pa.probabilities, pb.probabilities, atol=1e-4)
    plain = Inspector.from_registry(runtime=False)
    assert not hasattr(plain.detector, "runtime_")
    assert np.allclose(plain.detector.predict(x).scores, a.scores, atol=1e-4)


def test_tampered_weights_or_classifier_are_refused_naming_the_file(fitted: Fitted) -> None:
    record = fitted.inspector.register()
    for name in ("weights.safetensors", CLASSIFIER_FILE):
        path = record.directory / name
        original = path.read_bytes()
        path.write_bytes(original[:-4] + bytes(b ^ 0xFF for b in original[-4:]))
        with pytest.raises(IntegrityError, match=name.replace(".", r"\.")):
            Inspector.from_registry(runtime=False)
        path.write_bytes(original)
    assert Inspector.from_registry(runtime=False).threshold == fitted.inspector.threshold


def test_inspector_without_classifier_round_trips_without_one(fitted: Fitted) -> None:
    Inspector(fitted.inspector.detector).register(name="plain")
    loaded = Inspector.from_registry("plain", runtime=False)
    assert loaded.classifier is None
    holed, _ = synthetic_images(1, size=SIZE, seed=0, defect="hole", start=700)
    result = loaded.inspect_arrays([holed[0]])[0]
    assert result.defect_type is None and result.type_confidence is None


# --------------------------------------------------------------------------- evaluation


def test_evaluation_report_on_the_test_split_without_the_labelled_examples(fitted: Fitted) -> None:
    insp = fitted.inspector
    report = evaluate_inspector(insp, fitted.root, exclude=fitted.labelled)
    n_test = 8 + 3 * HELD_OUT
    assert report["n_test"] == n_test and report["n_good"] == 8 and report["n_defect"] == 3 * HELD_OUT
    assert report["excluded_labelled_examples"] == 3 * SHOTS and report["unreadable"] == []
    for key in ("image_auroc", "pixel_auroc", "threshold"):
        assert 0 <= report[key] <= 1
    assert set(report["at_threshold"]) == {"recall", "false_alarm_rate", "precision"}
    assert all(0 <= v <= 1 for v in report["at_threshold"].values())
    assert set(report["per_type"]) == set(TYPES)
    for t in TYPES:
        entry = report["per_type"][t]
        assert entry["n"] == HELD_OUT
        assert all(0 <= entry[k] <= 1 for k in ("image_auroc", "pixel_auroc", "recall_at_threshold"))
    json.dumps(report)

    # The figures are those of the detector on exactly the non-excluded test images.
    test = [s for s in mvtec_split(discover_mvtec(fitted.root), "test") if s not in fitted.labelled]
    x, _ = load_batch([s.path for s in test], (SIZE, SIZE), 1)
    scores = insp.detector.score(x)
    labels = np.array([s.is_defect for s in test])
    assert report["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    hole = np.array([s.label in ("good", "hole") for s in test])
    assert report["per_type"]["hole"]["image_auroc"] == pytest.approx(roc_auc_score(labels[hole], scores[hole]))
    assert report["at_threshold"]["recall"] == pytest.approx(np.mean(scores[labels] >= insp.threshold))
    assert report["at_threshold"]["false_alarm_rate"] == pytest.approx(np.mean(scores[~labels] >= insp.threshold))
    assert report["per_type"]["hole"]["image_auroc"] > 0.9  # the obvious type is found even at 64 px

    cls = report["classification"]
    assert cls["n"] == 3 * HELD_OUT and cls["classes"] == list(TYPES)
    assert cls["n_per_type_trained"] == {t: SHOTS for t in TYPES}
    predicted = insp.classifier.predict(insp.detector, fitted.x_rest).labels
    assert cls["accuracy"] == pytest.approx(np.mean(np.array(predicted) == fitted.y_rest))
    assert 0 <= cls["macro_f1"] <= 1 and set(cls["per_type_recall"]) == set(TYPES)


def test_evaluation_without_exclusions_or_classifier_and_with_an_unreadable_image(
    fitted: Fitted, tmp_path: Path
) -> None:
    full = evaluate_inspector(Inspector(fitted.inspector.detector), fitted.root)
    assert full["n_test"] == 8 + 3 * (SHOTS + HELD_OUT) and full["excluded_labelled_examples"] == 0
    assert "classification" not in full
    copy_root = tmp_path / "line"
    shutil.copytree(fitted.root, copy_root)
    broken = copy_root / "test" / "good" / "000.png"
    broken.write_bytes(b"garbage")
    report = evaluate_inspector(fitted.inspector, copy_root, exclude=[])
    assert report["n_test"] == full["n_test"] - 1 and report["n_good"] == 7
    assert [u["path"] for u in report["unreadable"]] == [str(broken)] and report["unreadable"][0]["reason"]
    assert report["classification"]["n"] == 3 * (SHOTS + HELD_OUT)


# --------------------------------------------------------------------------- folders as jobs


def _count(db: Database, line: str) -> int:
    with db.session() as s:
        return int(
            s.scalar(select(func.count()).select_from(Prediction).where(Prediction.details["line"].as_string() == line))
        )


def test_inspect_folder_is_a_resumable_job_with_quarantine_and_stored_verdicts(
    fitted: Fitted, database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "incoming"
    good = sorted((fitted.root / "test" / "good").glob("*.png"))[:3]
    holes = sorted((fitted.root / "test" / "hole").glob("*.png"))[:3]
    (root / "a").mkdir(parents=True)
    (root / "b" / "sub").mkdir(parents=True)
    for i, p in enumerate(good):
        shutil.copy(p, root / "a" / f"good{i}.png")
    for i, p in enumerate(holes):
        shutil.copy(p, root / "b" / "sub" / f"hole{i}.png")
    (root / "b" / "broken.png").write_bytes(b"this is no png")
    expected = sorted(f"a/good{i}.png" for i in range(3)) + ["b/sub/hole0.png", "b/sub/hole1.png", "b/sub/hole2.png"]

    calls: list[int] = []
    insp = Inspector(fitted.inspector.detector, fitted.inspector.classifier)
    inner = insp.inspect_files

    def counting(paths: list[str], **kwargs: Any) -> Any:
        calls.append(len(paths))
        return inner(paths, **kwargs)

    monkeypatch.setattr(insp, "inspect_files", counting)
    output = tmp_path / "out" / "verdicts.csv"
    output.parent.mkdir()
    first = inspect_folder(insp, root, output, line="L1", chunk_rows=4, db=database, progress=False)

    assert sum(calls) == 7 and len(calls) == 2  # 7 files in chunks of 4
    assert first.job.status == "done" and first.job.rows_out == 6 and first.job.rows_quarantined == 1
    frame = read_inspections(output)
    assert list(frame.columns) == OUTPUT_COLUMNS
    assert sorted(frame["image_id"]) == expected
    assert set(frame["verdict"]) <= {"good", "defect"}
    assert all(Path(p).is_file() for p in frame["overlay"])
    # Scores are those of inspecting the files directly.
    direct, _ = fitted.inspector.inspect_files(list(frame["path"]))
    assert np.allclose(frame["score"], [r.score for r in direct], atol=1e-6)
    holes_rows = frame[frame["image_id"].str.startswith("b/")]
    good_rows = frame[frame["image_id"].str.startswith("a/")]
    assert holes_rows["score"].min() > good_rows["score"].max()

    assert first.job.quarantine.name == "verdicts.quarantine.csv"
    quarantined = read_quarantine(first.job.quarantine)
    assert len(quarantined) == 1
    assert "broken.png" in quarantined["reason"][0] and "broken.png" in quarantined["record"][0]

    stored = recent_inspections(db=database, line="L1")
    assert first.stored == 6 and len(stored) == 6
    assert sorted(stored["image_id"]) == expected
    assert set(stored["job_id"]) == {first.job.job_id}
    by_id = frame.set_index("image_id")
    for row in stored.itertuples():
        assert row.verdict == by_id.loc[row.image_id, "verdict"]
        assert row.score == pytest.approx(by_id.loc[row.image_id, "score"])

    # The same job again: nothing is re-inspected and nothing is stored twice.
    calls.clear()
    second = inspect_folder(insp, root, output, line="L1", chunk_rows=4, db=database, progress=False)
    assert calls == [] and second.job.job_id == first.job.job_id and second.job.chunks_processed == 0
    assert second.stored == 0 and _count(database, "L1") == 6
    assert len(read_inspections(output)) == 6 and len(read_quarantine(first.job.quarantine)) == 1


def test_overlays_of_same_named_files_in_different_folders_do_not_collide(fitted: Fitted, tmp_path: Path) -> None:
    a = fitted.root / "train" / "good" / "000.png"
    b = fitted.root / "test" / "good" / "000.png"
    results, _ = fitted.inspector.inspect_files([a, b], overlay_dir=tmp_path / "ov")
    assert results[0].overlay != results[1].overlay


def test_inspect_folder_stops_when_the_model_fails_on_every_chunk_and_the_rerun_inspects_all(
    fitted: Fitted, database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "incoming"
    root.mkdir()
    for i, p in enumerate(sorted((fitted.root / "test" / "good").glob("*.png"))[:4]):
        shutil.copy(p, root / f"good{i}.png")
    insp = Inspector(fitted.inspector.detector, fitted.inspector.classifier)
    working = insp.inspect_files

    def broken(paths: list[str], **kwargs: Any) -> Any:
        raise RuntimeError("ONNX graph failed to load")

    monkeypatch.setattr(insp, "inspect_files", broken)
    output = tmp_path / "verdicts.csv"
    with pytest.raises(FailedChunksError, match="failed on 2 chunks of this run.*ONNX graph failed to load"):
        inspect_folder(insp, root, output, line="L9", chunk_rows=1, db=database, progress=False,
                       max_failed_chunks=2)
    assert _count(database, "L9") == 0  # nothing stored, nothing checkpointed as done

    monkeypatch.setattr(insp, "inspect_files", working)  # the model is fixed
    again = inspect_folder(insp, root, output, line="L9", chunk_rows=1, db=database, progress=False,
                           max_failed_chunks=2)
    assert again.job.status == "done" and again.job.rows_out == 4 and again.job.rows_quarantined == 0
    assert again.stored == 4 and _count(database, "L9") == 4
    assert len(read_quarantine(again.job.quarantine)) == 0
