"""Workflow runs: recovery from the last snapshot, and the cost of parked runs.

``recovery.workflow``
    A workflow whose step returns the next ``Tick`` until N is killed (``os._exit``,
    no cleanup) in its N-th step; a fresh process then recovers it and runs the few
    steps left. Unlike a ``@durable`` function, nothing finished is re-executed or
    replayed: recovery reads the newest snapshot and the entries after it, so its
    cost should not grow with N (target: within 2x from 1,000 to 100,000 steps).

``workflow.parked``
    N runs of one process parked on ``wait_for_event``: the share of a core the process
    uses while nothing happens (target: under 5% for 10,000 runs), and how many commits
    their lease renewals take (one per heartbeat for all of them).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from engine import Context, Engine, Event, StartEvent, StopEvent, Workflow, step

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


class Answer(Event):
    v: int


class Parked(Workflow, name="benchmarks:parked-workflow"):
    """Waits for one answer."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(Answer, timeout=None)
        return StopEvent(result=answer.v)


def parked(workdir: Path, *, runs: int, window: float) -> Sample:
    """``runs`` runs parked in this process; CPU seconds over ``window`` idle seconds."""
    eng = Engine(workdir / "durable.db", durability="process")  # 30 s leases: a beat per 10 s
    renewals = 0
    renew = eng.journal.renew_leases

    def counted(*args: object, **kwargs: object) -> list[str]:
        nonlocal renewals
        renewals += 1
        return renew(*args, **kwargs)  # type: ignore[arg-type]

    eng.journal.renew_leases = counted  # type: ignore[method-assign]

    async def main() -> tuple[float, float, int]:
        nonlocal renewals
        for i in range(runs):
            Parked(timeout=None, engine=eng).run(run_id=f"p{i}")
        while len(eng.journal.list_runs(status="waiting", limit=None)) < runs:
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # the watcher's first look at every row
        cpu, wall, renewals = time.process_time(), time.perf_counter(), 0
        await asyncio.sleep(window)
        return time.process_time() - cpu, time.perf_counter() - wall, renewals

    cpu, wall, beats = asyncio.run(main())
    eng.journal.renew_leases = renew  # type: ignore[method-assign]
    eng.close()
    return Sample(
        cpu,
        runs,
        {"runs": runs, "core_pct": 100 * cpu / wall, "lease_commits": beats},
    )


def _parked(quick: bool) -> Scenario:
    small, large = (1000, 10_000) if not quick else (200, 2000)
    names = (f"{small:,}", f"{large:,}")
    window = 10.5  # one heartbeat of the default 30 s lease falls in it
    return Scenario(
        name="workflow.parked",
        description=(
            f"{small:,} vs {large:,} workflow runs of one process parked on wait_for_event:"
            f" CPU while idle for {window:.0f} s (cost per parked run)"
        ),
        unit="runs",
        contenders=tuple(
            Contender(name, f"{__name__}:parked", {"runs": n, "window": window})
            for name, n in zip(names, (small, large), strict=True)
        ),
        reference=names[0],
        ratio="cost",
        derived=(
            Derived(f"% of a core ({names[0]})", _extra(names[0], "core_pct"), "%"),
            Derived(f"% of a core ({names[1]})", _extra(names[1], "core_pct"), "%", ("<=", 5.0)),
            Derived(
                f"lease commits in the window ({names[1]} leases renewed)",
                _extra(names[1], "lease_commits"),
            ),
        ),
        max_rounds=1,
    )


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
        ),
        _parked(quick),
    ]
