"""``AsyncBatcher``: the batcher's event-loop form gathers concurrent callers into batches, answers
each with its own result, fails a whole batch with fn's error, refuses past its queue bound, and
drains on close."""

from __future__ import annotations

import asyncio

import pytest

from trillium.core.batching import AsyncBatcher
from trillium.core.errors import BatcherClosedError, OverloadedError, RuntimeBackendError


def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [i * i for i in items]

    async def main() -> list[int]:
        b = AsyncBatcher(fn, max_batch_size=16, max_delay_ms=5)
        out = await asyncio.gather(*(b.submit(i) for i in range(100)))
        await b.close()
        return out

    assert asyncio.run(main()) == [i * i for i in range(100)]
    assert sum(len(c) for c in calls) == 100 and max(len(c) for c in calls) == 16
    assert len(calls) <= 8  # 100 callers in 7 batches of at most 16, not 100 calls


def test_fn_error_reaches_every_caller_of_its_batch_and_the_batcher_goes_on() -> None:
    def fn(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky batch")
        return items

    async def main() -> tuple[list[object], int]:
        b = AsyncBatcher(fn, max_batch_size=4, max_delay_ms=50)
        first = await asyncio.gather(*(b.submit(i) for i in (12, 13, 14, 15)), return_exceptions=True)
        after = await b.submit(1)
        return first, after

    first, after = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in first) and after == 1


def test_a_wrong_number_of_results_is_an_error_not_a_misrouted_answer() -> None:
    async def main() -> None:
        b = AsyncBatcher(lambda items: items[:-1] or [None, None], max_batch_size=2, max_delay_ms=20)
        await asyncio.gather(b.submit(1), b.submit(2))

    with pytest.raises(RuntimeBackendError, match="one result per item"):
        asyncio.run(main())


def test_a_full_queue_refuses_at_once_and_close_drains_then_refuses() -> None:
    async def main() -> tuple[int, int, list[int]]:
        b = AsyncBatcher(lambda items: items, max_batch_size=64, max_delay_ms=200, max_queue_size=5)
        waiting = [asyncio.ensure_future(b.submit(i)) for i in range(5)]
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError, match="max_queue_size"):
            await b.submit(99)
        await b.close(drain=True)  # does not wait out the 200 ms
        with pytest.raises(BatcherClosedError):
            await b.submit(7)
        return b.metrics.rejected, b.metrics.completed, [w.result() for w in waiting]

    rejected, completed, results = asyncio.run(main())
    assert rejected == 1 and completed == 5 and results == [0, 1, 2, 3, 4]
