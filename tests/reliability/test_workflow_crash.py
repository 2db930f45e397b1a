"""Workflows under real crashes: a child process is SIGKILLed, new processes resume the run.

The workflows live in ``tests/_procs/workflow_workload.py``; children are started by
``tests/_procs/workflow_child.py``. ``FanJob`` splits into 8 ``Part`` events (sent with
``ctx.send_event``), a ``work`` step with ``num_workers=3`` handles each, and ``join``
collects every ``Done`` with ``collect_events``. Every step body appends
``"<run_id> <step> <part> <pid>"`` to an fsynced log, so the test counts how often each
(step, part) really ran, across processes. Kill points are exact: the child kills itself
at a point an env var names; or the parent kills it once the journal (opened read-only)
shows the k-th ``work`` completion committed; or after a given ``logged`` line on the
child's stdout. No sleep synchronises anything: the recovering child polls
``claimable()`` for the lease expiry, and the parent polls the journal or reads lines.

After every kill, against the journal as the dead process left it: each (step, part)
whose ``step.completed`` was committed ran exactly once in all; each one in flight (its
side effect logged, no completion) ran exactly once more, so at most twice; the result
and the final store equal an uninterrupted run's; no delivery is left pending; the
prefix the dead process committed is unchanged; ``verify()`` passes.

Every test runs on both backends (``journal_location``: a journal file, then a fresh
PostgreSQL schema), against the uninterrupted SQLite run as the reference. The random
kills run ``RANDOM_TRIALS`` seeds on SQLite and the first ``PG_RANDOM_TRIALS`` on
PostgreSQL, to keep the suite within its time budget.

The quick set (``-m "not slow"``) keeps a few kill points of each kind, and one on
PostgreSQL (each test is two or three interpreter start-ups); the full suite runs every
point on both backends.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest
from _children import (
    PROCS,
    REPO,
    TIMEOUT,
    Popen,
    assert_sigkilled,
    finish,
    kill,
    read_line,
    settle,
    tagged,
)
from _children import spawn as start_child
from _trials import backends, on_backends, seeds

from journal import Entry, EntryKind, Journal, Run
from journal._schema import reseal_runs

CHILD = PROCS / "workflow_child.py"
if str(PROCS) not in sys.path:
    sys.path.append(str(PROCS))
# Decoding never imports code: the workload's event classes must be imported to be read.
import workflow_workload  # noqa: E402, F401

K = EntryKind
N = 8
LEASE = 0.2
RANDOM_TRIALS = 30
PG_RANDOM_TRIALS = 8
LOOP_N = 3000
SNAPSHOT_EVERY = 200

Label = tuple[str, int]
"""``(step, part)``: ``("split", -1)``, ``("work", i)``, ``("join", i)`` (the Done of part i)."""

LABELS: list[Label] = [("split", -1)] + [(s, i) for s in ("work", "join") for i in range(N)]


def value(i: int) -> int:
    """What part ``i`` contributes: restated here (not imported) as an independent oracle."""
    return (i * 7919 + 13) % 1009


EXPECTED = {"n": N, "parts": list(range(N)), "total": sum(value(i) for i in range(N))}
EXPECTED_STORE = {"n": N, "joined": N, **{f"part{i}": value(i) for i in range(N)}}


# -- children -------------------------------------------------------------------------


def spawn(mode: str, *args: object, log: Path, env: dict[str, str] | None = None) -> Popen:
    """Start the child runner with the workload importable and ``env`` (``WF_*``) set."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WF_")}
    environ.update(
        PYTHONPATH=os.pathsep.join([str(REPO), str(PROCS)]),
        PYTHONUNBUFFERED="1",
        WF_LOG=str(log),
        **(env or {}),
    )
    return start_child([str(CHILD), mode, *map(str, args)], env=environ, cwd=log.parent)


