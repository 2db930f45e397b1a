"""Side by side with the engines a user would pick instead (issue 6).

Each peer runs in its own venv (``benchmarks/.peers/<name>/``, made by
``python -m benchmarks --install-peers``) through a script of
``benchmarks/peers/``; ours runs in the harness child as usual. Every contender
of a scenario runs once per round, interleaved, on the same machine and disk.
Each contender reports the durability it ran at (``journal_mode``,
``synchronous`` of the connection that commits): ours runs at both "full"
(synchronous=FULL: fsync per commit, like every peer's default) and "process"
(synchronous=NORMAL: no fsync per commit in WAL mode).

``peers.sequential``
    Runs of a 10-step function/workflow/graph with small (int) results, one at
    a time; steps/s and µs per step (the step bodies are trivial, so the time per
    step is the engine's overhead plus its commit).

``peers.growth``
    One run of N steps, each adding one 200-byte item to the run's state; bytes
    the run added to the database (pages in use, WAL included) sampled as it
    goes, and µs per step over the first and the last fifth of the run.

``peers.concurrent.100``
    100 runs of the 10-step function in flight at once in one process (asyncio),
    where the peer has an async API; durability "full" for us.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine import Context, Event, StartEvent, StopEvent, Workflow, configure, durable, step

from . import engine_bench
from .harness import Contender, Derived, Sample, Scenario
from .peers import PEERS, run_peer
from .peers._common import db_bytes, growth_extra, item, sample_every

# The table shows "synchronous journal_mode" beside each name; the JSON has the pragmas.
_NOTE = {"full": "FULL wal", "process": "NORMAL wal"}


# -- our contenders ----------------------------------------------------------------------


def ours_sequential(workdir: Path, *, durability: str, runs: int, warmup: int) -> Sample:
    s = engine_bench.steps_durable(workdir, durability=durability, runs=runs, warmup=warmup)
    us = s.seconds / s.ops * 1e6
    return Sample(s.seconds, s.ops, {**s.extra, "us_per_step": us,
                                      "durability_note": _NOTE[durability]})  # fmt: skip


def ours_concurrent(workdir: Path, *, in_flight: int, warmup: int) -> Sample:
    s = engine_bench.steps_concurrent(workdir, in_flight=in_flight, warmup=warmup)
    return Sample(s.seconds, s.ops, {**s.extra, "durability_note": _NOTE["full"]})


class _Grow:
    """Per-step stamps and size samples of the growth scenario (sizes taken off the clock)."""

    def __init__(self) -> None:
        self.paused = 0.0
        self.stamps: list[float] = []
        self.sizes: list[tuple[int, int]] = []
        self.db: Path | None = None
        self.due = sample_every(1)

    def start(self, db: Path, n: int) -> float:
        self.db, self.due = db, sample_every(n)
        self.sizes.append((0, db_bytes(db)))
        return self.now()

    def now(self) -> float:
        return time.perf_counter() - self.paused

    def mark(self) -> None:
        done = len(self.stamps)
        if done and self.due(done):
            t0 = time.perf_counter()
            assert self.db is not None
            self.sizes.append((done, db_bytes(self.db)))
            self.paused += time.perf_counter() - t0
        self.stamps.append(self.now())


_G = _Grow()


@step(name="grow_item")
def _grow_item(i: int) -> str:
    _G.mark()
    return item(i)


@durable
def growing(ctx: Context, n: int) -> int:
    """The state list is re-assigned after each step (the journal sees assignments)."""
    ctx.state["items"] = []
    for i in range(n):
        ctx.state["items"] = [*ctx.state["items"], _grow_item(i)]
    return len(ctx.state["items"])


@durable
def growing_locals(n: int) -> int:
    """The DBOS way: items are step results kept in a local list, rebuilt by replay."""
    items: list[str] = []
    for i in range(n):
        items = [*items, _grow_item(i)]
    return len(items)


class Tick(Event):
    i: int


class GrowFlow(Workflow):
    @step
    async def grow(self, ctx: Context, ev: StartEvent | Tick) -> Tick | StopEvent:
        _G.mark()
        i = 0 if isinstance(ev, StartEvent) else ev.i
        if i == 0:
            await ctx.store.set("n", ev.n)
        items = await ctx.store.get("items", [])
        await ctx.store.set("items", [*items, item(i)])
        return StopEvent(result=i + 1) if i + 1 == await ctx.store.get("n") else Tick(i=i + 1)


def ours_growth(workdir: Path, *, api: str, durability: str, steps: int) -> Sample:
    db = workdir / "durable.db"
    eng = configure(db, durability=durability)
    eng.journal  # opened lazily: create it before the first size sample  # noqa: B018
    start = _G.start(db, steps)
    if api == "durable":
        assert eng.call(growing, (steps,), {}) == steps
    elif api == "durable.locals":
        assert eng.call(growing_locals, (steps,), {}) == steps
    else:
        assert GrowFlow().run(n=steps).result(timeout=600) == steps
    elapsed = _G.now() - start
    _G.sizes.append((steps, db_bytes(db)))
    eng.close()
    extra = growth_extra(_G.stamps, _G.sizes, steps)
    return Sample(elapsed, steps, {**extra, "durability_note": _NOTE[durability]})


class TenTick(Event):
    x: int
    i: int


class TenFlow(Workflow):
    """The llamaindex peers' workflow: ten steps, each setting ``x`` in the store."""

    @step
    async def add(self, ctx: Context, ev: StartEvent | TenTick) -> TenTick | StopEvent:
        x, i = (ev.x, 0) if isinstance(ev, StartEvent) else (ev.x, ev.i)
        x, i = x + 1, i + 1
        await ctx.store.set("x", x)
        return StopEvent(result=x) if i == engine_bench.STEPS else TenTick(x=x, i=i)


