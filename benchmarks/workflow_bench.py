"""Workflow recovery: a crashed looping workflow resumes from its last snapshot.

``recovery.workflow``
    A workflow whose step returns the next ``Tick`` until N is killed (``os._exit``,
    no cleanup) in its N-th step; a fresh process then recovers it and runs the few
    steps left. Unlike a ``@durable`` function, nothing finished is re-executed or
    replayed: recovery reads the newest snapshot and the entries after it, so its
    cost should not grow with N (target: within 2x from 1,000 to 100,000 steps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from engine import Context, Event, StartEvent, StopEvent, Workflow, step

from .engine_bench import _child_env, _extra
from .harness import Contender, Derived, Sample, Scenario

TAIL = 10  # steps left to run after recovery
_CRASH_ENV = "DURABLE_BENCH_WF_CRASH_AT"


class Tick(Event):
    i: int


class Looping(Workflow, name="benchmarks:looping-workflow"):
    """Counts to ``n`` one step at a time, keeping the count in the store."""

    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Tick:
        await ctx.store.set("n", ev.n)
        return Tick(i=0)

    @step
    async def count(self, ctx: Context, ev: Tick) -> Tick | StopEvent:
        if os.environ.get(_CRASH_ENV) == str(ev.i):
            os._exit(137)  # the process dies mid-step: nothing of this step is recorded
        await ctx.store.set("i", ev.i + 1)
        if ev.i + 1 >= await ctx.store.get("n"):
            return StopEvent(result=ev.i + 1)
        return Tick(i=ev.i + 1)


_CRASH_CODE = """
import sys
from engine import Engine
from journal import SnapshotPolicy
from benchmarks.workflow_bench import Looping
eng = Engine(sys.argv[1], durability="process", lease_seconds=0,
             snapshots=SnapshotPolicy(every=200))
Looping(timeout=None, engine=eng).run(n=int(sys.argv[2]), run_id="loop").result()
raise SystemExit("the crash did not happen")
"""

_RECOVER_CODE = """
import json, sys, time
t0 = time.perf_counter()
from engine import Engine
import benchmarks.workflow_bench
eng = Engine(sys.argv[1], durability="full")
t1 = time.perf_counter()
report = eng.recover(wait=True)
t2 = time.perf_counter()
assert report.run_ids == ["loop"] and not report.errors, (report.run_ids, report.errors)
assert report.handles[0].result() == int(sys.argv[2])
print(json.dumps({"startup_s": t1 - t0, "recover_s": t2 - t1,
                  "entries_read": eng.journal.entries_read}))
eng.close()
"""


def recovery(workdir: Path, *, steps: int) -> Sample:
    """Kill a looping workflow in its ``steps``-th step; time a fresh process finishing it."""
    db = str(workdir / "durable.db")
    total = steps + TAIL
    start = time.perf_counter()
    crash = subprocess.run(
        [sys.executable, "-c", _CRASH_CODE, db, str(total)],
        cwd=workdir, env=_child_env(**{_CRASH_ENV: str(steps)}),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    build = time.perf_counter() - start
    if crash.returncode != 137:
        raise RuntimeError(f"crash child exited {crash.returncode}:\n{crash.stderr}")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RECOVER_CODE, db, str(total)],
        cwd=workdir, env=_child_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"recovery child exited {proc.returncode}:\n{proc.stderr}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return Sample(elapsed, 1, {**info, "steps": steps, "build_s": build})


def scenarios(quick: bool) -> list[Scenario]:
    """The workflow recovery scenario (1k/5k steps in quick mode, 1k/10k/100k in full)."""
    sizes = (1000, 5000) if quick else (1000, 10_000, 100_000)
    names = tuple(f"{n // 1000}k" for n in sizes)
    return [
        Scenario(
            name="recovery.workflow",
            description=(
                "fresh process finishing a looping workflow killed after N steps "
                "(snapshot every 200): " + " vs ".join(f"{n:,}" for n in sizes)
            ),
            unit="recoveries",
            contenders=tuple(
                Contender(name, f"{__name__}:recovery", {"steps": n})
                for name, n in zip(names, sizes, strict=True)
            ),
            reference=names[0],
            ratio="cost",
            target=("<=", 2.0),
            derived=tuple(
                Derived(f"entries read ({name})", _extra(name, "entries_read")) for name in names
            ),
            max_rounds=2 if quick else 3,
        )
    ]