def recover_in_child(db: str, log: Path, run_id: str, where: str) -> dict[str, Any]:
    """Recover the journal in a new process; return its report."""
    proc = spawn("recover", db, run_id, LEASE, log=log)
    out, err = finish(proc)
    assert proc.returncode == 0, f"{where}: recovery exited {proc.returncode}:\n{out}\n{err}"
    report = tagged(out, err, "report")
    assert report["errors"] == {}, f"{where}: recovery errors {report['errors']}"
    assert report["run_ids"] == [run_id], f"{where}: recovered {report['run_ids']}"
    assert report["status"] == "completed", f"{where}: {report['status']} {report['error']}"
    return report


# -- what the log and the journal say ----------------------------------------------------


def log_lines(log: Path) -> list[tuple[str, Label, int]]:
    """Every ``(run_id, (step, part), pid)`` line of the execution log."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        run_id, step_name, part, pid = line.split(" ")
        rows.append((run_id, (step_name, int(part)), int(pid)))
    return rows


def executions(log: Path, run_id: str) -> Counter[Label]:
    """How many times each (step, part) body of ``run_id`` ran, in every process so far."""
    return Counter(label for rid, label, _ in log_lines(log) if rid == run_id)


@dataclass(frozen=True)
class View:
    """A run as the journal holds it at one moment (read through a read-only journal)."""

    run: Run
    entries: list[Entry]
    completed: Counter[Label]
    """``step.completed`` entries per (step, part), the part read from the consumed event."""
    values: dict[str, Any]
    pending: dict[str, Any]
    verified: bool

    @property
    def visible(self) -> dict[str, Any]:
        """The store without the engine's own ``@`` keys."""
        return {k: v for k, v in self.values.items() if not k.startswith("@")}

    def kinds(self, kind: str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]


def view(db: str, run_id: str) -> View:
    """Read ``run_id`` (row, entries, completions by part, folded state); verify the journal."""
    with Journal(db, readonly=True) as j:
        run = j.get_run(run_id)
        entries = list(j.read(run_id))
        delivered: dict[str, Any] = {}
        completed: Counter[Label] = Counter()
        for e in entries:
            if e.kind in (K.EVENT_EMITTED, K.EVENT_RECEIVED):
                delivered[e.key or ""] = j.decode_entry(e)["event"]
            elif e.kind == K.STEP_COMPLETED:
                assert e.key in delivered, f"seq {e.seq}: {e.step} completed an unjournaled event"
                event = delivered[e.key or ""]
                completed[(e.step or "", getattr(event, "i", -1))] += 1
        state = j.state_at(run_id)
        return View(run, entries, completed, state.values, state.pending, j.verify().ok)


# -- one crash and its recovery -------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where one test's runs live: the journal (a file path or a PostgreSQL URL) and the
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
    where: str
    before: View
    ran_before: Counter[Label]
    killed_pid: int

    @property
    def committed(self) -> set[Label]:
        return set(self.before.completed)

    @property
    def in_flight(self) -> set[Label]:
        """Step bodies that ran before the kill but whose completion was not committed."""
        return set(self.ran_before) - self.committed


def start_fan(place: Place, run_id: str, env: dict[str, str] | None = None) -> Popen:
    proc = spawn("fan", place.db, run_id, N, LEASE, log=place.log, env=env)
    read_line(proc, "started")  # the run (and the journal) exists from here on
    return proc


def after_kill(proc: Popen, place: Place, run_id: str, where: str) -> Crash:
    """The journal and the log as the killed child left them (which must be sound)."""
    db, log = place.db, place.log
    settle(db, proc)
    before = view(db, run_id)
    assert before.run.status == "running", f"{where}: killed run is {before.run.status}"
    assert before.verified, f"{where}: the journal left by the kill fails verify()"
    assert max(before.completed.values(), default=1) == 1, f"{where}: a step committed twice"
    crash = Crash(db, log, run_id, where, before, executions(log, run_id), proc.pid)
    assert max(crash.ran_before.values(), default=1) == 1, f"{where}: a body ran twice"
    assert crash.committed <= set(crash.ran_before), f"{where}: committed without running"
    return crash


