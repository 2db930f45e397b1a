"""Workflows crashed by tests/reliability/test_workflow_crash.py (imported by name, never run).

Runs record ``workflow_workload:<qualname>``, so this module must be importable
(``tests/_procs`` on ``PYTHONPATH``) in every process that starts, feeds or recovers
them. Driven by environment variables read at call time, so a recovering process
(which sets none of the crash ones) runs the same code without crashing:

- ``WF_LOG``: every step body appends ``"<run_id> <step> <part> <pid>"`` to this file
  (open, append, flush, fsync) before it returns: the cross-process execution count.
- ``WF_CRASH_AT``: SIGKILL this process at ``inside:split`` (split's side effect
  logged), ``inside:work:<i>`` (part i's side effect logged and its store write made,
  before it returns) or ``inside:join:<k>`` (in the join that collected the k-th part).
- ``WF_GATE=<k>``: the ``work`` steps of parts ``i >= k`` never get past their start
  (before any side effect): only parts ``< k`` can complete.
- ``WF_ANNOUNCE=1``: each step prints ``logged <step> <part>`` once its line is
  logged, and the final join never returns, so the run cannot end before the kill.
- ``WF_GATE_PREPARE=1``: the first step of :class:`Approval` waits for
  :data:`PREPARE_GATE`, so its starter can observe the run as ``running``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from typing import Any

from engine import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    default_engine,
    step,
)

STARTED = threading.Event()
"""Set by the child once it announced "started": a crash point waits for it, so a step
that runs at once cannot kill the process before the test knows the run exists."""

PREPARE_GATE = threading.Event()
"""Set by the starting process once it has read the run's first status."""

LOOP_STATS: dict[str, int] = {}
"""What :class:`Loop` saw in this process: ``steps`` run, ``read_at_first`` (entries the
journal had read when the first step of this process started)."""


def value(i: int) -> int:
    """What part ``i`` contributes (the test restates it as an independent oracle)."""
    return (i * 7919 + 13) % 1009


def _log(ctx: Context[Any], step_name: str, part: int) -> None:
    line = f"{ctx.run_id} {step_name} {part} {os.getpid()}\n"
    with open(os.environ["WF_LOG"], "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    if os.environ.get("WF_ANNOUNCE") == "1":
        # After "started": the test reads up to "started" first, and a step that logged
        # before it would be skipped there and never counted.
        STARTED.wait(10)
        # One write(2) per line: steps on other threads and the child's own lines
        # ("started") must not interleave inside a line (print writes text and "\n"
        # separately).
        os.write(1, f"logged {step_name} {part}\n".encode())


def _crash_point(point: str) -> None:
    if os.environ.get("WF_CRASH_AT") == point:
        STARTED.wait(10)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()  # until the process is killed


class Part(Event):
    i: int


class Done(Event):
    i: int
    v: int


class FanJob(Workflow):
    """start -> split sends ``n`` Parts -> work (3 workers) -> join collects all Dones."""

    @step
    async def split(self, ctx: Context[Any], ev: StartEvent) -> Part | None:
        _log(ctx, "split", -1)
        await ctx.store.set("n", ev.n)
        _crash_point("inside:split")
        for i in range(ev.n):
            ctx.send_event(Part(i=i))
        return None

    @step(num_workers=3)
    async def work(self, ctx: Context[Any], ev: Part) -> Done:
        gate = os.environ.get("WF_GATE")
        if gate is not None and ev.i >= int(gate):
            await _forever()
        await asyncio.sleep(0.002 * (ev.i % 3))  # interleave the three workers
        _log(ctx, "work", ev.i)
        await ctx.store.set(f"part{ev.i}", value(ev.i))
        await asyncio.sleep(0.001)  # a window between the side effect and the commit
        _crash_point(f"inside:work:{ev.i}")
        return Done(i=ev.i, v=value(ev.i))

    @step
    async def join(self, ctx: Context[Any], ev: Done) -> StopEvent | None:
        _log(ctx, "join", ev.i)
        n = await ctx.store.get("n")
        joined = await ctx.store.get("joined", 0) + 1
        await ctx.store.set("joined", joined)
        got = ctx.collect_events(ev, [Done] * n)
        _crash_point(f"inside:join:{joined}")
        if got is None:
            return None
        if os.environ.get("WF_ANNOUNCE") == "1":
            await _forever()
        return StopEvent(
            result={"n": n, "parts": sorted(e.i for e in got), "total": sum(e.v for e in got)}
        )


class Ask(Event):
    item: str


class Approved(Event):
    item: str
    answer: str


class Approval(Workflow):
    """prepare -> ask (waits for a HumanResponseEvent) -> finish."""

    @step
    async def prepare(self, ctx: Context[Any], ev: StartEvent) -> Ask:
        if os.environ.get("WF_GATE_PREPARE") == "1":
            await asyncio.to_thread(PREPARE_GATE.wait, 30)
        _log(ctx, "prepare", 0)
        await ctx.store.set("item", ev.item)
        return Ask(item=ev.item)

    @step
    async def ask(self, ctx: Context[Any], ev: Ask) -> Approved:
        _log(ctx, "ask-begin", 0)  # runs again when the run is resumed: before the wait
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="approve?"), timeout=120
        )
        _log(ctx, "ask-after", 0)  # after the wait: once
        await ctx.store.set("answer", answer.response)
        return Approved(item=ev.item, answer=answer.response)

    @step
    async def finish(self, ctx: Context[Any], ev: Approved) -> StopEvent:
        _log(ctx, "finish", 0)
        return StopEvent(result=f"{ev.item} {ev.answer}")


class Tick(Event):
    i: int


class Loop(Workflow):
    """A step that returns the next Tick until ``n``: one step, four entries per tick."""

    @step
    async def begin(self, ctx: Context[Any], ev: StartEvent) -> Tick:
        await ctx.store.set("n", ev.n)
        await ctx.store.set("acc", 0)
        return Tick(i=0)

    @step
    async def count(self, ctx: Context[Any], ev: Tick) -> Tick | StopEvent:
        if not LOOP_STATS:
            LOOP_STATS["read_at_first"] = default_engine().journal.entries_read
        LOOP_STATS["steps"] = LOOP_STATS.get("steps", 0) + 1
        acc = await ctx.store.get("acc") + value(ev.i)
        await ctx.store.set("acc", acc)
        n = await ctx.store.get("n")
        if ev.i + 1 >= n:
            if os.environ.get("WF_ANNOUNCE") == "1":
                await _forever()
            return StopEvent(result={"n": n, "acc": acc})
        return Tick(i=ev.i + 1)


class Beat(Event):
    i: int


class Paced(Workflow):
    """begin -> beat 0 .. n-1, each sleeping ``pace`` seconds then logging ``beat <i>``:
    a run whose living time is about ``n * pace``. ``WF_CRASH_AT=beat:<k>`` SIGKILLs
    the process as beat ``k`` starts (beats before it committed, nothing of it done)."""

    @step
    async def begin(self, ctx: Context[Any], ev: StartEvent) -> Beat:
        await ctx.store.set("n", ev.n)
        await ctx.store.set("pace", ev.pace)
        return Beat(i=0)

    @step
    async def beat(self, ctx: Context[Any], ev: Beat) -> Beat | StopEvent:
        _crash_point(f"beat:{ev.i}")
        await asyncio.sleep(await ctx.store.get("pace"))
        _log(ctx, "beat", ev.i)
        n = await ctx.store.get("n")
        if ev.i + 1 >= n:
            return StopEvent(result=n)
        return Beat(i=ev.i + 1)
