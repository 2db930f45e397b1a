"""Durable runs under real crashes: a child process is SIGKILLed, a new process recovers.

The workload (``tests/_procs/engine_crash_workload.py``) is a 50-step durable function
(and an async twin with one ``asyncio.gather`` of 5 steps); every step body appends
``"<run_id> <i> <pid>"`` to an fsynced log, so the test counts how often each step body
really ran, across processes. Children are started by ``tests/_procs/engine_crash_child.py``.
Kill points are exact: either the child kills itself at a point an env var names, or
the parent kills it after reading a given ``logged <i>`` line from its stdout. No sleep
is used to synchronise; the recovering child polls ``claimable()`` for the lease expiry.

After every kill the test checks, against the journal as the dead process left it:
every step completed before the kill ran exactly once in all; a step logged but not
completed (in flight) ran once more, no other step ran twice; the journal prefix is
unchanged; the result and the final state equal those of an uninterrupted run.

Every test runs on both backends (``journal_location``: a journal file, then a fresh
PostgreSQL schema); the uninterrupted reference run is the SQLite one, so a recovered
PostgreSQL run must also record what the SQLite run recorded. The random kills run
``RANDOM_TRIALS`` seeds on SQLite and the first ``PG_RANDOM_TRIALS`` on PostgreSQL: the
kill points that differ between backends (inside a commit's round trips) are hit as
often in ten trials, and the suite stays within its time budget.

The quick set (``-m "not slow"``) keeps a few kill points on each backend (each test
is two interpreter start-ups); the full suite runs every point on both.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _children import PROCS, REPO, assert_sigkilled, finish, settle, tagged
from _children import spawn as start_child
from _trials import backends, on_backends, seeds

from journal import Entry, EntryKind, Journal, Run

CHILD = PROCS / "engine_crash_child.py"
N = 50
LEASE = 0.2
GATHER = range(10, 15)
SYNC_FN = "engine_crash_workload:crash_job"
RANDOM_TRIALS = 50
PG_RANDOM_TRIALS = 10


def step_value(i: int) -> int:
    """What step ``i`` returns: restated here (not imported) as an independent oracle."""
    return (i * 7919 + 13) % 1009


EXPECTED = {"n": N, "total": sum(step_value(i) for i in range(N))}


# -- children -------------------------------------------------------------------------


def spawn(
    mode: str,
    *args: object,
    log: Path,
    importable: bool = True,
    crash_at: str | None = None,
    announce: bool = False,
) -> subprocess.Popen[str]:
    """Start the child runner; ``importable`` puts the workload's folder on its path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_CRASH_")}
    path = [str(REPO), str(PROCS)] if importable else [str(REPO)]
    env.update(PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1", ENGINE_CRASH_LOG=str(log))
    if crash_at is not None:
        env["ENGINE_CRASH_AT"] = crash_at
    if announce:
        env["ENGINE_CRASH_ANNOUNCE"] = "1"
    return start_child([str(CHILD), mode, *map(str, args)], env=env, cwd=log.parent)


# -- what the log and the journal say ----------------------------------------------------


def log_lines(log: Path) -> list[tuple[str, int, int]]:
    """Every ``(run_id, step, pid)`` line of the execution log (each must be well-formed)."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        run_id, i, pid = line.split(" ")
        rows.append((run_id, int(i), int(pid)))
    return rows


def executions(log: Path, run_id: str) -> Counter[int]:
    """How many times each step body of ``run_id`` ran, in every process so far."""
    return Counter(i for rid, i, _ in log_lines(log) if rid == run_id)


@dataclass(frozen=True)
class JournalView:
    """A run as the journal holds it at one moment."""

    run: Run
    entries: list[Entry]
    completed: list[int]
    """Step numbers of the run's ``step.completed`` entries, in seq order."""
    values: dict[str, Any]
    history: list[tuple[str, str | None, str | None, str]]
    """What the run recorded, timings left out: ``(kind, step, key, payload)`` in seq order."""
    verified: bool


SEMANTIC = {EntryKind.STEP_COMPLETED, EntryKind.STEP_FAILED, EntryKind.STATE_SET,
            EntryKind.STATE_DELETED, EntryKind.RUN_COMPLETED, EntryKind.RUN_FAILED}  # fmt: skip


def _semantic(j: Journal, e: Entry) -> tuple[str, str | None, str | None, str]:
    payload = j.decode_entry(e)
    if e.kind == EntryKind.STEP_COMPLETED:
        payload = {k: v for k, v in payload.items() if k not in ("started", "duration")}
    return (e.kind, e.step, e.key, json.dumps(payload, sort_keys=True))


def view(db: str, run_id: str) -> JournalView:
    """Read ``run_id`` (row, entries, completed steps, folded state) and verify the journal."""
    with Journal(db) as j:
        run = j.get_run(run_id)
        entries = list(j.read(run_id))
        completed = [
            j.decode_entry(e)["result"]["i"] for e in entries if e.kind == EntryKind.STEP_COMPLETED
        ]
        history = [_semantic(j, e) for e in entries if e.kind in SEMANTIC]
        report = j.verify()
        return JournalView(run, entries, completed, j.state_at(run_id).values, history, report.ok)


# -- one crash and its recovery -------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where one test's run lives: its journal (a file path or a PostgreSQL URL) and the
    execution log (always a file, in the test's temporary directory)."""

    db: str
    log: Path


@pytest.fixture
def place(journal_location: str, tmp_path: Path) -> Place:
    """The test's journal on each backend, and its execution log."""
    return Place(journal_location, tmp_path / "exec.log")


@dataclass
class Crash:
    """A run whose first process was killed, and what it had done by then."""

    db: str
    log: Path
    run_id: str
    flavour: str
    where: str
    before: JournalView
    ran_before: Counter[int]
    killed_pid: int

    @property
    def completed_before(self) -> set[int]:
        return set(self.before.completed)

    @property
    def in_flight(self) -> set[int]:
        """Steps whose body ran before the kill but whose completion was not committed."""
        return set(self.ran_before) - self.completed_before


def _after_kill(
    proc: subprocess.Popen[str], place: Place, run_id: str, flavour: str, where: str
) -> Crash:
    assert_sigkilled(proc, where)
    db, log = place.db, place.log
    settle(db, proc)
    before = view(db, run_id)
    assert before.run.status == "running", f"{where}: killed run is {before.run.status}"
    assert before.verified, f"{where}: the journal left by the kill fails verify()"
    return Crash(db, log, run_id, flavour, where, before, executions(log, run_id), proc.pid)


def crash_at(place: Place, flavour: str, point: str) -> Crash:
    """Start a run that SIGKILLs its own process at ``point`` (``phase:step``)."""
    run_id = f"{flavour}-{point.replace(':', '-')}"
    proc = spawn("start", place.db, run_id, flavour, N, LEASE,
                 log=place.log, crash_at=point)  # fmt: skip
    return _after_kill(proc, place, run_id, flavour, f"{flavour} {point}")


def crash_after_line(place: Place, seed: int) -> tuple[Crash, int]:
    """Start a run and SIGKILL it from here once it logged a random step (plus a random
    offset of up to 5 ms, so the kill also lands in commits and between steps)."""
    rng = random.Random(seed)
    target = rng.randrange(N)
    offset = rng.choice([0.0, rng.uniform(0, 0.005)])
    run_id = f"random-{seed}"
    where = f"seed={seed}: kill after 'logged {target}' + {offset * 1000:.2f} ms"
    print(where)
    proc = spawn("start", place.db, run_id, "sync", N, LEASE,
                 log=place.log, announce=True)  # fmt: skip
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            _, err = finish(proc)
            pytest.fail(f"{where}: the child ended before logging step {target}: {err[-3000:]}")
        if line.strip() == f"logged {target}":
            break
    if offset:
        time.sleep(offset)  # where the kill lands, not synchronisation
    os.kill(proc.pid, signal.SIGKILL)
    return _after_kill(proc, place, run_id, "sync", where), target


def recover_in_child(crash: Crash, *, importable: bool = True) -> dict[str, Any]:
    """Recover the crashed journal in a new process; return its report."""
    proc = spawn("recover", crash.db, crash.run_id, LEASE, log=crash.log, importable=importable)
    out, err = finish(proc)
    report = tagged(out, err, "report")
    assert proc.returncode == 0, f"{crash.where}: recovery exited {proc.returncode}:\n{err}"
    return report


def check_recovered(crash: Crash, baseline: Baseline) -> Counter[int]:
    """Recover ``crash`` and check everything that must hold; return the step counts."""
    report = recover_in_child(crash)
    where = crash.where
    assert report["importable"], f"{where}: the workload was not importable in the recoverer"
    assert report["errors"] == {}, f"{where}: recovery errors {report['errors']}"
    assert report["run_ids"] == [crash.run_id], f"{where}: recovered {report['run_ids']}"
    assert report["loaded"], f"{where}: the engine did not import the workload by name"
    assert report["status"] == "completed", f"{where}: status {report['status']}"
    assert report["result"] == EXPECTED, f"{where}: result {report['result']}"
    assert report["result"] == baseline.result

    ran = executions(crash.log, crash.run_id)
    pids = [pid for rid, _, pid in log_lines(crash.log) if rid == crash.run_id]
    early, late = pids[: crash.ran_before.total()], pids[crash.ran_before.total() :]
    assert set(early) <= {crash.killed_pid}, f"{where}: steps ran in {set(early)} before the kill"
    assert set(late) <= {report["pid"]}, f"{where}: steps ran in {set(late)} after the kill"
    for i in range(N):
        if i in crash.completed_before:
            assert ran[i] == 1, f"{where}: step {i} completed before the kill but ran {ran[i]}x"
        else:
            assert crash.ran_before[i] <= 1, f"{where}: step {i} ran {crash.ran_before[i]}x"
            assert ran[i] == crash.ran_before[i] + 1, (
                f"{where}: step {i} (not completed at the kill) ran {ran[i]}x in all, "
                f"{crash.ran_before[i]}x before the kill"
            )

    after = view(crash.db, crash.run_id)
    assert after.verified, f"{where}: verify() fails after recovery"
    assert after.run.status == "completed"
    assert after.run.owner is None, f"{where}: the lease was not released"
    assert after.entries[: len(crash.before.entries)] == crash.before.entries, (
        f"{where}: recovery changed entries the dead process had committed"
    )
    assert sorted(after.completed) == list(range(N)), (
        f"{where}: step completions in the journal: {sorted(after.completed)}"
    )
    assert after.values == baseline.values, (
        f"{where}: final state differs from an uninterrupted run"
    )
    # The recovered run recorded what an uninterrupted run records: no step completion or
    # state mutation lost or doubled (concurrent gather steps may commit in another order).
    if crash.flavour == "sync":
        assert after.history == baseline.history, f"{where}: recorded history differs"
    else:
        assert sorted(map(repr, after.history)) == sorted(map(repr, baseline.history)), where
    return ran


# -- uninterrupted baselines -----------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """An uninterrupted run in its own journal: its result, final state and step counts."""

    result: Any
    values: dict[str, Any]
    history: list[tuple[str, str | None, str | None, str]]
    ran: Counter[int]
    verified: bool


def run_uninterrupted(place: Place, flavour: str) -> Baseline:
    """Run the workload to its end in one child process; what it recorded."""
    run_id = f"baseline-{flavour}"
    proc = spawn("start", place.db, run_id, flavour, N, LEASE, log=place.log)
    out, err = finish(proc)
    result = tagged(out, err, "result")
    assert proc.returncode == 0, err
    final = view(place.db, run_id)
    assert final.run.status == "completed"
    ran = executions(place.log, run_id)
    return Baseline(result, final.values, final.history, ran, final.verified)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Baseline]]:
    """``baseline("sync" | "async")``, run once per module in a separate journal file:
    the reference for both backends."""
    cache: dict[str, Baseline] = {}

    def get(flavour: str) -> Baseline:
        if flavour not in cache:
            tmp = tmp_path_factory.mktemp(f"baseline-{flavour}")
            cache[flavour] = run_uninterrupted(
                Place(str(tmp / "journal.db"), tmp / "exec.log"), flavour
            )
        return cache[flavour]

    yield get


