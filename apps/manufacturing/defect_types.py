"""Few-shot defect-type classification on top of the anomaly detector.

A new line starts with a handful of labelled defects per type (20 or fewer). Training a network
on so few is hopeless, so the classifier reuses what the detector learned: each image is
described by the detector's deep features (the segmenter's encoder, or the pretrained patch
features of the patchcore model) pooled *under its anomaly map* (what the defect
looks like, not the whole part), and a regularised multinomial logistic regression is fitted
on those descriptors. It is stored as plain arrays (weights, bias, scaler), never pickled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from trillium.manufacturing.detector import DefectDetector, _as_batch


@dataclass(frozen=True)
class TypePrediction:
    """Per image: the most likely defect type and the probability of every type."""

    labels: list[str]
    probabilities: np.ndarray  # (N, n_classes)
    classes: list[str]

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)


@torch.no_grad()
def defect_descriptors(detector: DefectDetector, images: np.ndarray | torch.Tensor, block: int = 32) -> np.ndarray:
    """(N, D) descriptors: deep features pooled under the part of the anomaly map that stands out."""
    x = _as_batch(images)
    detector._fitted()
    net = detector.net_
    out = []
    for i in range(0, x.shape[0], block):
        part = x[i:i + block]
        prob = net.descriptor_map(part)
        # Only what stands out of the image's own background response: the map of a good area
        # is not zero (about 0.3-0.4 on fine textures), and pooling under it would describe the
        # whole part instead of the defect.
        excess = (prob - prob.flatten(1).median(dim=1).values[:, None, None, None]).clamp_min(0) ** 2
        weight = torch.where(excess.flatten(1).sum(1)[:, None, None, None] > 0, excess, torch.ones_like(prob))
        out.append(net.embed(part, weight=weight))
    return torch.cat(out).numpy().astype(np.float64)


class DefectTypeClassifier:
    """Multinomial logistic regression on defect descriptors (scikit-learn's contract).

    Args:
        C: inverse regularisation strength; small, because the training sets are small.
        max_per_type: at most this many examples of each type are used (the few-shot budget).
        seed: which examples are kept when a type has more than ``max_per_type``.
    """

    def __init__(self, *, C: float = 0.5, max_per_type: int = 20, seed: int = 0) -> None:
        self.C = C
        self.max_per_type = max_per_type
        self.seed = seed

    def fit(self, detector: DefectDetector, images: np.ndarray | torch.Tensor, labels: list[str]
            ) -> DefectTypeClassifier:
        labels = [str(v) for v in labels]
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError(f"need labelled examples of at least 2 defect types, got {classes}")
        rng = np.random.default_rng(self.seed)
        keep: list[int] = []
        for c in classes:
            idx = [i for i, v in enumerate(labels) if v == c]
            if len(idx) > self.max_per_type:
                idx = sorted(rng.choice(idx, self.max_per_type, replace=False).tolist())
            keep.extend(idx)
        x = defect_descriptors(detector, _as_batch(images)[torch.tensor(keep)])
        y = np.array([labels[i] for i in keep])
        self.mean_ = x.mean(axis=0)
        self.scale_ = x.std(axis=0) + 1e-6
        lr = LogisticRegression(C=self.C, max_iter=2000)
        lr.fit((x - self.mean_) / self.scale_, y)
        self.classes_ = [str(c) for c in lr.classes_]
        self.coef_ = lr.coef_ if len(self.classes_) > 2 else np.vstack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
        self.intercept_ = lr.intercept_ if len(self.classes_) > 2 else np.array(
            [-lr.intercept_[0] / 2, lr.intercept_[0] / 2])
        self.n_per_type_ = {c: int((y == c).sum()) for c in self.classes_}
        return self

    def predict_descriptors(self, x: np.ndarray) -> TypePrediction:
        if not hasattr(self, "coef_"):
            raise RuntimeError("DefectTypeClassifier is not fitted: call fit() or load it with the inspector")
        z = ((x - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return TypePrediction([self.classes_[i] for i in p.argmax(axis=1)], p, list(self.classes_))

    def predict(self, detector: DefectDetector, images: np.ndarray | torch.Tensor) -> TypePrediction:
        return self.predict_descriptors(defect_descriptors(detector, images))

    # Plain arrays for the registry (safetensors), and back.
    def to_arrays(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, f"{k}_"), dtype=np.float32))
                for k in ("coef", "intercept", "mean", "scale")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, torch.Tensor], classes: list[str], **params: float) -> DefectTypeClassifier:
        obj = cls(**params)  # type: ignore[arg-type]
        for k in ("coef", "intercept", "mean", "scale"):
            setattr(obj, f"{k}_", arrays[k].numpy().astype(np.float64))
        obj.classes_ = list(classes)
        return obj
