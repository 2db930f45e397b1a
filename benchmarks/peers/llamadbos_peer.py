"""LlamaIndex's own durable runtime: llama-index-workflows on DBOS (``llama-agents-dbos``),
with the SQLite system database (``system_database_url = sqlite:///...``).

The workflow is the llamaindex peer's (imported from it): ten steps, each setting ``x``
in ``ctx.store``.
DBOS journals each step and the store through the runtime's SQL state store; a run is
recovered by DBOS on launch. ``llama-agents-dbos`` 0.7.0 does not launch with DBOS 3.x
(it builds ``Queue(...)`` objects directly, which DBOS 3 refuses): the peer pins the
last 2.x release.

Scenario: ``sequential`` (``runs`` x the 10-step workflow, one at a time).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any

from _common import args, emit, pragmas
from dbos import DBOS, DBOSConfig
from llama_agents.dbos import DBOSRuntime
from llamaindex_peer import STEPS, Ten  # the same workflow, step for step


def main() -> None:
    scenario, params, workdir = args()
    if scenario != "sequential":
        raise SystemExit(f"unknown scenario {scenario}")
    db = workdir / "llamadbos.sqlite"
    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": f"sqlite:///{db}",
        "run_admin_server": False,
    }
    DBOS(config=config)
    poll = params.get("poll", 0.01)
    runtime = DBOSRuntime(polling_interval_sec=poll, queue_polling_interval_sec=poll)
    wf = Ten(runtime=runtime, timeout=None)
    runtime.launch_sync()
    conn = sqlite3.connect(str(db))
    settings = pragmas(conn)
    conn.close()

    async def go() -> float:
        for i in range(params.get("warmup", 3)):
            await wf.run(x=i)
        start = time.perf_counter()
        for i in range(params["runs"]):
            assert await wf.run(x=i) == i + STEPS
        return time.perf_counter() - start

    elapsed = asyncio.run(go())
    ops = params["runs"] * STEPS
    extra: dict[str, Any] = {
        "durability": settings,
        "runs": params["runs"],
        "us_per_step": elapsed / ops * 1e6,
        "db_bytes_per_step": db.stat().st_size / ((params["runs"] + 3) * STEPS),
    }
    emit(elapsed, ops, extra)


if __name__ == "__main__":
    main()
