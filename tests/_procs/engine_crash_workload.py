"""Durable functions crashed by tests/reliability/test_engine_crash.py (imported by name,
never run).

Runs record ``engine_crash_workload:<qualname>``, so this module must be importable
(``tests/_procs`` on ``PYTHONPATH``) in every process that starts or recovers them.
Driven by environment variables read at call time, so a recovering process (which
sets none of the crash ones) runs the same code without crashing:

- ``ENGINE_CRASH_LOG``: every step body appends ``"<run_id> <i> <pid>"`` to this file
  (open, append, flush, fsync) *before* it returns: the cross-process execution count.
- ``ENGINE_CRASH_AT``: ``before:<i>`` | ``inside:<i>`` | ``after:<i>``: SIGKILL this
  process before step ``i`` is called, inside it once its line is logged, or right
  after it returned (its completion committed).
- ``ENGINE_CRASH_ANNOUNCE=1``: each step prints ``logged <i>`` once its line is logged,
  and the body blocks on stdin before returning, so the run cannot finish before the
  parent kills the process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from engine import Context, current_context, durable, step

GATHER = range(10, 15)
"""The async workload runs these steps concurrently in one ``asyncio.gather``."""


def value(i: int) -> int:
    """What step ``i`` returns (the test computes its expected total independently)."""
    return (i * 7919 + 13) % 1009


def _crash_point(phase: str, i: int) -> None:
    if os.environ.get("ENGINE_CRASH_AT") == f"{phase}:{i}":
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _log(i: int) -> None:
    line = f"{current_context().run_id} {i} {os.getpid()}\n"
    with open(os.environ["ENGINE_CRASH_LOG"], "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    if os.environ.get("ENGINE_CRASH_ANNOUNCE") == "1":
        os.write(1, f"logged {i}\n".encode())  # one write(2): lines never interleave


def _hold() -> None:
    if os.environ.get("ENGINE_CRASH_ANNOUNCE") == "1":
        sys.stdin.readline()


def _step_body(i: int) -> dict[str, int]:
    _log(i)
    current_context().state["step_last"] = i  # a mutation journaled with the step
    _crash_point("inside", i)
    return {"i": i, "v": value(i)}


@step
def work(i: int) -> dict[str, int]:
    """One side-effecting unit: logged, then its value returned."""
    return _step_body(i)


@step
async def awork(i: int) -> dict[str, int]:
    """The async twin of :func:`work` (yields to the loop before its side effect)."""
    await asyncio.sleep(0)
    return _step_body(i)


def _account(ctx: Context[Any], total: int, result: dict[str, int], i: int) -> int:
    if result["i"] != i:
        raise AssertionError(f"step {i} returned the result of step {result['i']}")
    total += result["v"]
    ctx.state["total"] = total
    ctx.state["last"] = i
    return total


@durable
def crash_job(ctx: Context[Any], n: int) -> dict[str, int]:
    """``n`` sequential steps; body state mutations after each."""
    total = 0
    for i in range(n):
        _crash_point("before", i)
        result = work(i)
        _crash_point("after", i)
        total = _account(ctx, total, result, i)
    ctx.state["done"] = True
    _hold()
    return {"n": n, "total": total}


@durable
async def async_crash_job(ctx: Context[Any], n: int) -> dict[str, int]:
    """``n`` async steps; those in :data:`GATHER` run together in one ``gather``."""
    total = 0
    i = 0
    while i < n:
        if i == GATHER.start:
            _crash_point("before", i)
            results = await asyncio.gather(*(awork(j) for j in GATHER))
            _crash_point("after", GATHER[-1])
            for j, result in zip(GATHER, results, strict=True):
                total = _account(ctx, total, result, j)
            i = GATHER.stop
            continue
        _crash_point("before", i)
        result = await awork(i)
        _crash_point("after", i)
        total = _account(ctx, total, result, i)
        i += 1
    ctx.state["done"] = True
    _hold()
    return {"n": n, "total": total}
