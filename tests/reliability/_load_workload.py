"""Durable functions for the multi-process load test (imported by name in every worker).

Each step body appends ``"<run_id> <step> <pid>"`` to the side-effect log named by
``RELIABILITY_LOAD_LOG`` (one ``write`` on an ``O_APPEND`` descriptor: atomic between
processes) before it returns, so the test counts how often each body really ran.
Runs whose input says ``slow`` print ``inside <run_id> <pid>`` from their second step
and then sleep, so the parent can stop or kill the worker while a step is in flight.
"""

from __future__ import annotations

import os
import sys
import time

from engine import Context, current_context, durable, step

STEPS = 3


def _log(name: str) -> None:
    line = f"{current_context().run_id} {name} {os.getpid()}\n".encode()
    fd = os.open(os.environ["RELIABILITY_LOAD_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@step
def work(i: int, k: int, slow: float) -> int:
    """One unit of work: logged, then its value returned (and journaled)."""
    _log(f"work#{k}")
    if slow and k == 1:
        print(f"inside {current_context().run_id} {os.getpid()}", flush=True)
        time.sleep(slow)
    return i * 10 + k


@durable
def load_job(ctx: Context, i: int, slow: float = 0.0) -> int:
    """``STEPS`` steps; the state keeps the running total."""
    total = 0
    for k in range(STEPS):
        total += work(i, k, slow)
        ctx.state["total"] = total
    return total


def expected(i: int) -> int:
    """What ``load_job(i)`` returns."""
    return sum(i * 10 + k for k in range(STEPS))


if __name__ == "__main__":  # pragma: no cover - imported, never run
    sys.exit("import this module; do not run it")
