"""DBOS Transact on its SQLite system database (``system_database_url = sqlite:///...``).

Scenarios: ``sequential`` (``runs`` x a 10-step workflow, one at a time),
``growth`` (one workflow of ``steps`` steps, each returning a 200-byte item the
workflow appends to a local list: DBOS keeps no state besides step outputs, and a
recovered workflow rebuilds its locals by replaying them), ``concurrent``
(``in_flight`` async workflows gathered at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from _common import args, db_bytes, emit, growth_extra, item, pragmas, sample_every
from dbos import DBOS, DBOSConfig

STEPS = 10
PAUSED = 0.0  # time spent sampling sizes, taken off the clock
STAMPS: list[float] = []
SIZES: list[tuple[int, int]] = []
DB = None
N = 0
_due = None


def now() -> float:
    return time.perf_counter() - PAUSED


@DBOS.step()
def add(x: int) -> int:
    return x + 1


@DBOS.workflow()
def ten(x: int) -> int:
    for _ in range(STEPS):
        x = add(x)
    return x


@DBOS.step()
async def add_async(x: int) -> int:
    return x + 1


@DBOS.workflow()
async def ten_async(x: int) -> int:
    for _ in range(STEPS):
        x = await add_async(x)
    return x


@DBOS.step()
def make_item(i: int) -> str:
    global PAUSED
    done = len(STAMPS)
    if done and _due(done):
        t0 = time.perf_counter()
        SIZES.append((done, db_bytes(DB)))
        PAUSED += time.perf_counter() - t0
    STAMPS.append(now())
    return item(i)  # 200 bytes


@DBOS.workflow()
def growing(n: int) -> int:
    items: list[str] = []
    for i in range(n):
        items = [*items, make_item(i)]
    return len(items)


def main() -> None:
    global DB, N, _due
    scenario, params, workdir = args()
    DB = workdir / "dbos.sqlite"
    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": f"sqlite:///{DB}",
        "run_admin_server": False,
    }
    DBOS(config=config)
    DBOS.launch()
    from dbos._dbos import _get_dbos_instance

    engine: Any = _get_dbos_instance()._sys_db.engine
    with engine.connect() as c:  # a pooled connection of the system database, as DBOS uses it
        settings = pragmas(c.connection.dbapi_connection)
    extra: dict[str, Any] = {"durability": settings}
    if scenario == "sequential":
        runs = params["runs"]
        for i in range(params.get("warmup", 3)):
            ten(i)
        start = time.perf_counter()
        for i in range(runs):
            assert ten(i) == i + STEPS
        elapsed = time.perf_counter() - start
        ops = runs * STEPS
        extra.update(runs=runs, us_per_step=elapsed / ops * 1e6)
    elif scenario == "concurrent":
        n = params["in_flight"]

        async def go() -> float:
            await asyncio.gather(*(ten_async(i) for i in range(params.get("warmup", 10))))
            start = time.perf_counter()
            res = await asyncio.gather(*(ten_async(i) for i in range(n)))
            assert res == [i + STEPS for i in range(n)]
            return time.perf_counter() - start

        elapsed = asyncio.run(go())
        ops = n * STEPS
        extra.update(runs=n)
    elif scenario == "growth":
        N = params["steps"]
        _due = sample_every(N)
        SIZES.append((0, db_bytes(DB)))
        start = now()
        assert growing(N) == N
        elapsed = now() - start
        SIZES.append((N, db_bytes(DB)))
        ops = N
        extra.update(growth_extra(STAMPS, SIZES, N))
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    DBOS.destroy()
    emit(elapsed, ops, extra)


if __name__ == "__main__":
    main()