def crash_at(place: Place, point: str) -> Crash:
    """Start a run whose child SIGKILLs itself at ``point`` (``inside:<step>[:<i>]``)."""
    run_id = f"fan-{point.replace(':', '-')}"
    proc = start_fan(place, run_id, {"WF_CRASH_AT": point})
    assert_sigkilled(proc, point)
    return after_kill(proc, place, run_id, point)


def check_recovered(crash: Crash, baseline: Baseline) -> Counter[Label]:
    """Recover ``crash`` in a new process and check all that must hold; return the counts."""
    where = crash.where
    report = recover_in_child(crash.db, crash.log, crash.run_id, where)
    assert report.get("result") == EXPECTED, f"{where}: result {report.get('result')}"
    assert report.get("result") == baseline.result

    ran = executions(crash.log, crash.run_id)
    pids = [pid for rid, _, pid in log_lines(crash.log) if rid == crash.run_id]
    early, late = pids[: crash.ran_before.total()], pids[crash.ran_before.total() :]
    assert set(early) <= {crash.killed_pid}, f"{where}: steps ran in {set(early)} before the kill"
    assert set(late) <= {report["pid"]}, f"{where}: steps ran in {set(late)} after the kill"
    for label in LABELS:
        if label in crash.committed:
            assert ran[label] == 1, f"{where}: {label} was committed but ran {ran[label]}x"
        else:
            assert ran[label] == crash.ran_before[label] + 1, (
                f"{where}: {label} (not committed at the kill) ran {ran[label]}x in all, "
                f"{crash.ran_before[label]}x before the kill"
            )
            assert ran[label] <= 2
    assert set(ran) == set(LABELS), f"{where}: unexpected step bodies {set(ran) - set(LABELS)}"

    after = view(crash.db, crash.run_id)
    assert after.verified, f"{where}: verify() fails after recovery"
    assert after.run.status == "completed"
    assert after.entries[-1].kind == K.RUN_COMPLETED, f"{where}: entries after the run's end"
    assert after.run.owner is None, f"{where}: the lease was not released"
    assert after.entries[: len(crash.before.entries)] == crash.before.entries, (
        f"{where}: recovery changed entries the dead process had committed"
    )
    assert after.completed == Counter(LABELS), f"{where}: completions {after.completed}"
    assert after.pending == {}, f"{where}: deliveries left pending {after.pending}"
    assert after.visible == baseline.store, f"{where}: final store differs from uninterrupted"
    assert after.values == after.visible, f"{where}: engine keys left {set(after.values)}"
    return ran


# -- the uninterrupted run ----------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """An uninterrupted run in its own journal: its result, final store and step counts."""

    result: Any
    store: dict[str, Any]
    view: View
    ran: Counter[Label]


def run_uninterrupted(place: Place) -> Baseline:
    """One FanJob run to its end in one child process; what it recorded."""
    proc = start_fan(place, "baseline")
    out, err = finish(proc)
    assert proc.returncode == 0, err
    final = view(place.db, "baseline")
    assert final.run.status == "completed"
    return Baseline(
        tagged(out, err, "result"), final.visible, final, executions(place.log, "baseline")
    )


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Baseline]:
    """One uninterrupted FanJob run, in a separate journal file: the reference for both
    backends."""
    tmp = tmp_path_factory.mktemp("baseline")
    yield run_uninterrupted(Place(str(tmp / "journal.db"), tmp / "exec.log"))


class TestBaseline:
    """The uninterrupted run every recovered run is compared with."""

    @pytest.mark.parametrize("journal_location", backends(), indirect=True)
    def test_uninterrupted_run(self, place: Place, baseline: Baseline) -> None:
        """Each (step, part) runs and commits once; the result and store are the oracle's,
        on both backends."""
        here = run_uninterrupted(place)
        assert (here.result, here.store, here.ran) == (
            baseline.result,
            baseline.store,
            baseline.ran,
        )
        assert here.view.completed == baseline.view.completed
        assert baseline.result == EXPECTED
        assert baseline.store == EXPECTED_STORE
        assert baseline.ran == Counter(LABELS)
        assert baseline.view.completed == Counter(LABELS)
        assert baseline.view.pending == {}
        assert baseline.view.verified


