"""Runs for the web view's story tests (tests/ui/test_ui_story.py, tests/ui/test_ui_browser.py):
one crashed by SIGKILL and taken over by another process, one that fails.

:func:`crash_and_recover` starts ``crashy`` in a child process
(``ui_story_child.py``), SIGKILLs it while its third step runs, waits until the dead
owner's lease expired and recovers the run here, where this module is imported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine import Context, Engine, durable, step
from journal import EntryKind, Journal, JournalError

HERE = Path(__file__).resolve().parent
HANG = "UI_STORY_HANG"
"""Set in the child only: its third step hangs there until the parent kills it."""


@step
def fetch(i: int) -> int:
    if i == 2 and os.environ.get(HANG):
        time.sleep(600)
    return i * 10


@durable(name="ui_story:crashy")
def crashy(ctx: Context, n: int) -> int:
    ctx.state["total"] = 0
    for i in range(n):
        ctx.state["total"] += fetch(i)
    return int(ctx.state["total"])


@durable(name="ui_story:broken")
def broken(ctx: Context, item: str) -> None:
    ctx.state["stock"] = fetch(0)
    raise ValueError(f"no stock for {item}")


def _completed_steps(db: Path, run_id: str) -> int:
    try:
        with Journal(db, readonly=True) as j:
            return sum(e.kind == EntryKind.STEP_COMPLETED for e in j.read(run_id))
    except JournalError:
        return 0  # the child has not created the journal, or the run, yet


def crash_and_recover(db: Path, run_id: str, lease: float = 1.0) -> dict[str, Any]:
    """Run ``crashy(4)`` as ``run_id`` in a child, SIGKILL it inside its third step, then
    recover the run here once the lease expired. Returns the child's pid, when it was
    killed, and the run's result."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent.parent), str(HERE)]))
    env[HANG] = "1"
    child = subprocess.Popen(
        [sys.executable, str(HERE / "ui_story_child.py"), str(db), run_id, str(lease)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _completed_steps(db, run_id) < 2:
            assert child.poll() is None, f"the child exited early: {child.communicate()}"
            assert time.monotonic() < deadline, "the child never completed two steps"
            time.sleep(0.01)
        # Inside step 3, which hangs. Long enough that the silence counts as a takeover
        # (MIN_SILENCE) even if a busy machine let the lease lapse before the kill.
        time.sleep(0.6)
    finally:
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=60)
    killed = time.time()
    assert child.returncode == -signal.SIGKILL, (child.returncode, out, err[-2000:])
    with Engine(db, lease_seconds=lease) as eng:
        deadline = time.monotonic() + 60
        while not any(r.run_id == run_id for r in eng.journal.claimable()):
            assert time.monotonic() < deadline, "the dead owner's lease never expired"
            time.sleep(0.01)
        report = eng.recover()
        assert run_id in report.run_ids, report
        result = next(h for h in report.handles if h.run_id == run_id).result(timeout=60)
    return {"pid": child.pid, "killed": killed, "result": result}
