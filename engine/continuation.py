"""``ctx.continue_as_new``: a run hands over to its continuation in one commit.

The run being continued ends ``completed``; its ``run.completed`` entry names the
continuation (``{"continued_as": id}``) and its output stays empty. The continuation
is a new run of the same function with the new arguments, created in the same
transaction, held by the same engine, and recorded with its lineage in the run's
``meta`` (``continued_from``, ``continued_root``, ``generation``): its id is
``<first run's id>~<generation>``. ``result()`` on any run of a chain follows it to
the last run and returns (or raises) that one's outcome.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import TYPE_CHECKING, Any

from journal import ConflictError, EntryKind, Journal, JournalError, Run
from journal import payloads as P

from .execution import ContinueAsNew, RunExecution

if TYPE_CHECKING:
    from .durable import DurableFunction
    from .runtime import Engine

K = EntryKind

CONTINUED_FROM = "continued_from"
CONTINUED_ROOT = "continued_root"
GENERATION = "generation"


class Continued:
    """What an execution returns instead of a result when its run continued as new:
    the outcome arrives on the run's future once the chain ends."""

    __slots__ = ("future",)

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self.future = future


def continuation_id(run: Run) -> str:
    """The id the continuation of ``run`` takes: the same for every attempt at it."""
    root = run.meta.get(CONTINUED_ROOT, run.run_id)
    return f"{root}~{int(run.meta.get(GENERATION, 0)) + 1}"


def hand_over(
    engine: Engine,
    fn: DurableFunction[Any, Any],
    ex: RunExecution,
    cont: ContinueAsNew,
    future: concurrent.futures.Future[Any],
) -> Continued:
    """Commit the end of ``ex``'s run and the creation of its continuation at once,
    then execute the continuation here; ``future`` gets the chain's outcome."""
    journal = engine.journal
    old = ex.run
    new_id = continuation_id(old)
    meta = {
        CONTINUED_FROM: old.run_id,
        CONTINUED_ROOT: old.meta.get(CONTINUED_ROOT, old.run_id),
        GENERATION: int(old.meta.get(GENERATION, 0)) + 1,
    }
    if engine.telemetry is not None:  # OpenTelemetry: the continuation joins this run's trace
        meta.update(engine.telemetry._current_meta())
    request = journal.new_run(
        new_id,
        name=old.name,
        kind=old.kind,
        input={"args": list(cont.args_), "kwargs": cont.kwargs},
        codec=ex.codec,
        status="running",
        entries=[journal.entry(K.RUN_STARTED, P.run_started(engine.owner), codec=ex.codec)],
        owner=engine.owner,
        lease_seconds=engine.lease_seconds,
        parent_run_id=old.parent_run_id,
        snapshot_every=fn.snapshot_every,
        meta=meta,
        queue=old.queue,
        priority=old.priority,
        tags=old.tags or None,  # a chain is found by the tags its first run was given
    )
    entries = ex.continue_entries(new_id)

    def commit() -> Run:
        try:
            run = journal.continue_run(
                old.run_id,
                entries,
                expected_seq=ex.seq,
                epoch=ex.epoch,
                continuation=request,
            )
        except ConflictError as exc:
            raise ex.conflict(exc) from exc
        ex.seq += len(entries)
        return run

    run, new_future = engine.hold_new(commit)
    new_future.add_done_callback(lambda done: _pass_on(done, future))
    engine.launch(fn, run, new_future, fresh=True)
    return Continued(future)


def _pass_on(done: concurrent.futures.Future[Any], future: concurrent.futures.Future[Any]) -> None:
    if future.done():
        return
    exc = done.exception()
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(done.result())


def continued_as(journal: Journal, run: Run) -> str | None:
    """The id of the run ``run`` continued as, if it did."""
    if run.status != "completed" or run.output is not None:
        return None  # a completed run's output is set unless it continued
    # The continuation's id follows from the run's; its sealed meta names the run it
    # continues. Found this way, the link survives compaction of the run's entries.
    nxt = journal.find_run(continuation_id(run))
    if nxt is not None and nxt.meta.get(CONTINUED_FROM) == run.run_id:
        return nxt.run_id
    try:
        last = journal.last_entry(run.run_id)
        if last is None or last.kind != K.RUN_COMPLETED or last.payload is None:
            return None
        value = journal.decode_entry(last, strict=False)
    except JournalError:
        return None  # unreadable here (a compacted or signed entry): no lineage shown
    return P.read_continued_as(value)


def continued_from(run: Run) -> str | None:
    """The id of the run ``run`` continues, if it is a continuation."""
    prev = run.meta.get(CONTINUED_FROM)
    return prev if isinstance(prev, str) else None


def last_of_chain(engine: Engine, run: Run, timeout: float | None = None) -> Run:
    """Follow ``run``'s continuations to the last one, waiting for each to end."""
    from .runtime import RunHandle  # noqa: PLC0415 - runtime imports this module

    deadline = None if timeout is None else time.monotonic() + timeout
    while (nxt := continued_as(engine.journal, run)) is not None:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        run = RunHandle(engine, nxt, engine.holding(nxt)).wait(left)
    return run
