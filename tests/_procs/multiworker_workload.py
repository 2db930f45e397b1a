"""Durable functions drained by the worker processes of tests/reliability/test_multiworker.py.

Imported by name in every worker (``tests/_procs`` on ``PYTHONPATH``); runs record
``multiworker_workload:<qualname>``. Every step execution appends one line to the file
named by ``$MULTIWORKER_LOG`` (one ``write`` on an ``O_APPEND`` descriptor, then
``fsync``) *before* it returns, so the file is the cross-process record of what really
ran, in the order it ran::

    <time> <pid> <run_id> <step> <token> <epoch>

``token`` is fresh per execution and is also the step's result, beside the pid: the
journal then names the one execution of each step it committed, and the test can tell
it from executions whose completion never committed (a worker killed, or fenced off).
``epoch`` is the claim the execution ran under: a worker fenced off may claim the same
run again later (its new owner died), and that later claim is a new epoch.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from typing import Any

from engine import Queue, current_context, durable, step

STEPS = 3
"""Steps per run of :func:`job`."""

LIMIT = 3
limited_queue = Queue("limited", concurrency=LIMIT)

_fd: int | None = None
_fd_lock = threading.Lock()


def _log(what: str) -> str:
    """Append one line (one write, then fsync) naming this execution; return its token."""
    global _fd
    ctx = current_context()
    epoch = ctx._ex.epoch  # the claim this execution runs under
    token = uuid.uuid4().hex[:12]
    line = f"{time.time():.6f} {os.getpid()} {ctx.run_id} {what} {token} {epoch}\n".encode()
    with _fd_lock:
        if _fd is None:
            _fd = os.open(os.environ["MULTIWORKER_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(_fd, line)  # O_APPEND: one write is one line, never interleaved
    os.fsync(_fd)
    return token


def expected(i: int) -> int:
    """The result of ``job(i)``, computed without the engine."""
    acc = i
    for k in range(1, STEPS + 1):
        acc = _next(acc, k)
    return acc


def _next(acc: int, k: int) -> int:
    return (acc * 31 + k) % 1_000_003


@step
def work(acc: int, k: int) -> dict[str, Any]:
    """The side effect (logged), a little time in flight, and who did it."""
    token = _log(str(k))
    time.sleep(random.uniform(0, 0.004))  # widen the window a kill can land in
    return {"value": _next(acc, k), "pid": os.getpid(), "token": token}


@durable
def job(i: int) -> int:
    """``STEPS`` steps, each feeding the next."""
    acc = i
    for k in range(1, STEPS + 1):
        acc = work(acc, k)["value"]
    return acc


@step
def mark(what: str) -> str:
    """Log ``begin`` or ``end`` of a limited run."""
    return _log(what)


@step
def hold(seconds: float) -> None:
    time.sleep(seconds)


@durable(queue=limited_queue)
def limited(i: int, seconds: float) -> int:
    """A run of the limited queue: ``begin``, some time executing, ``end``."""
    mark("begin")
    hold(seconds)
    mark("end")
    return i


class Blocker:
    """Holds :func:`blocked`'s step until released; counts its executions (one process)."""

    current: Blocker | None = None

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._go = threading.Event()
        self.calls = 0
        Blocker.current = self

    def release(self) -> None:
        self._go.set()


@step
def wait_for_release() -> int:
    blocker = Blocker.current
    assert blocker is not None
    blocker.calls += 1
    blocker.entered.set()
    blocker._go.wait(10)
    return blocker.calls


@durable
def blocked() -> int:
    """One step that waits for the test (in-process only)."""
    return wait_for_release()