def ours_workflow_sequential(workdir: Path, *, durability: str, runs: int, warmup: int) -> Sample:
    eng = configure(workdir / "durable.db", durability=durability)
    flow = TenFlow()
    for i in range(warmup):
        flow.run(x=i).result(timeout=60)
    start = time.perf_counter()
    for i in range(runs):
        assert flow.run(x=i).result(timeout=60) == i + engine_bench.STEPS
    elapsed = time.perf_counter() - start
    eng.close()
    ops = runs * engine_bench.STEPS
    return Sample(elapsed, ops, {"us_per_step": elapsed / ops * 1e6,
                                 "durability_note": _NOTE[durability]})  # fmt: skip


# -- the peers (a subprocess in the peer's venv) -------------------------------------------


def peer(workdir: Path, *, peer: str, scenario: str, **params: Any) -> Sample:
    out = run_peer(peer, scenario, params, workdir)
    extra = dict(out["extra"])
    d = extra.get("durability") or {}
    note = f"{d.get('synchronous')} {d.get('journal_mode')}"
    if extra.get("langgraph_durability") == "async" or peer == "llamaindex":
        note += ", async"  # saved while the next step already runs
    extra["durability_note"] = note
    extra["maxrss_kib"] = extra.pop("peer_maxrss_kib", 0)
    return Sample(out["seconds"], out["ops"], extra)


def _peer_contenders(
    scenario: str, variants: list[tuple[str, str, dict[str, Any]]], quick: bool
) -> tuple[list[Contender], list[tuple[str, str]]]:
    """(contender name, peer, params) -> contenders whose venv exists, and the skipped."""
    run, skipped = [], []
    for name, p, params in variants:
        if PEERS[p].installed():
            run.append(
                Contender(
                    name,
                    f"{__name__}:peer",
                    {"peer": p, "scenario": scenario, **params},
                    checked=False,
                    optional=True,
                )
            )
        else:
            skipped.append((name, f"no venv {PEERS[p].venv.name}: python -m benchmarks "
                                  "--install-peers"))  # fmt: skip
    return run, skipped


def _us(name: str, key: str) -> Derived:
    return Derived(f"µs/step {name}", lambda r: float(r[name]["extra"][key]), "µs")