class TestBaseline:
    """Uninterrupted runs: the reference every recovered run is compared with."""

    @pytest.mark.parametrize("journal_location", backends(), indirect=True)
    @pytest.mark.parametrize("flavour", ["sync", "async"])
    def test_uninterrupted_run(
        self, place: Place, baseline: Callable[[str], Baseline], flavour: str
    ) -> None:
        """Each step body runs once; the result and final state are the expected ones,
        and the same on both backends."""
        base = run_uninterrupted(place, flavour)
        reference = baseline(flavour)
        assert (base.result, base.values, base.ran) == (
            reference.result,
            reference.values,
            reference.ran,
        )
        if flavour == "sync":  # gathered steps may commit in another order
            assert base.history == reference.history
        assert base.result == EXPECTED
        assert base.ran == Counter(range(N))
        assert base.values == {"total": EXPECTED["total"], "last": N - 1, "step_last": N - 1,
                               "done": True}  # fmt: skip
        assert base.verified
        kinds = Counter(kind for kind, *_ in base.history)
        assert kinds[EntryKind.STEP_COMPLETED] == N
        assert kinds[EntryKind.RUN_COMPLETED] == 1


# -- the matrix ------------------------------------------------------------------------

KILL_STEPS = [0, 1, 17, 49]
# The kill points of the quick set: the middle step in each phase on SQLite, the first
# and last where they differ most; one point on PostgreSQL.
QUICK_SQLITE = {"before": [17], "inside": [0, 17], "after": [17, 49]}
QUICK_PG = {"before": [], "inside": [17], "after": []}


