"""Durable functions for tests/reliability/test_lease_clock.py and
tests/engine/test_recover_queue.py.

Imported by name (``tests/_procs`` on ``PYTHONPATH``). Every step execution appends a
``begin`` line when it starts and an ``end`` line when its side effect is done (one
``write`` on an ``O_APPEND`` descriptor each, then ``fsync``) to ``$CLOCK_LOG``::

    <time> <pid> <run_id> <step> begin|end

A step whose ``end`` line appears twice ran its side effect twice. ``$CLOCK_STEP_SECONDS``
is how long each step takes between its two lines.
"""

from __future__ import annotations

import os
import threading
import time

from engine import Queue, current_context, durable, step

STEPS = 3
one_at_a_time = Queue("one-at-a-time", concurrency=1)

_fd: int | None = None
_fd_lock = threading.Lock()
# The real clock, for the log: a test child may skew time.time (tests/_procs/clock_child.py).
_now = getattr(time, "real_time", time.time)


def _log(run_id: str, what: str) -> None:
    global _fd
    line = f"{_now():.6f} {os.getpid()} {run_id} {what}\n".encode()
    with _fd_lock:
        if _fd is None:
            _fd = os.open(os.environ["CLOCK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(_fd, line)
    os.fsync(_fd)


@step
def effect(k: int) -> int:
    run_id = current_context().run_id
    _log(run_id, f"{k} begin")
    time.sleep(float(os.environ.get("CLOCK_STEP_SECONDS", "0.3")))
    _log(run_id, f"{k} end")
    return k


@durable
def job(i: int) -> int:
    """``STEPS`` steps, each a logged side effect."""
    return i + sum(effect(k) for k in range(1, STEPS + 1))


@durable(queue=one_at_a_time)
def queued(i: int) -> int:
    """A run of a queue that allows one at a time: one logged step."""
    return i + effect(1)
