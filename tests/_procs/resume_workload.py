"""A durable function and a Workflow that fail at one step, then are resumed
(tests/engine/test_resume.py).

Imported by name (``tests/_procs`` on ``PYTHONPATH``) in every process that starts,
resumes or recovers it. Driven by environment variables read at call time:

- ``RESUME_LOG``: every step body appends ``"<run_id> <i> <pid>"`` to this file (fsynced)
  before it returns: the cross-process execution count.
- ``RESUME_BROKEN``: while this file exists, step ``FLAKY`` raises (an outage).
- ``RESUME_CRASH_AT``: ``after:<i>``: SIGKILL this process right after step ``i``
  returned to the body (its completion committed); ``inside:<i>``: once its line is logged;
  ``before:<i>`` (the workflow): as step ``i`` begins, before its side effect (so step
  ``i - 1`` has committed: its commit is what delivered step ``i``'s event).
- ``RESUME_STEP_SLEEP``: seconds each step sleeps after logging (random kill windows).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from engine import Context, Event, StartEvent, StopEvent, Workflow, current_context, durable, step

FLAKY = 4
"""The step that fails while ``RESUME_BROKEN`` exists."""


def value(i: int) -> int:
    """What step ``i`` returns."""
    return (i * 7919 + 13) % 1009


def _crash_point(phase: str, i: int) -> None:
    if os.environ.get("RESUME_CRASH_AT") == f"{phase}:{i}":
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _unit(run_id: str, i: int) -> int:
    """One side-effecting unit: logged, then (for ``FLAKY`` during an outage) raises."""
    with open(os.environ["RESUME_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{run_id} {i} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())
    _crash_point("inside", i)
    if i == FLAKY and os.path.exists(os.environ.get("RESUME_BROKEN", "")):
        raise RuntimeError("payment provider unavailable")
    time.sleep(float(os.environ.get("RESUME_STEP_SLEEP", "0")))
    return value(i)


@step(retries=1, backoff=0.01)
def work(i: int) -> int:
    """One unit of :func:`pipeline`."""
    return _unit(current_context().run_id, i)


@durable
def pipeline(ctx: Context[Any], n: int) -> int:
    """``n`` steps; each result goes into the state, their sum is returned."""
    total = 0
    for i in range(n):
        v = work(i)
        ctx.state[f"s{i}"] = v
        total += v
        _crash_point("after", i)
    ctx.state["total"] = total
    return total


class Part(Event):
    """Step ``i`` of ``n`` is next; ``total`` is the sum so far."""

    i: int
    n: int
    total: int


class Chain(Workflow):
    """The workflow counterpart of :func:`pipeline`: one ``work`` step per part, each
    delivered by the previous one's commit; the store gets ``s<i>`` and ``total``."""

    @step
    async def begin(self, ev: StartEvent) -> Part:
        return Part(i=0, n=int(ev.n), total=0)

    @step(retries=1, backoff=0.01)
    def work(self, ctx: Context[Any], ev: Part) -> Part | StopEvent:
        _crash_point("before", ev.i)
        v = _unit(ctx.run_id, ev.i)
        ctx.store.set_sync(f"s{ev.i}", v)
        total = ev.total + v
        if ev.i + 1 < ev.n:
            return Part(i=ev.i + 1, n=ev.n, total=total)
        ctx.store.set_sync("total", total)
        return StopEvent(result=total)
