"""Dynamic micro-batching: concurrent requests' images go through the network as one batch.

Requests wait in a bounded queue; one worker takes whatever is queued (up to `max_batch`,
waiting at most `max_wait` seconds for company after the first) and runs the batch in a thread,
off the event loop. A batch that fails is run again one request at a time, so one request's
error stays its own. A full queue answers 503 at once instead of piling up.

Example:
    >>> batcher = MicroBatcher(run_batch, max_batch=32)
    >>> answer = await batcher.submit(job)
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

from fastapi.concurrency import run_in_threadpool

from pneumo.service.upload import ApiError

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Collects jobs from concurrent requests into batches for `run`.

    Args:
        run: jobs -> one result per job, in order; called in a worker thread, one batch at a time.
        max_batch: most jobs in one call.
        max_wait: seconds a lone job waits for others before running alone.
        max_queue: jobs waiting beyond this are refused with 503.
        on_batch: called with each batch's size (metrics).
    """

    def __init__(
        self,
        run: Callable[[Sequence[Any]], list[Any]],
        max_batch: int = 32,
        max_wait: float = 0.002,
        max_queue: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run, self.max_batch, self.max_wait, self.max_queue = run, max_batch, max_wait, max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    def _start(self) -> asyncio.Queue:
        """The queue and its worker, started in the running loop on first use (a test client's loop, or uvicorn's)."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._worker = loop.create_task(self._work(self._queue))
        return self._queue

    async def submit(self, job: Any) -> Any:
        """The job's result (or its exception raised here) once its batch has run."""
        queue = self._start()
        future = asyncio.get_running_loop().create_future()
        try:
            queue.put_nowait((job, future))
        except asyncio.QueueFull:
            raise ApiError(503, f"the service is busy ({self.max_queue} requests waiting); try again shortly") from None
        return await future

    async def _work(self, queue: asyncio.Queue) -> None:
        while True:
            batch = [await queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout=left))
                except asyncio.TimeoutError:
                    break
            live = [(job, future) for job, future in batch if not future.done()]  # a client that left is not computed for
            if not live:
                continue
            try:
                await self._run(live)
            except Exception as exc:  # noqa: BLE001 - the worker outlives any batch; its requests get the error
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)

    async def _run(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch))
        try:
            results = self._checked(await run_in_threadpool(self.run, [job for job, _ in batch]), len(batch))
        except Exception:  # noqa: BLE001 - rerun alone, so each request gets its own result or error
            results = []
            for job, _ in batch:
                try:
                    results.append(self._checked(await run_in_threadpool(self.run, [job]), 1)[0])
                except Exception as exc:  # noqa: BLE001 - handed to that request alone
                    results.append(exc)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    @staticmethod
    def _checked(results: Any, n: int) -> list[Any]:
        if not isinstance(results, list) or len(results) != n:
            raise TypeError(f"the batch function returned {type(results).__name__} for {n} jobs, not a list of {n} results")
        return results
