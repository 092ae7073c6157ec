"""A dynamic batcher for online calls (Triton-style).

Many threads each submit *one* item; a worker thread gathers them into a batch (up to
``max_batch_size`` items, or until ``max_delay_ms`` has passed since the first item of the
batch was enqueued), calls the model once on the stacked batch and hands every caller its
own row of the result through a ``concurrent.futures.Future``.

Contract:

* An item is one tensor shaped like a row *without* the batch dimension (``(32,)`` for a
  model taking ``(n, 32)``), or a tuple of such tensors for a model with several inputs.
  All items of a batcher share one signature (number of tensors, shapes, dtypes): the first
  item accepted (or ``example=``) fixes it, and a mismatching item is refused at ``submit``
  with ``InputValidationError`` so that it never spoils a batch of other callers' requests.
* ``fn`` receives the items stacked along a new first dimension (a tensor, or a tuple of
  tensors in the item's order) and returns a tensor, or a tuple/list of tensors, whose first
  dimension is the batch. Each caller's future gets its row (``out[i]``, or a tuple of rows).
* The queue is bounded: when ``max_queue_size`` requests are waiting, ``submit`` raises
  ``OverloadedError`` at once rather than letting latency grow without limit.
* If ``fn`` raises, every future of that batch gets the exception; the worker goes on.
* ``close()`` stops intake (later ``submit`` raises ``BatcherClosedError``), then either
  answers the pending requests (``drain=True``) or fails them with ``BatcherClosedError``.
  No future is left pending: whatever the worker has not answered by the timeout is failed.

With ``stack=False`` the items are any Python objects (a transaction, a decoded image with its
options): ``fn`` receives the list of items and returns a sequence of as many results, in order.
The batcher then checks no signature; gathering, the bounded queue and the metrics are the same.

Metrics (``BatcherMetrics``): counters, and the latency (enqueue to result), queue wait, batch
size and compute time of the most recent requests/batches in bounded ring buffers; exported
as a dict (``snapshot()``) or Prometheus text (``to_prometheus()``).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, Self

import numpy as np
import torch

from trillium.core.errors import (
    BatcherClosedError,
    InputValidationError,
    OverloadedError,
    RuntimeBackendError,
)

log = logging.getLogger(__name__)

__all__ = ["AsyncBatcher", "BatcherMetrics", "DynamicBatcher"]

Item = torch.Tensor | tuple[torch.Tensor, ...]
_perf = time.perf_counter
_LIVE: weakref.WeakSet[DynamicBatcher] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    # A daemon worker still inside torch while the interpreter finalizes aborts the process
    # ("terminate called without an active exception"): stop the open batchers first.
    for b in list(_LIVE):
        b.close(drain=False, timeout=5.0)


# --------------------------------------------------------------------------------- metrics
class BatcherMetrics:
    """Thread-safe counters and bounded samples of one batcher.

    Written once per batch by the worker (and once per rejected/closed request), so the cost
    per request is a few list appends. Quantiles cover the last ``window`` requests (latency,
    queue wait) and the last ``batch_window`` batches (size, compute time); ``*_sum`` and
    counters cover the batcher's whole life, as Prometheus summaries expect.
    """

    QUANTILES = (0.5, 0.9, 0.99)

    def __init__(self, window: int = 8192, batch_window: int = 2048,
                 queue_depth: Callable[[], int] | None = None) -> None:
        if window < 1 or batch_window < 1:
            raise ValueError("metrics windows must be at least 1")
        self._lock = threading.Lock()
        self._queue_depth = queue_depth or (lambda: 0)
        self.requests = 0  # accepted into the queue (the batcher counts it under its own lock)
        self.completed = 0  # answered with a result
        self.errors = 0  # answered with fn's exception
        self.rejected = 0  # refused at submit: queue full
        self.closed_failed = 0  # failed by close() (pending at shutdown, or close timeout)
        self.cancelled = 0  # cancelled by the caller before their batch started
        self.batches = 0
        self.failed_batches = 0
        self._latency: deque[float] = deque(maxlen=window)
        self._wait: deque[float] = deque(maxlen=window)
        self._sizes: deque[int] = deque(maxlen=batch_window)
        self._compute: deque[float] = deque(maxlen=batch_window)
        self._latency_sum = 0.0
        self._wait_sum = 0.0
        self._compute_sum = 0.0
        self._rows_sum = 0

    # Writers -----------------------------------------------------------------------
    def record_rejected(self) -> None:
        with self._lock:
            self.rejected += 1

    def record_closed(self, n: int) -> None:
        with self._lock:
            self.closed_failed += n

    def record_cancelled(self, n: int) -> None:
        with self._lock:
            self.cancelled += n

    def record_batch(self, size: int, compute_s: float, waits: Sequence[float],
                     latencies: Sequence[float], ok: bool) -> None:
        """One batch: its size, fn's time, and each request's queue wait and latency."""
        with self._lock:
            self.batches += 1
            self._sizes.append(size)
            self._compute.append(compute_s)
            self._compute_sum += compute_s
            self._rows_sum += size
            self._wait.extend(waits)
            self._wait_sum += sum(waits)
            self._latency.extend(latencies)
            self._latency_sum += sum(latencies)
            if ok:
                self.completed += len(latencies)
            else:
                self.failed_batches += 1
                self.errors += len(latencies)

    # Readers -----------------------------------------------------------------------
    def _copy(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counters": {
                    "requests": self.requests, "completed": self.completed, "errors": self.errors,
                    "rejected": self.rejected, "closed_failed": self.closed_failed,
                    "cancelled": self.cancelled, "batches": self.batches,
                    "failed_batches": self.failed_batches,
                },
                "latency": np.fromiter(self._latency, float, len(self._latency)),
                "wait": np.fromiter(self._wait, float, len(self._wait)),
                "sizes": np.fromiter(self._sizes, float, len(self._sizes)),
                "compute": np.fromiter(self._compute, float, len(self._compute)),
                "sums": {"latency": self._latency_sum, "wait": self._wait_sum,
                         "compute": self._compute_sum, "rows": self._rows_sum},
            }

    @staticmethod
    def _q(arr: np.ndarray, q: float, scale: float = 1.0) -> float | None:
        return float(np.quantile(arr, q) * scale) if arr.size else None

    def snapshot(self) -> dict[str, Any]:
        """A plain dict: counters, queue depth, latency/wait/compute quantiles (ms), sizes."""
        c = self._copy()
        lat, wait, sizes, comp = c["latency"], c["wait"], c["sizes"], c["compute"]
        out: dict[str, Any] = dict(c["counters"])
        out["queue_depth"] = self._queue_depth()
        for key, arr in (("latency", lat), ("queue_wait", wait), ("compute", comp)):
            out[f"{key}_p50_ms"] = self._q(arr, 0.5, 1e3)
            out[f"{key}_p99_ms"] = self._q(arr, 0.99, 1e3)
            out[f"{key}_mean_ms"] = float(arr.mean() * 1e3) if arr.size else None
        out["latency_max_ms"] = float(lat.max() * 1e3) if lat.size else None
        out["mean_batch_size"] = float(sizes.mean()) if sizes.size else None
        out["max_batch_size_seen"] = int(sizes.max()) if sizes.size else 0
        out["lifetime_mean_batch_size"] = c["sums"]["rows"] / c["counters"]["batches"] if c["counters"]["batches"] else None
        out["window_requests"] = int(lat.size)
        out["window_batches"] = int(sizes.size)
        return out

    def to_prometheus(self, prefix: str = "trillium_batcher", labels: dict[str, str] | None = None) -> str:
        """The metrics in the Prometheus text exposition format (counters, a gauge, summaries)."""
        c = self._copy()
        lab = dict(labels or {})

        def fmt(extra: dict[str, str] | None = None) -> str:
            d = {**lab, **(extra or {})}
            if not d:
                return ""
            esc = (lambda v: str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"'))
            return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in d.items()) + "}"

        lines: list[str] = []
        counters = (
            ("requests_total", "requests", "Requests accepted into the queue."),
            ("completed_total", "completed", "Requests answered with a result."),
            ("errors_total", "errors", "Requests answered with the model function's exception."),
            ("rejected_total", "rejected", "Requests refused because the queue was full."),
            ("closed_failed_total", "closed_failed", "Requests failed because the batcher shut down."),
            ("cancelled_total", "cancelled", "Requests cancelled by the caller before running."),
            ("batches_total", "batches", "Batches run."),
            ("failed_batches_total", "failed_batches", "Batches whose model function raised."),
        )
        for name, key, help_ in counters:
            lines += [f"# HELP {prefix}_{name} {help_}", f"# TYPE {prefix}_{name} counter",
                      f"{prefix}_{name}{fmt()} {c['counters'][key]}"]
        lines += [f"# HELP {prefix}_queue_depth Requests waiting in the queue.",
                  f"# TYPE {prefix}_queue_depth gauge", f"{prefix}_queue_depth{fmt()} {self._queue_depth()}"]
        summaries = (
            ("request_latency_seconds", "latency", "latency", c["counters"]["completed"] + c["counters"]["errors"],
             "Time from enqueue to the result being set, per request."),
            ("queue_wait_seconds", "wait", "wait", c["counters"]["completed"] + c["counters"]["errors"],
             "Time from enqueue to the start of the request's batch."),
            ("batch_compute_seconds", "compute", "compute", c["counters"]["batches"],
             "Time the model function took per batch."),
            ("batch_size", "sizes", "rows", c["counters"]["batches"], "Requests per batch."),
        )
        for name, arr_key, sum_key, count, help_ in summaries:
            arr = c[arr_key]
            lines += [f"# HELP {prefix}_{name} {help_}", f"# TYPE {prefix}_{name} summary"]
            for q in self.QUANTILES:
                v = float(np.quantile(arr, q)) if arr.size else float("nan")
                lines.append(f"{prefix}_{name}{fmt({'quantile': str(q)})} {v!r}")
            lines.append(f"{prefix}_{name}_sum{fmt()} {float(c['sums'][sum_key])!r}")
            lines.append(f"{prefix}_{name}_count{fmt()} {count}")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- batcher
class _Request:
    __slots__ = ("future", "item", "t_enqueue")

    def __init__(self, item: Item, future: Future, t_enqueue: float) -> None:
        self.item = item
        self.future = future
        self.t_enqueue = t_enqueue


def _signature(item: Any) -> tuple[Any, ...]:
    if isinstance(item, torch.Tensor):
        return (item.shape, item.dtype)
    if isinstance(item, (tuple, list)) and item and all(isinstance(t, torch.Tensor) for t in item):
        return tuple((t.shape, t.dtype) for t in item)
    raise InputValidationError(
        f"a batcher request must be one torch.Tensor (a row without the batch dimension) or a "
        f"non-empty tuple of tensors, got {type(item).__name__}"
    )


def _describe(sig: tuple[Any, ...]) -> str:
    if sig and isinstance(sig[0], torch.Size):
        return f"tensor of shape {tuple(sig[0])} and dtype {sig[1]}"
    return "tuple of " + ", ".join(f"{tuple(s)}/{d}" for s, d in sig)


def _set_result(f: Future, value: Any) -> None:
    try:
        f.set_result(value)
    except InvalidStateError:  # already failed by close(timeout=...)
        pass


def _set_exception(f: Future, exc: BaseException) -> None:
    try:
        f.set_exception(exc)
    except InvalidStateError:
        pass


class DynamicBatcher:
    """Gather single requests from many threads into batches for ``fn`` (see module doc).

    Args:
        fn: called with the stacked batch (tensor, or tuple of tensors); returns a tensor or a
            tuple/list of tensors with the batch first. Wrap a plain ``nn.Module`` in
            ``torch.inference_mode`` yourself (an ``InferenceRuntime`` already does).
        max_batch_size: most requests per call of ``fn``.
        max_delay_ms: the longest a batch waits for more requests, counted from the enqueue
            of its first request. 0 runs whatever is queued as soon as the worker is free.
        max_queue_size: most requests waiting (not yet in a batch); beyond it ``submit``
            raises ``OverloadedError``.
        name: shown in thread names, errors and metric labels.
        example: an item fixing the accepted signature; default, the first item submitted.
        stack: True (default) stacks tensor items; False passes ``fn`` the list of items as they
            are and expects a sequence of one result per item back.
        metrics_window: how many recent requests the latency quantiles cover.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        max_batch_size: int = 64,
        max_delay_ms: float = 2.0,
        max_queue_size: int = 1024,
        name: str = "batcher",
        example: Item | None = None,
        stack: bool = True,
        metrics_window: int = 8192,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        for arg, val in (("max_batch_size", max_batch_size), ("max_queue_size", max_queue_size)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{arg} must be a positive integer, got {val!r}")
        if isinstance(max_delay_ms, bool) or not isinstance(max_delay_ms, (int, float)) or not max_delay_ms >= 0 \
                or max_delay_ms == float("inf"):
            raise ValueError(f"max_delay_ms must be a finite number >= 0, got {max_delay_ms!r}")
        self.fn = fn
        self.stack = bool(stack)
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay_ms = float(max_delay_ms)
        self.max_queue_size = max_queue_size
        self._delay_s = self.max_delay_ms / 1e3
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._worker_idle = False  # waiting for a first request: submit must notify
        self._worker_gathering = False  # waiting for the batch to fill: notify when it does
        self._closed = False
        self._signature = _signature(example) if example is not None else None
        self._inflight: list[_Request] = []
        self.metrics = BatcherMetrics(window=metrics_window, queue_depth=self._queue.__len__)
        self._thread = threading.Thread(target=self._run, name=f"DynamicBatcher[{name}]", daemon=True)
        _LIVE.add(self)
        self._thread.start()

    # ---------------------------------------------------------------- calling
    def submit(self, item: Item) -> Future:
        """Queue one item; the future resolves to its row of ``fn``'s output.

        Raises ``OverloadedError`` when the queue is full, ``BatcherClosedError`` after
        ``close()``, ``InputValidationError`` when the item's signature differs.
        """
        if self.stack:
            sig = _signature(item)
            if sig != self._signature:
                self._check_signature(sig)
        fut: Future = Future()
        req = _Request(item, fut, 0.0)
        with self._cond:
            if self._closed:
                raise BatcherClosedError(f"batcher {self.name!r} is closed; it accepts no new requests")
            q = self._queue
            if len(q) >= self.max_queue_size:
                overloaded = True
            else:
                overloaded = False
                req.t_enqueue = _perf()
                q.append(req)
                self.metrics.requests += 1  # written only here, under this lock
                if self._worker_idle or (self._worker_gathering and len(q) >= self.max_batch_size):
                    self._cond.notify()
        if overloaded:
            self.metrics.record_rejected()
            raise OverloadedError(
                f"batcher {self.name!r} is overloaded: its queue holds {self.max_queue_size} waiting "
                f"requests (max_queue_size). Back off and retry later, add capacity, or raise "
                f"max_queue_size if that much added latency is acceptable."
            )
        return fut

    def __call__(self, item: Item, timeout: float | None = None) -> Any:
        """``submit(item).result(timeout)``: block until this item's result (or error)."""
        return self.submit(item).result(timeout)

    def _check_signature(self, sig: tuple[Any, ...]) -> None:
        with self._cond:
            if self._signature is None:
                self._signature = sig
                return
            expected = self._signature
        if sig == expected:
            return
        hint = ""
        if isinstance(sig[0], torch.Size) and isinstance(expected[0], torch.Size) \
                and tuple(sig[0]) == (1, *expected[0]):
            hint = " (it has a leading batch dimension of 1: submit x[0] rather than x[:1])"
        raise InputValidationError(
            f"batcher {self.name!r}: each request is one item without the batch dimension, all of "
            f"one signature; expected a {_describe(expected)}, got a {_describe(sig)}{hint}"
        )

    # ---------------------------------------------------------------- worker
    def _next_batch(self) -> list[_Request] | None:
        """Block until a batch is due; None when closed and nothing is left to run."""
        cond, q = self._cond, self._queue
        with cond:
            while not q:
                if self._closed:
                    return None
                self._worker_idle = True
                cond.wait()
                self._worker_idle = False
            if not self._closed and len(q) < self.max_batch_size:
                deadline = q[0].t_enqueue + self._delay_s
                self._worker_gathering = True
                while len(q) < self.max_batch_size and not self._closed:
                    left = deadline - _perf()
                    if left <= 0:
                        break
                    cond.wait(left)
                self._worker_gathering = False
                if not q:  # close(drain=False) emptied it meanwhile
                    return None if self._closed else []
            n = min(len(q), self.max_batch_size)
            batch = [q.popleft() for _ in range(n)]
            self._inflight = batch
            return batch

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if batch:
                    self._process(batch)
                with self._cond:
                    self._inflight = []
        except BaseException as exc:
            log.exception("batcher %r: worker failed; closing", self.name)
            err = BatcherClosedError(f"batcher {self.name!r} closed: its worker failed ({exc!r})")
            with self._cond:
                self._closed = True
                stuck = [r for r in self._inflight if not r.future.done()]
            self._fail_all(err)
            for r in stuck:
                _set_exception(r.future, err)

    def _process(self, batch: list[_Request]) -> None:
        t_start = _perf()
        live = []
        for r in batch:
            try:
                if r.future.set_running_or_notify_cancel():
                    live.append(r)
            except RuntimeError:  # already failed by a close() that timed out
                pass
        if len(live) < len(batch):
            self.metrics.record_cancelled(len(batch) - len(live))
        if not live:
            return
        n = len(live)
        waits = [t_start - r.t_enqueue for r in live]
        t0 = _perf()
        try:
            if not self.stack:
                xs: Any = [r.item for r in live]
            elif isinstance(live[0].item, torch.Tensor):
                xs = torch.stack([r.item for r in live])
            else:
                xs = tuple(torch.stack(col) for col in zip(*(r.item for r in live)))
            out = self.fn(xs)
            compute = _perf() - t0
            rows = self._split(out, n)
        except BaseException as exc:  # noqa: BLE001 - fn's error goes to every caller of the batch
            compute = _perf() - t0
            for r in live:
                _set_exception(r.future, exc)
            lat = [_perf() - r.t_enqueue for r in live]
            self.metrics.record_batch(n, compute, waits, lat, ok=False)
            return
        lat = []
        for r, row in zip(live, rows):
            _set_result(r.future, row)
            lat.append(_perf() - r.t_enqueue)
        self.metrics.record_batch(n, compute, waits, lat, ok=True)

    def _split(self, out: Any, n: int) -> Sequence[Any]:
        if not self.stack:
            if not isinstance(out, Sequence) or len(out) != n:
                got = f"{len(out)} results" if isinstance(out, Sequence) else f"a {type(out).__name__}"
                raise RuntimeBackendError(f"batcher {self.name!r}: fn returned {got} for a batch of {n} "
                                          f"items; it must return one result per item, in order")
            return out
        if isinstance(out, torch.Tensor):
            if out.dim() == 0 or out.shape[0] != n:
                raise RuntimeBackendError(
                    f"batcher {self.name!r}: fn returned shape {tuple(out.shape)} for a batch of {n}; "
                    f"its output must have the batch ({n}) as first dimension")
            return out.unbind(0)
        if isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
            for o in out:
                if o.dim() == 0 or o.shape[0] != n:
                    raise RuntimeBackendError(
                        f"batcher {self.name!r}: fn returned an output of shape {tuple(o.shape)} for a "
                        f"batch of {n}; every output must have the batch ({n}) as first dimension")
            return list(zip(*(o.unbind(0) for o in out)))
        raise RuntimeBackendError(
            f"batcher {self.name!r}: fn must return a tensor or a tuple of tensors, got {type(out).__name__}")

    def _fail_all(self, exc: BaseException) -> int:
        """Fail every queued request with ``exc``; returns how many."""
        with self._cond:
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        self._fail(pending, exc)
        return len(pending)

    def _fail(self, requests: list[_Request], exc: BaseException) -> None:
        for r in requests:
            _set_exception(r.future, exc)
        if requests:
            self.metrics.record_closed(len(requests))

    # ---------------------------------------------------------------- shutdown
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Requests waiting in the queue (not yet in a batch)."""
        return len(self._queue)

    def close(self, drain: bool = True, timeout: float | None = 30.0) -> bool:
        """Stop accepting requests and finish: no future is left pending when this returns.

        ``drain=True`` runs the queued requests (without waiting out ``max_delay_ms``);
        ``drain=False`` fails them with ``BatcherClosedError`` (the batch already running, if
        any, still completes). When the worker has not finished within ``timeout`` seconds
        (a slow or stuck ``fn``), the requests it still holds are failed with
        ``BatcherClosedError``. Returns True when the worker thread has exited. Idempotent.
        """
        with self._cond:
            self._closed = True
            pending: list[_Request] = []
            if not drain:  # under the lock, so the worker cannot start them meanwhile
                pending = list(self._queue)
                self._queue.clear()
            self._cond.notify_all()
        if pending:
            self._fail(pending, BatcherClosedError(
                f"batcher {self.name!r} was closed (drain=False) before this request ran"))
            log.info("batcher %r: failed %d pending requests at close", self.name, len(pending))
        if threading.current_thread() is self._thread:  # close() from inside fn
            return False  # the worker finishes (or drains) once fn returns
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        exc = BatcherClosedError(
            f"batcher {self.name!r} was closed and its worker did not finish within {timeout} s")
        self._fail_all(exc)
        with self._cond:
            stuck = [r for r in self._inflight if not r.future.done()]
        self._fail(stuck, exc)
        log.warning("batcher %r: worker still busy after %s s; failed %d in-flight requests",
                    self.name, timeout, len(stuck))
        return False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(drain=exc_info[0] is None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"DynamicBatcher({self.name!r}, max_batch_size={self.max_batch_size}, "
                f"max_delay_ms={self.max_delay_ms}, max_queue_size={self.max_queue_size}, {state}, "
                f"pending={len(self._queue)})")

    def snapshot(self) -> dict[str, Any]:
        """``metrics.snapshot()`` plus this batcher's settings."""
        snap = self.metrics.snapshot()
        snap.update(name=self.name, max_batch_size=self.max_batch_size, max_delay_ms=self.max_delay_ms,
                    max_queue_size=self.max_queue_size, closed=self._closed)
        return snap

    def to_prometheus(self, prefix: str = "trillium_batcher") -> str:
        """Prometheus text for this batcher, labelled ``batcher="<name>"``."""
        return self.metrics.to_prometheus(prefix, labels={"batcher": self.name})


# --------------------------------------------------------------------------------- asyncio
class AsyncBatcher:
    """The dynamic batcher for one asyncio event loop (an HTTP worker): same gathering rules,
    bounded queue and metrics as ``DynamicBatcher`` with ``stack=False``, but ``fn`` runs in the
    loop's own thread, between requests.

    Why a second form: in a server worker the requests already arrive in one thread (the event
    loop), so handing them to a batcher thread costs two thread switches per request and, worse,
    makes the loop and the batcher fight over the interpreter lock. Here ``fn`` holds the loop
    while it runs (milliseconds), the requests that arrive meanwhile wait in the socket and are
    read when it returns, and the next batch takes them all. Which form serves a route better is
    measured (``benchmarks/serve.py``), not assumed.

    ``await submit(item)`` returns ``fn``'s result for the item; ``OverloadedError`` at once when
    ``max_queue_size`` items wait; ``BatcherClosedError`` after ``close()``.
    """

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], *, max_batch_size: int = 64,
                 max_delay_ms: float = 1.0, max_queue_size: int = 1024, name: str = "batcher",
                 metrics_window: int = 8192) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        for arg, val in (("max_batch_size", max_batch_size), ("max_queue_size", max_queue_size)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{arg} must be a positive integer, got {val!r}")
        if not 0 <= max_delay_ms < float("inf"):
            raise ValueError(f"max_delay_ms must be a finite number >= 0, got {max_delay_ms!r}")
        self.fn = fn
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay_ms = float(max_delay_ms)
        self.max_queue_size = max_queue_size
        self._delay_s = self.max_delay_ms / 1e3
        self._queue: deque[tuple[Any, Any, float]] = deque()
        self._task: Any = None
        self._full: Any = None
        self._closed = False
        self.metrics = BatcherMetrics(window=metrics_window, queue_depth=self._queue.__len__)

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def submit(self, item: Any) -> Any:
        import asyncio

        if self._closed:
            raise BatcherClosedError(f"batcher {self.name!r} is closed; it accepts no new requests")
        if len(self._queue) >= self.max_queue_size:
            self.metrics.record_rejected()
            raise OverloadedError(
                f"batcher {self.name!r} is overloaded: its queue holds {self.max_queue_size} waiting "
                f"requests (max_queue_size). Back off and retry later.")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((item, fut, _perf()))
        self.metrics.requests += 1
        if self._full is None:
            self._full = asyncio.Event()
        if len(self._queue) >= self.max_batch_size:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await fut

    async def _run(self) -> None:
        import asyncio

        q = self._queue
        while q:
            deadline = q[0][2] + self._delay_s
            while len(q) < self.max_batch_size and not self._closed:
                left = deadline - _perf()
                if left <= 0:
                    break
                self._full.clear()
                try:
                    await asyncio.wait_for(self._full.wait(), left)
                except TimeoutError:
                    break
            batch = [q.popleft() for _ in range(min(len(q), self.max_batch_size))]
            live = [b for b in batch if not b[1].done()]  # a caller that went away is not computed
            if len(live) < len(batch):
                self.metrics.record_cancelled(len(batch) - len(live))
            if not live:
                continue
            t0 = _perf()
            waits = [t0 - t for _, _, t in live]
            try:
                out = self.fn([item for item, _, _ in live])
                if not isinstance(out, Sequence) or len(out) != len(live):
                    raise RuntimeBackendError(f"batcher {self.name!r}: fn returned {type(out).__name__} for a "
                                              f"batch of {len(live)}; it must return one result per item")
            except Exception as exc:  # noqa: BLE001 - fn's error goes to every caller of the batch
                compute = _perf() - t0
                for _, fut, _ in live:
                    if not fut.done():
                        fut.set_exception(exc)
                self.metrics.record_batch(len(live), compute, waits, [_perf() - t for _, _, t in live], ok=False)
            else:
                compute = _perf() - t0
                for (_, fut, _), result in zip(live, out, strict=True):
                    if not fut.done():
                        fut.set_result(result)
                self.metrics.record_batch(len(live), compute, waits, [_perf() - t for _, _, t in live], ok=True)
            await asyncio.sleep(0)  # let the loop read the requests that arrived meanwhile

    async def close(self, drain: bool = True) -> None:
        """Stop intake; run (``drain``) or fail what is queued; returns once nothing is pending."""
        self._closed = True
        if not drain:
            err = BatcherClosedError(f"batcher {self.name!r} was closed before this request ran")
            while self._queue:
                _, fut, _ = self._queue.popleft()
                if not fut.done():
                    fut.set_exception(err)
        if self._full is not None:
            self._full.set()
        if self._task is not None:
            await self._task
