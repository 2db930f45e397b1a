"""Leases on one clock: on PostgreSQL the server's clock decides when a lease expires.

Worker processes whose ``time.time`` is skewed by an hour either way (as on a host
whose clock is off; see tests/_procs/clock_child.py) share a journal with honest ones.
A fast worker must not take runs whose leases are live, a slow one's leases must not
look expired to the others, and a skewed worker that dies must not leave its runs
held for an hour. Every step's side effect is logged: each must end exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from _children import REPO

from engine import Engine
from journal import Journal

PROCS = REPO / "tests" / "_procs"
sys.path.insert(0, str(PROCS))
import clock_workload as workload  # noqa: E402

HOUR = 3600.0
LEASE = 5.0

pytestmark = pytest.mark.postgres


class Children:
    """Child processes of one test, killed at its end whatever happens."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, mode: str, skew: float, *, concurrency: int = 2, step: float = 0.3):  # type: ignore[no-untyped-def]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(PROCS), str(REPO)]),
            "CLOCK_LOG": str(self.log),
            "CLOCK_SKEW": repr(skew),
            "CLOCK_STEP_SECONDS": repr(step),
        }
        proc = subprocess.Popen(
            [sys.executable, str(PROCS / "clock_child.py"), self.url, mode, repr(LEASE),
             str(concurrency)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready"), (line, proc.stderr.read() if proc.stderr else "")
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def children(pg_schema_url: str, tmp_path: Path) -> Iterator[Children]:
    kids = Children(pg_schema_url, tmp_path / "effects.log")
    try:
        yield kids
    finally:
        for proc in kids.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def effects(log: Path) -> list[tuple[str, str, str]]:
    """``(run_id, step, begin|end)`` per line of the side-effect log."""
    if not log.exists():
        return []
    return [tuple(line.split()[2:5]) for line in log.read_text().splitlines()]  # type: ignore[misc]


def enqueue(url: str, n: int, prefix: str) -> None:
    with Engine(url, durability="process") as eng:
        workload.job._engine = eng
        try:
            for i in range(n):
                workload.job.enqueue(i, run_id=f"{prefix}-{i}")
        finally:
            workload.job._engine = None


def wait_finished(url: str, n: int, timeout: float) -> float:
    """Seconds until ``n`` runs are completed; fails after ``timeout``."""
    start = time.monotonic()
    with Journal(url) as journal:
        while True:
            done = journal.query("SELECT count(*) AS n FROM runs WHERE status = 'completed'")
            if int(done[0]["n"]) >= n:
                return time.monotonic() - start
            assert time.monotonic() - start < timeout, (
                f"{done[0]['n']} of {n} runs completed after {timeout}s"
            )
            time.sleep(0.05)


def assert_each_step_ended_once(log: Path, run_ids: list[str]) -> None:
    ends = Counter((run_id, k) for run_id, k, what in effects(log) if what == "end")
    want = {(run_id, str(k)) for run_id in run_ids for k in range(1, workload.STEPS + 1)}
    twice = {key: n for key, n in ends.items() if n != 1}
    assert not twice, f"side effects that ran more than once: {twice}"
    assert set(ends) == want


def test_skewed_workers_never_take_live_leases(children: Children) -> None:
    """An honest worker, one an hour fast and one an hour slow drain the same runs:
    no step runs twice (a fast clock took every live lease as expired; a slow one's
    leases were written already expired)."""
    n = 12
    enqueue(children.url, n, "skew")
    for skew in (0.0, HOUR, -HOUR):
        children.spawn("worker", skew)
    took = wait_finished(children.url, n, timeout=90)
    children.stop()
    assert_each_step_ended_once(children.log, [f"skew-{i}" for i in range(n)])
    with Journal(children.url) as journal:
        runs = journal.list_runs()
        # Each run was claimed once (epoch 1): nobody took a run from its live owner.
        assert {r.run_id: r.epoch for r in runs} == {f"skew-{i}": 1 for i in range(n)}, took


@pytest.mark.parametrize(
    ("dead_skew", "rescuer", "rescuer_skew"),
    [
        pytest.param(HOUR, "worker", 0.0, id="fast-worker-dies"),
        pytest.param(0.0, "recover", -HOUR, id="slow-recoverer", marks=pytest.mark.slow),
    ],
)
def test_a_dead_skewed_workers_runs_resume_after_one_lease(
    children: Children, dead_skew: float, rescuer: str, rescuer_skew: float
) -> None:
    """A worker is SIGKILLed inside a step; another process, its clock off the other
    way, resumes the runs within a lease (not an hour), and no completed step runs again."""
    n = 2
    enqueue(children.url, n, "dead")
    doomed = children.spawn("worker", dead_skew, step=1.0)
    deadline = time.monotonic() + 30
    # Kill inside step 2 of both runs: step 1 is committed, step 2 began and never ended.
    while sum(1 for _, k, what in effects(children.log) if (k, what) == ("2", "begin")) < n:
        assert time.monotonic() < deadline, "the doomed worker never reached step 2"
        assert doomed.poll() is None
        time.sleep(0.01)
    doomed.kill()
    doomed.wait()
    killed_at = time.monotonic()
    proc = children.spawn(rescuer, rescuer_skew, step=0.1)
    wait_finished(children.url, n, timeout=LEASE + 55)
    took = time.monotonic() - killed_at
    if rescuer == "recover":
        out, _ = proc.communicate(timeout=30)
        assert out.strip() == f"recovered {n}"
    children.stop()
    # A lease, plus the rest of the runs and a process start (slow on a loaded
    # machine): not the hour the skew would add.
    assert took < LEASE + 55, f"the dead worker's runs waited {took:.1f}s"
    log = effects(children.log)
    begins = Counter((run_id, k) for run_id, k, what in log if what == "begin")
    # Step 2 was in flight when its worker died: it began twice, ended once.
    assert all(begins[(f"dead-{i}", "2")] == 2 for i in range(n)), begins
    assert_each_step_ended_once(children.log, [f"dead-{i}" for i in range(n)])
