"""NoduleMNIST3D (MedMNIST v2) evaluation of NoduleNet3D against the published table.

The official file is ``nodulemnist3d.npz`` with ``{train,val,test}_images`` [N, 28, 28, 28]
uint8 and ``{train,val,test}_labels`` [N, 1] (0 benign, 1 malignant). The protocol follows the
MedMNIST paper: train on train, select the epoch on val, report test ROC AUC and accuracy at a
0.5 threshold. Several seeds may be trained; their test probabilities are then averaged (a
seed ensemble), which the report says through ``per_seed``.

The anchor is the best 3D row of the MedMNIST v2 table (Yang et al., Scientific Data 2023):
AUC 0.886 (ResNet-50 + ACS) and ACC 0.848 (ResNet-50 + 3D). ``write_synthetic_npz`` writes a
small file in exactly that layout, so tests and demos run the same code path without the
download.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trillium.core.errors import InputValidationError
from trillium.core.metrics import auroc
from trillium.medical.imaging.network import NoduleNet3D, predict_proba
from trillium.medical.imaging.network_training import train_nodule_net

SPLITS = ("train", "val", "test")
ANCHOR = {
    "best_3d_auc": 0.886,
    "best_3d_acc": 0.848,
    "source": "MedMNIST v2 table (ResNet-50+ACS AUC, ResNet-50+3D ACC)",
}
MIN_SIDE = 16


def _read_array(npz: Any, path: Path, key: str) -> np.ndarray:
    try:
        arr = npz[key]
    except ValueError as exc:  # numpy refuses object arrays when allow_pickle=False
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise InputValidationError(
                f"{path}: key '{key}' holds a pickled object array; refused (only plain numeric arrays are read)"
            ) from exc
        raise InputValidationError(f"{path}: key '{key}' cannot be read ({exc})") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputValidationError(f"{path}: key '{key}' cannot be read ({exc})") from exc
    if arr.dtype.kind == "O":
        raise InputValidationError(f"{path}: key '{key}' is an object array; refused")
    return arr


def load_medmnist_npz(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read and check a MedMNIST 3D ``.npz``: ``{"train"|"val"|"test": (images, labels)}``.

    Images are returned as stored, uint8 [N, S, S, S] (S >= 16; 28 for the official file, 64
    for the MedMNIST+ variant); labels as int64 [N] of 0/1. Every problem raises
    ``InputValidationError`` naming the file and the key, so a batch job can report which
    download is broken. Pickled object arrays are refused (``allow_pickle=False``): a
    downloaded file must never run code when it is opened.
    """
    path = Path(path)
    if not path.is_file():
        raise InputValidationError(f"{path}: no such file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputValidationError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise InputValidationError(f"{path}: holds a single array, not an .npz archive with {SPLITS} splits")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with npz:
        required = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
        missing = [k for k in required if k not in npz.files]
        if missing:
            raise InputValidationError(f"{path}: missing key(s) {', '.join(missing)}; found {sorted(npz.files)}")
        side = None
        for split in SPLITS:
            ik, lk = f"{split}_images", f"{split}_labels"
            images, labels = _read_array(npz, path, ik), _read_array(npz, path, lk)
            if images.ndim != 4 or len(set(images.shape[1:])) != 1 or images.shape[1] < MIN_SIDE:
                raise InputValidationError(
                    f"{path}: key '{ik}' has shape {images.shape}; expected [N, S, S, S] cubic with S >= {MIN_SIDE}"
                )
            if images.dtype != np.uint8:
                raise InputValidationError(f"{path}: key '{ik}' has dtype {images.dtype}; expected uint8 (0-255)")
            if len(images) == 0:
                raise InputValidationError(f"{path}: key '{ik}' is empty")
            if side is not None and images.shape[1] != side:
                raise InputValidationError(f"{path}: key '{ik}' has side {images.shape[1]}; other splits have {side}")
            side = images.shape[1]
            if not (labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)) or len(labels) != len(images):
                raise InputValidationError(
                    f"{path}: key '{lk}' has shape {labels.shape}; expected [{len(images)}, 1] to match '{ik}'"
                )
            if labels.dtype.kind not in "biu" or not np.isin(labels, (0, 1)).all():
                raise InputValidationError(f"{path}: key '{lk}' must hold integer labels 0 (benign) / 1 (malignant)")
            out[split] = (images, labels.reshape(-1).astype(np.int64))
    return out


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    # MedMNIST's evaluator counts a case positive when its score is strictly above 0.5.
    return float(np.mean((p > 0.5).astype(np.int64) == y))


