"""The field's protocol on an MVTec-AD-layout dataset: image AUROC, pixel AUROC, per defect type.

- Image AUROC: the image score of every test image (good and defective) against its label.
- Pixel AUROC: every pixel of every test image at the network's resolution (masks resized
  with nearest neighbour), the map against the ground-truth mask.
- Per defect type: image AUROC of that type against the good test images, pixel AUROC on that
  type's images plus the good ones.
- At the chosen threshold: recall of defects, false-alarm rate on good parts, precision.
- Defect-type classification (when the inspector has a classifier): accuracy and macro-F1 on the
  defect images *not* used to fit it.

Test images used to fit the inspector (few-shot labelled defects drawn from the test split)
are excluded from every figure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from trillium.core.metrics import auroc, auroc_per_group
from trillium.manufacturing.defect_types import defect_descriptors
from trillium.manufacturing.images import ImageSample, discover_mvtec, load_batch, mvtec_split, read_mask
from trillium.manufacturing.pipeline import Inspector


def few_shot_split(samples: Sequence[ImageSample], shots: int, seed: int = 0
                   ) -> tuple[list[ImageSample], list[ImageSample]]:
    """(labelled examples: up to ``shots`` per defect type, the rest) of the defect samples."""
    rng = np.random.default_rng(seed)
    train: list[ImageSample] = []
    rest: list[ImageSample] = []
    for label in sorted({s.label for s in samples if s.is_defect}):
        group = [s for s in samples if s.label == label]
        pick = set(rng.choice(len(group), min(shots, len(group) - 1), replace=False).tolist()) if len(group) > 1 else set()
        for i, s in enumerate(group):
            (train if i in pick else rest).append(s)
    return train, rest


def evaluate_inspector(inspector: Inspector, data: str | os.PathLike[str], *,
                       exclude: Sequence[ImageSample] = (),
                       max_pixels_per_image: int = 16384) -> dict[str, Any]:
    """Evaluate on ``data``'s test split; returns the report (JSON-able).

    ``exclude``: test images the inspector was fitted on (the few-shot labelled defects drawn
    from the test split, which also set the threshold); they are left out of every figure.
    Pixel AUROC uses a fixed, seeded subsample of ``max_pixels_per_image`` pixels per image
    (all pixels of images smaller than that), which keeps memory flat on large sets.
    """
    det = inspector.detector
    skip = {str(s.path) for s in exclude}
    test = [s for s in mvtec_split(discover_mvtec(data), "test") if str(s.path) not in skip]
    started = time.perf_counter()
    x, bad = load_batch([s.path for s in test], inspector.size, det.channels)
    bad_paths = {str(p) for p, _ in bad}
    test = [s for s in test if str(s.path) not in bad_paths]
    result = det.predict(x)
    seconds = time.perf_counter() - started
    labels = np.array([s.is_defect for s in test])
    types = np.array([s.label for s in test])
    rng = np.random.default_rng(0)
    h, w = inspector.size
    pick = rng.choice(h * w, min(max_pixels_per_image, h * w), replace=False)
    masks = np.stack([
        read_mask(s.mask_path, inspector.size).reshape(-1)[pick] if s.mask_path is not None
        else np.zeros(len(pick), bool) for s in test
    ])
    pix = result.maps.reshape(len(test), -1)[:, pick]

    report: dict[str, Any] = {
        "data": str(data),
        "n_test": len(test),
        "n_good": int((~labels).sum()),
        "n_defect": int(labels.sum()),
        "excluded_labelled_examples": len(skip),
        "unreadable": [{"path": str(p), "reason": r} for p, r in bad],
        "image_auroc": auroc(labels, result.scores),
        "pixel_auroc": auroc(masks, pix),
        "resolution": [h, w],
        "threshold": inspector.threshold,
        "threshold_rule": getattr(det, "threshold_rule_", ""),
        "seconds": seconds,
        "images_per_s": len(test) / seconds if seconds else None,
    }
    pred = result.defective
    tp = int((pred & labels).sum())
    report["at_threshold"] = {
        "recall": tp / max(1, int(labels.sum())),
        "false_alarm_rate": int((pred & ~labels).sum()) / max(1, int((~labels).sum())),
        "precision": tp / max(1, int(pred.sum())),
    }
    # each defect type against the good test images
    image = auroc_per_group(labels, result.scores, types, reference="good")
    pixel = auroc_per_group(masks, pix, types, reference="good")
    report["per_type"] = {
        t: {"n": image[t]["n"], "image_auroc": image[t]["auroc"], "pixel_auroc": pixel[t]["auroc"],
            "recall_at_threshold": float(pred[types == t].mean())}
        for t in image
    }

    if inspector.classifier is not None:
        rows = [i for i, s in enumerate(test) if s.is_defect]
        if rows:
            desc = defect_descriptors(det, x[rows])
            predicted = inspector.classifier.predict_descriptors(desc).labels
            truth = [test[i].label for i in rows]
            report["classification"] = {
                "n": len(rows),
                "accuracy": float(accuracy_score(truth, predicted)),
                "macro_f1": float(f1_score(truth, predicted, average="macro")),
                "classes": inspector.classifier.classes_,
                "n_per_type_trained": inspector.classifier.n_per_type_,
                "per_type_recall": {
                    t: float(np.mean([p == t for p, g in zip(predicted, truth, strict=True) if g == t]))
                    for t in sorted(set(truth))
                },
            }
    return report
