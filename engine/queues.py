"""The durable queue: runs put in ``pending`` for any worker to pick up.

``fn.enqueue(...)`` writes the run and returns at once; ``durable worker`` processes
claim queued runs highest priority first, oldest first, never more of one queue at
once than its :class:`Queue` allows across every worker sharing the journal.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from journal import EntryKind, Run
from journal import payloads as P

from .errors import DedupKeyConflict
from .runids import check_same_start

if TYPE_CHECKING:
    from .durable import DurableFunction
    from .runtime import Engine, RunHandle

__all__ = [
    "DEDUP_TAG",
    "DEFAULT_QUEUE",
    "WAKE_CHANNEL",
    "Queue",
    "enqueue",
    "queue_limits",
    "queue_rates",
]

DEFAULT_QUEUE = "default"
WAKE_CHANNEL = "wake"
"""Workers listen here: a run became claimable (enqueued, sent an event, released)."""

_QUEUES: dict[str, Queue] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Queue:
    """A named queue and its limits, held across every worker sharing the journal: at
    most ``concurrency`` of its runs execute at once (``None``: no limit), and at most
    ``rate_limit[0]`` of its runs start in any ``rate_limit[1]`` seconds (``None``: no
    limit). Declare it where the code that uses it lives, so every worker importing
    that code knows the limits."""

    name: str
    concurrency: int | None = None
    rate_limit: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a queue needs a non-empty name, got {self.name!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"queue {self.name!r}: concurrency must be >= 1 or None")
        if self.rate_limit is not None:
            object.__setattr__(self, "rate_limit", _rate(self.name, self.rate_limit))
        with _LOCK:
            known = _QUEUES.get(self.name)
            if known is not None and (known.concurrency, known.rate_limit) != (
                self.concurrency,
                self.rate_limit,
            ):
                raise ValueError(
                    f"queue {self.name!r} is declared twice, with different limits:"
                    f" concurrency {known.concurrency} and {self.concurrency},"
                    f" rate_limit {known.rate_limit} and {self.rate_limit}"
                )
            _QUEUES[self.name] = self


def _rate(name: str, rate: Any) -> tuple[int, float]:
    try:
        n, seconds = rate
    except (TypeError, ValueError):
        raise ValueError(
            f"queue {name!r}: rate_limit must be (runs, per_seconds), got {rate!r}"
        ) from None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"queue {name!r}: rate_limit runs must be an int >= 1, got {n!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(
            f"queue {name!r}: rate_limit seconds must be a number > 0, got {seconds!r}"
        )
    if seconds == float("inf"):
        raise ValueError(f"queue {name!r}: rate_limit seconds must be finite")
    return n, float(seconds)


def queue_limits() -> dict[str, int]:
    """The concurrency limit of every declared queue that has one."""
    with _LOCK:
        return {q.name: q.concurrency for q in _QUEUES.values() if q.concurrency is not None}


def queue_rates() -> dict[str, tuple[int, float]]:
    """The rate limit, ``(runs, per_seconds)``, of every declared queue that has one."""
    with _LOCK:
        return {q.name: q.rate_limit for q in _QUEUES.values() if q.rate_limit is not None}


def queue_name(queue: str | Queue | None) -> str | None:
    """The name of a queue given by name or object."""
    return queue.name if isinstance(queue, Queue) else queue


DEDUP_TAG = "durable.dedup"
"""The tag that carries a run's deduplication key (``enqueue(..., dedup_key=...)``)."""
_MAX_DEDUP_KEY = 1000


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
    dedup_key: str | None = None,
) -> RunHandle:
    """Write a pending run of ``fn`` for a worker to execute; return its handle at once.

    An existing ``run_id`` returns that run (nothing is queued twice) if it was
    enqueued with the same input, else raises :class:`RunIdConflict`. With
    ``dedup_key``, an unfinished run of ``fn`` holding that key in the queue is
    returned instead (:class:`DedupKeyConflict` if it is another function's)."""
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, got {priority!r}")
    name = queue or DEFAULT_QUEUE
    if dedup_key is None:
        return _enqueue(
            engine, fn, args, kwargs, run_id=run_id, name=name, priority=priority, tags=tags
        )
    if run_id is not None:
        raise TypeError("give a run_id or a dedup_key, not both: a run id is already a key")
    if not isinstance(dedup_key, str) or not 0 < len(dedup_key) <= _MAX_DEDUP_KEY:
        raise ValueError(f"dedup_key must be a str of 1 to {_MAX_DEDUP_KEY} characters")
    return _dedup_enqueue(
        engine, fn, args, kwargs, queue=name, priority=priority, tags=tags, key=dedup_key
    )


