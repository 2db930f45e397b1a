"""Recovering a very long ``@durable`` run: peak memory and time, in a fresh process.

``python -m benchmarks.long_run_bench [--steps N] [--db PATH_OR_URL]``

1. A child process writes the journal of an unfinished run of :func:`counter` with
   N completed steps (and a body mutation every 1,000), straight through the
   journal API in transactions of 10,000 entries, as the engine would have
   recorded them, and leaves it ``running`` with no owner (as a crash leaves it
   once the lease has lapsed).
2. A fresh process recovers it: the body replays N recorded steps, runs the
   last ones live and completes. Reported: its peak RSS (``ru_maxrss``) and the
   time recovery took.

Memory is bounded by a page of entries, not by N: recovery reads the journal as
the body reaches each call and keeps only the calls just ahead of it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine import Context, durable, step
from engine.hashing import args_hash
from journal import EntryKind, Journal

RUN_ID = "long-run"
LIVE_STEPS = 10
"""Steps the recovered run executes live after replaying the recorded ones."""
BATCH = 10_000
MUTATE_EVERY = 1000


@step
def add(total: int, i: int) -> int:
    """One step of the long loop."""
    return total + i


@durable(name="benchmarks.long_run_bench:counter")
def counter(ctx: Context[Any], n: int) -> int:
    """``n`` steps; every 1,000th also records its progress in the run's state."""
    total = 0
    for i in range(n):
        total = add(total, i)
        if (i + 1) % MUTATE_EVERY == 0:
            ctx.state["done"] = i + 1
    return total


def write_journal(db: str, steps: int) -> None:
    """The journal :func:`counter` leaves after ``steps`` steps and a crash."""
    with Journal(db, durability="process") as j:
        j.create_run(
            RUN_ID,
            name=counter.name,
            kind="function",
            input={"args": [steps + LIVE_STEPS], "kwargs": {}},
            status="running",
            entries=[j.entry(EntryKind.RUN_STARTED, {"owner": "benchmark"})],
        )
        seq, total, batch = 1, 0, []
        now = time.time()
        for i in range(steps):
            h = args_hash((total, i), {})
            total += i
            result = {"result": total, "attempt": 1, "started": now, "duration": 0.0}
            batch.append(j.entry(EntryKind.STEP_COMPLETED, result, step=f"add#{i + 1}", key=h))
            if (i + 1) % MUTATE_EVERY == 0:
                batch.append(j.entry(EntryKind.STATE_SET, i + 1, key="done"))
            if len(batch) >= BATCH:
                seq = j.append(RUN_ID, batch, expected_seq=seq)
                batch = []
        if batch:
            j.append(RUN_ID, batch, expected_seq=seq)


def recover(db: str, steps: int) -> dict[str, Any]:
    """Recover the run in this (fresh) process; return what was measured."""
    import resource

    from engine import Engine

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with Engine(db) as eng:
        report = eng.recover()
        result = eng.handle(RUN_ID).result()
        entries = eng.journal.get_run(RUN_ID).last_seq
    elapsed = time.perf_counter() - t0
    n = steps + LIVE_STEPS
    assert result == n * (n - 1) // 2, result
    assert RUN_ID in report.run_ids, report
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "steps": steps,
        "entries": entries,
        "recover_s": round(elapsed, 2),
        "steps_per_s": round(steps / elapsed),
        "peak_rss_mib": round(peak / 1024, 1),
        "rss_before_mib": round(base / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.long_run_bench", description=__doc__)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--db", help="journal file or postgresql:// URL (default: a temporary file)")
    p.add_argument("--phase", choices=["write", "recover"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase == "write":
        write_journal(args.db, args.steps)
        return 0
    if args.phase == "recover":
        print(json.dumps(recover(args.db, args.steps)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "long.db")
        me = [sys.executable, "-m", "benchmarks.long_run_bench", "--db", db]
        t0 = time.perf_counter()
        subprocess.run([*me, "--steps", str(args.steps), "--phase", "write"], check=True)
        written = time.perf_counter() - t0
        out = subprocess.run(
            [*me, "--steps", str(args.steps), "--phase", "recover"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        figures["write_s"] = round(written, 1)
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