# -- the matrix ------------------------------------------------------------------------


def assert_twice_exactly(ran: Counter[Label], crash: Crash) -> None:
    twice = {label for label, c in ran.items() if c > 1}
    assert twice == crash.in_flight, (
        f"{crash.where}: ran twice {twice}, in flight {crash.in_flight}"
    )


class TestKillInsideStep:
    """SIGKILL inside a step once its side effect is logged, before it returns."""

    @pytest.mark.parametrize("journal_location", backends(), indirect=True)
    def test_inside_split(self, place: Place, baseline: Baseline) -> None:
        """Killed in the fan-out step: nothing committed, only split runs twice."""
        crash = crash_at(place, "inside:split")
        assert crash.committed == set()
        assert crash.ran_before == Counter([("split", -1)])
        assert crash.before.visible == {}
        ran = check_recovered(crash, baseline)
        assert ran == Counter(LABELS) + Counter([("split", -1)])

    @pytest.mark.parametrize(
        ("journal_location", "k"),
        on_backends([0, 4, 7], sqlite=[4], postgresql=[7]),
        indirect=["journal_location"],
    )
    def test_inside_work(self, place: Place, baseline: Baseline, k: int) -> None:
        """Killed inside part k's work step: it and the other steps in flight run twice."""
        crash = crash_at(place, f"inside:work:{k}")
        assert ("work", k) in crash.in_flight
        assert ("split", -1) in crash.committed
        assert f"part{k}" not in crash.before.values, "an uncommitted store write is visible"
        assert crash.in_flight <= {("work", i) for i in range(N)} | {("join", i) for i in range(N)}
        ran = check_recovered(crash, baseline)
        assert ran[("work", k)] == 2
        assert_twice_exactly(ran, crash)


def work_completions(db: str, run_id: str) -> int:
    with Journal(db, readonly=True) as j:
        return sum(1 for e in j.read(run_id) if e.kind == K.STEP_COMPLETED and e.step == "work")


class TestKillAfterCommit:
    """SIGKILL once the k-th work step's completion is committed (parts >= k held back)."""

    @pytest.mark.parametrize(
        ("journal_location", "k"), on_backends([1, 3, 7], sqlite=[3]), indirect=["journal_location"]
    )
    def test_after_kth_work_commit(self, place: Place, baseline: Baseline, k: int) -> None:
        """Parts < k are committed and never re-run; held parts run once, after recovery."""
        run_id, where = f"after-{k}", f"after the commit of work #{k}"
        proc = start_fan(place, run_id, {"WF_GATE": str(k)})
        deadline = time.monotonic() + TIMEOUT
        while (done := work_completions(place.db, run_id)) < k:
            assert time.monotonic() < deadline, f"{where}: only {done} work steps committed"
            time.sleep(0.001)  # polling the journal: the commit is the sync point
        kill(proc, where)
        crash = after_kill(proc, place, run_id, where)
        work = {("work", i) for i in range(N)}
        assert crash.committed & work == {("work", i) for i in range(k)}
        assert set(crash.ran_before) & work == {("work", i) for i in range(k)}, "a held part ran"
        assert all(crash.before.values.get(f"part{i}") == value(i) for i in range(k))
        assert crash.in_flight <= {("join", i) for i in range(k)}
        ran = check_recovered(crash, baseline)
        assert all(ran[("work", i)] == 1 for i in range(N)), "a work step ran twice"
        assert_twice_exactly(ran, crash)


