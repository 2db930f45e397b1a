"""Child-process program for tests/engine/test_resume.py.

Run as ``python resume_child.py MODE DB RUN_ID [N]`` with ``tests/_procs`` on
``PYTHONPATH``:

- ``fail DB RUN_ID N``: start ``resume_workload.pipeline(N)`` and wait for it to end;
  prints ``status <status>``. ``wfail DB RUN_ID N``: the same with the workflow
  ``resume_workload.Chain``.
- ``resume DB RUN_ID``: wait for the file ``$RESUME_GO`` (if set) to exist, then resume
  the run and wait for it to end; prints ``resumed <status>`` or ``refused <error type>``.
- ``recover DB RUN_ID``: wait for the run to be claimable (or finished), recover it,
  print ``status <status>``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # the script's folder: PYTHONPATH decides what is importable

from engine import EngineError, configure, default_engine


def main(mode: str, db: str, run_id: str, *rest: str) -> None:
    configure(db, lease_seconds=1.0)
    eng = default_engine()
    if mode == "fail":
        import resume_workload  # registers the function

        handle = resume_workload.pipeline.start(int(rest[0]), run_id=run_id)
        print(f"status {handle.wait(60).status}", flush=True)
    elif mode == "wfail":
        import resume_workload  # registers the workflow

        handler = resume_workload.Chain(timeout=None).run(n=int(rest[0]), run_id=run_id)
        print(f"status {handler.wait(60).status}", flush=True)
    elif mode == "resume":
        import resume_workload  # registers the function

        go = os.environ.get("RESUME_GO")
        while go and not os.path.exists(go):
            time.sleep(0.001)
        try:
            handle = eng.resume(run_id)
        except EngineError as exc:
            print(f"refused {type(exc).__name__} {exc}", flush=True)
            return
        print(f"resumed {handle.wait(60).status}", flush=True)
    elif mode == "recover":
        deadline = time.monotonic() + 30
        while not eng.journal.get_run(run_id).finished and not any(
            r.run_id == run_id for r in eng.journal.claimable()
        ):
            if time.monotonic() > deadline:
                raise SystemExit("never claimable")
            time.sleep(0.05)
        eng.recover(wait=True, timeout=60)
        print(f"status {eng.journal.get_run(run_id).status}", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
