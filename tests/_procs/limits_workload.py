"""Durable functions for the process tests of tests/engine/test_queue_limits.py.

Imported by name in every child (``tests/_procs`` on ``PYTHONPATH``). Every execution
of :func:`work`'s step appends its run id to ``$LIMITS_LOG`` (one ``write`` on an
``O_APPEND`` descriptor), the cross-process record of what ran.
"""

from __future__ import annotations

import os

from engine import Queue, current_context, durable, step

RATED = Queue("limits-rated", rate_limit=(3, 0.5))


@step
def mark(run_id: str) -> str:
    fd = os.open(os.environ["LIMITS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{run_id}\n".encode())
    finally:
        os.close(fd)
    return run_id


@durable(queue=RATED)
def work(i: int) -> int:
    mark(current_context().run_id)
    return i


@durable(queue="limits-dedup")
def once(i: int) -> int:
    return i
