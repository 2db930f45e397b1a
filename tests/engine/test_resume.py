"""Resuming a failed run: the same run goes on from its failing step with today's code.

In-process tests of the engine API, the guarded reopen on both backends, the CLI and the
web view; real processes for two concurrent resumes and for SIGKILLs during a resumed
run (recovered by a new process).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _trials import scaled
from starlette.testclient import TestClient

from engine import (
    Context,
    Engine,
    Event,
    NotResumable,
    Queue,
    RunFailed,
    StartEvent,
    StepFailed,
    StopEvent,
    Workflow,
    WorkflowTimeoutError,
    durable,
    history,
    resume,
    step,
)
from engine.queues import enqueue
from engine.ui import create_app
from journal import EntryKind, Journal, NotFailed, ResumeRecord, RunNotFound

K = EntryKind
PROCS = Path(__file__).parents[1] / "_procs"
CHILD = PROCS / "resume_child.py"
TOKEN = "fixed-token-for-the-tests_0123456789"

# -- the functions resumed in process ---------------------------------------------------

CALLS: list[str] = []
BROKEN: set[str] = set()
"""Step names that raise while they are in here (an outage, a bug not yet fixed)."""


@step
def reserve(order: str) -> str:
    CALLS.append("reserve")
    return f"res-{order}"


@step(retries=1, backoff=0.0)
def charge(order: str) -> str:
    CALLS.append("charge")
    if "charge" in BROKEN:
        raise RuntimeError("card declined")
    return f"paid-{order}"


@step
def ship(order: str) -> str:
    CALLS.append("ship")
    if "ship" in BROKEN:
        raise RuntimeError("no courier")
    return f"shipped-{order}"


@durable
def checkout(ctx: Context[Any], order: str) -> dict[str, str]:
    r = reserve(order)
    ctx.state["reserved"] = r
    p = charge(order)
    ctx.state["paid"] = p
    s = ship(order)
    ctx.state["shipped"] = s
    return {"r": r, "p": p, "s": s}


@durable
def handles_its_failure(ctx: Context[Any], order: str) -> str:
    """Catches charge's failure, goes on, then fails at another step: the caught failure
    is history, and only ship runs again on resume."""
    try:
        charge(order)
        ctx.state["paid"] = True
    except StepFailed:
        ctx.state["paid"] = False
    return ship(order)


@step
async def acharge(order: str) -> str:
    CALLS.append("acharge")
    if "charge" in BROKEN:
        raise RuntimeError("card declined")
    return f"paid-{order}"


@durable
async def async_checkout(ctx: Context[Any], order: str) -> list[str]:
    r = reserve(order)
    return [r, await acharge(order)]


RESUME_QUEUE = Queue("resume-tests", concurrency=1)


@durable(queue="resume-tests")
def queued_checkout(ctx: Context[Any], order: str) -> str:
    return charge(order)


# -- a workflow resumed in process ------------------------------------------------------

STEPS: Counter[str] = Counter()
"""Executions of each workflow step body (attempts included)."""


class Reserved(Event):
    order: str


class Charged(Event):
    order: str
    paid: str


class Shipped(Event):
    order: str


class Ping(Event):
    """Sent by ``charge`` with ``send_event``: consumed by ``audit``, never again."""

    n: int


class CheckoutFlow(Workflow):
    """start -> reserve -> charge (sync, retried once; also sends a Ping to audit) ->
    ship -> done; ``BROKEN`` decides which step raises."""

    @step
    async def reserve(self, ctx: Context, ev: StartEvent) -> Reserved:
        STEPS["reserve"] += 1
        await ctx.store.set("reserved", f"res-{ev.order}")
        return Reserved(order=ev.order)

    @step(retries=1, backoff=0.0)
    def charge(self, ctx: Context, ev: Reserved) -> Charged:
        STEPS["charge"] += 1
        if "charge" in BROKEN:
            raise RuntimeError("card declined")
        ctx.send_event(Ping(n=1))
        return Charged(order=ev.order, paid=f"paid-{ev.order}")

    @step
    async def audit(self, ctx: Context, ev: Ping) -> None:
        STEPS["audit"] += 1
        await ctx.store.set("audited", await ctx.store.get("audited", 0) + ev.n)

    @step
    async def ship(self, ctx: Context, ev: Charged) -> Shipped:
        STEPS["ship"] += 1
        if "ship" in BROKEN:
            raise RuntimeError("no courier")
        await ctx.store.set("shipped", f"shipped-{ev.order}")
        return Shipped(order=ev.order)

    @step
    async def done(self, ctx: Context, ev: Shipped) -> StopEvent:
        STEPS["done"] += 1
        return StopEvent(
            result={
                "r": await ctx.store.get("reserved"),
                "s": await ctx.store.get("shipped"),
                "audited": await ctx.store.get("audited", 0),
            }
        )


class SlowFlow(Workflow):
    """One slow step, then another: fails by its workflow timeout."""

    @step
    async def first(self, ev: StartEvent) -> Reserved:
        STEPS["first"] += 1
        await asyncio.sleep(0.6 if "slow" in BROKEN else 0.0)
        return Reserved(order="x")

    @step
    async def second(self, ev: Reserved) -> StopEvent:
        STEPS["second"] += 1
        return StopEvent(result="in time")


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    STEPS.clear()
    CALLS.clear()
    BROKEN.clear()
    yield
    CALLS.clear()
    BROKEN.clear()


@pytest.fixture
def eng(tmp_path: Path) -> Iterator[Engine]:
    e = Engine(tmp_path / "durable.db", lease_seconds=2.0)
    yield e
    e.close()


def kinds(journal: Journal, run_id: str) -> list[str]:
    return [e.kind for e in journal.read(run_id)]


def failed_run(eng: Engine, run_id: str = "o-1", *, broken: str = "charge") -> None:
    BROKEN.add(broken)
    with pytest.raises(RunFailed):
        eng.start(checkout, ("o-1",), {}, run_id=run_id).result(timeout=10)
    assert eng.journal.get_run(run_id).status == "failed"


def row(journal: Journal, run_id: str) -> tuple[Any, ...]:
    run = journal.get_run(run_id)
    return (run.status, run.last_seq, run.epoch, run.owner, run.error, run.updated_at)


class TestResume:
    def test_completed_steps_are_not_run_again_and_the_failing_step_is(self, eng: Engine) -> None:
        failed_run(eng)
        assert CALLS == ["reserve", "charge", "charge"]  # two attempts (retries=1)
        BROKEN.clear()  # the card works now
        handle = eng.resume("o-1")
        assert handle.run_id == "o-1"
        assert handle.result(timeout=10) == {"r": "res-o-1", "p": "paid-o-1", "s": "shipped-o-1"}
        assert CALLS == ["reserve", "charge", "charge", "charge", "ship"]
        run = eng.journal.get_run("o-1")
        assert run.status == "completed" and run.error is None
        # The failure stays in the history, then the resume, then the rest.
        ks = kinds(eng.journal, "o-1")
        assert ks.index(K.RUN_FAILED) < ks.index(K.RUN_RESUMED) < ks.index(K.RUN_COMPLETED)
        assert ks.count(K.RUN_RESUMED) == 1
        state = eng.journal.state_at("o-1")
        assert dict(state.values) == {
            "reserved": "res-o-1",
            "paid": "paid-o-1",
            "shipped": "shipped-o-1",
        }

    def test_the_final_state_equals_an_uninterrupted_run(self, eng: Engine) -> None:
        failed_run(eng)
        BROKEN.clear()
        resumed = eng.resume("o-1").result(timeout=10)
        straight = eng.start(checkout, ("o-1",), {}, run_id="o-2").result(timeout=10)
        assert resumed == straight
        assert eng.journal.state_at("o-1").values == eng.journal.state_at("o-2").values

    def test_a_resumed_run_can_fail_again_and_be_resumed_again(self, eng: Engine) -> None:
        failed_run(eng)
        with pytest.raises(RunFailed, match="card declined"):
            eng.resume("o-1").result(timeout=10)  # still broken: fails again
        # The re-run had its whole retry policy again: two more attempts.
        assert CALLS.count("charge") == 4 and "ship" not in CALLS
        BROKEN.clear()
        assert eng.resume("o-1", by="ops").result(timeout=10)["s"] == "shipped-o-1"
        assert CALLS.count("charge") == 5 and CALLS.count("reserve") == 1
        ks = kinds(eng.journal, "o-1")
        assert ks.count(K.RUN_FAILED) == 2 and ks.count(K.RUN_RESUMED) == 2
        cps = [(c.kind, c.step) for c in history("o-1", engine=eng)]
        marks = [k for k, _ in cps if k.startswith("run.")]
        assert marks == [
            "run.failed",
            "run.resumed",
            "run.failed",
            "run.resumed",
            "run.completed",
        ]

    def test_the_resumed_entry_says_who_when_and_what_it_reopens(self, eng: Engine) -> None:
        failed_run(eng)
        failure = eng.journal.last_entry("o-1")
        assert failure is not None
        error = eng.journal.get_run("o-1").error
        BROKEN.clear()
        before = time.time()
        eng.resume("o-1", by="alice").result(timeout=10)
        entry = next(e for e in eng.journal.read("o-1") if e.kind == K.RUN_RESUMED)
        assert entry.seq == failure.seq + 1
        record = ResumeRecord.from_payload(eng.journal.decode_entry(entry))
        assert record.by == "alice" and before <= record.at <= time.time()
        assert record.failed_seq == failure.seq and record.error == error
        failed_step = next(
            e
            for e in eng.journal.read("o-1")
            if e.kind == K.STEP_FAILED and (e.key or "").startswith("final:")
        )
        assert record.reopens == (("o-1", failed_step.seq, "charge#2"),)
        cp = next(c for c in history("o-1", engine=eng) if c.kind == K.RUN_RESUMED)
        assert cp.detail["by"] == "alice"

    def test_a_failure_the_body_caught_stays_history(self, eng: Engine) -> None:
        BROKEN.update({"charge", "ship"})
        with pytest.raises(RunFailed, match="no courier"):
            eng.start(handles_its_failure, ("o-9",), {}, run_id="o-9").result(timeout=10)
        BROKEN.clear()  # both work now, but charge's failure was handled by the body
        CALLS.clear()
        assert eng.resume("o-9").result(timeout=10) == "shipped-o-9"
        assert CALLS == ["ship"]
        assert eng.journal.state_at("o-9").values["paid"] is False

    def test_an_async_run(self, eng: Engine) -> None:
        BROKEN.add("charge")
        with pytest.raises(RunFailed):
            eng.start(async_checkout, ("a-1",), {}, run_id="a-1").result(timeout=10)
        BROKEN.clear()
        assert eng.resume("a-1").result(timeout=10) == ["res-a-1", "paid-a-1"]
        assert CALLS == ["reserve", "acharge", "acharge"]

    def test_the_module_level_function(self, eng: Engine) -> None:
        failed_run(eng)
        BROKEN.clear()
        handle = resume("o-1", engine=eng)
        assert handle.wait(10).status == "completed"

    def test_a_run_of_a_full_queue_waits_for_its_turn(self, eng: Engine) -> None:
        BROKEN.add("charge")
        enqueue(eng, queued_checkout, ("q-1",), {}, run_id="q-1", queue="resume-tests", priority=0)
        eng.recover(wait=True, timeout=10)
        assert eng.journal.get_run("q-1").status == "failed"
        # Another run of the queue holds its only place (a live lease elsewhere).
        eng.journal.create_run(
            "q-busy",
            name=queued_checkout.name,
            kind="function",
            input={"args": ["q-busy"], "kwargs": {}},
            status="running",
            owner="another-worker",
            lease_seconds=60,
            queue="resume-tests",
        )
        BROKEN.clear()
        handle = eng.resume("q-1")
        assert handle.status == "pending"  # reopened, not claimed: the queue is full
        assert handle._future is None and "charge" not in CALLS[2:]
        eng.journal.update_run("q-busy", status="completed", release=True)
        report = eng.recover(wait=True, timeout=10)
        assert "q-1" in report.run_ids
        assert eng.journal.get_run("q-1").status == "completed"


def failed_workflow(eng: Engine, run_id: str, broken: str) -> None:
    BROKEN.add(broken)
    with pytest.raises(RuntimeError):
        asyncio.run(_await(CheckoutFlow(engine=eng).run(order="o-1", run_id=run_id)))
    run = eng.journal.get_run(run_id)
    assert (run.kind, run.status) == ("workflow", "failed")


async def _await(handler: Any) -> Any:
    return await handler


def consumed_keys(journal: Journal, run_id: str) -> Counter[str]:
    return Counter(e.key or "" for e in journal.read(run_id) if e.kind == K.EVENT_CONSUMED)


class TestResumeWorkflow:
    """A failed Workflow run goes on from the step it failed at, as the same run."""

    @pytest.mark.parametrize("broken", ["charge", "ship"])
    def test_it_ends_as_an_uninterrupted_run_and_no_completed_step_runs_again(
        self, eng: Engine, broken: str
    ) -> None:
        failed_workflow(eng, "w-1", broken)
        before = dict(STEPS)
        attempts = 2 if broken == "charge" else 1  # charge is retried once
        assert before[broken] == attempts
        consumed_before = consumed_keys(eng.journal, "w-1")
        BROKEN.clear()  # the fix is deployed
        handle = eng.resume("w-1")
        assert handle.run_id == "w-1"
        resumed = handle.result(timeout=10)
        after = dict(STEPS)
        # Each completed step ran once, the failed one once more, the rest once.
        order = ["reserve", "charge", "ship", "done"]
        for name in order:
            expected = 1
            if name == broken:
                expected = attempts + 1
            assert after[name] == expected, (name, after)
        assert after["audit"] == 1  # the Ping charge sent was delivered once
        # Events consumed before the failure were not delivered again.
        consumed = consumed_keys(eng.journal, "w-1")
        assert all(n == 1 for n in consumed.values()), consumed
        assert set(consumed_before) <= set(consumed)
        STEPS.clear()
        straight = asyncio.run(_await(CheckoutFlow(engine=eng).run(order="o-1", run_id="w-2")))
        assert resumed == straight == {"r": "res-o-1", "s": "shipped-o-1", "audited": 1}
        assert eng.journal.state_at("w-1").values == eng.journal.state_at("w-2").values
        run = eng.journal.get_run("w-1")
        assert run.status == "completed" and run.error is None
        ks = kinds(eng.journal, "w-1")
        assert ks.index(K.RUN_FAILED) < ks.index(K.RUN_RESUMED) < ks.index(K.RUN_COMPLETED)
        marks = [c.kind for c in history("w-1", engine=eng) if c.kind.startswith("run.")]
        assert marks[-3:] == ["run.failed", "run.resumed", "run.completed"]

    def test_the_failed_step_gets_its_whole_retry_policy_again(self, eng: Engine) -> None:
        failed_workflow(eng, "w-1", "charge")
        assert STEPS["charge"] == 2
        with pytest.raises(RunFailed, match="card declined"):
            eng.resume("w-1").result(timeout=10)  # still broken: two more attempts
        assert STEPS["charge"] == 4 and STEPS["reserve"] == 1
        BROKEN.clear()
        assert eng.resume("w-1", by="ops").result(timeout=10)["s"] == "shipped-o-1"
        assert STEPS["charge"] == 5 and STEPS["reserve"] == 1 and STEPS["ship"] == 1
        ks = kinds(eng.journal, "w-1")
        assert ks.count(K.RUN_FAILED) == 2 and ks.count(K.RUN_RESUMED) == 2
        resumed = [e for e in eng.journal.read("w-1") if e.kind == K.RUN_RESUMED]
        assert ResumeRecord.from_payload(eng.journal.decode_entry(resumed[-1])).by == "ops"
        # The reopening reset the failed step's attempt count in the same transaction.
        after_first = eng.journal.read_one("w-1", resumed[0].seq + 1)
        assert after_first.kind == K.STATE_DELETED
        assert (after_first.key or "").startswith("@attempts/")

    def test_a_run_failed_by_its_timeout_has_its_whole_timeout_again(self, eng: Engine) -> None:
        BROKEN.add("slow")
        with pytest.raises(WorkflowTimeoutError):
            asyncio.run(_await(SlowFlow(timeout=0.3, engine=eng).run(run_id="t-1")))
        assert eng.journal.get_run("t-1").status == "failed"
        BROKEN.clear()
        assert eng.resume("t-1").result(timeout=10) == "in time"
        assert STEPS["second"] == 1

    def test_resume_of_a_workflow_run_that_is_not_failed_is_refused(self, eng: Engine) -> None:
        asyncio.run(_await(CheckoutFlow(engine=eng).run(order="o-1", run_id="w-ok")))
        before = row(eng.journal, "w-ok")
        with pytest.raises(NotResumable, match="is completed: only a failed run") as info:
            eng.resume("w-ok")
        assert info.value.reason == "not failed"
        assert row(eng.journal, "w-ok") == before

    def test_two_resumes_one_reopens(self, eng: Engine) -> None:
        failed_workflow(eng, "w-1", "ship")
        BROKEN.clear()
        handle = eng.resume("w-1")
        with pytest.raises(NotResumable):
            eng.resume("w-1")
        handle.result(timeout=10)
        assert kinds(eng.journal, "w-1").count(K.RUN_RESUMED) == 1


class TestRefused:
    @pytest.mark.parametrize("status", ["completed", "cancelled", "running", "pending"])
    def test_only_a_failed_run_is_resumed_and_nothing_is_written(
        self, eng: Engine, status: str
    ) -> None:
        if status == "completed":
            eng.start(checkout, ("o-1",), {}, run_id="o-1").result(timeout=10)
        elif status == "cancelled":
            eng.journal.create_run("o-1", name=checkout.name, status="running")
            eng.cancel("o-1")
        else:
            eng.journal.create_run("o-1", name=checkout.name, status=status)
        before = row(eng.journal, "o-1")
        with pytest.raises(NotResumable, match=f"is {status}: only a failed run") as info:
            eng.resume("o-1")
        assert info.value.status == status
        assert row(eng.journal, "o-1") == before

    def test_an_unknown_run(self, eng: Engine) -> None:
        with pytest.raises(RunNotFound):
            eng.resume("nope")


class TestGuardedReopen:
    """The journal's one transition out of a terminal status, on both backends."""

    def failed(self, journal: Journal) -> int:
        journal.create_run("r", name="m:f", status="running")
        return journal.append(
            "r",
            [journal.entry(K.RUN_FAILED, {"type": "E", "error": "e"})],
            expected_seq=None,
            status="failed",
            error="E: e",
        )

    def resumed(self, journal: Journal, seq: int) -> Any:
        record = ResumeRecord(by="t", at=time.time(), failed_seq=seq, error="E: e")
        return journal.entry(K.RUN_RESUMED, record.to_payload())

    def test_reopen_makes_the_run_pending_and_claimable(self, journal_location: str) -> None:
        with Journal(journal_location) as journal:
            seq = self.failed(journal)
            run = journal.reopen_failed(
                "r", self.resumed(journal, seq), failed_seq=seq, error="E: e"
            )
            assert (run.status, run.error, run.owner, run.last_seq) == (
                "pending",
                None,
                None,
                seq + 1,
            )
            assert [r.run_id for r in journal.claimable()] == ["r"]
            assert journal.claim_run("r", "me").status == "running"

    def test_only_with_the_failure_read(self, journal_location: str) -> None:
        with Journal(journal_location) as journal:
            seq = self.failed(journal)
            entry = self.resumed(journal, seq)
            for kwargs in (
                {"failed_seq": seq - 1, "error": "E: e"},
                {"failed_seq": seq, "error": "x"},
            ):
                with pytest.raises(NotFailed, match="not with the failure read"):
                    journal.reopen_failed("r", entry, **kwargs)  # type: ignore[arg-type]
            journal.reopen_failed("r", entry, failed_seq=seq, error="E: e")
            with pytest.raises(NotFailed, match="is pending") as info:
                journal.reopen_failed("r", entry, failed_seq=seq, error="E: e")
            assert info.value.status == "pending"
            assert journal.get_run("r").last_seq == seq + 1

    def test_resets_land_in_the_same_transaction(self, journal_location: str) -> None:
        """A workflow's attempt count is deleted with the reopening; anything but a
        state.deleted entry is refused before a write."""
        with Journal(journal_location) as journal:
            journal.create_run("r", name="m:f", status="running")
            journal.append(
                "r",
                [journal.entry(K.STATE_SET, {"attempt": 2}, key="@attempts/e1")],
                expected_seq=None,
            )
            seq = journal.append(
                "r",
                [journal.entry(K.RUN_FAILED, {"type": "E", "error": "e"})],
                expected_seq=None,
                status="failed",
                error="E: e",
            )
            entry = self.resumed(journal, seq)
            with pytest.raises(ValueError, match=r"state\.deleted"):
                journal.reopen_failed(
                    "r",
                    entry,
                    failed_seq=seq,
                    error="E: e",
                    resets=[journal.entry(K.STATE_SET, 1, key="x")],
                )
            assert journal.get_run("r").status == "failed"
            reset = journal.entry(K.STATE_DELETED, key="@attempts/e1")
            run = journal.reopen_failed("r", entry, failed_seq=seq, error="E: e", resets=[reset])
            assert (run.status, run.last_seq) == ("pending", seq + 2)
            assert kinds(journal, "r")[-2:] == [K.RUN_RESUMED, K.STATE_DELETED]
            assert journal.state_at("r").values == {}

    def test_other_terminal_runs_stay_final(self, journal_location: str) -> None:
        with Journal(journal_location) as journal:
            journal.create_run("c", name="m:f", status="running")
            journal.append("c", [], expected_seq=None, status="completed")
            with pytest.raises(NotFailed, match="is completed"):
                journal.reopen_failed("c", self.resumed(journal, 1), failed_seq=1, error=None)
            assert journal.get_run("c").status == "completed"
            with pytest.raises(RunNotFound):
                journal.reopen_failed("zz", self.resumed(journal, 1), failed_seq=1, error=None)


