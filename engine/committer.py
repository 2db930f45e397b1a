"""Group commit: async runs in one process share transactions.

While one batch is being written (in a worker thread, so the event loop keeps
running), every step completion submitted meanwhile joins the next batch; each
run is acknowledged only after the COMMIT that holds its entries returned.

A commit that turns out to be alone (nothing else submitted in the same turn of the
loop) is written on the loop's own thread: a single async run then costs what the same
run costs sync, instead of paying two thread wake-ups per step. At "full" that holds the
loop for one fsync, as a sync run does; commits that arrive together still batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TYPE_CHECKING, Any

from journal import AppendRequest, CreateRequest, JournalError

if TYPE_CHECKING:
    from journal import Journal


class GroupCommitter:
    """Batches appends and run creations from many runs on one event loop."""

    def __init__(
        self, journal: Journal, loop: asyncio.AbstractEventLoop, max_batch: int = 2000
    ) -> None:
        self._journal = journal
        self._loop = loop
        self._max_batch = max_batch
        self._queue: list[tuple[AppendRequest | CreateRequest, asyncio.Future[Any]]] = []
        self._draining = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="durable-commit")
        self.batches = 0
        self.requests = 0
        self.inline = 0  # batches of one written on the loop's thread

    async def submit(self, request: AppendRequest | CreateRequest) -> Any:
        """Queue ``request``; once committed return its result (an append's new last seq,
        a creation's ``(run, created)``) or raise its error."""
        if not self._draining and not self._queue:
            return await self._submit_first(request)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.append((request, future))
        if not self._draining:
            self._start_drain()
        return await future

    async def _submit_first(self, request: AppendRequest | CreateRequest) -> Any:
        # Let every task that is ready this turn submit too (they queue behind this
        # slot); if none did, this commit is alone and is written here, on the loop's
        # thread: a hop to the commit thread costs more than a commit at "process".
        slot: tuple[AppendRequest | CreateRequest, Any] = (request, None)
        self._draining = True
        self._queue.append(slot)
        try:
            await asyncio.sleep(0)
        except BaseException:
            # Cancelled before anything was written: ours is dropped, the commits
            # queued behind it still go.
            self._queue.remove(slot)
            self._draining = False
            if self._queue:
                self._start_drain()
            raise
        self._draining = False
        if len(self._queue) == 1:
            self._queue.clear()
            self.batches += 1
            self.requests += 1
            self.inline += 1
            if isinstance(request, AppendRequest):
                # Alone: the journal's own append (its entries-only path for a step),
                # as a sync run commits; it raises what a batch would have returned.
                return self._journal.append(
                    request.run_id,
                    request.entries,
                    expected_seq=None if request.expected_seq < 0 else request.expected_seq,
                    epoch=request.epoch,
                    status=request.status,
                    output=request.output,
                    error=request.error,
                    wake_at=request.wake_at,
                    release=request.release,
                )
            (result,) = self._journal.append_batch([request])
            if isinstance(result, Exception):
                raise result
            return result
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue[0] = (request, future)
        self._start_drain()
        return await future

    def _start_drain(self) -> None:
        self._draining = True
        self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                requests = [r for r, _ in batch]
                try:
                    results = await self._loop.run_in_executor(
                        self._pool, self._journal.append_batch, requests
                    )
                except JournalError as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.batches += 1
                self.requests += len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._draining = False

    def close(self) -> None:
        """Stop the commit thread."""
        self._pool.shutdown(wait=True)