def _sequential(quick: bool) -> Scenario:
    runs_full, runs_process, peer_runs = (3, 20, 3) if quick else (50, 500, 50)
    peers, skipped = _peer_contenders(
        "sequential",
        [
            ("dbos", "dbos", {"runs": peer_runs}),
            ("langgraph.graph", "langgraph", {"runs": peer_runs, "api": "graph"}),
            ("langgraph.func", "langgraph", {"runs": peer_runs, "api": "func"}),
            (
                "langgraph.graph.async",
                "langgraph",
                {"runs": peer_runs, "api": "graph", "durability": "async"},
            ),
            ("llamaindex", "llamaindex", {"runs": peer_runs}),
            # Its runs take seconds each (result and event polling on SQLite): fewer.
            ("llama-agents-dbos", "llamadbos", {"runs": max(3, peer_runs // 5)}),
        ],
        quick,
    )
    if quick:  # each peer process costs 1-3 s of startup: one variant per peer, one round
        skipped += [(c.name, "--quick runs one variant per peer") for c in peers if
                    c.name in ("langgraph.func", "langgraph.graph.async")]  # fmt: skip
        peers = [c for c in peers if c.name not in ("langgraph.func", "langgraph.graph.async")]
    ours = [
        Contender("durable/full", f"{__name__}:ours_sequential",
                  {"durability": "full", "runs": runs_full, "warmup": 3}),
        Contender("durable/process", f"{__name__}:ours_sequential",
                  {"durability": "process", "runs": runs_process, "warmup": 3}, checked=False),
        Contender("workflow/full", f"{__name__}:ours_workflow_sequential",
                  {"durability": "full", "runs": runs_full, "warmup": 3}, checked=False),
    ]  # fmt: skip
    names = [c.name for c in ours + peers]
    return Scenario(
        name="peers.sequential",
        description="runs of a 10-step function/workflow, one at a time: steps/s vs ours at 'full'",
        unit="steps",
        contenders=tuple(ours + peers),
        reference="durable/full",
        ratio="rate",
        derived=tuple(_us(n, "us_per_step") for n in names),
        skipped=tuple(skipped),
        max_rounds=1 if quick else None,  # peers' startup: keep --quick short
    )


def _growth(quick: bool) -> Scenario:
    n = 20 if quick else 200
    peers, skipped = _peer_contenders(
        "growth",
        [
            ("dbos", "dbos", {"steps": n}),
            ("langgraph.graph", "langgraph", {"steps": n, "api": "graph"}),
            ("langgraph.func", "langgraph", {"steps": n, "api": "func"}),
            ("llamaindex", "llamaindex", {"steps": n}),
        ],
        quick,
    )
    if quick:  # peers' startup (1-3 s each) would blow the quick budget: sequential only
        skipped += [(c.name, "--quick runs peers in peers.sequential only") for c in peers]
        peers = []
    ours = [
        Contender(
            f"{api}/{d}",
            f"{__name__}:ours_growth",
            {"api": api, "durability": d, "steps": n},
            checked=False,
        )
        for api in ("durable", "workflow")
        for d in ("full", "process")
    ] + [
        Contender(
            "durable.locals/full",
            f"{__name__}:ours_growth",
            {"api": "durable.locals", "durability": "full", "steps": n},
            checked=False,
        )
    ]
    names = [c.name for c in ours + peers]
    derived = [
        Derived(f"KiB added {c}", lambda r, c=c: r[c]["extra"]["bytes_added"] / 1024, "KiB")
        for c in names
    ]
    derived += [_us(c, "us_per_step_last") for c in names]
    return Scenario(
        name="peers.growth",
        description=f"one run of {n} steps each adding a 200-byte item to the state: "
        "cost per step vs ours at 'full'; bytes added",
        unit="steps",
        contenders=tuple(ours + peers),
        reference="durable/full",
        ratio="cost",
        derived=tuple(derived),
        skipped=tuple(skipped),
        max_rounds=1 if quick else None,
    )


def _concurrent(quick: bool) -> Scenario:
    n = 10 if quick else 100
    peers, skipped = _peer_contenders(
        "concurrent",
        [
            ("dbos", "dbos", {"in_flight": n}),
            ("langgraph.graph", "langgraph", {"in_flight": n, "api": "graph"}),
            ("llamaindex", "llamaindex", {"in_flight": n}),
        ],
        quick,
    )
    if quick:
        skipped += [(c.name, "--quick runs peers in peers.sequential only") for c in peers]
        peers = []
    ours = [Contender("durable/full", f"{__name__}:ours_concurrent",
                      {"in_flight": n, "warmup": 10})]  # fmt: skip
    return Scenario(
        name=f"peers.concurrent.{n}",
        description=f"{n} async 10-step runs in flight in one process: steps/s vs ours at 'full'",
        unit="steps",
        contenders=tuple(ours + peers),
        reference="durable/full",
        ratio="rate",
        skipped=tuple(skipped),
        max_rounds=1 if quick else None,
    )


def scenarios(quick: bool) -> list[Scenario]:
    return [_sequential(quick), _growth(quick), _concurrent(quick)]
