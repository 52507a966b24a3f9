"""Micro-batching: concurrent jobs share one call, a failing job fails alone, a full queue says so."""

from __future__ import annotations

import asyncio
import time
from typing import Sequence

import pytest

from pneumo.service.batching import MicroBatcher
from pneumo.service.upload import ApiError


def test_concurrent_jobs_run_as_one_batch_and_keep_their_order() -> None:
    sizes: list[int] = []

    def double(jobs: Sequence[int]) -> list[int]:
        time.sleep(0.01)
        return [2 * j for j in jobs]

    async def main() -> list[int]:
        batcher = MicroBatcher(double, max_batch=8, on_batch=sizes.append)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(20))))

    assert asyncio.run(main()) == [2 * i for i in range(20)]
    assert sizes[0] == 8 and sum(sizes) == 20 and max(sizes) <= 8 and len(sizes) <= 4


def test_one_bad_job_fails_alone() -> None:
    calls: list[int] = []

    def picky(jobs: Sequence[int]) -> list[int]:
        calls.append(len(jobs))
        if 3 in jobs:
            raise ValueError("three is bad")
        return list(jobs)

    async def main() -> list[object]:
        batcher = MicroBatcher(picky, max_batch=8)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True))

    results = asyncio.run(main())
    assert results[:3] == [0, 1, 2] and results[4:] == [4, 5]
    assert isinstance(results[3], ValueError) and str(results[3]) == "three is bad"
    assert calls[0] == 6 and calls[1:] == [1] * 6  # the batch failed, then each job ran alone


def test_a_full_queue_is_503_at_once() -> None:
    async def main() -> list[object]:
        batcher = MicroBatcher(lambda jobs: (time.sleep(0.05), list(jobs))[1], max_batch=1, max_queue=2)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True))

    results = asyncio.run(main())
    assert results[:2] == [0, 1]  # queued before the worker first ran
    assert all(isinstance(r, ApiError) and r.status == 503 and "busy" in r.message for r in results[2:])


def test_a_lone_job_waits_little() -> None:
    async def main() -> float:
        batcher = MicroBatcher(list, max_wait=0.002)
        await batcher.submit(0)  # the worker starts
        start = time.perf_counter()
        await batcher.submit(1)
        return time.perf_counter() - start

    assert asyncio.run(main()) < 0.5


def test_a_broken_batch_function_fails_its_requests_not_the_worker() -> None:
    async def main() -> None:
        batcher = MicroBatcher(lambda jobs: None, max_batch=1)
        for _ in range(2):  # the worker survives the first
            with pytest.raises(TypeError, match="not a list"):
                await batcher.submit(0)

    asyncio.run(main())
