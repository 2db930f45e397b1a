"""Child process for the checkpointer crash test. ``start DB`` runs ``Slow`` (run id
``ck``) through a WorkflowCheckpointer; its second step blocks while $CK_BLOCK names an
existing file, so the parent kills the process there. ``recover DB`` resumes the run and
prints the checkpoints a fresh checkpointer reads back for it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from engine import (
    Engine,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCheckpointer,
    configure,
    step,
)


class Half(Event):
    n: int


class Slow(Workflow, name="tests:checkpointer-slow"):
    @step
    async def one(self, ev: StartEvent) -> Half:
        return Half(n=ev.n * 10)

    @step
    async def two(self, ev: Half) -> StopEvent:
        block = os.environ.get("CK_BLOCK")
        while block and Path(block).exists():
            time.sleep(0.01)
        return StopEvent(result=ev.n + 1)


def main() -> None:
    mode, db = sys.argv[1], sys.argv[2]
    if mode == "start":
        configure(db, lease_seconds=0.3)

        async def go() -> None:
            ckpt = WorkflowCheckpointer(workflow=Slow(timeout=None))
            handler = ckpt.run(n=4, run_id="ck", checkpoint_callback=lambda **kw: print(
                "checkpoint", kw["last_completed_step"], flush=True))  # fmt: skip
            await handler

        asyncio.run(go())
    else:
        with Engine(db, lease_seconds=0.3) as eng:
            report = eng.recover(timeout=60, wait_leased=True)
            cps = WorkflowCheckpointer(workflow=Slow(engine=eng)).filter_checkpoints(run_id="ck")
            print(json.dumps({
                "recovered": report.run_ids,
                "checkpoints": [[c.id_, c.last_completed_step, repr(c.output_event)] for c in cps],
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
