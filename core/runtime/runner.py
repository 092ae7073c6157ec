"""``InferenceRuntime``: run a torch model on the fastest backend measured on this machine."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from trillium.core.errors import RuntimeBackendError
from trillium.core.runtime.autotune import (
    CandidateResult,
    TuneSettings,
    batch_of,
    candidate_specs,
    time_call,
    within_tolerance,
)
from trillium.core.runtime.backends import Backend, CandidateSpec, Inputs, build_backend
from trillium.core.runtime.hardware import detect

log = logging.getLogger(__name__)

EAGER = CandidateSpec("eager", "fp32", "cpu")


def _as_inputs(x: torch.Tensor | Sequence[torch.Tensor]) -> Inputs:
    if isinstance(x, torch.Tensor):
        return (x,)
    return tuple(torch.as_tensor(t) for t in x)


class InferenceRuntime:
    """A model plus the backend(s) chosen for it.

    Until ``autotune()`` runs, calls go to fp32 eager. After it, each call is routed to the
    backend that was fastest at the nearest measured batch size (log scale); a batch larger
    than the largest measured size runs in blocks of that size. Outputs are
    float32 CPU tensors whatever the backend, so callers never see which one ran.

    Args:
        model: the pure torch module (weights loaded, any mode; it is put in eval mode).
        example_input: a tensor or tuple of tensors with a batch dimension first; at least
            one row of realistic values, used for export, tracing and accuracy checks.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor | Sequence[torch.Tensor],
        device: str = "auto",
    ) -> None:
        self.model = model.eval()
        self.example = tuple(x.detach().cpu() for x in _as_inputs(example_input))
        if device == "auto":
            device = detect().device
        self.device = device
        with torch.inference_mode():
            out = self.model.to("cpu")(*self.example)
        self._single_output = isinstance(out, torch.Tensor)
        self._onnx: dict[str, bytes] = {}
        self._backends: dict[str, Backend] = {}
        eager = CandidateSpec("eager", "fp32", device)
        self._set_routes([(1, eager.name)])
        self._backends[eager.name] = build_backend(eager, self.model, self.example, self._onnx)
        self.report: dict[str, Any] = {}

    # ---------------------------------------------------------------- calling
    def __call__(self, *inputs: torch.Tensor) -> Any:
        """Run the model; same arguments and outputs as ``model(*inputs)`` (float32, CPU)."""
        if not inputs:
            raise RuntimeBackendError("InferenceRuntime needs at least one input tensor")
        first = inputs[0]
        if not isinstance(first, torch.Tensor) or any(not isinstance(x, torch.Tensor) for x in inputs[1:]):
            inputs = tuple(torch.as_tensor(x) for x in inputs)
            first = inputs[0]
        if first.dim() == 0:
            raise RuntimeBackendError("inputs need a batch dimension first")
        n = first.shape[0]
        block = self._block
        if block and n > block:
            # never run a batch larger than any size measured: a backend that won at the
            # largest size may lose far above it (seen: 2x slower at 100 k rows than at 32 k)
            parts = [self._run(tuple(x[i:i + block] for x in inputs)) for i in range(0, n, block)]
            outs = tuple(torch.cat([p[k] for p in parts]) for k in range(len(parts[0])))
        else:
            outs = self._run(inputs)
        return outs[0] if self._single_output else outs

    def _run(self, inputs: Inputs) -> Any:
        n = inputs[0].shape[0]
        name = self._route_cache.get(n)
        if name is None:
            name = self._route_cache[n] = self._route(n)
        return self._backends[name](inputs)

    @property
    def routes(self) -> dict[int, str]:
        """The backend each measured batch size goes to (``{1: "eager/fp32"}`` before autotune);
        a backend's name ends with its device when that is not the CPU."""
        return dict(self._routes)

    def backend_for(self, batch_size: int) -> str:
        """The name of the backend a call with ``batch_size`` rows goes to."""
        return self._route(batch_size)

    def _route(self, n: int) -> str:
        if len(self._routes) == 1:
            return self._routes[0][1]
        ln = math.log(max(n, 1))
        return min(self._routes, key=lambda r: abs(math.log(r[0]) - ln))[1]

    def _set_routes(self, routes: list[tuple[int, str]]) -> None:
        self._routes = routes
        self._route_cache: dict[int, str] = {}
        # once measured at several sizes, batches above the largest are run in blocks of it
        largest = max(size for size, _ in routes)
        self._block = largest if len(routes) > 1 and largest > 1 else None

    @property
    def onnx_bytes(self) -> bytes | None:
        """The exported fp32 ONNX graph if one was built (a non-executing format to store)."""
        return self._onnx.get("fp32")

    # ---------------------------------------------------------------- tuning
    def autotune(self, settings: TuneSettings | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Measure every candidate and keep the fastest accurate one per batch size.

        Returns (and stores in ``self.report``) the table: hardware, settings, every
        candidate with its status, accuracy and timings, and the choice per batch size.
        """
        s = settings or TuneSettings()
        specs, skipped = candidate_specs(self.device, s)
        eager_spec = CandidateSpec("eager", "fp32", self.device)
        if eager_spec not in specs:
            specs.insert(0, eager_spec)
        sizes = sorted(set(s.sizes))
        inputs = {n: batch_of(self.example, n) for n in sizes}
        check = inputs[sizes[-1]]
        reference = build_backend(CandidateSpec("eager", "fp32", "cpu"), self.model, self.example, self._onnx)(check)

        results: list[CandidateResult] = []
        built: dict[str, Backend] = {}
        for spec in specs:
            res = CandidateResult(spec)
            results.append(res)
            if progress:
                progress(spec.name)
            t0 = time.perf_counter()
            try:
                backend = build_backend(spec, self.model, self.example, self._onnx)
                res.build_s = time.perf_counter() - t0
                ok, diff = within_tolerance(backend(check), reference, s.rtol, s.atol)
            except Exception as exc:  # noqa: BLE001 - a candidate that fails is recorded, not fatal
                res.status, res.reason = "error", f"{type(exc).__name__}: {exc}"[:500]
                log.info("candidate %s failed: %s", spec.name, res.reason)
                continue
            res.max_abs_diff = diff
            # Rejected candidates are timed too: the table shows what accuracy would have bought.
            for n in sizes:
                res.by_size[n] = time_call(backend, inputs[n], s)
            if not ok:
                res.status = "rejected"
                res.reason = f"max |diff| {diff:.3g} > {s.atol:g} + {s.rtol:g} * max|ref|"
                continue
            res.status = "ok"
            built[spec.name] = backend

        accepted = [r for r in results if r.status == "ok"]
        if not accepted:
            raise RuntimeBackendError("no backend passed the accuracy check, not even eager: is the model deterministic?")
        choice = {n: min(accepted, key=lambda r: r.by_size[n]["p50_ms"]).spec.name for n in sizes}
        self._backends = {name: built[name] for name in set(choice.values())}
        self._set_routes([(n, choice[n]) for n in sizes])
        self.report = {
            "hardware": detect().as_dict(),
            "device": self.device,
            "settings": s.as_dict(),
            "candidates": [r.as_dict() for r in results + skipped],
            "choice": {str(n): name for n, name in choice.items()},
            "eager": eager_spec.name,
        }
        return self.report

    @classmethod
    def from_report(
        cls,
        model: nn.Module,
        example_input: torch.Tensor | Sequence[torch.Tensor],
        report: dict[str, Any],
        device: str = "auto",
    ) -> InferenceRuntime:
        """Rebuild the backends an earlier autotune chose, without measuring again.

        A choice that cannot be built here (a CUDA backend on a CPU host, say) falls back to
        eager with a warning; re-run ``autotune`` on new hardware. A report measured on another
        device than ``device`` (a CPU autotune loaded for CUDA) is not rebuilt, since its backends
        would run on that other device: the model runs eager on ``device``.
        """
        rt = cls(model, example_input, device=device)
        measured_on = report.get("device")
        if measured_on and measured_on != rt.device:
            log.warning("the stored autotune was measured on %s, not %s: running eager/fp32 on %s "
                        "(autotune on this device to choose its backends)", measured_on, rt.device, rt.device)
            rt.report = report
            return rt
        routes: list[tuple[int, str]] = []
        for size, name in sorted(((int(k), v) for k, v in report.get("choice", {}).items())):
            spec = CandidateSpec.parse(name)
            if name not in rt._backends:
                try:
                    rt._backends[name] = build_backend(spec, rt.model, rt.example, rt._onnx)
                except Exception as exc:  # noqa: BLE001
                    log.warning("cannot rebuild backend %s here (%s); using eager", name, exc)
                    name = CandidateSpec("eager", "fp32", rt.device).name
            routes.append((size, name))
        if routes:
            rt._set_routes(routes)
        rt.report = report
        return rt
