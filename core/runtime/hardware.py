"""What the machine can run natively, read from the hardware rather than assumed.

The autotuner offers reduced precisions only where they are native (bf16 on a CPU with
AVX512-BF16 or AMX, fp16 and bf16 on CUDA), because emulated bf16 is ~30x slower here.
``matmul_peak_gflops`` measures the fp32 roofline that benchmarks report fractions of.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import torch


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@dataclass(frozen=True)
class HardwareInfo:
    device: str
    cpu_capability: str
    cores: int
    torch_threads: int
    cpu_native_bf16: bool
    cpu_native_fp16: bool
    cuda_name: str | None = None
    cuda_bf16: bool = False
    torch_version: str = field(default=torch.__version__)
    machine: str = field(default_factory=platform.machine)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def detect() -> HardwareInfo:
    flags = _cpu_flags()
    cuda = torch.cuda.is_available()
    return HardwareInfo(
        device="cuda" if cuda else "cpu",
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        cores=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        cpu_native_bf16=bool({"avx512_bf16", "amx_bf16"} & flags),
        cpu_native_fp16=bool({"avx512_fp16", "amx_fp16"} & flags),
        cuda_name=torch.cuda.get_device_name(0) if cuda else None,
        cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()),
    )


def native_precisions(device: str) -> list[str]:
    """Precisions worth measuring on ``device``: fp32 always, others only when native."""
    info = detect()
    if device.startswith("cuda"):
        return ["fp32", "fp16"] + (["bf16"] if info.cuda_bf16 else [])
    out = ["fp32"]
    if info.cpu_native_bf16:
        out.append("bf16")
    if info.cpu_native_fp16:
        out.append("fp16")
    return out


def matmul_peak_gflops(n: int = 1024, repeats: int = 20, device: str = "cpu") -> float:
    """Measured fp32 GEMM rate: the practical peak that model throughput is compared with."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


DEVICE_ENV = "TRILLIUM_DEVICE"


def inference_device(device: str | None = None) -> str:
    """Where registered models run when loaded for serving: ``device`` if given, else the
    ``TRILLIUM_DEVICE`` environment variable, else ``"cpu"``.

    ``"auto"`` is CUDA when torch sees a GPU, else the CPU; ``"cuda"`` (or ``"cuda:N"``) on a
    machine where torch sees none is a ``ConfigError`` rather than a silent fall back to the CPU.
    """
    from trillium.core.errors import ConfigError

    raw = (device if device is not None else os.environ.get(DEVICE_ENV, "")).strip().lower() or "cpu"
    if raw == "auto":
        return detect().device
    if raw == "cpu":
        return raw
    if raw == "cuda" or (raw.startswith("cuda:") and raw[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {raw!r} asked for ({DEVICE_ENV} or --device), but torch sees no CUDA device "
                              f"here (torch {torch.__version__}); use cpu or auto")
        return raw
    raise ConfigError(f"device {raw!r}: expected cpu, cuda, cuda:N or auto ({DEVICE_ENV} or --device)")
