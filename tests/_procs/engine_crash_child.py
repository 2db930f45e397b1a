"""Child-process program for tests/reliability/test_engine_crash.py.

Run as ``python engine_crash_child.py MODE ARGS...``. This file's own folder is taken
off ``sys.path`` first: the parent alone decides, through ``PYTHONPATH``, whether
``engine_crash_workload`` (which lives next to this file) is importable.

- ``start DB RUN_ID sync|async N LEASE``: start the workload's run and wait for its
  result (the workload SIGKILLs this process at the point ``ENGINE_CRASH_AT`` names,
  or the parent kills it); if it survives, prints ``result <json>``.
- ``recover DB RUN_ID LEASE``: wait until the run's lease expired (polling
  ``claimable()``), call ``recover()`` without importing the workload itself (the
  engine imports it by its recorded name), print ``report <json>``.

An unexpected exception prints ``error <type> <message>`` and exits with status 3.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # the script's folder: PYTHONPATH decides what is importable

import engine
from engine import configure, default_engine

WORKLOAD = "engine_crash_workload"


def start(db: str, run_id: str, flavour: str, n: str, lease: str) -> None:
    configure(db, lease_seconds=float(lease))
    module = importlib.import_module(WORKLOAD)
    fn = module.crash_job if flavour == "sync" else module.async_crash_job
    result = fn.start(int(n), run_id=run_id).result(timeout=60)
    print(f"result {json.dumps(result)}", flush=True)


def _wait_claimable(run_id: str, timeout: float = 30.0) -> float:
    """Poll until the dead owner's lease on ``run_id`` expired; return the seconds waited."""
    journal = default_engine().journal
    began = time.monotonic()
    while not any(r.run_id == run_id for r in journal.claimable()):
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"run {run_id!r} never became claimable")
        time.sleep(0.01)
    return time.monotonic() - began


def recover(db: str, run_id: str, lease: str) -> None:
    configure(db, lease_seconds=float(lease))
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "importable": importlib.util.find_spec(WORKLOAD) is not None,
    }
    out["waited"] = _wait_claimable(run_id)
    report = engine.recover(timeout=60)
    out["run_ids"] = report.run_ids
    out["errors"] = {
        rid: {"type": type(exc).__name__, "message": str(exc), "context": exc.context}
        for rid, exc in report.errors.items()
    }
    run = default_engine().journal.get_run(run_id)
    out["status"] = run.status
    if run.status == "completed":
        out["result"] = default_engine().handle(run_id).result(timeout=60)
    out["loaded"] = WORKLOAD in sys.modules
    print(f"report {json.dumps(out)}", flush=True)


def main() -> None:
    mode, *args = sys.argv[1:]
    try:
        {"start": start, "recover": recover}[mode](*args)
    except Exception as exc:  # reported to the parent on stdout
        print(f"error {type(exc).__name__} {exc}", flush=True)
        raise SystemExit(3) from exc
    finally:
        default_engine().close()


if __name__ == "__main__":
    main()
