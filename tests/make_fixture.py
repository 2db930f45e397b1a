"""Writes tests/fixtures/journal_vN.db: a small journal in the schema version N of the
code that runs it. Kept to show how the fixtures were made: journal_v2.db (before run
rows carried a checksum), journal_v3.db (before run tags and schedules) and
journal_v4.db (before queue rate limits and step heartbeats) were written by ``python
tests/make_fixture.py`` with the code of those versions, not today's.

It holds function runs (completed, failed, pending), a workflow run, snapshots, a
compacted run and a fork; tests/journal/test_journal_integrity.py (v2) and
tests/engine/test_schedules.py (v3) and
tests/engine/test_queue_limits.py (v4) open, upgrade and read them. From version 4 on it
also holds tagged runs, a function run asleep on a timer, a workflow run waiting for an
event and a schedule, and
``python tests/make_fixture.py --expect`` writes beside it what the code that wrote it
reads from it (journal_vN.json: runs, history, state at every seq, lineage), which
tests/journal/test_journal_fixture.py compares with what today's code reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from engine import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    add_schedule,
    configure,
    durable,
    fork,
    step,
)
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


@durable(name="fixture:nap", tags={"team": "ops"})
def nap(ctx: Context, seconds: float) -> str:
    ctx.state["before"] = price("nap")
    ctx.sleep(seconds)
    return "woke"


class Answer(Event):
    response: str


class Ask(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("asked", ev.question)
        answer = await ctx.wait_for_event(Answer, timeout=3600)
        return StopEvent(result=answer.response)


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


def describe(path: Path) -> dict[str, Any]:
    """What a journal reads as, through the public API: every run, its entries, history,
    state at every step, seq and time, lineage, snapshots, tags and the schedules."""
    from engine import Engine, history, state_at
    from journal import fork_lineage, to_jsonable

    out: dict[str, Any] = {"runs": {}}
    with Journal(path, readonly=True) as j, Engine(j) as eng:
        for run in j.list_runs(limit=None):
            rid = run.run_id
            doc: dict[str, Any] = {"run": to_jsonable(run)}
            doc["entries"] = [
                [e.seq, e.kind, e.step, e.ts, to_jsonable(j.decode_entry(e))]
                for e in j.read(rid, run.horizon + 1)
            ]
            doc["history"] = [cp.to_json() for cp in history(rid, engine=eng)]
            doc["state_at_step"] = [
                state_at(rid, cp["number"], engine=eng).to_dict() for cp in doc["history"]
            ]
            doc["state_at_seq"] = [
                to_jsonable(j.state_at(rid, seq).values)
                for seq in range(run.horizon, run.last_seq + 1)
                if seq > 0
            ]
            doc["state_at_time"] = [
                state_at(rid, time=e[3], engine=eng).to_dict() for e in doc["entries"]
            ]
            doc["lineage"] = [[r.run_id, at] for r, at in fork_lineage(j, run)]
            doc["snapshots"] = [to_jsonable(s) for s in j.snapshots(rid)]
            out["runs"][rid] = doc
        out["schedules"] = [to_jsonable(s) for s in j.schedules.all()]
        out["tagged"] = [r.run_id for r in j.list_runs(tags={"customer": "acme"}, limit=None)]
        out["verify"] = j.verify().ok
    return out


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

        async def ask() -> None:
            Ask().run(question="ship it?", run_id="wf-waiting")
            while eng.journal.get_run("wf-waiting").status != "waiting":
                await asyncio.sleep(0.01)

        asyncio.run(ask())
        checkout.start(["fig"], run_id="fn-tagged", tags={"customer": "acme"}).result(timeout=30)
        nap.start(3600.0, run_id="fn-asleep")
        while eng.journal.last_entry("fn-asleep") is None or (
            eng.journal.last_entry("fn-asleep").kind != "timer.started"  # type: ignore[union-attr]
        ):
            time.sleep(0.01)
        add_schedule("nightly", checkout, "0 3 * * *", args=(["kiwi"],), engine=eng)
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
    expect = OUT.with_suffix(".json")
    expect.write_text(json.dumps(describe(OUT), indent=1, sort_keys=True) + "\n")
    print(f"wrote {expect}")


if __name__ == "__main__":
    main()
