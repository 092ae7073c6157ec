"""The dynamic batcher: correct rows back, real batches, bounded queue, clean shutdown, metrics."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest
import torch

from trillium.core.batching import BatcherMetrics, DynamicBatcher
from trillium.core.errors import (
    BatcherClosedError,
    InputValidationError,
    OverloadedError,
    RuntimeBackendError,
    TrilliumError,
)
from trillium.core.models.reference import TabularMLP

pytestmark = pytest.mark.timeout(30)  # a hang is a failure, not a 10-minute wait


def rowwise(x: torch.Tensor) -> torch.Tensor:
    """A deterministic function whose row i depends only on input row i."""
    return x * 2 + x.sum(dim=1, keepdim=True)


class Gate:
    """A ``fn`` that blocks until opened, recording the batches it saw."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.batches: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.clone())
        self.entered.set()
        assert self.open.wait(10), "test gate never opened"
        return x + 1


def _start_inflight(b: DynamicBatcher, gate: Gate):
    """Submit one request and wait until the worker is inside fn with it."""
    fut = b.submit(torch.zeros(2))
    assert gate.entered.wait(5)
    return fut


def _call_from_threads(b: DynamicBatcher, items: list[torch.Tensor], threads: int) -> list[torch.Tensor]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(b, items))


def _batcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("DynamicBatcher[")]


# ------------------------------------------------------------------------- results
def test_results_match_fn_applied_per_item() -> None:
    torch.manual_seed(0)
    items = [torch.randn(5) for _ in range(64)]
    with DynamicBatcher(rowwise, max_batch_size=8, max_delay_ms=1) as b:
        got = _call_from_threads(b, items, threads=16)
    for x, y in zip(items, got):
        assert y.shape == (5,)
        torch.testing.assert_close(y, rowwise(x[None])[0], rtol=0, atol=0)


