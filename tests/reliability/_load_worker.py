"""A worker process for test_load_workers.py: drain the journal's queued runs.

``python _load_worker.py DB LEASE LIMIT`` opens an :class:`engine.Engine` on DB, prints
``ready <owner>``, waits for a ``go`` line on stdin, and loops
``engine.recover(wait=True, limit=LIMIT)`` until no run is left unfinished; a run this
worker lost to another (fenced off, or stopped by its heartbeat) prints
``fenced <run_id> <exception type>``. It ends
with ``done {json}`` (runs it resumed, fenced, loops). An exception that escapes
prints ``error <type> <message>`` and exits with status 3: a ``JournalBusy`` or
"database is locked" must never reach here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # PYTHONPATH decides what is importable, as in a real deployment

from engine import Engine, FencedOff, RunCancelled

UNFINISHED = ["pending", "running", "waiting"]


def main(db: str, lease: str, limit: str) -> None:
    eng = Engine(db, lease_seconds=float(lease), durability="process")
    print(f"ready {eng.owner}", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go' on stdin")
    resumed = fenced = loops = 0
    try:
        while True:
            loops += 1
            report = eng.recover(wait=True, limit=int(limit), timeout=120)
            if report.errors:
                raise RuntimeError(f"recovery errors: {report.errors}")
            for handle in report.handles:
                future = handle._future
                exc = future.exception() if future is not None and future.done() else None
                if isinstance(exc, FencedOff | RunCancelled):
                    fenced += 1
                    print(f"fenced {handle.run_id} {type(exc).__name__}", flush=True)
                elif exc is not None:
                    raise exc
            resumed += len(report.handles)
            if not eng.journal.list_runs(status=UNFINISHED, limit=1):
                break
            if not report.handles:
                time.sleep(0.02)  # others hold the rest: wait for them or their leases
    finally:
        eng.close()
    summary = {"pid": os.getpid(), "resumed": resumed, "fenced": fenced, "loops": loops}
    print(f"done {json.dumps(summary)}", flush=True)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except Exception as exc:
        print(f"error {type(exc).__name__} {exc}", flush=True)
        raise SystemExit(3) from exc