def evaluate_nodule_npz(
    path: str | Path,
    *,
    epochs: int = 40,
    seeds: Sequence[int] = (0,),
    width: int = 16,
    batch_size: int = 32,
    lr: float = 3e-3,
    device: str | torch.device | None = None,
    log: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Train NoduleNet3D per seed on train, select on val, report test AUC/ACC of the seed ensemble.

    Images are scaled to [0, 1] and standardised with the training split's mean and std (no
    statistics from val or test leak in). Each seed sets the weights' initialisation and the
    trainer's shuffling/augmentation. With several seeds the test (and val) probabilities are
    averaged before scoring; ``per_seed`` keeps each member's own figures. ``device`` defaults
    to CUDA when available.
    """
    t0 = time.perf_counter()
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    data = load_medmnist_npz(path)

    train_scaled = data["train"][0].astype(np.float64) / 255.0
    mean, std = float(train_scaled.mean()), float(train_scaled.std())
    std = std if std > 1e-8 else 1.0
    del train_scaled

    def prep(images: np.ndarray) -> np.ndarray:
        return ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)[:, None]

    x = {s: prep(data[s][0]) for s in SPLITS}
    y = {s: data[s][1] for s in SPLITS}

    per_seed: list[dict[str, Any]] = []
    val_probs, test_probs = [], []
    for seed in seeds:
        ts = time.perf_counter()
        torch.manual_seed(seed)
        model = NoduleNet3D(in_channels=1, n_outputs=1, width=width).to(dev)
        seed_log = None if log is None else (lambda msg, _s=seed: log(f"[seed {_s}] {msg}"))
        hist = train_nodule_net(model, x["train"], y["train"], x["val"], y["val"], epochs=epochs,
                                batch_size=batch_size, lr=lr, seed=seed, log=seed_log)
        pv = predict_proba(model, x["val"])[:, 0]
        pt = predict_proba(model, x["test"])[:, 0]
        val_probs.append(pv)
        test_probs.append(pt)
        per_seed.append({"seed": seed, "best_epoch": hist["best_epoch"], "val_auc": auroc(y["val"], pv),
                         "test_auc": auroc(y["test"], pt), "test_acc": _accuracy(y["test"], pt),
                         "seconds": time.perf_counter() - ts})
        if log is not None:
            r = per_seed[-1]
            log(f"[seed {seed}] best epoch {r['best_epoch']}: val_auc={r['val_auc']} test_auc={r['test_auc']} "
                f"test_acc={r['test_acc']:.4f}")

    p_val, p_test = np.mean(val_probs, axis=0), np.mean(test_probs, axis=0)
    auc, acc = auroc(y["test"], p_test), _accuracy(y["test"], p_test)
    return {
        "dataset": "NoduleMNIST3D",
        "n_train": len(y["train"]),
        "n_val": len(y["val"]),
        "n_test": len(y["test"]),
        "auc": auc,
        "acc": acc,
        "val_auc": auroc(y["val"], p_val),
        "per_seed": per_seed,
        "ensemble": len(seeds) > 1,
        "epochs": epochs,
        "width": width,
        "normalisation": {"mean": mean, "std": std},
        "device": str(dev),
        "seconds": time.perf_counter() - t0,
        "anchor": dict(ANCHOR),
        "beats_anchor_auc": auc is not None and auc > ANCHOR["best_3d_auc"],
        "beats_anchor_acc": acc > ANCHOR["best_3d_acc"],
    }


def _synthetic_volume(rng: np.random.Generator, malignant: bool, side: int) -> np.ndarray:
    """One patch: a bright nodule over noisy parenchyma, with a vessel as a distractor.

    Malignant nodules are larger, lobulated (radius modulated over the sphere) and carry
    spicules (thin rays out of the surface); benign ones are small and smooth. The sizes
    overlap a little, so the network has to use shape as well as volume.
    """
    c = np.arange(side, dtype=np.float64) - (side - 1) / 2.0
    zz, yy, xx = np.meshgrid(c, c, c, indexing="ij")
    center = rng.uniform(-2.0, 2.0, 3)
    pz, py, px = zz - center[0], yy - center[1], xx - center[2]
    r = np.sqrt(pz**2 + py**2 + px**2)
    theta = np.arccos(np.clip(pz / np.maximum(r, 1e-6), -1.0, 1.0))
    phi = np.arctan2(py, px)
    if malignant:
        r0, amp, soft = rng.uniform(4.0, 7.5), rng.uniform(0.15, 0.3), 0.6
        k1, k2 = rng.integers(2, 5, size=2)
    else:
        r0, amp, soft = rng.uniform(2.5, 5.0), rng.uniform(0.0, 0.05), 1.0
        k1, k2 = 2, 2
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    surface = r0 * (1.0 + amp * np.sin(k1 * theta + p1) * np.cos(k2 * phi + p2))
    blob = 1.0 / (1.0 + np.exp(-(surface - r) / soft))
    if malignant:
        for _ in range(rng.integers(3, 7)):
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            length = rng.uniform(r0 + 3.0, r0 + 7.0)
            t = np.clip(pz * u[0] + py * u[1] + px * u[2], 0.0, length)
            dist = np.sqrt((pz - t * u[0]) ** 2 + (py - t * u[1]) ** 2 + (px - t * u[2]) ** 2)
            blob = np.maximum(blob, 0.7 * np.exp(-((dist / 0.7) ** 2)))
    # a vessel: an infinite thin tube through a random point, in both classes
    v = rng.normal(size=3)
    v /= np.linalg.norm(v)
    q = rng.uniform(-side / 3, side / 3, 3)
    qz, qy, qx = zz - q[0], yy - q[1], xx - q[2]
    along = qz * v[0] + qy * v[1] + qx * v[2]
    vdist = np.sqrt(np.maximum(qz**2 + qy**2 + qx**2 - along**2, 0.0))
    vessel = np.exp(-((vdist / rng.uniform(0.7, 1.3)) ** 2))
    vol = 35.0 + rng.uniform(140, 200) * blob + rng.uniform(60, 110) * vessel + rng.normal(0.0, 12.0, blob.shape)
    return np.clip(np.rint(vol), 0, 255).astype(np.uint8)


def write_synthetic_npz(
    path: str | Path, *, n_train: int = 120, n_val: int = 30, n_test: int = 40, seed: int = 0, side: int = 28
) -> Path:
    """Write a NoduleMNIST3D-layout ``.npz`` with a learnable benign/malignant signal.

    Keys, dtypes and shapes match the official file (uint8 [N, 28, 28, 28] images, uint8
    [N, 1] labels). About 30% of each split is malignant, like the real data's minority
    class, and every split holds both classes so AUC is defined. Seeded: the same arguments
    give the same bytes of array data.
    """
    if min(n_train, n_val, n_test) < 2:
        raise ValueError("each split needs at least 2 samples (one per class)")
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        n_pos = min(max(1, round(0.3 * n)), n - 1)
        labels = np.zeros(n, dtype=np.uint8)
        labels[:n_pos] = 1
        rng.shuffle(labels)
        arrays[f"{split}_images"] = np.stack([_synthetic_volume(rng, bool(lab), side) for lab in labels])
        arrays[f"{split}_labels"] = labels[:, None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:  # a file handle: numpy would append ".npz" to a bare name
        np.savez_compressed(fh, **arrays)
    return path
