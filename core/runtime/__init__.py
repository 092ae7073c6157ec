"""Run a torch model fast on the hardware found, chosen by measurement (see ``autotune``)."""

from trillium.core.runtime.autotune import TuneSettings
from trillium.core.runtime.backends import CandidateSpec
from trillium.core.runtime.hardware import detect, inference_device, matmul_peak_gflops
from trillium.core.runtime.runner import InferenceRuntime

__all__ = ["CandidateSpec", "InferenceRuntime", "TuneSettings", "detect", "inference_device", "matmul_peak_gflops"]