def test_tuple_inputs_and_outputs() -> None:
    def fn(xs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        a, ids = xs
        return a * ids[:, None], a.sum(dim=1)

    items = [(torch.full((3,), float(i)), torch.tensor(i)) for i in range(20)]
    with DynamicBatcher(fn, max_batch_size=4, max_delay_ms=1) as b:
        got = _call_from_threads(b, items, threads=8)
    for i, (scaled, total) in enumerate(got):
        torch.testing.assert_close(scaled, torch.full((3,), float(i * i)))
        torch.testing.assert_close(total, torch.tensor(3.0 * i))


def test_reference_mlp_through_batcher_matches_direct_calls() -> None:
    torch.manual_seed(0)
    model = TabularMLP(n_features=16, hidden=(32, 32)).eval()
    x = torch.randn(48, 16)

    def fn(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(batch)

    with DynamicBatcher(fn, max_batch_size=16, max_delay_ms=2) as b:
        got = torch.stack(_call_from_threads(b, list(x), threads=16))
        assert b.snapshot()["completed"] == 48
    with torch.inference_mode():
        ref = model(x)
    assert got.shape == ref.shape == (48, 1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- batching
def test_batches_form_under_concurrency_and_never_exceed_max() -> None:
    sizes: list[int] = []

    def slow(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        time.sleep(0.002)  # lets requests pile up while a batch runs
        return rowwise(x)

    items = [torch.randn(4) for _ in range(16 * 12)]
    with DynamicBatcher(slow, max_batch_size=8, max_delay_ms=5) as b:
        got = _call_from_threads(b, items, threads=16)
        snap = b.snapshot()
    assert len(got) == len(items) and sum(sizes) == len(items)
    assert max(sizes) <= 8
    assert sum(sizes) / len(sizes) > 2, sizes
    assert snap["max_batch_size_seen"] <= 8
    assert snap["mean_batch_size"] == pytest.approx(sum(sizes) / len(sizes))
    assert snap["batches"] == len(sizes)


def test_lone_request_waits_about_max_delay_then_runs() -> None:
    delay_ms = 200
    with DynamicBatcher(rowwise, max_batch_size=64, max_delay_ms=delay_ms) as b:
        b(torch.ones(3), timeout=5)  # warm-up (first torch call is slower)
        t0 = time.perf_counter()
        out = b(torch.ones(3), timeout=5)  # a batcher waiting for a full batch never answers: TimeoutError
        elapsed_ms = (time.perf_counter() - t0) * 1e3
    torch.testing.assert_close(out, torch.full((3,), 5.0))
    assert elapsed_ms >= delay_ms - 1  # it did wait for company...
    # ...but not far longer than max_delay_ms. The slack (1.3 s) is for two shared, loaded cores; a
    # batcher that waited 10x max_delay_ms (a unit slip: 2 s) still fails.
    assert elapsed_ms < delay_ms + 1_300


def test_zero_delay_runs_at_once() -> None:
    with DynamicBatcher(rowwise, max_batch_size=64, max_delay_ms=0) as b:
        b(torch.ones(3), timeout=5)
        t0 = time.perf_counter()
        b(torch.ones(3), timeout=5)  # a batcher waiting for a full batch never answers: TimeoutError
        # no waiting for company: what is left is a thread hand-off, well under a second even on a loaded box
        assert (time.perf_counter() - t0) * 1e3 < 1_000


# ------------------------------------------------------------------------- overload, errors
def test_full_queue_raises_overloaded_error() -> None:
    gate = Gate()
    with DynamicBatcher(gate, max_batch_size=1, max_delay_ms=0, max_queue_size=3, name="tiny") as b:
        inflight = _start_inflight(b, gate)
        queued = [b.submit(torch.full((2,), float(i))) for i in range(3)]
        assert b.pending == 3
        with pytest.raises(OverloadedError, match=r"queue holds 3 waiting requests.*retry") as info:
            b.submit(torch.zeros(2))
        assert isinstance(info.value, TrilliumError) and "tiny" in str(info.value)
        assert b.metrics.rejected == 1
        gate.open.set()
        torch.testing.assert_close(inflight.result(5), torch.ones(2))
        for i, f in enumerate(queued):
            torch.testing.assert_close(f.result(5), torch.full((2,), i + 1.0))
        b(torch.zeros(2), timeout=5)  # room again once drained
        snap = b.snapshot()
    assert snap["rejected"] == 1 and snap["requests"] == 5 and snap["completed"] == 5


def test_fn_exception_reaches_every_future_of_the_batch_and_worker_survives() -> None:
    def picky(x: torch.Tensor) -> torch.Tensor:
        if (x < 0).any():
            raise ValueError("negative feature")
        return x * 3

    with DynamicBatcher(picky, max_batch_size=4, max_delay_ms=2000) as b:
        futs = [b.submit(torch.tensor([v])) for v in (1.0, 2.0, -1.0, 4.0)]  # one full batch
        for f in futs:
            with pytest.raises(ValueError, match="negative feature"):
                f.result(5)
        assert len({id(f.exception()) for f in futs}) == 1
        b2 = [b.submit(torch.tensor([v])) for v in (1.0, 2.0, 3.0, 4.0)]
        assert [float(f.result(5)) for f in b2] == [3.0, 6.0, 9.0, 12.0]
        snap = b.snapshot()
    assert snap["errors"] == 4 and snap["failed_batches"] == 1 and snap["completed"] == 4


def test_bad_output_shape_fails_the_batch_with_a_clear_error() -> None:
    with DynamicBatcher(lambda x: x.sum(), max_batch_size=2, max_delay_ms=1) as b, \
            pytest.raises(RuntimeBackendError, match="batch .* first dimension"):
        b(torch.ones(3), timeout=5)


def test_arguments_and_items_are_validated() -> None:
    for kwargs in ({"max_batch_size": 0}, {"max_queue_size": -1}, {"max_delay_ms": -1.0},
                   {"max_batch_size": 2.5}, {"max_delay_ms": float("nan")}):
        with pytest.raises(ValueError):
            DynamicBatcher(rowwise, **kwargs)
    with pytest.raises(TypeError):
        DynamicBatcher("not callable")  # type: ignore[arg-type]
    with DynamicBatcher(rowwise, max_delay_ms=1) as b:
        b(torch.ones(4))
        with pytest.raises(InputValidationError, match=r"shape \(4,\).*got a tensor of shape \(1, 4\).*x\[0\]"):
            b.submit(torch.ones(1, 4))
        with pytest.raises(InputValidationError, match="dtype"):
            b.submit(torch.ones(4, dtype=torch.float64))
        with pytest.raises(InputValidationError, match="torch.Tensor"):
            b.submit([1.0, 2.0, 3.0, 4.0])  # type: ignore[arg-type]
        assert b.pending == 0 and b.metrics.requests == 1


def test_cancelled_request_is_left_out_of_its_batch() -> None:
    gate = Gate()
    with DynamicBatcher(gate, max_batch_size=8, max_delay_ms=0) as b:
        _start_inflight(b, gate)
        keep, drop = b.submit(torch.full((2,), 5.0)), b.submit(torch.full((2,), 7.0))
        assert drop.cancel()
        gate.open.set()
        torch.testing.assert_close(keep.result(5), torch.full((2,), 6.0))
        with pytest.raises(CancelledError):
            drop.result(0)
    assert [bt.shape[0] for bt in gate.batches] == [1, 1]
    assert b.metrics.cancelled == 1


# ------------------------------------------------------------------------- shutdown
def test_close_with_drain_answers_every_pending_request() -> None:
    gate = Gate()
    b = DynamicBatcher(gate, max_batch_size=2, max_delay_ms=1000)
    inflight = b.submit(torch.zeros(2))
    b.submit(torch.zeros(2))  # fills the first batch
    assert gate.entered.wait(5)
    pending = [b.submit(torch.full((2,), float(i))) for i in range(5)]
    closer = threading.Thread(target=b.close, kwargs={"drain": True, "timeout": 10})
    closer.start()
    while not b.closed:
        time.sleep(0.001)
    with pytest.raises(BatcherClosedError, match="closed"):
        b.submit(torch.zeros(2))
    gate.open.set()
    closer.join(10)
    assert not closer.is_alive() and not b._thread.is_alive()
    torch.testing.assert_close(inflight.result(0), torch.ones(2))
    for i, f in enumerate(pending):  # drained without waiting out the 1 s delay
        torch.testing.assert_close(f.result(0), torch.full((2,), i + 1.0))
    assert b.snapshot()["completed"] == 7


def test_close_without_drain_fails_pending_with_batcher_closed_error() -> None:
    gate = Gate()
    b = DynamicBatcher(gate, max_batch_size=1, max_delay_ms=0)
    inflight = _start_inflight(b, gate)
    pending = [b.submit(torch.zeros(2)) for _ in range(4)]
    closer = threading.Thread(target=b.close, kwargs={"drain": False, "timeout": 10})
    closer.start()
    for f in pending:  # failed at once, while the running batch is still inside fn
        assert isinstance(f.exception(timeout=5), BatcherClosedError)
    assert not inflight.done()
    with pytest.raises(BatcherClosedError):
        b.submit(torch.zeros(2))
    gate.open.set()
    closer.join(10)
    torch.testing.assert_close(inflight.result(0), torch.ones(2))  # the running batch completes
    assert not b._thread.is_alive()
    assert b.metrics.closed_failed == 4


def test_close_timeout_fails_a_stuck_batch_so_nothing_hangs() -> None:
    gate = Gate()
    b = DynamicBatcher(gate, max_batch_size=1, max_delay_ms=0)
    inflight = _start_inflight(b, gate)
    queued = b.submit(torch.zeros(2))
    assert b.close(drain=True, timeout=0.2) is False
    for f in (inflight, queued):
        with pytest.raises(BatcherClosedError, match="did not finish within 0.2 s"):
            f.result(timeout=1)
    gate.open.set()  # fn returns late: its result is dropped quietly, the worker exits
    b._thread.join(5)
    assert not b._thread.is_alive()


def test_no_thread_is_left_behind() -> None:
    before = set(_batcher_threads())
    batchers = [DynamicBatcher(rowwise, max_delay_ms=1, name=f"leak-{i}") for i in range(5)]
    for b in batchers:
        b(torch.ones(2))
    with DynamicBatcher(rowwise, max_delay_ms=1, name="ctx") as ctx:
        ctx(torch.ones(2))
    for b in batchers:
        assert b.close() is True
        assert b.close() is True  # idempotent
    assert set(_batcher_threads()) == before
    assert not ctx._thread.is_alive()


# ------------------------------------------------------------------------- metrics
def test_metrics_snapshot_and_prometheus_text() -> None:
    items = [torch.randn(3) for _ in range(40)]
    with DynamicBatcher(rowwise, max_batch_size=8, max_delay_ms=1, name="mlp") as b:
        _call_from_threads(b, items, threads=8)
        snap = b.snapshot()
        text = b.to_prometheus()
    assert snap["requests"] == snap["completed"] == 40
    assert snap["errors"] == snap["rejected"] == snap["closed_failed"] == 0
    assert 1 <= snap["batches"] <= 40 and snap["queue_depth"] == 0
    assert 0 < snap["latency_p50_ms"] <= snap["latency_p99_ms"] <= snap["latency_max_ms"]
    assert snap["queue_wait_p50_ms"] <= snap["latency_p50_ms"]
    assert snap["compute_p50_ms"] > 0 and 1 <= snap["mean_batch_size"] <= 8
    assert snap["name"] == "mlp" and snap["max_batch_size"] == 8

    assert 'trillium_batcher_requests_total{batcher="mlp"} 40' in text
    assert 'trillium_batcher_batches_total{batcher="mlp"}' in text
    assert "# TYPE trillium_batcher_request_latency_seconds summary" in text
    assert 'trillium_batcher_request_latency_seconds{batcher="mlp",quantile="0.99"}' in text
    assert 'trillium_batcher_request_latency_seconds_count{batcher="mlp"} 40' in text
    assert 'trillium_batcher_batch_size_sum{batcher="mlp"} 40.0' in text
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_]+="[^"]*"(,[a-zA-Z_]+="[^"]*")*\})? \S+$')
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or sample.match(line), line


