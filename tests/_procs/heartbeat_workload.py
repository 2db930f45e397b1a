"""Durable functions for tests/engine/test_heartbeats.py: a step longer than many lease periods.

Imported by name in every child (``tests/_procs`` on ``PYTHONPATH``), so the runs name
``heartbeat_workload:...`` and any worker can take them over. The long step appends
``begin`` and ``end`` to ``$HEARTBEAT_LOG`` (``O_APPEND``): the cross-process record of
how many times it ran.
"""

from __future__ import annotations

import asyncio
import os
import time

from engine import Context, StartEvent, StopEvent, Workflow, durable, step

LEASE = 1.0
STEP_SECONDS = 4.0  # four lease periods, twelve renewals


def _log(word: str) -> None:
    fd = os.open(os.environ["HEARTBEAT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{word}\n".encode())
    finally:
        os.close(fd)


@step
def long_sync() -> str:
    _log("begin")
    time.sleep(STEP_SECONDS)
    _log("end")
    return "sync"


@durable
def sync_run() -> str:
    return long_sync()


@step
async def long_async() -> str:
    _log("begin")
    await asyncio.sleep(STEP_SECONDS)
    _log("end")
    return "async"


@durable
async def async_run() -> str:
    return await long_async()


class LongFlow(Workflow):
    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        _log("begin")
        await asyncio.to_thread(time.sleep, STEP_SECONDS)
        _log("end")
        return StopEvent(result="workflow")
