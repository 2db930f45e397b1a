"""LangGraph with its SQLite checkpointer (``SqliteSaver`` / ``AsyncSqliteSaver``).

``api``: ``graph`` (a ``StateGraph``; one checkpoint per super-step, holding the
channel values) or ``func`` (``@entrypoint`` + ``@task``; each task's result is a
pending write of the entrypoint's checkpoint). ``durability``: LangGraph's own
mode, ``"sync"`` (persisted before the next step starts: the guarantee the other
contenders give) or ``"async"`` (LangGraph's default: persisted while the next
step runs).

Scenarios: ``sequential`` (``runs`` x 10 steps, one thread id per run),
``growth`` (``steps`` steps each adding a 200-byte item: the graph keeps a list
channel with an ``operator.add`` reducer; the entrypoint a local list of task
results), ``concurrent`` (``in_flight`` graph runs gathered on AsyncSqliteSaver).
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import sqlite3
import time
from typing import Annotated, Any, TypedDict

from _common import args, db_bytes, emit, growth_extra, item, pragmas, sample_every
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph

STEPS = 10
PAUSED = 0.0
STAMPS: list[float] = []
SIZES: list[tuple[int, int]] = []
DB: Any = None
_due: Any = None


def now() -> float:
    return time.perf_counter() - PAUSED


def mark() -> None:
    """At the start of each growth step: sample the database size (off the clock), stamp."""
    global PAUSED
    done = len(STAMPS)
    if done and _due(done):
        t0 = time.perf_counter()
        SIZES.append((done, db_bytes(DB)))
        PAUSED += time.perf_counter() - t0
    STAMPS.append(now())


class X(TypedDict):
    x: int


class Items(TypedDict):
    items: Annotated[list[str], operator.add]
    n: int


def ten_graph(saver: Any) -> Any:
    g = StateGraph(X)
    names = [f"s{i}" for i in range(STEPS)]
    for name in names:
        g.add_node(name, lambda st: {"x": st["x"] + 1})
    g.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        g.add_edge(a, b)
    g.add_edge(names[-1], END)
    return g.compile(checkpointer=saver)


def ten_func(saver: Any) -> Any:
    @task
    def add(x: int) -> int:
        return x + 1

    @entrypoint(checkpointer=saver)
    def ten(x: int) -> int:
        for _ in range(STEPS):
            x = add(x).result()
        return x

    return ten


def growth_graph(saver: Any, n: int) -> Any:
    def grow(st: Items) -> dict[str, Any]:
        mark()
        return {"items": [item(st["n"])], "n": st["n"] + 1}

    g = StateGraph(Items)
    g.add_node("grow", grow)
    g.add_edge(START, "grow")
    g.add_conditional_edges("grow", lambda st: "grow" if st["n"] < n else END)
    return g.compile(checkpointer=saver)


def growth_func(saver: Any) -> Any:
    @task
    def make_item(i: int) -> str:
        mark()
        return item(i)

    @entrypoint(checkpointer=saver)
    def growing(n: int) -> int:
        items: list[str] = []
        for i in range(n):
            items = [*items, make_item(i).result()]
        return len(items)

    return growing


def cfg(thread: str, **more: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}, **more}


def main() -> None:
    global DB, _due
    scenario, params, workdir = args()
    DB = workdir / "langgraph.sqlite"
    api = params.get("api", "graph")
    durability = params.get("durability", "sync")
    extra: dict[str, Any] = {"api": api, "langgraph_durability": durability}
    if scenario == "concurrent":
        elapsed, ops = asyncio.run(concurrent(params, extra))
        emit(elapsed, ops, extra)
        return
    # As the docs show: SqliteSaver(sqlite3.connect(path, check_same_thread=False)).
    conn = sqlite3.connect(str(DB), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    extra["durability"] = pragmas(conn)
    if scenario == "sequential":
        runs = params["runs"]
        app = ten_graph(saver) if api == "graph" else ten_func(saver)
        inp = (lambda i: {"x": i}) if api == "graph" else (lambda i: i)
        for i in range(params.get("warmup", 3)):
            app.invoke(inp(i), cfg(f"warm-{i}"), durability=durability)
        start = time.perf_counter()
        for i in range(runs):
            out = app.invoke(inp(i), cfg(f"run-{i}"), durability=durability)
            assert (out["x"] if api == "graph" else out) == i + STEPS
        elapsed = time.perf_counter() - start
        ops = runs * STEPS
        extra.update(runs=runs, us_per_step=elapsed / ops * 1e6)
    elif scenario == "growth":
        n = params["steps"]
        _due = sample_every(n)
        SIZES.append((0, db_bytes(DB)))
        if api == "graph":
            app = growth_graph(saver, n)
            start = now()
            out = app.invoke(
                {"items": [], "n": 0}, cfg("grow", recursion_limit=n + 10), durability=durability
            )
            assert len(out["items"]) == n
        else:
            app = growth_func(saver)
            start = now()
            assert app.invoke(n, cfg("grow"), durability=durability) == n
        elapsed = now() - start
        SIZES.append((n, db_bytes(DB)))
        ops = n
        extra.update(growth_extra(STAMPS, SIZES, n))
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    conn.close()
    emit(elapsed, ops, extra)


async def concurrent(params: dict[str, Any], extra: dict[str, Any]) -> tuple[float, int]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    n = params["in_flight"]
    durability = params.get("durability", "sync")
    async with AsyncSqliteSaver.from_conn_string(str(DB)) as saver:
        await saver.setup()
        async with saver.conn.execute("PRAGMA journal_mode") as cur:
            jm = (await cur.fetchone())[0]
        async with saver.conn.execute("PRAGMA synchronous") as cur:
            sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[(await cur.fetchone())[0]]
        extra["durability"] = {"journal_mode": jm, "synchronous": sync}
        app = ten_graph(saver)
        warm = params.get("warmup", 10)
        await asyncio.gather(
            *(app.ainvoke({"x": i}, cfg(f"w{i}"), durability=durability) for i in range(warm))
        )
        start = time.perf_counter()
        outs = await asyncio.gather(
            *(app.ainvoke({"x": i}, cfg(f"r{i}"), durability=durability) for i in range(n))
        )
        elapsed = time.perf_counter() - start
        assert [o["x"] for o in outs] == [i + STEPS for i in range(n)]
    extra["runs"] = n
    return elapsed, n * STEPS


if __name__ == "__main__":
    main()