def matrix(phase: str) -> list[object]:
    return on_backends(KILL_STEPS, sqlite=QUICK_SQLITE[phase], postgresql=QUICK_PG[phase])


class TestSyncKillMatrix:
    """SIGKILL before, inside and right after step k of the 50-step sync run, then recover."""

    @pytest.mark.parametrize(
        ("journal_location", "k"), matrix("before"), indirect=["journal_location"]
    )
    def test_kill_before_step(
        self, place: Place, baseline: Callable[[str], Baseline], k: int
    ) -> None:
        """Killed in the body before step k: steps < k done once, nothing ran twice."""
        crash = crash_at(place, "sync", f"before:{k}")
        assert crash.before.completed == list(range(k))
        assert crash.ran_before == Counter(range(k))
        ran = check_recovered(crash, baseline("sync"))
        assert ran == Counter(range(N)), "a step ran twice"

    @pytest.mark.parametrize(
        ("journal_location", "k"), matrix("inside"), indirect=["journal_location"]
    )
    def test_kill_inside_step(
        self, place: Place, baseline: Callable[[str], Baseline], k: int
    ) -> None:
        """Killed inside step k after its side effect: step k (only) runs exactly twice."""
        crash = crash_at(place, "sync", f"inside:{k}")
        assert crash.before.completed == list(range(k))
        assert crash.ran_before == Counter(range(k + 1))
        assert crash.in_flight == {k}
        ran = check_recovered(crash, baseline("sync"))
        assert ran[k] == 2
        assert ran - Counter([k]) == Counter(range(N)), "a step other than k ran twice"

    @pytest.mark.parametrize(
        ("journal_location", "k"), matrix("after"), indirect=["journal_location"]
    )
    def test_kill_after_step(
        self, place: Place, baseline: Callable[[str], Baseline], k: int
    ) -> None:
        """Killed once step k's completion is committed: it is replayed, never re-run."""
        crash = crash_at(place, "sync", f"after:{k}")
        assert crash.before.completed == list(range(k + 1))
        assert crash.ran_before == Counter(range(k + 1))
        assert crash.in_flight == set()
        ran = check_recovered(crash, baseline("sync"))
        assert ran == Counter(range(N)), "a step ran twice"


