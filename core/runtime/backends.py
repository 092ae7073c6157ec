"""Inference backends: one model, several ways to execute it.

Every backend takes a tuple of CPU (or device) tensors whose first dimension is the batch and
returns a tuple of float32 CPU tensors, so the autotuner can compare them on equal terms and
swap one for another without the caller noticing.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trillium.core.errors import RuntimeBackendError

log = logging.getLogger(__name__)

Inputs = tuple[torch.Tensor, ...]
Outputs = tuple[torch.Tensor, ...]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class CandidateSpec:
    """A point of the search space: backend x precision x device x thread count."""

    backend: str  # eager | torchscript | onnxruntime | compile | cudagraph
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8 (int8: ONNX Runtime dynamic quantization)
    device: str = "cpu"
    threads: int | None = None  # only ONNX Runtime sessions have their own pool

    @property
    def name(self) -> str:
        parts = [self.backend, self.precision]
        if self.device != "cpu":
            parts.append(self.device)
        if self.threads is not None:
            parts.append(f"t{self.threads}")
        return "/".join(parts)

    @classmethod
    def parse(cls, name: str) -> CandidateSpec:
        parts = name.split("/")
        backend, precision = parts[0], parts[1]
        device, threads = "cpu", None
        for p in parts[2:]:
            if p.startswith("t") and p[1:].isdigit():
                threads = int(p[1:])
            else:
                device = p
        return cls(backend, precision, device, threads)


def _as_tuple(out: Any) -> Outputs:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return tuple(out)
    raise RuntimeBackendError(
        f"model output must be a tensor or a tuple of tensors, got {type(out).__name__}"
    )


def _to_host_fp32(outs: Outputs) -> Outputs:
    return tuple(o.detach().to("cpu", torch.float32) for o in outs)


def _cast_inputs(xs: Inputs, device: str, dtype: torch.dtype) -> Inputs:
    # Only floating inputs change precision; integer ids and masks keep their type. Move first,
    # then cast: a host-side fp16 conversion of a large batch cost 10x the model on the GPU.
    return tuple(x.to(device).to(dtype) if x.is_floating_point() else x.to(device) for x in xs)


class Backend:
    """Callable on a tuple of input tensors; returns a tuple of float32 CPU tensors."""

    spec: CandidateSpec

    def __call__(self, xs: Inputs) -> Outputs:  # pragma: no cover - interface
        raise NotImplementedError


class _ModuleBackend(Backend):
    """A torch-callable module on a device and precision: cast in, fp32 CPU out."""

    module: Any
    dtype: torch.dtype

    def __call__(self, xs: Inputs) -> Outputs:
        with torch.inference_mode():
            return _to_host_fp32(_as_tuple(self.module(*_cast_inputs(xs, self.spec.device, self.dtype))))


class EagerBackend(_ModuleBackend):
    def __init__(self, model: nn.Module, spec: CandidateSpec) -> None:
        self.spec = spec
        self.dtype = DTYPES[spec.precision]
        self.module = copy.deepcopy(model).eval().to(spec.device, self.dtype)


class TorchScriptBackend(_ModuleBackend):
    """Traced, frozen and inference-optimized: constant folding and fused conv/bn/linear ops."""

    def __init__(self, model: nn.Module, spec: CandidateSpec, example: Inputs) -> None:
        self.spec = spec
        self.dtype = DTYPES[spec.precision]
        m = copy.deepcopy(model).eval().to(spec.device, self.dtype)
        ex = _cast_inputs(example, spec.device, self.dtype)
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(m, ex, check_trace=False)
            frozen = torch.jit.freeze(traced)
            self.module = torch.jit.optimize_for_inference(frozen) if spec.device == "cpu" else frozen


class CompileBackend(_ModuleBackend):
    """torch.compile (Inductor); dynamic batch dimension so every batch size reuses one graph."""

    def __init__(self, model: nn.Module, spec: CandidateSpec, example: Inputs) -> None:
        self.spec = spec
        self.dtype = DTYPES[spec.precision]
        m = copy.deepcopy(model).eval().to(spec.device, self.dtype)
        self.module = torch.compile(m, dynamic=True)
        self(example)  # compile now, so that build time is not mistaken for run time


class CudaGraphBackend(Backend):
    """CUDA graphs: each input shape is captured once, then replayed with a single launch.

    Small models on a GPU are bound by kernel-launch overhead, not arithmetic; replaying a
    captured graph removes it. Inputs are copied into static buffers, so at most
    ``max_graphs`` shapes are kept (other shapes run eagerly).
    """

    def __init__(self, model: nn.Module, spec: CandidateSpec, example: Inputs, max_graphs: int = 8) -> None:
        if not spec.device.startswith("cuda"):
            raise RuntimeBackendError("CUDA graphs need a CUDA device")
        self.spec = spec
        self.dtype = DTYPES[spec.precision]
        self.model = copy.deepcopy(model).eval().to(spec.device, self.dtype)
        self.max_graphs = max_graphs
        self.graphs: dict[tuple[Any, ...], tuple[Any, Inputs, Outputs]] = {}
        self(example)

    def _capture(self, xs: Inputs) -> tuple[Any, Inputs, Outputs]:
        static = tuple(x.clone() for x in _cast_inputs(xs, self.spec.device, self.dtype))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # warm-up on a side stream, as graph capture requires
                self.model(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            out = _as_tuple(self.model(*static))
        return graph, static, out

    def __call__(self, xs: Inputs) -> Outputs:
        key = tuple((tuple(x.shape), x.dtype) for x in xs)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                with torch.inference_mode():
                    return _to_host_fp32(_as_tuple(self.model(*_cast_inputs(xs, self.spec.device, self.dtype))))
            entry = self.graphs[key] = self._capture(xs)
        graph, static, out = entry
        for buf, x in zip(static, xs):
            buf.copy_(x)
        graph.replay()
        return _to_host_fp32(out)


def export_onnx(model: nn.Module, example: Inputs) -> bytes:
    """ONNX bytes with a dynamic batch axis on every input and output."""
    m = copy.deepcopy(model).eval().to("cpu", torch.float32)
    ex = tuple(x.to("cpu") for x in example)
    with torch.no_grad():
        n_out = len(_as_tuple(m(*ex)))
    in_names = [f"input_{i}" for i in range(len(ex))]
    out_names = [f"output_{i}" for i in range(n_out)]
    axes = {n: {0: "batch"} for n in in_names + out_names}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                m, ex, buf, input_names=in_names, output_names=out_names,
                dynamic_axes=axes, opset_version=17, dynamo=False,
            )
        except Exception as exc:
            raise RuntimeBackendError(f"ONNX export failed for {type(model).__name__}: {exc}") from exc
    return buf.getvalue()


def quantize_onnx_int8(onnx_bytes: bytes) -> bytes:
    """Dynamic int8 weights through ONNX Runtime's quantizer (torch.ao is deprecated)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as fh:
            fh.write(onnx_bytes)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint on every call
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        with open(dst, "rb") as fh:
            return fh.read()


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime session with its own thread pool (the thread count is part of the spec)."""

    def __init__(self, onnx_bytes: bytes, spec: CandidateSpec) -> None:
        import onnxruntime as ort

        self.spec = spec
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = spec.threads or 0
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if spec.device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeBackendError("ONNX Runtime has no CUDA provider (install onnxruntime-gpu)")
            providers: list[Any] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(onnx_bytes, opts, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.onnx_bytes = onnx_bytes

    def __call__(self, xs: Inputs) -> Outputs:
        # Hot path for single rows: every microsecond of Python here is latency (measured:
        # the generic conversions below cost ~15 us against ~20 us for the session itself).
        names = self.input_names
        if len(xs) == 1:
            feed = {names[0]: _numpy(xs[0])}
        else:
            feed = {n: _numpy(x) for n, x in zip(names, xs)}
        outs = self.session.run(None, feed)
        if len(outs) == 1:
            o = outs[0]
            return (torch.from_numpy(o if o.dtype == np.float32 else o.astype(np.float32)),)
        return tuple(torch.from_numpy(o if o.dtype == np.float32 else o.astype(np.float32)) for o in outs)


def _numpy(x: torch.Tensor) -> np.ndarray:
    if x.dtype is torch.float32 and x.device.type == "cpu" and not x.requires_grad:
        return x.numpy()
    x = x.detach().cpu()
    if x.dtype == torch.float32 or not x.is_floating_point():
        return x.numpy()
    return x.float().numpy()


def build_backend(
    spec: CandidateSpec,
    model: nn.Module,
    example: Inputs,
    onnx_cache: dict[str, bytes],
) -> Backend:
    """Construct the backend for ``spec``; ``onnx_cache`` holds exported graphs by variant."""
    if spec.backend == "onnxruntime":
        if spec.precision not in ("fp32", "int8"):
            raise RuntimeBackendError("the ONNX Runtime backend runs fp32 graphs or int8-quantized ones")
        if "fp32" not in onnx_cache:
            onnx_cache["fp32"] = export_onnx(model, example)
        if spec.precision == "int8":
            if "int8" not in onnx_cache:
                onnx_cache["int8"] = quantize_onnx_int8(onnx_cache["fp32"])
            return OnnxRuntimeBackend(onnx_cache["int8"], spec)
        return OnnxRuntimeBackend(onnx_cache["fp32"], spec)
    if spec.precision not in DTYPES:
        raise RuntimeBackendError(f"precision {spec.precision!r} is not offered for backend {spec.backend!r}")
    if spec.backend == "eager":
        return EagerBackend(model, spec)
    if spec.backend == "torchscript":
        return TorchScriptBackend(model, spec, example)
    if spec.backend == "compile":
        return CompileBackend(model, spec, example)
    if spec.backend == "cudagraph":
        return CudaGraphBackend(model, spec, example)
    raise RuntimeBackendError(f"unknown backend {spec.backend!r}")
