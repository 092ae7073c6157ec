"""The per-candidate measurements of one study on several processes of the host.

Measuring and re-centring the candidates (``measure.measure_consistent``,
``analyzer.recentre_measurement``) is SciPy and small-array NumPy, one candidate at a time,
independent of the others. Threads do not help: between the distance transforms the work holds
the interpreter lock (measured on 2 cores: 2 threads no faster than one). Processes do, where
the host has cores to spare: a GPU machine runs the candidate filters and the classifier on the
device in a fraction of a second, and its 16 CPU cores then wait on this loop.

The workers are forked from the analysing process, so the study's voxels and lung mask reach
them without a copy (copy-on-write pages); only the candidates' centres and the measurements
travel, between processes of this program (never from a file). Each worker keeps its own memo
(``measure_consistent``'s ``cache``): a memo changes no answer, only how often one is computed,
so the measurements equal the serial loop's field for field
(``tests/medical/test_ct_parallel.py``). The workers never touch the GPU or torch.

``TRILLIUM_CT_WORKERS``: the number of processes (1: the serial loop in this process). The
default is one per core (at most 16) in a process with a single Python thread (the CLI, a batch
script): measured on the 2-core CPU (``benchmarks/ct_parallel.py``, a 512 x 512 x 300 phantom,
alternating rounds), two processes took the findings stage from 1.70 to 1.21 s and the study
from 5.35 to 4.84 s. In a process with other Python threads (the HTTP service, a Ray worker, studies
analysed on threads) the default is 1: a fork copies every thread's locks but only the calling
thread, so a child could wait on a lock that no thread of its own will release; set
``TRILLIUM_CT_WORKERS`` there to choose otherwise.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from trillium.medical.imaging.measure import Measurement

__all__ = ["ct_workers", "measure_all", "recentre_all"]

_STUDY: dict[str, Any] = {}


def ct_workers(n_tasks: int | None = None) -> int:
    """Processes for a study's measurements: ``TRILLIUM_CT_WORKERS``, else the host's cores (at most
    16) in a process with one Python thread, else 1; never more than the tasks."""
    raw = os.environ.get("TRILLIUM_CT_WORKERS", "").strip()
    cores = os.cpu_count() or 1
    if raw:
        try:
            n = max(1, int(raw))
        except ValueError:
            from trillium.core.errors import ConfigError

            raise ConfigError(f"TRILLIUM_CT_WORKERS must be a whole number, got {raw!r}") from None
    else:
        n = min(cores, 16) if threading.active_count() == 1 else 1
    return max(1, min(n, n_tasks)) if n_tasks is not None else n


def _enter(hu: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """A worker's start: the study it measures (inherited through the fork, not copied)."""
    _STUDY.update(hu=hu, lungs=lungs, spacing=spacing, cache={})


def _measure_one(hu: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float], cache: dict,
                 task: tuple[np.ndarray, float]) -> Measurement | None:
    # through the analyzer's name, as the findings loop's re-centring: the tests and the benchmark
    # swap a reference measurement in there (``analyzer.measure_consistent``)
    from trillium.medical.imaging import analyzer

    center, radius = task
    return analyzer.measure_consistent(hu, center, radius, spacing, lungs, cache=cache)


def _recentre_one(hu: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float], cache: dict,
                  m: Measurement | None) -> Measurement | None:
    from trillium.medical.imaging.analyzer import recentre_measurement

    return recentre_measurement(hu, m, spacing, lungs, cache=cache)


def _in_worker(fn: Callable[..., Measurement | None], task: Any) -> Measurement | None:
    return fn(_STUDY["hu"], _STUDY["lungs"], _STUDY["spacing"], _STUDY["cache"], task)


def _map(fn: Callable[..., Measurement | None], tasks: Sequence[Any], hu: np.ndarray, lungs: np.ndarray,
         spacing: tuple[float, float, float], cache: dict | None, workers: int | None) -> list[Measurement | None]:
    n = ct_workers(len(tasks)) if workers is None else max(1, min(workers, len(tasks)))
    if n <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        memo = cache if cache is not None else {}
        return [fn(hu, lungs, spacing, memo, t) for t in tasks]
    # contiguous chunks, several per worker: candidates near one another (one nodule's) share a
    # worker's memo, and a slow chunk does not hold the others back
    chunk = max(1, len(tasks) // (n * 4))
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"), initializer=_enter,
                             initargs=(hu, lungs, spacing)) as pool:
        return list(pool.map(partial(_in_worker, fn), tasks, chunksize=chunk))


def measure_all(hu: np.ndarray, centers: Sequence[np.ndarray], radii: Sequence[float],
                spacing: tuple[float, float, float], lungs: np.ndarray, *, cache: dict | None = None,
                workers: int | None = None) -> list[Measurement | None]:
    """``measure_consistent`` of every candidate, in order (``cache``: the serial path's memo)."""
    return _map(_measure_one, list(zip(centers, radii, strict=True)), hu, lungs, spacing, cache, workers)


def recentre_all(hu: np.ndarray, measurements: Sequence[Measurement | None], spacing: tuple[float, float, float],
                 lungs: np.ndarray, *, cache: dict | None = None, workers: int | None = None,
                 ) -> list[Measurement | None]:
    """``recentre_measurement`` of every measurement, in order."""
    return _map(_recentre_one, list(measurements), hu, lungs, spacing, cache, workers)
