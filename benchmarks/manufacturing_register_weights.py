"""Register segmenter weights trained elsewhere (e.g. on the lent GPU) and re-run the steps after
training here, exactly as ``train_inspector`` does after ``fit``: the held-out good images (same
seeded split), the few-shot labelled defects (same seeded draw), the threshold, the type
classifier, the CPU autotune. Then ``trillium manufacturing evaluate`` measures it on this CPU.

    .venv/bin/python benchmarks/manufacturing_register_weights.py --weights weights.safetensors \\
        --data ../shared/data/manufacturing/magnetic-tile --size 320 --flips 2 --shots 20
    .venv/bin/trillium manufacturing evaluate --data ../shared/data/manufacturing/magnetic-tile \\
        --shots 20 --json out.json

Why: training the Magnetic Tile model (6,000 steps of 32 images at 320 px) takes about 6 min on
an H200 and many hours on this 2-core CPU; inference and evaluation run here.
"""

from __future__ import annotations

import argparse
import json

import torch
from safetensors.torch import load_file

from trillium.manufacturing.anomaly_map import InspectionNet
from trillium.manufacturing.classify import DefectTypeClassifier
from trillium.manufacturing.detector import DefectDetector
from trillium.manufacturing.evaluate import few_shot_split
from trillium.manufacturing.images import discover_mvtec, load_batch, mvtec_split
from trillium.manufacturing.pipeline import Inspector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--flips", type=int, default=1)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--shots", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trained", default="{}", help="JSON of the training parameters, kept as metadata")
    args = ap.parse_args()

    samples = discover_mvtec(args.data)
    good = [s.path for s in mvtec_split(samples, "train") if not s.is_defect]
    x, _ = load_batch(good, (args.size, args.size), 1)
    det = DefectDetector(size=args.size, flips=args.flips, width=args.width, seed=args.seed,
                         **json.loads(args.trained))
    det.net_kwargs_ = {"pool": det.pool, "flips": det.flips, "in_channels": 1, "width": det.width, "norm": det.norm}
    det.net_ = InspectionNet(**det.net_kwargs_)
    det.net_.load_state_dict(load_file(args.weights))
    det.net_.eval()
    train_idx, val_idx = det.validation_split(len(x))
    det.n_train_ = len(train_idx)
    picked, _ = few_shot_split(mvtec_split(samples, "test"), args.shots, args.seed)
    xd, _ = load_batch([s.path for s in picked], (args.size, args.size), 1)
    det.calibrate(x[torch.from_numpy(val_idx).numpy()], xd)
    clf = DefectTypeClassifier(seed=args.seed).fit(det, xd, [s.label for s in picked])
    det.use_runtime()
    record = Inspector(det, clf).register(metrics={"n_train_good": det.n_train_, "threshold": det.threshold_,
                                                    "weights": args.weights})
    print(json.dumps({"name": record.name, "version": record.version, "threshold": det.threshold_,
                      "rule": det.threshold_rule_, "backends": det.runtime_.report["choice"]}, indent=2))


if __name__ == "__main__":
    main()