def test_metrics_memory_is_bounded() -> None:
    m = BatcherMetrics(window=100, batch_window=10)
    for _ in range(50):
        m.record_batch(8, 0.001, [0.0005] * 8, [0.002] * 8, ok=True)
    snap = m.snapshot()
    assert snap["window_requests"] == 100 and snap["window_batches"] == 10
    assert snap["completed"] == 400 and snap["batches"] == 50
    assert snap["latency_p50_ms"] == pytest.approx(2.0)
    text = m.to_prometheus("x")
    assert "x_request_latency_seconds_count 400" in text and "x_queue_depth 0" in text


@pytest.mark.parametrize("drain", [True, False])
def test_close_during_traffic_leaves_no_future_pending(drain: bool) -> None:
    b = DynamicBatcher(rowwise, max_batch_size=8, max_delay_ms=1, max_queue_size=64)
    futures: list = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                futures.append(b.submit(torch.ones(3)))
            except OverloadedError:
                time.sleep(0.0005)
            except BatcherClosedError:
                return

    clients = [threading.Thread(target=client) for _ in range(8)]
    for t in clients:
        t.start()
    time.sleep(0.05)
    assert b.close(drain=drain, timeout=10) is True
    stop.set()
    for t in clients:
        t.join(5)
    assert futures and all(f.done() for f in futures)
    outcomes = {type(f.exception()).__name__ if f.exception() else "ok" for f in futures}
    assert outcomes <= ({"ok"} if drain else {"ok", "BatcherClosedError"})
    snap = b.snapshot()
    assert snap["requests"] == len(futures) == snap["completed"] + snap["closed_failed"]