# -- the command line and the web view --------------------------------------------------


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROCS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RESUME_LOG"] = str(tmp_path / "steps.log")
    env["RESUME_BROKEN"] = str(tmp_path / "broken")
    env.update(extra)
    return env


def run_child(tmp_path: Path, *args: str, **extra: str) -> str:
    res = subprocess.run(
        [sys.executable, str(CHILD), *args],
        check=False,
        env=child_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def executions(tmp_path: Path) -> Counter[int]:
    log = tmp_path / "steps.log"
    if not log.exists():
        return Counter()
    return Counter(int(line.split()[1]) for line in log.read_text().splitlines())


def fail_in_child(
    tmp_path: Path, db: Path, run_id: str = "p-1", n: int = 8, *, mode: str = "fail"
) -> None:
    """Run ``resume_workload.pipeline`` (``mode="wfail"``: its workflow, ``Chain``) in a
    child process while its step 4 is broken: the run fails there."""
    (tmp_path / "broken").touch()
    assert run_child(tmp_path, mode, str(db), run_id, str(n)).split() == ["status", "failed"]
    (tmp_path / "broken").unlink()


def durable_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        check=False,
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestCommandLine:
    def test_resume_wait_json(self, tmp_path: Path) -> None:
        db = tmp_path / "j.db"
        fail_in_child(tmp_path, db)
        res = durable_cli(
            tmp_path,
            "resume",
            "p-1",
            "--wait",
            "--json",
            "--import",
            "resume_workload",
            "--db",
            str(db),
        )
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert doc["run_id"] == "p-1" and doc["status"] == "completed"
        # What resume_workload.value(i) returns, computed here independently.
        assert doc["output"] == sum((i * 7919 + 13) % 1009 for i in range(8))
        # Steps 0-3 ran once; the flaky one twice before (its retry) and once more now.
        assert executions(tmp_path) == Counter({**dict.fromkeys(range(8), 1), 4: 3})
        shown = durable_cli(tmp_path, "history", "p-1", "--db", str(db))
        assert shown.returncode == 0
        text = shown.stdout
        assert text.index("run.failed") < text.index("run.resumed") < text.index("run.completed")
        detail = durable_cli(tmp_path, "show", "p-1", "--json", "--db", str(db))
        resumed = json.loads(detail.stdout)["resumed"]
        assert len(resumed) == 1 and "payment provider unavailable" in resumed[0]["error"]

    def test_resume_a_workflow_run_wait_json(self, tmp_path: Path) -> None:
        db = tmp_path / "j.db"
        fail_in_child(tmp_path, db, "w-1", mode="wfail")
        args = ["resume", "w-1", "--wait", "--json", "--import", "resume_workload"]
        res = durable_cli(tmp_path, *args, "--db", str(db))
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert doc["run_id"] == "w-1" and doc["status"] == "completed"
        assert doc["output"] == sum((i * 7919 + 13) % 1009 for i in range(8))
        assert executions(tmp_path) == Counter({**dict.fromkeys(range(8), 1), 4: 3})
        # A second resume of the now completed run: one line, exit 2, nothing written.
        before = digest(db)
        again = durable_cli(tmp_path, *args, "--db", str(db))
        assert again.returncode == 2 and again.stderr.count("\n") == 1
        assert again.stderr.startswith("error: ") and "only a failed run" in again.stderr
        assert "Traceback" not in again.stderr and digest(db) == before

    @pytest.mark.parametrize("target", ["done", "nope"])
    def test_refused_one_line_exit_2_nothing_written(self, tmp_path: Path, target: str) -> None:
        db = tmp_path / "j.db"
        with Engine(db) as eng:
            eng.start(checkout, ("done",), {}, run_id="done").result(timeout=10)
        before = digest(db)
        res = durable_cli(tmp_path, "resume", target, "--db", str(db))
        assert res.returncode == 2
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
        assert "Traceback" not in res.stderr
        assert ("only a failed run" if target == "done" else "no run 'nope'") in res.stderr
        assert digest(db) == before


class TestWebView:
    def test_the_button_and_the_action(self, eng: Engine, tmp_path: Path) -> None:
        failed_run(eng)
        BROKEN.clear()
        eng.start(checkout, ("o-1",), {}, run_id="ok").result(timeout=10)  # no button
        app = create_app(eng.journal.path, token=TOKEN)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            with TestClient(app, base_url="http://127.0.0.1") as c:
                page = c.get("/runs/o-1", headers=auth)
                assert page.status_code == 200 and 'id="resume-form"' in page.text
                assert 'id="resume-form"' not in c.get("/runs/ok", headers=auth).text
                # Without the token, or from another origin: refused, nothing written.
                before = row(eng.journal, "o-1")
                assert c.post("/api/runs/o-1/resume", json={}).status_code == 403
                cross = c.post(
                    "/api/runs/o-1/resume",
                    json={},
                    headers={**auth, "Origin": "http://evil.example"},
                )
                assert cross.status_code == 403
                assert row(eng.journal, "o-1") == before
                ok = c.post("/api/runs/o-1/resume", json={}, headers=auth)
                assert ok.status_code == 202 and ok.json()["resumed"] is True
                app.state.ui.engine.handle("o-1").wait(10)
                assert eng.journal.get_run("o-1").status == "completed"
                again = c.post("/api/runs/o-1/resume", json={}, headers=auth)
                assert again.status_code == 409 and "only a failed run" in again.json()["error"]
        finally:
            app.state.ui.engine.close()
        by = [c.detail.get("by") for c in history("o-1", engine=eng) if c.kind == K.RUN_RESUMED]
        assert by == ["durable ui"]

    def test_the_button_for_a_workflow_run(self, eng: Engine) -> None:
        failed_workflow(eng, "w-1", "ship")
        BROKEN.clear()
        app = create_app(eng.journal.path, token=TOKEN)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            with TestClient(app, base_url="http://127.0.0.1") as c:
                page = c.get("/runs/w-1", headers=auth)
                assert page.status_code == 200 and 'id="resume-form"' in page.text
                ok = c.post("/api/runs/w-1/resume", json={}, headers=auth)
                assert ok.status_code == 202 and ok.json()["resumed"] is True
                app.state.ui.engine.handle("w-1").wait(10)
        finally:
            app.state.ui.engine.close()
        assert eng.journal.get_run("w-1").status == "completed"
        assert STEPS["reserve"] == STEPS["charge"] == 1 and STEPS["ship"] == 2


# -- real processes: concurrent resumes and crashes --------------------------------------


class TestConcurrentResumes:
    @pytest.mark.parametrize(
        "trial", [pytest.param(t, marks=[pytest.mark.slow] if t else []) for t in range(scaled(3))]
    )
    def test_exactly_one_of_two_processes_reopens_it(self, tmp_path: Path, trial: int) -> None:
        db = tmp_path / "j.db"
        fail_in_child(tmp_path, db, n=6)
        go = tmp_path / "go"
        env = child_env(tmp_path, RESUME_GO=str(go))
        procs = [
            subprocess.Popen(
                [sys.executable, str(CHILD), "resume", str(db), "p-1"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        time.sleep(0.5)  # both imported and polling for the go file
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        lines = sorted(out.strip() for out, _ in outs)
        assert lines[0].startswith("refused NotResumable") and lines[1] == "resumed completed"
        with Journal(db) as journal:
            assert kinds(journal, "p-1").count(K.RUN_RESUMED) == 1
            assert journal.get_run("p-1").status == "completed"
        # The flaky step: two attempts while broken, then exactly one re-run.
        assert executions(tmp_path) == Counter({**dict.fromkeys(range(6), 1), 4: 3})


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """The output and final state of a resumed run never interrupted."""
    ref = tmp_path_factory.mktemp("reference")
    db = ref / "j.db"
    fail_in_child(ref, db, n=TestCrashDuringResumedRun.N)
    assert run_child(ref, "resume", str(db), "p-1").split() == ["resumed", "completed"]
    with Journal(db) as journal:
        run = journal.get_run("p-1")
        return journal.decode(run.output, run.codec, where="output"), dict(
            journal.state_at("p-1").values
        )


KILL_POINTS = ["after:4", "inside:5", "after:6"]
"""After the failing step's re-run committed; inside the next step; two steps on."""


class TestCrashDuringResumedRun:
    """SIGKILL a process while it executes a resumed run; a new process recovers it."""

    N = 8

    def check(self, tmp_path: Path, db: Path, expected: tuple[Any, dict[str, Any]]) -> None:
        out = run_child(tmp_path, "recover", str(db), "p-1")
        assert out.split() == ["status", "completed"]
        with Journal(db) as journal:
            run = journal.get_run("p-1")
            assert (
                journal.decode(run.output, run.codec, where="output"),
                dict(journal.state_at("p-1").values),
            ) == expected
            assert kinds(journal, "p-1").count(K.RUN_RESUMED) == 1
            completed = {e.step for e in journal.read("p-1") if e.kind == K.STEP_COMPLETED}
            assert len(completed) == self.N  # each step completed once, none twice
        counts = executions(tmp_path)
        # Steps completed before the failure ran once; the flaky one twice then (its
        # retry) and again on resume; a step killed inside its body ran once more.
        for i in range(self.N):
            assert counts[i] >= 1, (i, counts)
            assert counts[i] <= (3 if i < 4 else 4 if i == 4 else 2), (i, counts)
        for i in range(4):
            assert counts[i] == 1, counts

    @pytest.mark.parametrize(
        "point",
        [pytest.param(p, marks=[] if p == "inside:5" else [pytest.mark.slow]) for p in KILL_POINTS],
    )
    def test_kill_at_a_chosen_point(
        self, tmp_path: Path, point: str, expected: tuple[Any, dict[str, Any]]
    ) -> None:
        db = tmp_path / "j.db"
        fail_in_child(tmp_path, db, n=self.N)
        res = subprocess.run(
            [sys.executable, str(CHILD), "resume", str(db), "p-1"],
            check=False,
            env=child_env(tmp_path, RESUME_CRASH_AT=point),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == -9, (res.returncode, res.stdout, res.stderr)
        phase, i = point.split(":")
        counts = executions(tmp_path)
        if phase == "after":  # its completion was committed before the kill
            with Journal(db) as journal:
                assert any(
                    e.kind == K.STEP_COMPLETED and e.step == f"work#{int(i) + 1}"
                    for e in journal.read("p-1")
                )
        self.check(tmp_path, db, expected)
        after = executions(tmp_path)
        if phase == "after":  # the step committed before the kill did not run again
            assert after[int(i)] == counts[int(i)]

    @pytest.mark.slow
    @pytest.mark.parametrize("seed", range(scaled(3)))
    def test_kill_at_a_random_moment(
        self, tmp_path: Path, seed: int, expected: tuple[Any, dict[str, Any]]
    ) -> None:
        db = tmp_path / "j.db"
        fail_in_child(tmp_path, db, n=self.N)
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), "resume", str(db), "p-1"],
            env=child_env(tmp_path, RESUME_STEP_SLEEP="0.03"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Kill once the resumed run is under way: after the flaky step's re-run is
        # logged, at a random moment within the next steps.
        rng = random.Random(seed)
        deadline = time.monotonic() + 60
        while executions(tmp_path)[4] < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.12))
        proc.kill()
        proc.communicate(timeout=60)
        self.check(tmp_path, db, expected)


@pytest.fixture(scope="module")
def expected_workflow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """The output and final store of a resumed workflow run never interrupted."""
    if str(PROCS) not in sys.path:
        sys.path.insert(0, str(PROCS))
    import resume_workload  # noqa: F401 - its event classes, to read the journal here

    ref = tmp_path_factory.mktemp("reference-workflow")
    db = ref / "j.db"
    fail_in_child(ref, db, "w-1", n=TestCrashDuringResumedWorkflow.N, mode="wfail")
    assert run_child(ref, "resume", str(db), "w-1").split() == ["resumed", "completed"]
    with Journal(db) as journal:
        run = journal.get_run("w-1")
        return journal.decode(run.output, run.codec, where="output"), dict(
            journal.state_at("w-1").values
        )


WORKFLOW_KILL_POINTS = ["before:5", "inside:5", "before:7"]
"""After the failed step's re-run committed; inside the next step; two steps on."""


class TestCrashDuringResumedWorkflow:
    """SIGKILL a process while it executes a resumed workflow run; a new process
    recovers it; no step that completed runs again."""

    N = 8

    def check(self, tmp_path: Path, db: Path, expected: tuple[Any, dict[str, Any]]) -> None:
        out = run_child(tmp_path, "recover", str(db), "w-1")
        assert out.split() == ["status", "completed"]
        with Journal(db) as journal:
            run = journal.get_run("w-1")
            assert (
                journal.decode(run.output, run.codec, where="output"),
                dict(journal.state_at("w-1").values),
            ) == expected
            assert kinds(journal, "w-1").count(K.RUN_RESUMED) == 1
            done = [e.key for e in journal.read("w-1") if e.kind == K.STEP_COMPLETED]
            assert len(done) == self.N + 1 == len(set(done))  # begin and each part, once
            consumed = Counter(e.key for e in journal.read("w-1") if e.kind == K.EVENT_CONSUMED)
            assert set(consumed.values()) == {1}  # no event delivered twice
        counts = executions(tmp_path)
        # Parts before the failure ran once; the flaky one twice then (its retry) and
        # again on resume; a part killed inside its body ran once more.
        for i in range(self.N):
            assert 1 <= counts[i] <= (1 if i < 4 else 4 if i == 4 else 2), (i, counts)

    @pytest.mark.parametrize("point", WORKFLOW_KILL_POINTS)
    def test_kill_at_a_chosen_point(
        self, tmp_path: Path, point: str, expected_workflow: tuple[Any, dict[str, Any]]
    ) -> None:
        db = tmp_path / "j.db"
        fail_in_child(tmp_path, db, "w-1", n=self.N, mode="wfail")
        res = subprocess.run(
            [sys.executable, str(CHILD), "resume", str(db), "w-1"],
            check=False,
            env=child_env(tmp_path, RESUME_CRASH_AT=point),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == -9, (res.returncode, res.stdout, res.stderr)
        i = point.split(":")[1]
        counts = executions(tmp_path)
        assert counts[4] == 3  # the failed part ran again (and committed) before the kill
        self.check(tmp_path, db, expected_workflow)
        after = executions(tmp_path)
        for j in range(int(i)):  # committed before the kill: not run again
            assert after[j] == counts[j], (j, counts, after)
        assert after[int(i)] == counts[int(i)] + 1  # the part in flight ran once more

    @pytest.mark.slow
    @pytest.mark.parametrize("seed", range(scaled(3)))
    def test_kill_at_a_random_moment(
        self, tmp_path: Path, seed: int, expected_workflow: tuple[Any, dict[str, Any]]
    ) -> None:
        db = tmp_path / "j.db"
        fail_in_child(tmp_path, db, "w-1", n=self.N, mode="wfail")
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), "resume", str(db), "w-1"],
            env=child_env(tmp_path, RESUME_STEP_SLEEP="0.03"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        rng = random.Random(seed)
        deadline = time.monotonic() + 60
        while executions(tmp_path)[4] < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.12))
        proc.kill()
        proc.communicate(timeout=60)
        self.check(tmp_path, db, expected_workflow)
