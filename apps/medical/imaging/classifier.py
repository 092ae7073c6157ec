"""Candidate classification: is it a nodule, how likely is it malignant, and how sure are we.

Two small 3D networks (``NoduleNet3D``) look at the same 48 mm cube around each candidate,
resampled to 1.5 mm voxels so studies of any resolution look alike to them: one separates
nodules from vessels and other false candidates, the other estimates malignancy and is trained
on true nodules only (a vessel has no malignancy to learn). Every probability comes with a
Monte Carlo dropout standard deviation. Dropout sits only before each network's last linear
layer, so the stochastic passes reuse one feature computation: sixteen samples cost about as
much as one forward pass, with the same distribution as full MC dropout
(``trillium.core.uncertainty.mc_dropout_head``).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from scipy import ndimage

from trillium.core.contract import expect_model
from trillium.core.metrics import auroc
from trillium.core.registry import ModelRecord, ModelRegistry
from trillium.core.uncertainty import mc_dropout_head
from trillium.medical.imaging import measure
from trillium.medical.imaging.network import NoduleNet3D
from trillium.medical.imaging.network_training import train_nodule_net

log = logging.getLogger(__name__)

PATCH_SIZE = 24
PATCH_VOXEL_MM = 2.0
DEFAULT_MODEL_NAME = "chest-ct-nodules"
#: What the boosted stage sees about a candidate besides the networks' probability.
FEATURES = ("response", "blobness", "radius_mm", "peak_hu", "measured", "diameter_mm", "axis_ratio",
            "log_volume", "compactness", "mean_hu", "solid_share", "elongation", "size_match")


def normalise_hu(x: np.ndarray) -> np.ndarray:
    """Lung window to about [-1, 1]: -1000 HU (air) to 400 HU (dense tissue)."""
    return ((np.clip(x, -1000.0, 400.0) + 300.0) / 700.0).astype(np.float32)


def extract_patches(hu: np.ndarray, centers_kji: np.ndarray, spacing: tuple[float, float, float], *,
                    size: int = PATCH_SIZE, voxel_mm: float = PATCH_VOXEL_MM) -> np.ndarray:
    """Cubes of ``size``^3 voxels of ``voxel_mm`` around each centre, trilinear, as float32 [N, 1, S, S, S].

    Each cube is interpolated from a float32 copy of the box its samples touch (two voxels of
    margin, clipped to the volume, so the volume's own faces stay where they were), not from a
    float32 copy of the whole study: shifting the coordinates by the box's whole-voxel corner is
    exact, so the values are the same bit for bit (``tests/medical/test_ct_candidates_speed.py``),
    and a 512 x 512 x 300 study saves a 300 MB copy (about 0.3 s here)."""
    centers = np.atleast_2d(np.asarray(centers_kji, dtype=float))
    offs = (np.arange(size) - (size - 1) / 2.0) * voxel_mm
    out = np.empty((len(centers), 1, size, size, size), dtype=np.float32)
    whole: np.ndarray | None = None
    for n, c in enumerate(centers):
        axes = [c[a] + offs / spacing[a] for a in range(3)]
        lo = [max(0, int(np.floor(ax.min())) - 2) for ax in axes]
        hi = [min(dim, int(np.ceil(ax.max())) + 3) for ax, dim in zip(axes, hu.shape, strict=True)]
        if all(np.isfinite(ax).all() for ax in axes) and all(b - a >= 2 for a, b in zip(lo, hi, strict=True)):
            src = hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32)
            grid = np.meshgrid(*(ax - a for ax, a in zip(axes, lo, strict=True)), indexing="ij")
        else:  # a cube (almost) wholly outside the volume: the whole volume, as before
            if whole is None:
                whole = hu if hu.dtype == np.float32 else hu.astype(np.float32)
            src, grid = whole, np.meshgrid(*axes, indexing="ij")
        vals = ndimage.map_coordinates(src, grid, order=1, mode="constant", cval=-1000.0)
        out[n, 0] = normalise_hu(vals)
    return out


def candidate_features(cand: Any, m: Any) -> np.ndarray:
    """Shape and intensity of a candidate and of its segmentation (``m`` None when nothing segments).

    Vessels give elongated, non-compact regions whose size disagrees with the blob scale that
    found them; nodules give round compact ones. These are cheap and the networks see them
    only implicitly, so the final stage gets them explicitly.
    """
    base = [cand.response, cand.blobness, cand.radius_mm, cand.peak_hu]
    if m is None:
        return np.array(base + [0.0] + [np.nan] * (len(FEATURES) - 5), dtype=np.float32)
    d = max(m.diameter_mm, 1e-3)
    return np.array(base + [1.0, m.diameter_mm, m.short_axis_mm / d, np.log1p(m.volume_mm3),
                            m.volume_mm3 / (np.pi / 6 * d ** 3), m.mean_hu, m.solid_share, m.elongation,
                            d / (2 * cand.radius_mm)], dtype=np.float32)


@dataclass
class NodulePrediction:
    """Per-candidate probabilities (mean and spread of the MC-dropout draws) of the two classifiers."""

    nodule_probability: np.ndarray
    nodule_std: np.ndarray
    malignancy: np.ndarray
    malignancy_std: np.ndarray


def _net_probs(nets: list[NoduleNet3D], patches: np.ndarray, samples: int, seed: int,
               on_device: dict[int, NoduleNet3D] | None = None) -> np.ndarray:
    """[len(nets) * samples, N] MC-dropout probability draws of a fold ensemble; ``on_device`` maps
    ``id(net)`` to a copy on a GPU that computes the features (``NoduleClassifier.to_device``)."""
    g = torch.Generator().manual_seed(seed)
    draws = []
    for net in nets:
        draws.append(_mc_draws(net, patches, samples, g, (on_device or {}).get(id(net))))
    return np.concatenate(draws) if draws else np.zeros((0, len(patches)), np.float32)


def _mc_draws(net: NoduleNet3D, x: np.ndarray, samples: int, generator: torch.Generator,
              feature_net: NoduleNet3D | None = None, batch_size: int = 128) -> np.ndarray:
    net.eval()
    p = net.dropout_p
    fnet = feature_net or net
    device = next(fnet.parameters()).device
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            # the features may come from a GPU copy; the head and its dropout masks stay on the CPU
            pooled = fnet.features(torch.from_numpy(x[i:i + batch_size]).to(device)).mean(dim=(2, 3, 4)).cpu()
            outs.append(mc_dropout_head(pooled, net.head, p, samples, generator)[..., 0])
    return torch.cat(outs, dim=1).numpy() if outs else np.zeros((samples, 0), np.float32)


def _booster(seed: int) -> lgb.LGBMClassifier:
    return lgb.LGBMClassifier(n_estimators=150, learning_rate=0.05, num_leaves=15, min_child_samples=8,
                              subsample=0.9, subsample_freq=1, colsample_bytree=0.9, random_state=seed, verbose=-1)


class NoduleClassifier:
    """3D CNNs plus a boosted stage: nodule-vs-false-candidate and malignancy, with uncertainty.

    The CNNs are trained with study-wise cross-fitting (``folds``): each fold's network scores
    the studies it did not see, and those out-of-fold probabilities, with the candidate's shape
    features, train a LightGBM stage, so that stage learns how far to trust the network
    rather than memorising its training-set confidence. At inference the fold networks form an
    ensemble; every MC-dropout draw of every network goes through the boosted stage, and the
    mean and standard deviation over the draws are the reported probability and uncertainty.

    scikit-learn style: ``__init__`` stores parameters; ``fit`` learns ``detectors_``,
    ``malignancy_nets_``, ``detector_booster_``, ``malignancy_booster_`` and ``history_``.
    """

    def __init__(self, *, width: int = 8, dropout: float = 0.3, epochs: int = 10, batch_size: int = 32,
                 lr: float = 3e-3, mc_samples: int = 8, folds: int = 2, seed: int = 0) -> None:
        self.width = width
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.mc_samples = mc_samples
        self.folds = folds
        self.seed = seed

    def _net(self) -> NoduleNet3D:
        return NoduleNet3D(1, 1, width=self.width, dropout=self.dropout)

    def _cross_fit(self, patches: np.ndarray, y: np.ndarray, fold_of: np.ndarray, offset: int,
                   log_fn: Callable[[str], Any] | None) -> tuple[list[NoduleNet3D], np.ndarray, list[dict]]:
        nets, oof, hist = [], np.zeros(len(y), np.float32), []
        for f in range(self.folds):
            held = fold_of == f
            torch.manual_seed(self.seed + offset + f)
            net = self._net()
            h = train_nodule_net(net, patches[~held], y[~held], patches[held], y[held], epochs=self.epochs,
                                 batch_size=self.batch_size, lr=self.lr, seed=self.seed + offset + f, log=log_fn)
            oof[held] = _deterministic(net, patches[held])
            nets.append(net)
            hist.append(_brief(h))
        return nets, oof, hist

    def fit(self, patches: np.ndarray, features: np.ndarray, is_nodule: np.ndarray, malignant: np.ndarray,
            groups: np.ndarray, *, log_fn: Callable[[str], Any] | None = None) -> NoduleClassifier:
        """Train on candidate patches and features; ``groups`` (study ids) keep folds study-wise."""
        is_nodule = np.asarray(is_nodule, dtype=np.float32)
        malignant = np.asarray(malignant, dtype=np.float32)
        groups = np.asarray(groups)
        studies = np.unique(groups)
        if len(studies) < self.folds:
            raise ValueError(f"need at least {self.folds} studies for {self.folds}-fold cross-fitting")
        rng = np.random.default_rng(self.seed)
        study_fold = dict(zip(rng.permutation(studies), np.arange(len(studies)) % self.folds, strict=True))
        fold_of = np.array([study_fold[g] for g in groups])
        self.detectors_, oof_det, h_det = self._cross_fit(patches, is_nodule, fold_of, 0, log_fn)
        pos = is_nodule > 0.5
        self.malignancy_nets_, oof_mal, h_mal = self._cross_fit(patches[pos], malignant[pos], fold_of[pos], 100,
                                                                 log_fn)
        self.detector_booster_ = _booster(self.seed).fit(np.c_[features, oof_det], is_nodule.astype(int))
        self.malignancy_booster_ = _booster(self.seed).fit(np.c_[features[pos], oof_mal], malignant[pos].astype(int))
        cnn_auc = auroc(is_nodule, oof_det)
        self.history_ = {"detector": h_det, "malignancy": h_mal, "n_candidates": len(is_nodule),
                         "n_nodule_candidates": int(pos.sum()), "studies": len(studies),
                         "oof_cnn_auc": cnn_auc}
        return self

    def predict(self, patches: np.ndarray, features: np.ndarray) -> NodulePrediction:
        if not hasattr(self, "detectors_"):
            raise RuntimeError("NoduleClassifier is not fitted: call fit() or load one from the registry")
        if len(patches) == 0:
            z = np.zeros(0, np.float32)
            return NodulePrediction(z, z, z, z)
        out = []
        for nets, booster, offset in ((self.detectors_, self.detector_booster_, 0),
                                      (self.malignancy_nets_, self.malignancy_booster_, 1)):
            draws = _net_probs(nets, patches, self.mc_samples, self.seed + offset, getattr(self, "_on_device", None))
            probs = np.stack([booster.predict_proba(np.c_[features, d])[:, 1] for d in draws])
            out += [probs.mean(0).astype(np.float32), probs.std(0).astype(np.float32)]
        return NodulePrediction(*out)

    def to_device(self, device: str | torch.device) -> NoduleClassifier:
        """Compute the networks' features on ``device`` from here on (copies of the fitted networks
        there; the originals stay on the CPU for training, export and heatmaps). The small heads
        and the MC-dropout masks stay on the CPU, drawn from the same seeded generator."""
        device = torch.device(device)
        current = getattr(self, "_on_device", None)
        if device.type == "cpu":
            self._on_device = None
        elif not current or next(next(iter(current.values())).parameters()).device != device:
            nets = [*getattr(self, "detectors_", []), *getattr(self, "malignancy_nets_", [])]
            self._on_device = {id(n): copy.deepcopy(n).to(device).eval() for n in nets}
        return self

    def get_params(self) -> dict[str, Any]:
        return {"width": self.width, "dropout": self.dropout, "epochs": self.epochs, "batch_size": self.batch_size,
                "lr": self.lr, "mc_samples": self.mc_samples, "folds": self.folds, "seed": self.seed}

    def register(self, registry: ModelRegistry | None = None, name: str = DEFAULT_MODEL_NAME, *,
                 threshold: float, metrics: dict[str, Any] | None = None,
                 aliases: tuple[str, ...] = ("production",), data_fingerprint: str | None = None,
                 profile: dict[str, Any] | None = None) -> ModelRecord:
        """Store every network (safetensors) and both boosters (LightGBM text, never pickle), sha256 recorded;
        ``profile``: the monitoring reference profile (``imaging.monitoring.reference_profile``)."""
        registry = registry or ModelRegistry()
        files: dict[str, bytes] = {}
        for kind, nets in (("detector", self.detectors_), ("malignancy", self.malignancy_nets_)):
            for f, net in enumerate(nets):
                if kind == "detector" and f == 0:
                    continue  # the main weights file of the record
                files[f"{kind}_{f}.safetensors"] = st_save(
                    {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()})
        files["detector_booster.txt"] = self.detector_booster_.booster_.model_to_string().encode()
        files["malignancy_booster.txt"] = self.malignancy_booster_.booster_.model_to_string().encode()
        example = torch.zeros(2, 1, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE)
        return registry.register_torch(
            name, self.detectors_[0], example,
            init_kwargs={"in_channels": 1, "n_outputs": 1, "width": self.width, "dropout": self.dropout},
            extra_files=files, metrics=metrics or {},
            extra={"params": self.get_params(), "threshold": float(threshold), "history": self.history_,
                   "patch_size": PATCH_SIZE, "patch_voxel_mm": PATCH_VOXEL_MM, "features": list(FEATURES),
                   # how its candidates' outlines were measured (a model trained otherwise sees
                   # other feature values: ``StudyAnalyzer.from_registry`` warns)
                   "measure_in_lungs": bool(measure.MEASURE_IN_LUNGS)},
            aliases=aliases, data_fingerprint=data_fingerprint, profile=profile,
            description="chest-CT nodule candidates: 3D CNN fold ensemble + LightGBM stage, MC dropout",
        )

    @classmethod
    def load(cls, registry: ModelRegistry, name: str = DEFAULT_MODEL_NAME, ref: int | str = "production"
             ) -> tuple[NoduleClassifier, ModelRecord]:
        """A registered classifier and its record (as ``FraudModel.load``); ``StudyAnalyzer.from_registry``
        builds the predictor from it."""
        net, record = registry.load_torch(name, ref)
        expect_model(net, NoduleNet3D, record, "a NoduleNet3D")
        clf = cls(**record.extra["params"])

        def load(fname: str) -> NoduleNet3D:
            m = clf._net()
            m.load_state_dict(st_load(registry.read_file(record, fname)))
            return m.eval()

        clf.detectors_ = [net.eval()] + [load(f"detector_{f}.safetensors") for f in range(1, clf.folds)]
        clf.malignancy_nets_ = [load(f"malignancy_{f}.safetensors") for f in range(clf.folds)]
        clf.detector_booster_ = _LoadedBooster(registry.read_file(record, "detector_booster.txt").decode())
        clf.malignancy_booster_ = _LoadedBooster(registry.read_file(record, "malignancy_booster.txt").decode())
        clf.history_ = record.extra.get("history", {})
        return clf, record


class _LoadedBooster:
    """A LightGBM model read back from its text form, with the classifier's predict_proba."""

    def __init__(self, text: str) -> None:
        self.booster_ = lgb.Booster(model_str=text)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.booster_.predict(x)
        return np.c_[1 - p, p]


def _deterministic(net: NoduleNet3D, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    net.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(torch.sigmoid(net(torch.from_numpy(x[i:i + batch_size])))[:, 0])
    return torch.cat(outs).numpy() if outs else np.zeros(0, np.float32)


def _brief(history: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in history.items() if k != "epochs"}))
