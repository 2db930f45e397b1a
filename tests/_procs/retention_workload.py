"""Runs for tests/journal/test_retention.py: a child fills a journal, another applies retention
(and may be SIGKILLed anywhere in it)."""

from __future__ import annotations

import contextlib
import json
import sys
import time

from engine import Context, Engine, durable, step
from journal import Journal, Retention, apply_retention

DAY = 86400.0


@step
def add(x: int, i: int) -> int:
    return x + i


@durable
def job(ctx: Context, n: int, fail: bool) -> int:
    total = 0
    for i in range(n):
        total = add(total, i)
        ctx.state["total"] = total
    if fail:
        raise ValueError("planned failure")
    return total


def fill(db: str, runs: int) -> None:
    """``runs`` finished runs: every third failed, the others completed."""
    with Engine(db, durability="process") as eng:
        for i in range(runs):
            handle = eng.start(job, (6, i % 3 == 0), {}, run_id=f"r{i:03d}", tags={"n": str(i)})
            with contextlib.suppress(Exception):
                handle.result(timeout=60)


def prune(db: str, batch: int) -> None:
    """Apply retention as if 40 days passed: delete completed past 30 days, failed kept.
    Says ``deleting RUN`` before each deletion, so the parent can kill inside the pass."""
    from journal import retention

    delete = retention._delete

    def announced(journal: Journal, run_id: str, *args: object) -> None:
        print(f"deleting {run_id}", flush=True)
        delete(journal, run_id, *args)  # type: ignore[arg-type]

    retention._delete = announced  # type: ignore[assignment]
    with Journal(db) as j:
        print("ready", flush=True)
        policy = Retention(completed_days=30, compact_days=10, batch_size=batch)
        report = apply_retention(j, policy, now=time.time() + 40 * DAY)
        print("report " + json.dumps({"deleted": report.deleted, "kept": report.kept}))


if __name__ == "__main__":
    if sys.argv[1] == "fill":
        fill(sys.argv[2], int(sys.argv[3]))
    else:
        prune(sys.argv[2], int(sys.argv[3]))


@durable
def chain(ctx: Context, n: int, total: int) -> int:
    """Continues as new ``n`` times; returns the sum of ``add`` over the chain."""
    total = add(total, n)
    if n > 0:
        ctx.continue_as_new(n - 1, total)
    return total
