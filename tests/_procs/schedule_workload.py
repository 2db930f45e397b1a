"""The scheduled function of tests/reliability/test_schedule_crash.py, imported by every worker.

Each execution of its step appends one line to ``$SCHEDULE_LOG`` (one write on an
``O_APPEND`` descriptor, then fsync) before it returns::

    <run_id> <epoch> <pid> <token>

``token`` is fresh per execution and is the step's result, so the journal names the
one execution it committed; ``epoch`` is the claim the execution ran under.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

from engine import current_context, durable, step

_fd: int | None = None
_fd_lock = threading.Lock()


@step
def effect(label: str) -> str:
    """The side effect: logged, then a little time in flight for a kill to land in."""
    global _fd
    ctx = current_context()
    token = uuid.uuid4().hex[:12]
    line = f"{ctx.run_id} {ctx._ex.epoch} {os.getpid()} {token}\n".encode()
    with _fd_lock:
        if _fd is None:
            _fd = os.open(os.environ["SCHEDULE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(_fd, line)
    os.fsync(_fd)
    time.sleep(random.uniform(0.1, 0.3))
    return f"{label}:{token}"


@durable(name="schedule_workload:tick")
def tick(label: str) -> str:
    """One scheduled tick: one step."""
    return effect(label)
