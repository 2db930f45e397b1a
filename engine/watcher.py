"""One watcher per event loop for every workflow run held on it.

A run held by this process learns of what other processes wrote to it (a sent event, a
cancel, a takeover) by looking at the journal. One task does that for all the runs on a
loop, and only reads their rows when the journal changed (SQLite's data_version): a
process holding thousands of parked runs costs next to nothing while nothing happens.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from journal import Journal, Run

POLL_SECONDS = 0.2


class Flag(threading.Event):
    """A ``threading.Event`` that also calls ``on_set`` (from the setting thread): a flag
    raised elsewhere is looked at now, without the watcher polling every run for it."""

    def __init__(self) -> None:
        super().__init__()
        self.on_set: Callable[[], None] | None = None

    def set(self) -> None:
        super().set()
        if self.on_set is not None:
            self.on_set()


class Watched(Protocol):
    run_id: str

    def watched(self, run: Run | None) -> None:
        """Look at local flags; with ``run`` (its row, read now), at what others wrote."""


class RunWatcher:
    """Polls the journal for the runs of one event loop, all in one read."""

    def __init__(self, journal: Journal, loop: asyncio.AbstractEventLoop) -> None:
        self._journal = journal
        self._loop = loop
        self._runs: dict[str, Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self.reads = 0  # row reads done (tests and benchmarks)

    def add(self, run: Watched) -> None:
        self._runs[run.run_id] = run
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._watch())

    def discard(self, run: Watched) -> None:
        if self._runs.get(run.run_id) is run:
            del self._runs[run.run_id]
        if not self._runs and self._task is not None:
            self._task.cancel()  # nothing to watch: no task left pending when the loop ends
            self._task = None

    async def _watch(self) -> None:
        version: int | None = None
        fresh = True
        while self._runs:
            await asyncio.sleep(POLL_SECONDS)
            runs = list(self._runs.values())
            try:
                now = self._journal.data_version()
                changed = fresh or now is None or now != version
                heads = self._journal.get_runs(r.run_id for r in runs) if changed else {}
            except Exception:  # unreachable now: look again next time
                fresh = True
                continue
            version, fresh = now, False
            if not changed:
                continue  # nothing to look at: local flags call their run themselves
            self.reads += 1
            for run in runs:
                run.watched(heads.get(run.run_id))
