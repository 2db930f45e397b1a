"""Child-process program for tests/reliability/test_workflow_crash.py.

Run as ``python workflow_child.py MODE ARGS...``; every mode configures the default
engine on ``DB`` with ``durability="process"`` (a SIGKILL loses nothing committed).
This file's own folder is taken off ``sys.path`` first: the parent decides, through
``PYTHONPATH``, that ``workflow_workload`` is importable.

- ``fan DB RUN_ID N LEASE``: start ``FanJob`` with ``n=N``, print ``started``, wait
  for the result and print ``result <json>`` (unless it is killed first).
- ``loop DB RUN_ID N LEASE SNAPSHOT_EVERY``: the same for ``Loop``.
- ``approval DB RUN_ID LEASE exit|kill [TIMEOUT]``: start ``Approval`` (workflow
  ``timeout`` TIMEOUT seconds, default none); print ``status <s>`` (the status while
  its first step is held), then, once the run is parked on its ``wait_for_event``,
  ``waiting <json>``; then ``os._exit(0)`` without any cleanup (``exit``) or block
  until the parent SIGKILLs it (``kill``).
- ``paced DB RUN_ID N PACE TIMEOUT LEASE``: start ``Paced`` (``n`` beats of ``pace``
  seconds, workflow ``timeout`` TIMEOUT), print ``started``, then ``result <json>`` or
  ``failed <error>`` (unless ``WF_CRASH_AT`` kills it first).
- ``send DB RUN_ID event|mapping RESPONSE``: ``send_event`` a HumanResponseEvent (an
  Event, or the CLI-style mapping) and print ``sent <json>``.
- ``recover DB RUN_ID LEASE``: wait until the run is claimable (polling
  ``claimable()``), call ``recover()`` (the engine imports the workflow by its
  recorded name) and print ``report <json>``, with the entries the journal read.

An unexpected exception prints ``error <type> <message>`` and exits with status 3.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # the script's folder: PYTHONPATH decides what is importable

import engine
from engine import HumanResponseEvent, configure, default_engine, send_event

WORKLOAD = "workflow_workload"


def _configure(db: str, lease: str = "0.2") -> None:
    configure(db, lease_seconds=float(lease), durability="process")


def _announced() -> None:
    import workflow_workload

    workflow_workload.STARTED.set()  # crash points may fire from here on


def fan(db: str, run_id: str, n: str, lease: str) -> None:
    from workflow_workload import FanJob

    _configure(db, lease)
    handler = FanJob(timeout=None).run(run_id=run_id, n=int(n))
    os.write(1, b"started\n")  # one write(2): never inside a step's "logged" line
    _announced()
    print(f"result {json.dumps(handler.result(timeout=60))}", flush=True)


def loop(db: str, run_id: str, n: str, lease: str, snapshot_every: str) -> None:
    from workflow_workload import Loop

    _configure(db, lease)
    handler = Loop(timeout=None, snapshot_every=int(snapshot_every)).run(run_id=run_id, n=int(n))
    os.write(1, b"started\n")  # one write(2): never inside a step's "logged" line
    _announced()
    print(f"result {json.dumps(handler.result(timeout=120))}", flush=True)


def approval(db: str, run_id: str, lease: str, how: str, timeout: str = "none") -> None:
    import workflow_workload

    _configure(db, lease)
    journal = default_engine().journal
    workflow = workflow_workload.Approval(timeout=None if timeout == "none" else float(timeout))
    handler = workflow.run(run_id=run_id, item="invoice-7")
    print(f"status {journal.get_run(run_id).status}", flush=True)
    workflow_workload.PREPARE_GATE.set()

    async def first_streamed() -> dict[str, Any]:
        async for ev in handler.stream_events():
            return {"type": type(ev).__name__, "prefix": getattr(ev, "prefix", None)}
        return {}

    streamed = asyncio.run(first_streamed())
    while (status := journal.get_run(run_id).status) != "waiting":
        if status != "running":
            raise RuntimeError(f"run {run_id!r} became {status} instead of waiting")
        time.sleep(0.005)
    print(f"waiting {json.dumps({'status': status, 'streamed': streamed})}", flush=True)
    if how == "exit":
        os._exit(0)  # no cleanup: the lease is neither released nor renewed
    sys.stdin.readline()  # the parent SIGKILLs this process
    raise RuntimeError("the parent did not kill this process")


def paced(db: str, run_id: str, n: str, pace: str, timeout: str, lease: str) -> None:  # noqa: PLR0917 - argv
    from workflow_workload import Paced

    _configure(db, lease)
    handler = Paced(timeout=float(timeout)).run(run_id=run_id, n=int(n), pace=float(pace))
    os.write(1, b"started\n")  # one write(2): never inside a step's "logged" line
    _announced()
    try:
        print(f"result {json.dumps(handler.result(timeout=60))}", flush=True)
    except engine.EngineError as exc:
        print(f"failed {type(exc).__name__}: {exc}", flush=True)


def send(db: str, run_id: str, form: str, response: str) -> None:
    _configure(db)
    if form == "mapping":
        key = send_event(run_id, {"type": "HumanResponseEvent", "response": response})
    else:
        key = send_event(run_id, HumanResponseEvent(response=response))
    run = default_engine().journal.get_run(run_id)
    print(f"sent {json.dumps({'key': key, 'status': run.status, 'owner': run.owner})}", flush=True)


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
    _configure(db, lease)
    journal = default_engine().journal
    out: dict[str, Any] = {"pid": os.getpid(), "waited": _wait_claimable(run_id)}
    before = journal.entries_read
    report = engine.recover(timeout=60)
    out["entries_read"] = journal.entries_read - before
    out["run_ids"] = report.run_ids
    out["errors"] = {rid: f"{type(e).__name__}: {e}" for rid, e in report.errors.items()}
    run = journal.get_run(run_id)
    out["status"] = run.status
    out["error"] = run.error
    if run.status == "completed":
        out["result"] = default_engine().handle(run_id).result(timeout=60)
    workload = sys.modules.get(WORKLOAD)
    stats = dict(getattr(workload, "LOOP_STATS", {}))
    if "read_at_first" in stats:
        stats["read_at_first"] -= before
    out["loop"] = stats
    print(f"report {json.dumps(out)}", flush=True)


def main() -> None:
    mode, *args = sys.argv[1:]
    modes = {
        "fan": fan,
        "loop": loop,
        "approval": approval,
        "paced": paced,
        "send": send,
        "recover": recover,
    }
    try:
        modes[mode](*args)
    except Exception as exc:  # reported to the parent on stdout
        print(f"error {type(exc).__name__} {exc}", flush=True)
        raise SystemExit(3) from exc
    finally:
        default_engine().close()


if __name__ == "__main__":
    main()
