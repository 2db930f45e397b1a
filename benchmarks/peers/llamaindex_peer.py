"""LlamaIndex workflows, checkpointed the way a user does it today.

llama-index-workflows keeps a run's Context in memory; to make a run survive a
crash, a user snapshots ``handler.ctx.to_dict(serializer=JsonSerializer())``
after every step (on each ``StepStateChanged`` NOT_RUNNING event of
``stream_events(expose_internal=True)``) and stores the JSON in an SQLite table
(``sqlite3``, WAL, the default synchronous=FULL, one commit per snapshot); a
restart would ``Context.from_dict`` the last row. The snapshot is the whole
context (store, queues, in-flight events), so a growing store makes every
snapshot larger: the bytes are quadratic in the number of steps. The snapshot is
taken by the handler while the workflow goes on: it is not a barrier before the
next step as the other contenders' commits are.

Scenarios: ``sequential`` (``runs`` x a 10-step workflow), ``growth`` (one run
of ``steps`` steps, each adding a 200-byte item to a list in ``ctx.store``),
``concurrent`` (``in_flight`` runs gathered, one shared connection).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

from _common import args, db_bytes, emit, growth_extra, item, pragmas, sample_every
from workflows import Context, Workflow, step
from workflows.context.serializers import JsonSerializer
from workflows.events import Event, StartEvent, StepState, StepStateChanged, StopEvent

STEPS = 10
PAUSED = 0.0
STAMPS: list[float] = []
SIZES: list[tuple[int, int]] = []
DB: Any = None
_due: Any = None
SERIALIZER = JsonSerializer()


def now() -> float:
    return time.perf_counter() - PAUSED


class Tick(Event):
    x: int
    i: int


class Ten(Workflow):
    @step
    async def add(self, ctx: Context, ev: StartEvent | Tick) -> Tick | StopEvent:
        x, i = (ev.x, 0) if isinstance(ev, StartEvent) else (ev.x, ev.i)
        x, i = x + 1, i + 1
        await ctx.store.set("x", x)
        return StopEvent(result=x) if i == STEPS else Tick(x=x, i=i)


class Grow(Workflow):
    @step
    async def grow(self, ctx: Context, ev: StartEvent | Tick) -> Tick | StopEvent:
        global PAUSED
        done = len(STAMPS)
        if done and _due(done):
            t0 = time.perf_counter()
            SIZES.append((done, db_bytes(DB)))
            PAUSED += time.perf_counter() - t0
        STAMPS.append(now())
        i = 0 if isinstance(ev, StartEvent) else ev.i
        items = await ctx.store.get("items", default=[])
        await ctx.store.set("items", [*items, item(i)])  # 200 bytes
        n = ev.n if isinstance(ev, StartEvent) else await ctx.store.get("n")
        await ctx.store.set("n", n)
        return StopEvent(result=i + 1) if i + 1 == n else Tick(x=0, i=i + 1)


def open_db(path: Any) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS checkpoints ("
        " run_id TEXT, seq INTEGER, step TEXT, ctx TEXT, PRIMARY KEY (run_id, seq))"
    )
    conn.commit()
    return conn


async def run_checkpointed(wf: Workflow, conn: sqlite3.Connection, run_id: str, **kw: Any) -> Any:
    handler = wf.run(**kw)
    seq = 0
    async for ev in handler.stream_events(expose_internal=True):
        if isinstance(ev, StepStateChanged) and ev.step_state == StepState.NOT_RUNNING:
            seq += 1
            snapshot = json.dumps(handler.ctx.to_dict(serializer=SERIALIZER))
            conn.execute(
                "INSERT INTO checkpoints VALUES (?,?,?,?)", (run_id, seq, ev.name, snapshot)
            )
            conn.commit()
    return await handler


async def amain(scenario: str, params: dict[str, Any], conn: sqlite3.Connection) -> Any:
    extra: dict[str, Any] = {}
    if scenario == "sequential":
        runs = params["runs"]
        wf = Ten(timeout=None)
        for i in range(params.get("warmup", 3)):
            await run_checkpointed(wf, conn, f"warm-{i}", x=i)
        start = time.perf_counter()
        for i in range(runs):
            assert await run_checkpointed(wf, conn, f"run-{i}", x=i) == i + STEPS
        elapsed = time.perf_counter() - start
        ops = runs * STEPS
        extra.update(runs=runs, us_per_step=elapsed / ops * 1e6)
    elif scenario == "concurrent":
        n = params["in_flight"]
        wf = Ten(timeout=None)
        warm = params.get("warmup", 10)
        await asyncio.gather(*(run_checkpointed(wf, conn, f"w{i}", x=i) for i in range(warm)))
        start = time.perf_counter()
        outs = await asyncio.gather(*(run_checkpointed(wf, conn, f"r{i}", x=i) for i in range(n)))
        elapsed = time.perf_counter() - start
        assert outs == [i + STEPS for i in range(n)]
        ops = n * STEPS
        extra.update(runs=n)
    elif scenario == "growth":
        global _due
        n = params["steps"]
        _due = sample_every(n)
        SIZES.append((0, db_bytes(DB)))
        start = now()
        assert await run_checkpointed(Grow(timeout=None), conn, "grow", n=n) == n
        elapsed = now() - start
        SIZES.append((n, db_bytes(DB)))
        ops = n
        extra.update(growth_extra(STAMPS, SIZES, n))
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    return elapsed, ops, extra


def main() -> None:
    global DB
    scenario, params, workdir = args()
    DB = workdir / "llamaindex.sqlite"
    conn = open_db(DB)
    settings = pragmas(conn)
    elapsed, ops, extra = asyncio.run(amain(scenario, params, conn))
    extra["snapshots"] = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    conn.close()
    emit(elapsed, ops, {"durability": settings, **extra})


if __name__ == "__main__":
    main()