class TestKillInJoin:
    """SIGKILL inside join, in the call that collected the k-th part."""

    @pytest.mark.parametrize(
        ("journal_location", "k"),
        on_backends([1, N // 2, N], sqlite=[N // 2]),
        indirect=["journal_location"],
    )
    def test_inside_join(self, place: Place, baseline: Baseline, k: int) -> None:
        """k-1 collected parts are in the journaled buffer; only the k-th join re-runs."""
        crash = crash_at(place, f"inside:join:{k}")
        joins = {label for label in crash.committed if label[0] == "join"}
        assert len(joins) == k - 1
        in_join = {label for label in crash.in_flight if label[0] == "join"}
        assert len(in_join) == 1
        assert crash.before.values.get("joined", 0) == k - 1
        buffer = crash.before.values.get("@collect/join", [])
        assert sorted(e.i for e in buffer) == sorted(i for _, i in joins)
        ran = check_recovered(crash, baseline)
        assert ran[next(iter(in_join))] == 2
        assert_twice_exactly(ran, crash)


# The first seeds run in the quick set, the rest are slow; DURABLE_TRIALS scales both
# counts (tests/_trials.py).
RANDOM_CASES = seeds("sqlite", RANDOM_TRIALS, 1)
RANDOM_CASES += seeds("postgresql", PG_RANDOM_TRIALS, 0, pytest.mark.postgres)


class TestRandomKills:
    """The parent SIGKILLs the run at a random moment (seeded, one seed per trial)."""

    @pytest.mark.parametrize(
        ("journal_location", "seed"), RANDOM_CASES, indirect=["journal_location"]
    )
    def test_random_kill(self, place: Place, baseline: Baseline, seed: int) -> None:
        """Committed steps run once, the steps in flight exactly twice, nothing else."""
        rng = random.Random(seed)
        target = rng.randrange(len(LABELS))
        offset = rng.choice([0.0, rng.uniform(0, 0.005)])
        run_id = f"random-{seed}"
        where = f"seed={seed}: kill after log line #{target} + {offset * 1000:.2f} ms"
        print(where)
        proc = start_fan(place, run_id, {"WF_ANNOUNCE": "1"})
        for _ in range(target + 1):
            read_line(proc, "logged ")
        if offset:
            time.sleep(offset)  # where the kill lands, not synchronisation
        kill(proc, where)
        crash = after_kill(proc, place, run_id, where)
        assert crash.ran_before.total() >= target + 1, where
        print(f"{where}: committed {len(crash.committed)}, in flight {sorted(crash.in_flight)}")
        ran = check_recovered(crash, baseline)
        assert_twice_exactly(ran, crash)


# -- human in the loop, across three processes ------------------------------------------

ITEM = "invoice-7"


def park(db: str, log: Path, run_id: str, how: str, timeout: str = "none") -> tuple[int, View]:
    """Process 1: start Approval, see it running, then parked on its wait, and die."""
    p1 = spawn("approval", db, run_id, LEASE, how, timeout, log=log,
               env={"WF_GATE_PREPARE": "1"})  # fmt: skip
    assert read_line(p1, "status ") == "running"
    waiting = json.loads(read_line(p1, "waiting "))
    assert waiting == {
        "status": "waiting",
        "streamed": {"type": "InputRequiredEvent", "prefix": "approve?"},
    }
    if how == "kill":
        kill(p1, run_id)
    else:
        out, err = finish(p1)
        assert p1.returncode == 0, f"{out}\n{err}"
    parked = view(db, run_id)
    assert parked.run.status == "waiting"
    assert parked.run.owner is not None, "process 1 exited without cleanup: lease kept"
    assert [k for k in parked.values if k.startswith("@wait/")], "no journaled wait record"
    assert len(parked.kinds(K.EVENT_STREAMED)) == 1
    assert parked.kinds(K.EVENT_RECEIVED) == []
    assert parked.completed == Counter([("prepare", -1)])
    assert executions(log, run_id) == Counter([("prepare", 0), ("ask-begin", 0)])
    assert parked.verified
    return p1.pid, parked


def answer(db: str, log: Path, run_id: str, form: str, parked: View) -> View:
    """Process 2: send the HumanResponseEvent; the run becomes pending, nobody's."""
    p2 = spawn("send", db, run_id, form, "approved", log=log)
    out, err = finish(p2)
    assert p2.returncode == 0, f"{out}\n{err}"
    sent = tagged(out, err, "sent")
    assert sent["status"] == "pending"
    fed = view(db, run_id)
    assert fed.run.status == "pending"
    assert fed.run.epoch == parked.run.epoch, "send_event claimed the run"
    assert [e.key for e in fed.kinds(K.EVENT_RECEIVED)] == [sent["key"]]
    assert fed.entries[: len(parked.entries)] == parked.entries
    assert executions(log, run_id) == Counter([("prepare", 0), ("ask-begin", 0)])
    return fed


def age(db: str, run_id: str, seconds: float) -> None:
    """Move the run's start ``seconds`` into the past: the human answered that late. The
    row is resealed (its creation time is covered by its checksum), as the journal would
    have written it."""
    if db.startswith("postgresql://"):
        import psycopg

        from journal._postgres import split_url

        conninfo, schema, _ = split_url(db)
        with psycopg.connect(conninfo, autocommit=True) as pg:
            pg.execute(f"SET search_path TO {schema}")
            pg.execute(
                "UPDATE runs SET created_at = created_at - %s WHERE run_id = %s",
                (seconds, run_id),
            )
            reseal_runs(lambda sql, params=(): pg.execute(sql.replace("?", "%s"), params))
        return
    conn = apsw.Connection(db)
    try:
        conn.execute(
            "UPDATE runs SET created_at = created_at - ? WHERE run_id = ?", (seconds, run_id)
        )
        reseal_runs(conn.execute)
    finally:
        conn.close()


class TestHumanInTheLoop:
    """Process 1 parks the run on wait_for_event and dies; 2 sends; 3 recovers."""

    @pytest.mark.parametrize(
        ("journal_location", "how"),
        on_backends(["exit", "kill"], sqlite=["kill"], postgresql=["exit"]),
        indirect=["journal_location"],
    )
    @pytest.mark.parametrize("form", ["event", "mapping"])
    def test_three_processes(self, place: Place, how: str, form: str) -> None:
        """running -> waiting -> pending -> completed; the step after the wait runs once."""
        db, log, run_id = place.db, place.log, f"hitl-{how}-{form}"
        p1_pid, parked = park(db, log, run_id, how)
        answer(db, log, run_id, form, parked)
        report = recover_in_child(db, log, run_id, run_id)
        assert report.get("result") == f"{ITEM} approved"
        final = view(db, run_id)
        assert final.run.status == "completed"
        assert final.entries[-1].kind == K.RUN_COMPLETED
        assert final.verified
        assert final.pending == {}
        assert final.values == {"item": ITEM, "answer": "approved"}
        streamed = final.kinds(K.EVENT_STREAMED)
        assert len(streamed) == 1, "the InputRequiredEvent was journaled again on resume"
        with Journal(db, readonly=True) as j:
            event = j.decode_entry(streamed[0])
        assert (type(event).__name__, event.prefix) == ("InputRequiredEvent", "approve?")
        assert final.completed == Counter([("prepare", -1), ("ask", -1), ("finish", -1)])
        ran = executions(log, run_id)
        assert ran == Counter({("prepare", 0): 1, ("ask-begin", 0): 2, ("ask-after", 0): 1,
                               ("finish", 0): 1}), ran  # fmt: skip
        pids = {label: pid for _, label, pid in log_lines(log)}
        assert pids[("prepare", 0)] == p1_pid
        assert pids[("ask-after", 0)] == pids[("finish", 0)] == report["pid"]

    @pytest.mark.parametrize("journal_location", backends(), indirect=True)
    def test_answer_later_than_the_default_timeout(self, place: Place) -> None:
        """A run started with timeout=None still completes when answered 2 minutes later."""
        db, log, run_id = place.db, place.log, "late"
        _, parked = park(db, log, run_id, "exit")
        age(db, run_id, 120)  # a run's age is not its living time
        answer(db, log, run_id, "event", parked)
        report = recover_in_child(db, log, run_id, run_id)
        assert report.get("result") == f"{ITEM} approved"
        assert executions(log, run_id)[("finish", 0)] == 1

    @pytest.mark.parametrize(
        ("journal_location", "how"),
        on_backends(["exit", "kill"], sqlite=["kill"]),
        indirect=["journal_location"],
    )
    def test_parked_longer_than_its_timeout_completes(self, place: Place, how: str) -> None:
        """A run with timeout=2 parked for a human 3 s (its process gone), then answered
        and recovered, completes: time waiting for an event and time dead are not
        living time."""
        db, log, run_id = place.db, place.log, f"parked-{how}"
        _, parked = park(db, log, run_id, how, timeout="2")
        time.sleep(3)  # really past the timeout, on the wall clock
        answer(db, log, run_id, "event", parked)
        report = recover_in_child(db, log, run_id, run_id)
        assert report.get("result") == f"{ITEM} approved"
        final = view(db, run_id)
        assert final.run.status == "completed"
        assert time.time() - final.run.created_at > 3
        assert executions(log, run_id)[("finish", 0)] == 1


# -- a workflow's timeout counts living time ---------------------------------------------

PACE = "0.25"


def paced(place: Place, run_id: str, n: int, pace: str, timeout: str, *, crash_at: int) -> Popen:
    """Start ``Paced`` in a child that SIGKILLs itself as beat ``crash_at`` starts."""
    proc = spawn("paced", place.db, run_id, n, pace, timeout, LEASE, log=place.log,
                 env={"WF_CRASH_AT": f"beat:{crash_at}"})  # fmt: skip
    read_line(proc, "started")
    assert_sigkilled(proc, run_id)
    return proc


def living(db: str, run_id: str) -> list[float]:
    """The living time each ``step.completed`` of the run recorded, in order."""
    with Journal(db, readonly=True) as j:
        return [
            float(j.decode_entry(e)["living"]) for e in j.read(run_id) if e.kind == K.STEP_COMPLETED
        ]


def beats(log: Path, run_id: str) -> list[tuple[int, int]]:
    """``(beat, pid)`` of every beat that ran."""
    return [(part, pid) for rid, (name, part), pid in log_lines(log) if rid == run_id
            and name == "beat"]  # fmt: skip


class TestLivingTime:
    """A workflow's timeout counts the time it lived, summed across processes."""

    @pytest.mark.parametrize("journal_location", backends(), indirect=True)
    def test_recovered_after_more_than_its_timeout_completes(self, place: Place) -> None:
        """timeout=2, killed after 2 of 4 beats of 0.25 s, dead 3 s, recovered: completes,
        and the living time it recorded sums both processes' beats."""
        db, log, run_id = place.db, place.log, "dead-3s"
        first = paced(place, run_id, 4, PACE, "2", crash_at=2)
        before = living(db, run_id)
        assert len(before) == 3  # begin, beat 0, beat 1
        assert 0.5 <= before[-1] < 2, before
        time.sleep(3)  # dead longer than the timeout
        report = recover_in_child(db, log, run_id, run_id)
        assert report.get("result") == 4
        assert time.time() - view(db, run_id).run.created_at > 3.5
        after = living(db, run_id)
        assert after[: len(before)] == before
        assert 1.0 <= after[-1] < 2, after  # four beats' sleeps, both processes
        assert beats(log, run_id) == [(0, first.pid), (1, first.pid), (2, report["pid"]),
                                      (3, report["pid"])]  # fmt: skip

    @pytest.mark.parametrize("journal_location", backends(), indirect=True)
    def test_living_time_is_summed_across_a_restart(self, place: Place) -> None:
        """timeout=2.2, beats of 0.5 s: 3 beats before the kill, the recovering process
        fails with WorkflowTimeoutError before 3 more (which alone it could run in time)."""
        db, log, run_id = place.db, place.log, "summed"
        first = paced(place, run_id, 6, "0.5", "2.2", crash_at=3)
        before = living(db, run_id)
        assert len(before) == 4 and 1.5 <= before[-1] < 2.2, before
        proc = spawn("recover", db, run_id, LEASE, log=log)
        out, err = finish(proc)
        assert proc.returncode == 0, f"{out}\n{err}"
        final = view(db, run_id)
        assert final.run.status == "failed", (final.run.status, final.run.error)
        assert (final.run.error or "").startswith("WorkflowTimeoutError: "), final.run.error
        assert final.entries[-1].kind == K.RUN_FAILED
        ran = beats(log, run_id)
        assert ran[:3] == [(0, first.pid), (1, first.pid), (2, first.pid)]
        later = [b for b, pid in ran if pid != first.pid]
        assert len(later) < 3, f"the recovering process ran beats {later}: the clock restarted"
        assert max(living(db, run_id)) < 2.2


# -- recovery reads only the tail -------------------------------------------------------


def completions(db: str, run_id: str) -> int:
    with Journal(db, readonly=True) as j:
        rows = j.query(
            "SELECT count(*) AS n FROM entries WHERE run_id = ? AND kind = ?",
            [run_id, K.STEP_COMPLETED],
        )
    return int(rows[0]["n"])


class TestRecoveryReadsTail:
    """A 3,000-tick loop killed past tick 2,000 resumes from its latest snapshot."""

    @pytest.mark.slow  # a 3,000-step run
    def test_recovery_reads_snapshot_and_tail(self, place: Place) -> None:
        """The resumed run reads the tail after the snapshot, not its history."""
        seed = random.randrange(1_000_000)
        rng = random.Random(seed)
        target = rng.randrange(2_001, LOOP_N - 100)
        where = f"seed={seed}: kill at >= {target} step completions"
        print(where)
        db, log, run_id = place.db, place.log, "loop"
        proc = spawn("loop", db, run_id, LOOP_N, LEASE, SNAPSHOT_EVERY, log=log,
                     env={"WF_ANNOUNCE": "1"})  # fmt: skip
        read_line(proc, "started")
        deadline = time.monotonic() + TIMEOUT
        while completions(db, run_id) < target:
            assert time.monotonic() < deadline, where
            time.sleep(0.001)  # polling the journal: the commits are the sync point
        kill(proc, where)

        with Journal(db, readonly=True) as j:
            dead = j.get_run(run_id)
            snapshot = max(
                (s.seq for s in j.snapshots(run_id) if s.seq <= dead.last_seq), default=0
            )
        done = completions(db, run_id)  # begin + the count steps committed
        assert dead.status == "running"
        assert target <= done < LOOP_N, where
        tail = dead.last_seq - snapshot
        assert 0 <= tail < SNAPSHOT_EVERY + 10, f"{where}: tail of {tail} entries"
        print(f"{where}: {done} steps, last seq {dead.last_seq}, snapshot at {snapshot}")

        report = recover_in_child(db, log, run_id, where)
        expected = {"n": LOOP_N, "acc": sum(value(i) for i in range(LOOP_N))}
        assert report.get("result") == expected, where
        after = view(db, run_id)
        appended = after.run.last_seq - dead.last_seq
        ran_after = report["loop"]["steps"]
        read = report["entries_read"]
        print(f"{where}: read {read} entries to resume; {ran_after} steps, {appended} appended")
        assert ran_after == LOOP_N + 1 - done, f"{where}: {ran_after} steps ran after recovery"
        # Rebuilding the state read exactly the entries after the latest snapshot.
        # (Perhaps +1: the run.started entry, for the timeout the run was started with;
        # +1: the last entry, a step.completed holding the run's living time so far.)
        assert report["loop"]["read_at_first"] in (tail, tail + 1, tail + 2), where
        assert tail < 2 * SNAPSHOT_EVERY
        # The whole resumed run: that tail, plus (for the snapshots it wrote) about what it
        # appended; never the ~10,000 entries of history before the snapshot.
        assert read < 2 * SNAPSHOT_EVERY + appended, f"{where}: read {read}"
        # Less than half the history, net of what the run's new snapshots re-read (an
        # early kill leaves ~4,000 entries to append: they alone can exceed half).
        assert read - appended < snapshot / 2, f"{where}: read {read} of {snapshot} entries"
        assert after.verified
        assert after.pending == {}
        assert after.values == {"n": LOOP_N, "acc": expected["acc"]}
        assert after.completed.total() == LOOP_N + 1
