"""Parked workflow runs cost nothing while nothing happens.

A process holding many runs parked on ``wait_for_event`` watches them with one task
that reads their rows only when another connection committed (SQLite's data_version),
and renews all their leases in one commit per heartbeat. An answer sent from another
process still reaches its run at once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine import Context, Engine, Event, StartEvent, StopEvent, Workflow, step
from journal import Journal

N = 40


class Answer(Event):
    v: int


class Parked(Workflow, name="tests.parked"):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(Answer, timeout=None)
        return StopEvent(result=answer.v)


SEND = """
import sys
sys.path.insert(0, sys.argv[3])
from engine import Engine, send_event
from test_parked_runs import Answer
with Engine(sys.argv[1]) as eng:
    send_event(sys.argv[2], Answer(v=7), engine=eng)
"""


async def _until(predicate: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_parked_runs_are_watched_by_one_read_per_change(db_path: Path, monkeypatch: Any) -> None:
    renewals: list[int] = []
    singles: list[str] = []
    real = Journal.renew_leases

    def renew_leases(
        self: Journal, owner: str, leases: Any, lease_seconds: float, **kw: Any
    ) -> Any:
        renewals.append(len(leases))
        return real(self, owner, leases, lease_seconds, **kw)

    monkeypatch.setattr(Journal, "renew_leases", renew_leases)
    monkeypatch.setattr(Journal, "renew_lease", lambda self, run_id, *a: singles.append(run_id))
    eng = Engine(db_path, durability="process", lease_seconds=0.6)

    async def main() -> None:
        handlers = [Parked(timeout=None, engine=eng).run(run_id=f"p{i}") for i in range(N)]
        await _until(lambda: len(eng.journal.list_runs(status="waiting", limit=None)) == N, 60)
        watcher = eng.run_watcher()
        await _until(lambda: watcher.reads > 0, 5)  # its first look reads every row
        await asyncio.sleep(0.3)
        reads = watcher.reads
        renewals.clear()
        await asyncio.sleep(1.5)  # ~7 polls and ~7 heartbeats with nothing happening
        assert watcher.reads == reads  # no run row read: the journal did not change
        assert renewals and max(renewals) == N  # every lease, in each one beat
        assert len(renewals) <= 10
        assert singles == []

        # An answer from another process: the journal changed, the rows are read once
        # more, and the run that was answered ends; the others stay parked.
        subprocess.run(
            [sys.executable, "-c", SEND, str(db_path), "p3", str(Path(__file__).parent)], check=True
        )
        assert await asyncio.wait_for(handlers[3], 10) == 7
        assert watcher.reads > reads
        assert len(eng.journal.list_runs(status="waiting", limit=None)) == N - 1
        for h in handlers:
            if h is not handlers[3]:
                await h.cancel_run()

    try:
        asyncio.run(main())
    finally:
        eng.close()


@pytest.mark.parametrize("where", ["in-process", "other process"])
def test_a_cancel_reaches_a_parked_run(db_path: Path, where: str) -> None:
    eng = Engine(db_path, durability="process", lease_seconds=5)

    async def main() -> None:
        handler = Parked(timeout=None, engine=eng).run(run_id="c")
        await _until(lambda: eng.journal.get_run("c").status == "waiting", 30)
        if where == "in-process":
            eng.cancel("c")
        else:
            code = "import sys\nfrom engine import Engine\nEngine(sys.argv[1]).cancel('c')"
            subprocess.run([sys.executable, "-c", code, str(db_path)], check=True)
        with pytest.raises(Exception, match="cancelled"):
            await asyncio.wait_for(handler, 10)

    try:
        asyncio.run(main())
    finally:
        eng.close()
    assert Journal(db_path).get_run("c").status == "cancelled"
