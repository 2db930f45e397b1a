"""Processes raced by tests/reliability/test_terminal.py (imported by name, never run).

Runs record ``terminal_race:<qualname>``, so this module must be importable
(``tests/_procs`` on ``sys.path``) in every process that starts, feeds or cancels them.
Each process function drives one batch of runs and writes one JSON line per run to
``out`` (what it saw); a ``multiprocessing`` barrier shared by the two racing
processes lines them up on each run, so their writes land within microseconds.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from engine import (
    Context,
    Engine,
    HumanResponseEvent,
    InputRequiredEvent,
    RunCancelled,
    RunFinished,
    StartEvent,
    StopEvent,
    Workflow,
    durable,
    send_event,
    step,
)


@step
def ping(i: int) -> int:
    """A step of :func:`quick`."""
    return i


@durable
def quick(ctx: Context[Any], k: int) -> int:
    """``k`` steps then a return: cancelled at some point of that, or not at all."""
    for i in range(k):
        ping(i)
    return k * 10


class Ask(Workflow):
    """One step that waits for a human's answer, logs that it ran past the wait, and stops."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="ok?")
        )
        with open(os.environ["RACE_LOG"], "a", encoding="utf-8") as f:
            f.write(f"{ctx.run_id}\n")
            f.flush()
        return StopEvent(result=answer.response)


def _write(out: str, record: dict[str, Any]) -> None:
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _wait_status(eng: Engine, run_id: str, statuses: tuple[str, ...]) -> None:
    deadline = time.monotonic() + 60
    while True:
        run = eng.journal.find_run(run_id)
        if run is not None and run.status in statuses:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id!r} never became {statuses}")
        time.sleep(0.002)


# -- race 1: cancel() against a run completing ---------------------------------------------


def run_quick(db: str, ids: list[str], barrier: Any, out: str) -> None:
    """Start each run, meet the canceller, then record what ``result()`` gave."""
    with Engine(db) as eng:
        for i, run_id in enumerate(ids):
            handle = eng.start(quick, (i % 4,), {}, run_id=run_id)
            barrier.wait()
            try:
                _write(out, {"run_id": run_id, "result": handle.result(timeout=60)})
            except RunCancelled:
                _write(out, {"run_id": run_id, "result": "cancelled"})


def cancel_each(db: str, ids: list[str], barrier: Any, out: str, wait_for: str) -> None:
    """Meet the other process on each run (once it is ``wait_for``), then cancel it."""
    with Engine(db) as eng:
        for run_id in ids:
            if wait_for:
                _wait_status(eng, run_id, (wait_for,))
            barrier.wait()
            _write(out, {"run_id": run_id, "cancel": eng.cancel(run_id)})


# -- race 2: send_event() against cancel() on a waiting workflow ---------------------------


def host_asks(db: str, ids: list[str], log: str) -> None:
    """Start a waiting :class:`Ask` run per id and execute them until each has ended."""
    os.environ["RACE_LOG"] = log
    with Engine(db) as eng:
        handlers = [Ask(timeout=None, engine=eng).run(run_id=run_id) for run_id in ids]
        for handler in handlers:
            handler.wait(timeout=120)


def send_each(db: str, ids: list[str], barrier: Any, out: str) -> None:
    """Meet the canceller on each waiting run, then send it its answer."""
    with Engine(db) as eng:
        for run_id in ids:
            _wait_status(eng, run_id, ("waiting",))
            barrier.wait()
            try:
                key = send_event(run_id, HumanResponseEvent(response="yes"), engine=eng)
                _write(out, {"run_id": run_id, "sent": key})
            except RunFinished:
                _write(out, {"run_id": run_id, "sent": None})