def _enqueue(
    engine: Engine,
    fn: DurableFunction[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    run_id: str | None,
    name: str,
    priority: int,
    tags: Mapping[str, str] | None,
    dedup: bool = False,
) -> RunHandle:
    from .runtime import RunHandle  # noqa: PLC0415 - runtime imports this module

    journal = engine.journal
    codec = fn._codec or journal.codec
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
        entries=[
            journal.entry(EntryKind.RUN_STARTED, P.run_started(None, queue=name), codec=codec)
        ],
        snapshot_every=fn.snapshot_every,
        queue=name,
        priority=priority,
        tags=tags,
        meta=meta,
    )
    run, created = journal.create(request)
    if not created:
        if dedup:
            raise _Taken(run)
        check_same_start(journal, run, request.run, fn.fn, skip_ctx=fn.takes_ctx)
    else:
        journal.notify(WAKE_CHANNEL, run.run_id)
    return RunHandle(engine, run.run_id)


class _Taken(Exception):
    def __init__(self, run: Run) -> None:
        self.run = run


def _dedup_enqueue(
    engine: Engine,
    fn: DurableFunction[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    queue: str,
    priority: int,
    tags: Mapping[str, str] | None,
    key: str,
) -> RunHandle:
    # The key's runs have ids of their own, one per generation: the first enqueue
    # creates generation 1, and generation g + 1 is only ever made after generation g
    # was seen finished (a terminal status). So at most one generation is unfinished,
    # and racing enqueuers, whatever process they are in, meet on one run id: the
    # journal's run_id key lets one create it and hands the others that run.
    from .runtime import RunHandle  # noqa: PLC0415 - runtime imports this module

    journal = engine.journal
    digest = hashlib.sha256(f"{queue}\0{key}".encode()).hexdigest()[:32]
    prefix = f"dedup-{digest}-"
    # Start at the newest generation known (a few of the newest runs, so that clock
    # skew between the processes that created them does not matter); retention only
    # removes old, finished generations, never the newest.
    recent = journal.list_runs(tags={DEDUP_TAG: key}, newest_first=True, limit=20)
    tails = [r.run_id[len(prefix) :] for r in recent if r.run_id.startswith(prefix)]
    gens = [int(t) for t in tails if t.isdigit()]
    gen = max(gens, default=1)
    tagged = {**(tags or {}), DEDUP_TAG: key}
    while True:
        try:
            return _enqueue(
                engine,
                fn,
                args,
                kwargs,
                run_id=f"{prefix}{gen}",
                name=queue,
                priority=priority,
                tags=tagged,
                dedup=True,
            )
        except _Taken as taken:
            run = taken.run
        if not run.finished:
            if run.name != fn.name:
                raise DedupKeyConflict(
                    f"dedup key {key!r} of queue {queue!r} is held by run {run.run_id!r}"
                    f" of {run.name!r}, not {fn.name!r}; nothing was queued",
                    run_id=run.run_id,
                    key=key,
                    queue=queue,
                    expected=fn.name,
                    found=run.name,
                    differences=["function"],
                )
            return RunHandle(engine, run.run_id)
        gen += 1