# The first seeds run in the quick set, the rest are slow; DURABLE_TRIALS scales both
# counts (tests/_trials.py).
RANDOM_CASES = seeds("sqlite", RANDOM_TRIALS, 1)
RANDOM_CASES += seeds("postgresql", PG_RANDOM_TRIALS, 0, pytest.mark.postgres)


class TestRandomKills:
    """The parent SIGKILLs the sync run at a random moment (seeded, one seed per trial)."""

    @pytest.mark.parametrize(
        ("journal_location", "seed"), RANDOM_CASES, indirect=["journal_location"]
    )
    def test_random_kill(
        self, place: Place, baseline: Callable[[str], Baseline], seed: int
    ) -> None:
        """Completed steps run once, at most the one step in flight runs twice."""
        crash, target = crash_after_line(place, seed)
        done = len(crash.before.completed)
        assert crash.before.completed == list(range(done)), crash.where
        assert done >= target, f"{crash.where}: step {target - 1} was not committed"
        assert crash.in_flight <= {done}, f"{crash.where}: in flight {crash.in_flight}"
        print(f"{crash.where}: {done} steps committed, in flight {sorted(crash.in_flight)}")
        ran = check_recovered(crash, baseline("sync"))
        twice = {i for i, c in ran.items() if c > 1}
        assert twice == crash.in_flight, f"{crash.where}: ran twice {twice}"


