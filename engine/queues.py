"""The durable queue: runs put in ``pending`` for any worker to pick up.

``fn.enqueue(...)`` writes the run and returns at once; ``durable worker`` processes
claim queued runs highest priority first, oldest first, never more of one queue at
once than its :class:`Queue` allows across every worker sharing the journal.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from journal import EntryKind

from .runids import check_same_start

if TYPE_CHECKING:
    from .durable import DurableFunction
    from .runtime import Engine, RunHandle

__all__ = ["DEFAULT_QUEUE", "WAKE_CHANNEL", "Queue", "enqueue", "queue_limits"]

DEFAULT_QUEUE = "default"
WAKE_CHANNEL = "wake"
"""Workers listen here: a run became claimable (enqueued, sent an event, released)."""

_QUEUES: dict[str, Queue] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Queue:
    """A named queue and its limit: at most ``concurrency`` of its runs execute at once,
    across every worker (``None``: no limit). Declare it where the code that uses it
    lives, so every worker importing that code knows the limit."""

    name: str
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a queue needs a non-empty name, got {self.name!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"queue {self.name!r}: concurrency must be >= 1 or None")
        with _LOCK:
            known = _QUEUES.get(self.name)
            if known is not None and known.concurrency != self.concurrency:
                raise ValueError(
                    f"queue {self.name!r} is declared twice, with concurrency "
                    f"{known.concurrency} and {self.concurrency}"
                )
            _QUEUES[self.name] = self


def queue_limits() -> dict[str, int]:
    """The concurrency limit of every declared queue that has one."""
    with _LOCK:
        return {q.name: q.concurrency for q in _QUEUES.values() if q.concurrency is not None}


def queue_name(queue: str | Queue | None) -> str | None:
    """The name of a queue given by name or object."""
    return queue.name if isinstance(queue, Queue) else queue


def enqueue(
    engine: Engine,
    fn: DurableFunction[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    run_id: str | None,
    queue: str | None,
    priority: int,
    tags: Mapping[str, str] | None = None,
) -> RunHandle:
    """Write a pending run of ``fn`` for a worker to execute; return its handle at once.

    An existing ``run_id`` returns that run (nothing is queued twice) if it was
    enqueued with the same input, else raises :class:`RunIdConflict`."""
    from .runtime import RunHandle  # noqa: PLC0415 - runtime imports this module

    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, got {priority!r}")
    journal = engine.journal
    codec = fn._codec or journal.codec
    name = queue or DEFAULT_QUEUE
    meta = None
    if engine.telemetry is not None:  # OpenTelemetry: the worker's run span joins this trace
        meta = engine.telemetry._creation_meta("enqueue", fn.name, run_id, name)
    request = journal.new_run(
        run_id,
        name=fn.name,
        kind="function",
        input={"args": list(args), "kwargs": kwargs},
        codec=codec,
        status="pending",
        entries=[journal.entry(EntryKind.RUN_STARTED, {"owner": None, "queue": name}, codec=codec)],
        snapshot_every=fn.snapshot_every,
        queue=name,
        priority=priority,
        tags=tags,
        meta=meta,
    )
    run, created = journal.create(request)
    if not created:
        check_same_start(journal, run, request.run, fn.fn, skip_ctx=fn.takes_ctx)
    else:
        journal.notify(WAKE_CHANNEL, run.run_id)
    return RunHandle(engine, run.run_id)
