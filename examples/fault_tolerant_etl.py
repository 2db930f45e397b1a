"""A fault-tolerant batch ETL job: retries, idempotent writes, rate limiting, a crash.

A ``@durable`` job moves 40 records, page by page, from a flaky source API into a
warehouse (an SQLite database standing in for any external system):

- ``extract`` is a ``@step(retries=3, backoff=0.01)``: the source times out now and
  then, and every failed attempt is journaled before the retry.
- ``load`` writes one record under ``engine.idempotency_key()``, a key stable across
  retries and restarts: the warehouse ignores a second write with the same key.
- ``ctx.sleep(0.05)`` between pages rate-limits the source; the sleep is durable.
- The process is SIGKILLed right after the warehouse accepted record 23 and before
  the journal recorded it. A new process recovers the run: everything journaled is
  replayed, not redone; record 23 is written again and deduplicated by its key.

The result: 40 rows, none twice, and the totals add up.
Run it from the repository root: ``python examples/fault_tolerant_etl.py [--db PATH]``
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import Any

import engine
from engine import Context, durable, step

PAGES = 4
PAGE_SIZE = 10
FLAKY = {1: 2, 3: 1}
"""Page -> how many times the source times out on it before answering."""

LEASE_SECONDS = 0.5
HOLD_AFTER_WRITING: int | None = None
"""In the child that gets killed: the record after whose warehouse write it hangs."""

ATTEMPTS: Counter[int] = Counter()


def source_page(page: int) -> list[dict[str, Any]]:
    """What the source API returns for a page (deterministic)."""
    ids = range(page * PAGE_SIZE, (page + 1) * PAGE_SIZE)
    return [{"id": i, "customer": f"c{i % 7}", "cents": (i * 7919) % 1000 + 100} for i in ids]


def say(text: str) -> None:
    print(f"  [pid {os.getpid()}] {text}", flush=True)


# -- the steps: everything that touches the outside world ------------------------------


@step(retries=3, backoff=0.01)
def extract(page: int) -> list[dict[str, Any]]:
    ATTEMPTS[page] += 1
    if ATTEMPTS[page] <= FLAKY.get(page, 0):
        say(f"extract page {page}: attempt {ATTEMPTS[page]} timed out, the step will retry")
        raise ConnectionError(f"source API timed out on page {page}")
    return source_page(page)


@step
def load(record: dict[str, Any], warehouse: str) -> str:
    key = engine.idempotency_key()  # e.g. "etl-1a2b3c:load#7": the same on every retry
    with sqlite3.connect(warehouse) as db:
        db.execute("INSERT INTO attempts VALUES (?, ?, ?)", (key, record["id"], os.getpid()))
        inserted = db.execute(
            "INSERT INTO sales VALUES (?, ?, ?, ?) ON CONFLICT (idem_key) DO NOTHING",
            (key, record["id"], record["customer"], record["eur"]),
        ).rowcount
    if record["id"] == HOLD_AFTER_WRITING:
        say(f"wrote record {record['id']} to the warehouse, about to journal it...")
        time.sleep(60)  # the parent SIGKILLs this process meanwhile
    return "inserted" if inserted else "duplicate"


def transform(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "customer": row["customer"].upper(), "eur": row["cents"] / 100}


# -- the job ---------------------------------------------------------------------------


@durable(name="examples.fault_tolerant_etl:job")
def etl_job(ctx: Context, pages: int, warehouse: str) -> dict[str, Any]:
    for page in range(pages):
        for row in extract(page):
            if load(transform(row), warehouse) == "duplicate":
                ctx.state["duplicates_skipped"] = ctx.state.get("duplicates_skipped", 0) + 1
            ctx.state["loaded"] = ctx.state.get("loaded", 0) + 1
            ctx.state["total_cents"] = ctx.state.get("total_cents", 0) + row["cents"]
        if not ctx.replaying:  # printing is a side effect too: not while catching up
            say(f"page {page} done: {ctx.state['loaded']} records loaded")
        if page < pages - 1:
            ctx.sleep(0.05)  # rate limit: be gentle with the source API
    return dict(ctx.state)


# -- the processes ----------------------------------------------------------------------


def child(mode: str, db: str, *args: str) -> int:
    global HOLD_AFTER_WRITING
    eng = engine.configure(db, lease_seconds=LEASE_SECONDS)
    try:
        if mode == "start":
            run_id, warehouse = args
            HOLD_AFTER_WRITING = 23
            etl_job.run(PAGES, warehouse, run_id=run_id)
            return 1  # never reached: the parent kills this process at record 23
        while not eng.journal.claimable():  # the dead owner's lease has to run out first
            time.sleep(0.02)
        say("engine.recover()")
        report = engine.recover(timeout=60)
        for handle in report.handles:
            say(f"RECOVERED {handle.run_id} -> {handle.result()}")
        return 0 if report.handles and not report.errors else 1
    finally:
        eng.close()


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True
    )


def story(db: str, warehouse: str) -> int:
    run_id = f"etl-{uuid.uuid4().hex[:6]}"
    with sqlite3.connect(warehouse) as wh:
        wh.execute("CREATE TABLE sales (idem_key PRIMARY KEY, record_id, customer, eur)")
        wh.execute("CREATE TABLE attempts (idem_key, record_id, pid)")

    print(f"1. The ETL job starts in a child process: {PAGES * PAGE_SIZE} records, {PAGES} pages")
    proc = spawn("start", db, run_id, warehouse)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line.rstrip())
        if "wrote record 23" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    print(f"   KILLED pid {proc.pid}: the warehouse has record 23, the journal does not")

    print("\n2. A new process recovers the run")
    proc = spawn("recover", db)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line.rstrip())
    if proc.wait() != 0:
        print("recovery failed")
        return 1

    print("\n3. Checking the warehouse")
    eng = engine.configure(db)
    result = eng.outcome(eng.journal.get_run(run_id))
    with sqlite3.connect(warehouse) as wh:
        rows, distinct, eur = wh.execute(
            "SELECT count(*), count(DISTINCT record_id), round(sum(eur), 2) FROM sales"
        ).fetchone()
        attempts = Counter(r for (r,) in wh.execute("SELECT record_id FROM attempts"))
        keys = {k for (k,) in wh.execute("SELECT idem_key FROM attempts WHERE record_id = 23")}
    expected_cents = sum(r["cents"] for p in range(PAGES) for r in source_page(p))
    twice = sorted(r for r, n in attempts.items() if n > 1)
    print(f"   {sum(attempts.values())} write attempts, for records {twice} more than once")
    print(f"   both writes of record 23 carried the same idempotency key: {', '.join(keys)}")
    print(f"   {rows} rows for {distinct} distinct records: no record was written twice")
    print(f"   duplicates skipped by idempotency key: {result.get('duplicates_skipped', 0)}")
    print(
        f"   total: {eur:.2f} EUR in the warehouse, {result['total_cents'] / 100:.2f} EUR "
        f"by the job, {expected_cents / 100:.2f} EUR at the source"
    )

    failed = [cp for cp in engine.history(run_id) if cp.kind == "step.failed"]
    sleeps = [cp for cp in engine.history(run_id) if cp.kind == "timer.fired"]
    print(
        f"   {len(failed)} failed extract attempts journaled and retried: "
        f"{', '.join(f'{cp.step} attempt {cp.attempt}' for cp in failed)}"
    )
    print(f"   {len(sleeps)} durable rate-limit sleeps journaled")
    ok = (
        rows == distinct == PAGES * PAGE_SIZE
        and round(eur * 100) == result["total_cents"] == expected_cents
        and twice == [23]
        and len(keys) == 1
    )
    print("   all totals agree" if ok else "   MISMATCH")
    return 0 if ok else 1


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return child(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="journal path (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durable-example-") as tmp:
        db = args.db or os.path.join(tmp, "journal.db")
        try:
            return story(db, os.path.join(tmp, "warehouse.db"))
        finally:
            engine.default_engine().close()


if __name__ == "__main__":
    sys.exit(main())
