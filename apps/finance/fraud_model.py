"""``FraudModel``: the trained scorer as one unit: members, calibration, serving, storage.

A fraud model is one or more members over the same features:

* ``gbt``: LightGBM trees (``GradientBoostedModel``), scored by LightGBM's compiled predictor,
  explained by exact TreeSHAP contributions;
* ``mlp``: ``FraudMLP`` over the feature vector;
* ``seq``: ``FraudSequenceModel``, a GRU over the card's previous transactions.

Torch members are served through the core ``InferenceRuntime`` (autotuned: eager,
TorchScript, ONNX Runtime; the fastest accurate backend per batch size). Each member's logit
is Platt-calibrated on an out-of-time slice (the last ``calib_fraction`` of the training
period: the member is fitted on the earlier part, calibrated on the later part, then refitted
on all of it), and the members' calibrated logits are averaged: the output is a probability.

The default ``gbt+seq`` was chosen on the handbook's validation folds (protocol B); see the
README's finance section for the table.

Storage goes through the registry with no pickle: LightGBM's text model, safetensors weights,
JSON for the rest.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from trillium.core.errors import RegistryError, TrilliumError
from trillium.core.explain import integrated_gradients
from trillium.core.registry import ModelRecord, ModelRegistry, data_fingerprint
from trillium.core.uncertainty import PlattCalibrator, sigmoid
from trillium.finance.features import FeatureSpec
from trillium.finance.models import FraudMLP, FraudSequenceModel
from trillium.finance.train import GradientBoostedModel, TorchTrainSettings, fit_torch, torch_logits

log = logging.getLogger(__name__)

MEMBERS = ("gbt", "mlp", "seq")
RUNTIME_BLOCK = 32_768  # the largest batch size the torch members are autotuned at (and run in)
KIND = "finance-fraud-model"


def parse_kind(kind: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in kind.split("+") if p.strip())
    bad = [p for p in parts if p not in MEMBERS]
    if not parts or bad:
        raise TrilliumError(f"model kind {kind!r}: members must be among {MEMBERS} joined by '+', e.g. gbt+seq")
    return parts


@dataclass
class Member:
    name: str
    gbt: GradientBoostedModel | None = None
    module: torch.nn.Module | None = None
    runtime: Any = None
    calibrator: PlattCalibrator | None = None

    def logits(self, x: np.ndarray, seq: np.ndarray | None) -> np.ndarray:
        if self.gbt is not None:
            return self.gbt.decision_function(x)
        inputs = (x,) if self.name == "mlp" else (x, seq)
        if self.runtime is not None:  # it runs big batches in blocks of its largest measured size
            ts = tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in inputs)
            return self.runtime(*ts).reshape(-1).numpy().astype(np.float64)
        return torch_logits(self.module, inputs).astype(np.float64)


class FraudModel:
    """Train, score and store a fraud model (scikit-learn contract: ``fit`` returns self)."""

    def __init__(
        self,
        kind: str = "gbt+seq",
        spec: FeatureSpec | None = None,
        gbt_params: dict[str, Any] | None = None,
        torch_settings: TorchTrainSettings | None = None,
        calib_fraction: float = 0.25,
        calibrate: bool = True,
        seed: int = 0,
        seq_hidden: int = 16,
    ) -> None:
        self.kind = kind
        self.spec = spec or FeatureSpec()
        self.gbt_params = gbt_params or {}
        self.torch_settings = torch_settings or TorchTrainSettings(seed=seed)
        self.calib_fraction = calib_fraction
        self.calibrate = calibrate
        self.seed = seed
        self.seq_hidden = seq_hidden

    def _module(self, name: str, n_features: int) -> torch.nn.Module:
        if name == "mlp":
            return FraudMLP(n_features)
        return FraudSequenceModel(n_features, len(self.spec.seq_indices), hidden=self.seq_hidden)

    @property
    def needs_sequence(self) -> bool:
        return "seq" in parse_kind(self.kind)

    # ----------------------------------------------------------------- training
    def _fit_member(self, name: str, x: np.ndarray, seq: np.ndarray | None, y: np.ndarray) -> Member:
        n_features = x.shape[1]
        if name == "gbt":
            params = {"seed": self.seed, **self.gbt_params}
            return Member(name, gbt=GradientBoostedModel(**params).fit(x, y, self.spec.names))
        torch.manual_seed(self.torch_settings.seed)  # initial weights too: same seed, same model
        module = self._module(name, n_features)
        inputs = (x,) if name == "mlp" else (x, seq)
        return Member(name, module=fit_torch(module, inputs, y, self.torch_settings))

    def fit(self, x: np.ndarray, y: np.ndarray, seq: np.ndarray | None = None,
            order: np.ndarray | None = None) -> FraudModel:
        """Fit on features ``x`` (and sequences ``seq`` if a member needs them), labels ``y``.

        ``order`` gives the rows' time order (e.g. timestamps); the calibration slice is the
        latest ``calib_fraction`` of it. Without it, the rows are taken as already in order.
        """
        names = parse_kind(self.kind)
        y = np.asarray(y).astype(np.int64)
        if len(np.unique(y)) < 2:
            raise TrilliumError(f"training needs both frauds and genuine transactions; got {int(y.sum())} frauds "
                                f"in {len(y)} rows")
        if "seq" in names and not self.spec.card_history:
            raise TrilliumError("the seq member needs card ids (a card's previous transactions); use gbt or gbt+mlp")
        if "seq" in names and seq is None:
            raise TrilliumError("the seq member needs the card sequences (features.sequence_tensor)")
        self.members_: dict[str, Member] = {}
        rank = np.argsort(np.asarray(order), kind="stable") if order is not None else np.arange(len(y))
        cut = int(len(y) * (1 - self.calib_fraction))
        early, late = rank[:cut], rank[cut:]
        can_calibrate = self.calibrate and len(np.unique(y[late])) == 2 and len(np.unique(y[early])) == 2
        held_logits = []
        for name in names:
            calibrator = None
            if can_calibrate:
                held = self._fit_member(name, x[early], None if seq is None else seq[early], y[early])
                z = held.logits(x[late], None if seq is None else seq[late])
                calibrator = PlattCalibrator().fit(z, y[late])
                held_logits.append(calibrator.a * z + calibrator.b)
            member = self._fit_member(name, x, seq, y)
            member.calibrator = calibrator
            self.members_[name] = member
        # out-of-sample scores of the calibration slice: what a day's score distribution looks
        # like, from which an alert budget becomes a threshold
        self.reference_scores_ = (
            np.sort(sigmoid(np.mean(held_logits, axis=0)))[::-1].tolist() if held_logits else []
        )
        self.reference_days_ = (
            max(1.0, float(np.ptp(np.asarray(order)[late]).astype("timedelta64[s]").astype(float)) / 86_400)
            if held_logits and order is not None and np.issubdtype(np.asarray(order).dtype, np.datetime64)
            else 1.0
        )
        self.n_features_in_ = x.shape[1]
        self.train_rows_ = len(y)
        self.train_frauds_ = int(y.sum())
        return self

    # ----------------------------------------------------------------- scoring
    def member_logits(self, x: np.ndarray, seq: np.ndarray | None = None) -> dict[str, np.ndarray]:
        out = {}
        for name, m in self.members_.items():
            z = m.logits(x, seq)
            if m.calibrator is not None:
                z = m.calibrator.a * z + m.calibrator.b
            out[name] = z
        return out

    def decision_function(self, x: np.ndarray, seq: np.ndarray | None = None) -> np.ndarray:
        """The combined, calibrated logit."""
        zs = list(self.member_logits(x, seq).values())
        return np.mean(zs, axis=0)

    def predict_proba(self, x: np.ndarray, seq: np.ndarray | None = None) -> np.ndarray:
        """P(fraud) per row."""
        return sigmoid(self.decision_function(x, seq))

    def budget_threshold(self, alerts_per_day: int) -> float:
        """The probability above which about ``alerts_per_day`` transactions a day score,
        read off the out-of-sample scores of the calibration slice (0.5 if none)."""
        scores = getattr(self, "reference_scores_", [])
        if not scores:
            return 0.5
        k = round(alerts_per_day * self.reference_days_)
        return float(scores[min(max(k, 1), len(scores)) - 1])

    def contributions(self, x: np.ndarray, seq: np.ndarray | None = None) -> tuple[np.ndarray, str]:
        """Per-feature contributions to the logit, and the method that produced them.

        TreeSHAP from the tree member when there is one (exact and fast enough for every
        alert); else captum Integrated Gradients on the first torch member, against the
        training mean of the features.
        """
        if "gbt" in self.members_:
            m = self.members_["gbt"]
            scale = m.calibrator.a if m.calibrator else 1.0
            return m.gbt.contributions(x) * scale / len(self.members_), "treeshap"
        return self.integrated_gradients(x, seq), "integrated_gradients"

    def integrated_gradients(self, x: np.ndarray, seq: np.ndarray | None = None, steps: int = 32) -> np.ndarray:
        """captum Integrated Gradients of a torch member's logit w.r.t. the raw features."""
        name = next((n for n in ("mlp", "seq") if n in self.members_), None)
        if name is None:
            raise TrilliumError("integrated gradients need a torch member (mlp or seq)")
        module = self.members_[name].module
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        # the baseline: the raw feature vector whose normalized value is the training mean
        base_z = module.norm.mean.detach()
        baseline = (torch.sign(base_z) * torch.expm1(torch.abs(base_z))).expand_as(xt)
        extra = () if name == "mlp" else (torch.from_numpy(np.ascontiguousarray(seq, dtype=np.float32)),)
        attr = integrated_gradients(lambda a, *rest: module(a, *rest).squeeze(-1), xt, kind="tabular",
                                    baselines=baseline, additional_forward_args=extra or None, n_steps=steps)
        return attr.values.astype(np.float64)

    # ----------------------------------------------------------------- serving
    def build_runtimes(self, autotune: bool = True, reports: dict[str, Any] | None = None,
                       device: str = "cpu") -> dict[str, Any]:
        """Put torch members on the core runtime on ``device``: re-measure (``autotune``) or rebuild
        the stored choice (``reports``; one measured on another device gives eager on this one).
        Returns the autotune reports per member."""
        from trillium.core.runtime import InferenceRuntime, TuneSettings

        out: dict[str, Any] = {}
        for name, m in self.members_.items():
            if m.module is None:
                continue
            n = self.n_features_in_
            example: tuple[torch.Tensor, ...] = (torch.randn(8, n).abs(),)
            if name == "seq":
                example = (example[0], torch.rand(8, self.spec.seq_len, len(self.spec.seq_indices) + 1).round())
            if reports and name in reports:
                m.runtime = InferenceRuntime.from_report(m.module, example, reports[name], device=device)
            else:
                m.runtime = InferenceRuntime(m.module, example, device=device)
                if autotune:
                    m.runtime.autotune(TuneSettings(sizes=(1, 1024, RUNTIME_BLOCK)))
            out[name] = m.runtime.report
        return out

    # ----------------------------------------------------------------- storage
    def _config(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "spec": self.spec.as_dict(), "gbt_params": self.gbt_params,
            "calib_fraction": self.calib_fraction, "seed": self.seed, "n_features": self.n_features_in_,
            "seq_hidden": self.seq_hidden,
            "feature_names": self.spec.names,
            "calibration": {n: m.calibrator.as_dict() for n, m in self.members_.items() if m.calibrator},
            "reference_scores": [round(v, 6) for v in getattr(self, "reference_scores_", [])[:20_000]],
            "reference_days": getattr(self, "reference_days_", 1.0),
        }

    def register(self, registry: ModelRegistry, name: str = "fraud", *, metrics: dict[str, Any] | None = None,
                 training_data: Any = None, aliases: tuple[str, ...] = ("production",),
                 description: str = "", profile: dict[str, Any] | None = None) -> ModelRecord:
        """Store the model; ``profile`` is its monitoring reference (``finance.monitoring.reference_profile``)."""
        files: dict[str, bytes] = {"config.json": json.dumps(self._config(), indent=2).encode()}
        autotune: dict[str, Any] = {}
        for mname, m in self.members_.items():
            if m.gbt is not None:
                files[f"{mname}.lgb.txt"] = m.gbt.to_text().encode()
            else:
                state = {k: v.detach().cpu().contiguous() for k, v in m.module.state_dict().items()}
                files[f"{mname}.safetensors"] = st_save(state)
                if m.runtime is not None:
                    autotune[mname] = m.runtime.report
                    onnx = m.runtime.onnx_bytes
                    if onnx:
                        files[f"{mname}.onnx"] = onnx
        return registry.register(
            name, files, kind=KIND, metrics=metrics or {},
            data_fingerprint=data_fingerprint(training_data) if training_data is not None else None,
            autotune=autotune, extra={"train_rows": self.train_rows_, "train_frauds": self.train_frauds_},
            input_signature={"features": self.spec.names, "seq_len": self.spec.seq_len},
            description=description or f"fraud model ({self.kind})", aliases=aliases, profile=profile,
        )

    @classmethod
    def load(cls, registry: ModelRegistry, name: str = "fraud", ref: int | str = "production",
             runtime: bool = True, device: str | None = None) -> tuple[FraudModel, ModelRecord]:
        """Rebuild a registered model (sha256 of every file checked); torch members on the
        runtime with the backends their stored autotune chose, on ``device`` (default: the
        ``TRILLIUM_DEVICE`` environment variable, else the CPU)."""
        record = registry.get(name, ref)
        if record.kind != KIND:
            raise RegistryError(f"{name} v{record.version} is a {record.kind!r} artifact, not a fraud model")
        cfg = json.loads(registry.read_file(record, "config.json"))
        model = cls(kind=cfg["kind"], spec=FeatureSpec.from_dict(cfg["spec"]), gbt_params=cfg["gbt_params"],
                    calib_fraction=cfg["calib_fraction"], seed=cfg["seed"], seq_hidden=cfg.get("seq_hidden", 16))
        model.n_features_in_ = cfg["n_features"]
        model.train_rows_ = record.extra.get("train_rows", 0)
        model.train_frauds_ = record.extra.get("train_frauds", 0)
        if model.spec.names != cfg["feature_names"]:
            raise RegistryError(f"{name} v{record.version} was trained on other features than this version computes")
        model.reference_scores_ = cfg.get("reference_scores", [])
        model.reference_days_ = cfg.get("reference_days", 1.0)
        model.members_ = {}
        for mname in parse_kind(model.kind):
            cal = cfg["calibration"].get(mname)
            calibrator = PlattCalibrator(**cal) if cal else None
            if mname == "gbt":
                text = registry.read_file(record, f"{mname}.lgb.txt").decode()
                member = Member(mname, gbt=GradientBoostedModel.from_text(text, model.gbt_params or None))
            else:
                module = model._module(mname, model.n_features_in_)
                module.load_state_dict(st_load(registry.read_file(record, f"{mname}.safetensors")))
                member = Member(mname, module=module.eval())
            member.calibrator = calibrator
            model.members_[mname] = member
        if runtime:
            from trillium.core.runtime import inference_device

            model.build_runtimes(autotune=False, reports=record.autotune, device=inference_device(device))
        return model, record

