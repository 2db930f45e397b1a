"""Writes tests/fixtures/journal_vN.db: a small journal in the schema version N of the
code that runs it. Kept to show how the fixtures were made: journal_v2.db (before run
rows carried a checksum), journal_v3.db (before run tags and schedules) and
journal_v4.db (before queue rate limits and step heartbeats) were written by ``python
tests/make_fixture.py`` with the code of those versions, not today's.

It holds function runs (completed, failed, pending), a workflow run, snapshots, a
compacted run and a fork; tests/test_journal_integrity.py (v2), tests/test_schedules.py
(v3) and tests/test_queue_limits.py (v4) open, upgrade and read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from engine import Context, Event, StartEvent, StopEvent, Workflow, configure, durable, fork, step
from journal import Journal, RetentionPolicy, SnapshotPolicy
from journal._schema import SCHEMA_VERSION

OUT = Path(__file__).parent / "fixtures" / f"journal_v{SCHEMA_VERSION}.db"


@step
def price(item: str) -> int:
    return len(item) * 10


@durable(name="fixture:checkout")
def checkout(ctx: Context, items: list[str]) -> dict[str, int]:
    for item in items:
        ctx.state[item] = price(item)
    return {"total": sum(ctx.state[i] for i in items), "big": 123456789}


@durable(name="fixture:boom")
def boom(ctx: Context, n: int) -> None:
    ctx.state["n"] = n
    raise ValueError(f"boom {n}")


class Draft(Event):
    text: str


class Essay(Workflow):
    @step
    async def write(self, ctx: Context, ev: StartEvent) -> Draft:
        await ctx.store.set("topic", ev.topic)
        return Draft(text=f"about {ev.topic}")

    @step
    async def review(self, ctx: Context, ev: Draft) -> StopEvent:
        return StopEvent(result=ev.text.upper())


def main() -> None:
    if OUT.exists():
        OUT.unlink()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(OUT) + suffix):
            os.unlink(str(OUT) + suffix)
    snaps = SnapshotPolicy(every=3)
    with configure(Journal(OUT, snapshots=snaps), lease_seconds=0) as eng:
        items = ["apple", "fig", "banana", "kiwi", "plum", "cherry", "date"]
        checkout.run(items, run_id="fn-done")
        checkout.run(items, run_id="fn-compacted")
        with contextlib.suppress(ValueError):  # the failure is what is recorded
            boom.run(7, run_id="fn-failed")
        fork("fn-done", at=3, state={"apple": 1}, new_run_id="fn-fork").result(timeout=30)

        async def essay() -> object:
            return await Essay().run(topic="tides", run_id="wf-done")

        asyncio.run(essay())
        eng.journal.compact("fn-compacted", RetentionPolicy(keep_snapshots=1))
        eng.journal.create_run("fn-pending", name="fixture:checkout", input={"items": ["a"]})
    with Journal(OUT) as j:
        j.raw_connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        version = j.raw_connection().execute("PRAGMA user_version").fetchone()[0]
        for run in j.list_runs(limit=None):
            print(
                run.run_id, run.status, run.last_seq, run.horizon, run.forked_from, file=sys.stderr
            )
    print(f"wrote {OUT} (schema version {version})")


if __name__ == "__main__":
    main()