class TestAsyncKills:
    """The async run (with a 5-step gather) killed at chosen points, then recovered."""

    @pytest.mark.parametrize("journal_location", backends(sqlite=False), indirect=True)
    @pytest.mark.parametrize(
        ("point", "completed", "in_flight"),
        [
            ("before:0", range(0), set()),
            ("inside:7", range(7), {7}),
            ("before:10", range(10), set()),  # the gather is about to start
            ("after:14", range(15), set()),  # the gather returned
            ("inside:49", range(49), {49}),
        ],
    )
    def test_kill_at_point(
        self,
        place: Place,
        baseline: Callable[[str], Baseline],
        point: str,
        completed: range,
        in_flight: set[int],
    ) -> None:
        """Recovered result equals the uninterrupted one; no completed step re-ran."""
        crash = crash_at(place, "async", point)
        assert crash.before.completed == list(completed)
        assert crash.in_flight == in_flight
        ran = check_recovered(crash, baseline("async"))
        assert {i for i, c in ran.items() if c > 1} == in_flight

    @pytest.mark.parametrize("journal_location", backends(), indirect=True)
    def test_kill_inside_gather(self, place: Place, baseline: Callable[[str], Baseline]) -> None:
        """Killed in the third step of the gather: only gather steps not yet committed re-run."""
        crash = crash_at(place, "async", "inside:12")
        assert set(range(10)) <= crash.completed_before <= set(range(10)) | set(GATHER)
        assert 12 in crash.in_flight
        assert crash.in_flight <= set(GATHER)
        ran = check_recovered(crash, baseline("async"))
        assert ran[12] == 2
        assert {i for i, c in ran.items() if c > 1} == crash.in_flight


class TestUnimportableFunction:
    """Recovering a run whose function can no longer be imported."""

    @pytest.mark.parametrize("journal_location", backends(), indirect=True)
    def test_function_not_found_leaves_run_untouched(
        self, place: Place, baseline: Callable[[str], Baseline]
    ) -> None:
        """A clear FunctionNotFound in report.errors; the run is not claimed or written."""
        crash = crash_at(place, "sync", "inside:5")
        report = recover_in_child(crash, importable=False)
        assert report["importable"] is False
        assert report["run_ids"] == []
        assert list(report["errors"]) == [crash.run_id]
        error = report["errors"][crash.run_id]
        assert error["type"] == "FunctionNotFound"
        assert SYNC_FN in error["message"]
        assert crash.run_id in error["message"]
        assert "No module named 'engine_crash_workload'" in error["message"]
        assert error["context"] == {"name": SYNC_FN, "run_id": crash.run_id}
        assert report["status"] == "running"

        after = view(crash.db, crash.run_id)
        assert after.run == crash.before.run, "the run row changed"
        assert after.entries == crash.before.entries, "entries were written"
        assert after.verified
        assert executions(crash.log, crash.run_id) == crash.ran_before, "a step ran"

        # Once the module is importable again, the untouched run recovers normally.
        ran = check_recovered(crash, baseline("sync"))
        assert ran[5] == 2
