"""Three worker processes fire one schedule while the test SIGKILLs them at random.

The schedule ticks every second and starts 20 s in the past with ``missed="all"``, so
the workers meet a backlog of ticks at once and then new ones as they come; they all
race to fire the same ticks. Workers are SIGKILLed (and replaced) at random instants:
between creating a tick's run and moving the schedule on, mid-step, or idle. Then:

- the ticks fired are exactly the ticks from the first one to the last one fired, each
  once: one run per tick, with the tick's deterministic id, none missing, none extra;
- every tick's run completed once (one ``run.completed``);
- the side-effect log holds the execution the journal committed for every run, and at
  most one execution per claim: a run executed again only under a new claim (its
  previous worker was killed mid-step).

``DURABLE_SCHEDULE_SEED`` replays one chaos schedule; a failure prints the seed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from _children import REPO

from engine import Engine, Schedule, add_schedule, pause_schedule, tick_run_id
from journal import EntryKind, Journal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PROCS = REPO / "tests" / "_procs"
NAME = "crash-tick"
TARGET = "schedule_workload:tick"


def _next_execution(log: Path, timeout: float) -> int | None:
    """The pid of the next step execution logged (polled every few ms), or None."""
    seen = log.stat().st_size
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if log.stat().st_size > seen:
            with log.open() as f:
                f.seek(seen)
                return int(f.readline().split()[2])
        time.sleep(0.002)
    return None


class _Workers:
    def __init__(self, location: str, log: Path) -> None:
        self.location = location
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(PROCS), str(REPO)]),
            "SCHEDULE_LOG": str(log),
        }
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(PROCS / "schedule_child.py"), self.location, "1.0", "0.1"],
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready"), f"worker did not start: {line!r}"
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[str]]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self) -> None:
        for proc in self.alive():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_every_tick_exactly_once_with_workers_killed(journal_location: str, tmp_path: Path) -> None:
    """Three workers, random SIGKILLs: every tick from the first to the last fired ran once."""
    seed = int(os.environ.get("DURABLE_SCHEDULE_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    log = tmp_path / "effects.log"
    log.touch()
    since = time.time() - 20.5
    with Engine(journal_location) as eng:
        add_schedule(NAME, TARGET, "* * * * * *", missed="all", since=since,
                     kwargs={"label": "t"}, engine=eng)  # fmt: skip
    workers = _Workers(journal_location, log)
    kills = 0
    try:
        for _ in range(3):
            workers.start()
        # The first kill lands at random while the backlog is fired and executed; the
        # others at a worker the instant it logs a step execution (it is then inside
        # the step's 0.1-0.3 s sleep): mid-tick.
        time.sleep(rng.uniform(0.0, 0.3))
        for k in range(4):
            victim = rng.choice(workers.alive())
            if k > 0:
                pid = _next_execution(log, timeout=5.0)
                victim = next((p for p in workers.alive() if p.pid == pid), victim)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            workers.start()
        with Engine(journal_location) as eng:
            pause_schedule(NAME, engine=eng)
            finish = time.monotonic() + 90
            while True:
                runs = eng.journal.list_runs(tags={"schedule": NAME}, limit=None)
                if runs and all(r.finished for r in runs):
                    break
                assert time.monotonic() < finish, f"seed {seed}: runs did not finish"
                time.sleep(0.1)
    finally:
        workers.stop_all()

    with Journal(journal_location) as journal:
        runs = journal.list_runs(tags={"schedule": NAME}, limit=None)
        schedule = Schedule("* * * * * *")
        first = schedule.next_after(since)
        assert first is not None
        by_id = {r.run_id: r for r in runs}
        fired = sorted(by_id)
        last = max(journal.get_run(i).created_at for i in fired)
        assert len(by_id) == len(runs), f"seed {seed}: a run listed twice"
        # The ticks are whole seconds: the expected ids from the first tick on, as many
        # as were fired, must be exactly the ids found (contiguous: none skipped).
        expected = [tick_run_id(NAME, first + k) for k in range(len(runs))]
        assert sorted(expected) == fired, f"seed {seed}: ticks missing or extra"
        assert len(runs) >= 21, f"seed {seed}: only {len(runs)} ticks fired by {last}"
        committed: dict[str, str] = {}
        for run in runs:
            assert run.status == "completed", f"seed {seed}: {run.run_id} is {run.status}"
            assert run.name == TARGET
            kinds = Counter(e.kind for e in journal.read(run.run_id))
            assert kinds[EntryKind.RUN_COMPLETED] == 1, f"seed {seed}: {run.run_id}"
            assert kinds[EntryKind.RUN_STARTED] == 1, f"seed {seed}: {run.run_id}"
            output = journal.decode(run.output, run.codec, where=run.run_id)
            committed[run.run_id] = output.split(":", 1)[1]

    executions: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        run_id, epoch, _pid, token = line.split()
        executions[run_id].append((int(epoch), token))
    assert set(executions) == set(committed), f"seed {seed}: executions of unknown runs"
    again = 0
    for run_id, token in committed.items():
        done = executions[run_id]
        assert token in {t for _, t in done}, f"seed {seed}: {run_id}'s result never ran"
        per_claim = Counter(epoch for epoch, _ in done)
        assert max(per_claim.values()) == 1, f"seed {seed}: {run_id} ran twice in one claim"
        again += len(done) > 1
    print(f"seed {seed}: {len(committed)} ticks, {kills} kills, {again} ran again after a kill")
