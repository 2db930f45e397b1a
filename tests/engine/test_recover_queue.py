"""One door: every path that executes a run of a queue claims it as a worker does.

Recovery, ``start``/attach to an existing run, and ``fork`` of a queued run go through
``Journal.claim_next`` with the declared limits: never more of a queue's runs executing
at once than its ``Queue(concurrency=N)`` allows, highest priority first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _children import REPO

from engine import Engine, Queue, durable, fork, step

PROCS = REPO / "tests" / "_procs"
sys.path.insert(0, str(PROCS))
import clock_workload as workload  # noqa: E402

door = Queue("door-test", concurrency=1)


@step
def double(i: int) -> int:
    return i * 2


@durable(queue=door)
def through_door(i: int) -> int:
    return double(i) + double(i)


def intervals(log: Path) -> list[tuple[str, str]]:
    """``(run_id, begin|end)`` in the order the side effects happened."""
    return [(p[2], p[4]) for p in (line.split() for line in log.read_text().splitlines())]


def peak_overlap(events: list[tuple[str, str]]) -> int:
    open_runs: set[str] = set()
    peak = 0
    for run_id, what in events:
        if what == "begin":
            open_runs.add(run_id)
            peak = max(peak, len(open_runs))
        else:
            open_runs.discard(run_id)
    return peak


def test_recover_holds_a_queue_limit_and_its_priorities(
    journal_location: str, tmp_path: Path
) -> None:
    """Five runs of a queue limited to one (three left running by a dead worker, two
    never started) are recovered by another process one at a time, highest priority
    first."""
    log = tmp_path / "effects.log"
    priorities = {"q-0": 1, "q-1": 5, "q-2": 3, "q-3": 0, "q-4": 4}
    with Engine(journal_location, durability="process") as eng:
        workload.queued._engine = eng
        try:
            for i, (run_id, priority) in enumerate(priorities.items()):
                workload.queued.enqueue(i, run_id=run_id, priority=priority)
        finally:
            workload.queued._engine = None
        # A worker claimed these and died: their leases run out at once.
        for run_id in ("q-0", "q-1", "q-3"):
            eng.journal.claim_run(run_id, "dead-worker", lease_seconds=0.2)
    time.sleep(0.3)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROCS), str(REPO)]),
        "CLOCK_LOG": str(log),
        "CLOCK_STEP_SECONDS": "0.2",
    }
    proc = subprocess.run(
        [sys.executable, str(PROCS / "clock_child.py"), journal_location, "recover", "5", "4"],
        check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "recovered 5", proc.stdout
    events = intervals(log)
    assert peak_overlap(events) == 1, events
    began = [run_id for run_id, what in events if what == "begin"]
    assert began == sorted(priorities, key=lambda r: -priorities[r])
    with Engine(journal_location) as eng:
        assert {r.status for r in eng.journal.list_runs()} == {"completed"}


@pytest.fixture
def eng(db_path: Path) -> Iterator[Engine]:
    engine = Engine(db_path, lease_seconds=30)
    through_door._engine = engine
    try:
        yield engine
    finally:
        through_door._engine = None
        engine.close()


def test_start_fork_and_recover_wait_for_the_queue(eng: Engine) -> None:
    """While another worker holds the queue's only place, attaching to a queued run,
    forking a run of the queue and recovering leave their runs pending; once the place
    is free, recovery runs them."""
    journal = eng.journal
    through_door.enqueue(1, run_id="done")
    assert eng.start(through_door, (1,), {}, run_id="done").result(10) == 4
    through_door.enqueue(2, run_id="held")
    through_door.enqueue(3, run_id="waiting")
    journal.claim_run("held", "other-worker", lease_seconds=60)

    attached = eng.start(through_door, (3,), {}, run_id="waiting")
    forked = fork("done", at=1, new_run_id="forked", engine=eng)
    report = eng.recover(wait=False)
    assert report.handles == []
    assert report.queued == ["waiting", "forked"]  # same priority: oldest first
    for run_id in ("waiting", "forked"):
        run = journal.get_run(run_id)
        assert (run.status, run.owner, run.queue) == ("pending", None, "door-test")

    eng.cancel("held")  # the place is free
    report = eng.recover(timeout=30)
    assert sorted(report.run_ids) == ["forked", "waiting"]
    assert report.queued == []
    assert attached.result(10) == 12
    assert forked.result(10) == 4
