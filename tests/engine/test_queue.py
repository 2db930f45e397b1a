"""The durable queue and the worker, on both backends: enqueue, priorities, queue limits,
claims that skip each other, unimportable functions, and wake-up by notification."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Engine,
    HumanResponseEvent,
    InputRequiredEvent,
    Queue,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowContext,
    WrongFunction,
    durable,
    send_event,
    step,
)
from engine.queues import WAKE_CHANNEL
from engine.worker import Worker
from journal import Journal, JournalBusy

ORDER: list[int] = []
ACTIVE = {"now": 0, "peak": 0}
_LOCK = threading.Lock()
limited = Queue("test-limited", concurrency=2)


@step
def record(i: int) -> int:
    ORDER.append(i)
    return i * 10


@durable(queue="test-plain")
def job(i: int) -> int:
    return record(i) + 1


@step
def hold(seconds: float) -> None:
    with _LOCK:
        ACTIVE["now"] += 1
        ACTIVE["peak"] = max(ACTIVE["peak"], ACTIVE["now"])
    time.sleep(seconds)
    with _LOCK:
        ACTIVE["now"] -= 1


@durable(queue=limited)
def slow(i: int) -> int:
    hold(0.05)
    return i


@durable
def other(i: int) -> int:
    return i


GATE: dict[str, threading.Event] = {}


@step
def wait_at_gate(i: int) -> int:
    GATE["hold"].wait(10)
    ORDER.append(i)
    return i


@durable(queue="test-gated")
def gated(i: int) -> int:
    return wait_at_gate(i)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "queue.db")
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def eng(location: str) -> Iterator[Engine]:
    ORDER.clear()
    ACTIVE.update(now=0, peak=0)
    engine = Engine(location, lease_seconds=5)
    for fn in (job, slow, other, gated):
        fn._engine = engine
    yield engine
    for fn in (job, slow, other, gated):
        fn._engine = None
    engine.close()


def _drain(eng: Engine, *, concurrency: int = 4, until: Any = None, timeout: float = 20) -> None:
    """Run a worker in a thread until ``until()`` is true."""
    stop = threading.Event()
    t = threading.Thread(
        target=eng.worker, kwargs={"stop": stop, "concurrency": concurrency, "poll_interval": 0.1}
    )
    t.start()
    deadline = time.monotonic() + timeout
    try:
        while not until() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(10)
    assert until(), "the worker did not finish in time"


def test_enqueue_writes_a_pending_run_and_executes_nothing(eng: Engine) -> None:
    """enqueue returns at once; the run waits, unowned, in its queue."""
    handle = job.enqueue(1, run_id="q-1", priority=3)
    run = eng.journal.get_run(handle.run_id)
    assert (run.status, run.owner, run.queue, run.priority) == ("pending", None, "test-plain", 3)
    assert ORDER == []
    assert handle.status == "pending"


def test_enqueue_is_idempotent_by_run_id(eng: Engine) -> None:
    """Enqueuing an existing id returns that run; nothing is queued twice."""
    job.enqueue(1, run_id="same")
    job.enqueue(1, run_id="same")
    assert [r.run_id for r in eng.journal.list_runs()] == ["same"]
    _drain(eng, until=lambda: eng.journal.get_run("same").finished)
    assert eng.handle("same").result() == 11
    assert ORDER == [1]


def test_enqueue_an_id_of_another_function_is_refused(eng: Engine) -> None:
    """A run id that belongs to another function is a typed error."""
    other.enqueue(1, run_id="taken")
    with pytest.raises(WrongFunction, match="taken"):
        job.enqueue(1, run_id="taken")


def test_worker_runs_queued_runs_by_priority_then_age(eng: Engine) -> None:
    """One slot: the highest priority goes first, then the oldest."""
    for i, priority in enumerate([0, 5, 0, 9, 5]):
        job.enqueue(i, run_id=f"p{i}", priority=priority)
    _drain(eng, concurrency=1, until=lambda: len(ORDER) == 5)
    assert ORDER == [3, 1, 4, 0, 2]
    assert [eng.handle(f"p{i}").result() for i in range(5)] == [1, 11, 21, 31, 41]


def test_queue_concurrency_limit_holds_across_workers(eng: Engine, location: str) -> None:
    """Two workers with four slots each never run more than the queue's two at once."""
    handles = [slow.enqueue(i) for i in range(12)]
    second = Engine(location, lease_seconds=5)
    stop = threading.Event()
    t = threading.Thread(
        target=second.worker, kwargs={"stop": stop, "concurrency": 4, "poll_interval": 0.05}
    )
    t.start()
    try:
        _drain(eng, until=lambda: all(eng.journal.get_run(h.run_id).finished for h in handles))
    finally:
        stop.set()
        t.join(10)
        second.close()
    assert sorted(h.result() for h in handles) == list(range(12))
    assert ACTIVE["peak"] == 2


def test_claims_do_not_overlap(location: str) -> None:
    """Claimers never get the same run, and every claimable run is claimed once."""
    with Journal(location) as a, Journal(location) as b:
        for i in range(20):
            a.create_run(f"c{i}", name="m:f", queue="q")
        got: list[str] = []
        while True:
            batch = a.claim_next("A", limit=3) + b.claim_next("B", limit=4)
            if not batch:
                break
            got += [r.run_id for r in batch]
        assert sorted(got) == sorted(f"c{i}" for i in range(20))
        assert {r.epoch for r in a.list_runs()} == {1}


def test_a_child_waits_for_its_unfinished_parent(location: str) -> None:
    """A child run of an unfinished parent is left for the parent to resume."""
    with Journal(location) as j:
        j.create_run("parent", name="m:p", status="running")
        j.create_run("child", name="m:c", parent_run_id="parent")
        assert [r.run_id for r in j.claim_next("w", limit=5)] == ["parent"]
        j.update_run("parent", status="failed", release=True)
        assert [r.run_id for r in j.claim_next("w", limit=5)] == ["child"]


def test_unimportable_function_is_released_and_skipped(eng: Engine) -> None:
    """A run this worker cannot import is released at once and not claimed again here."""
    eng.journal.create_run("ghost", name="nowhere.module:fn", queue="default")
    worker = Worker(eng, concurrency=2)
    report = worker.claim_once()
    assert "ghost" in report.errors and not report.handles
    run = eng.journal.get_run("ghost")
    assert run.owner is None and not run.finished
    assert worker.claim_once().errors == {}


def test_waiting_on_a_queued_run_does_not_execute_it(eng: Engine) -> None:
    """A caller waiting for a queued run's result leaves it to a worker."""
    handle = job.enqueue(7)
    with pytest.raises(Exception, match="still pending"):
        handle.result(timeout=0.3)
    assert ORDER == []


@pytest.mark.postgres
def test_notify_wakes_a_worker_before_its_poll(pg_schema_url: str) -> None:
    """On PostgreSQL an enqueue wakes an idle worker at once, not at its next poll."""
    eng = Engine(pg_schema_url, lease_seconds=5)
    job._engine = eng
    ORDER.clear()
    stop = threading.Event()
    t = threading.Thread(
        target=eng.worker, kwargs={"stop": stop, "concurrency": 2, "poll_interval": 30}
    )
    t.start()
    try:
        time.sleep(0.5)  # the worker is idle, listening, its next poll 30 s away
        started = time.monotonic()
        handle = job.enqueue(3)
        assert handle.result(timeout=10) == 31
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        t.join(10)
        job._engine = None
        eng.close()


@pytest.mark.postgres
def test_listener_receives_only_its_own_schema(pg_url: str) -> None:
    """Journals in two schemas of one database do not wake each other."""
    with Journal(f"{pg_url}?schema=ta") as a, Journal(f"{pg_url}?schema=tb") as b:
        listen_a, listen_b = a.listener(WAKE_CHANNEL), b.listener(WAKE_CHANNEL)
        try:
            listen_a.wait(0.01)
            listen_b.wait(0.01)  # both connected and listening
            b.notify(WAKE_CHANNEL, "for-b")
            assert listen_b.wait(2) == ["for-b"]
            assert listen_a.wait(0.3) == []
        finally:
            listen_a.close()
            listen_b.close()


def test_a_failed_claim_does_not_end_the_worker(
    eng: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that fails (database gone, lock timeout) is retried after a pause; the
    worker goes on rather than its loop ending with the error."""
    real = eng.journal.claim_next
    failures = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if len(failures) < 2:
            failures.append(1)
            raise JournalBusy("claiming runs: rows stayed locked past busy_timeout")
        return real(*args, **kwargs)

    monkeypatch.setattr(eng.journal, "claim_next", flaky)
    handle = job.enqueue(4)
    _drain(eng, until=lambda: eng.journal.get_run(handle.run_id).finished)
    assert len(failures) == 2 and handle.result() == 41


def test_a_run_executing_here_is_not_claimed_again(eng: Engine) -> None:
    """A run in flight here whose lease ran out (a stall) is left to the heartbeat or to
    another worker: this worker never starts a second execution of it."""
    gate = threading.Event()
    GATE["hold"] = gate
    handle = gated.enqueue(1, run_id="stalled")
    worker = Worker(eng, concurrency=4)
    assert [h.run_id for h in worker.claim_once().handles] == ["stalled"]
    with eng.journal.lock, eng.journal.backend.transaction("test"):
        eng.journal.backend.execute("UPDATE runs SET lease_expires_at = 0")
    try:
        assert worker.claim_once().handles == []
    finally:
        gate.set()
    assert handle.result(timeout=10) == 1
    assert ORDER == [1]


class Confirm(Workflow):
    @step
    async def ask(self, ctx: WorkflowContext, ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="ok?"), timeout=120
        )
        return StopEvent(result=f"answer={answer.response}")


@pytest.mark.postgres
def test_an_event_resumes_a_parked_run_on_another_worker_at_once(pg_schema_url: str) -> None:
    """Human in the loop across hosts: a run parked by one engine (now gone) resumes on
    an idle worker as soon as the event is sent, not at the worker's next poll."""
    starter = Engine(pg_schema_url, lease_seconds=5)
    Confirm(engine=starter).run(run_id="parked")
    deadline = time.monotonic() + 10
    while starter.journal.get_run("parked").status != "waiting":
        assert time.monotonic() < deadline, "the run never parked"
        time.sleep(0.02)
    starter.close()  # its host goes away cleanly: the lease is released
    worker_engine = Engine(pg_schema_url, lease_seconds=5)
    stop = threading.Event()
    t = threading.Thread(target=worker_engine.worker, kwargs={"stop": stop, "poll_interval": 30})
    t.start()
    try:
        time.sleep(0.5)  # idle and listening; its next poll is 30 s away
        with Engine(pg_schema_url) as sender:
            assert worker_engine.journal.get_run("parked").status == "waiting"
            sent = time.monotonic()
            send_event("parked", HumanResponseEvent(response="yes"), engine=sender)
        with Journal(pg_schema_url) as watcher:  # a handle's wait() could resume it itself
            while not watcher.get_run("parked").finished:
                assert time.monotonic() - sent < 5, "the worker did not wake for the event"
                time.sleep(0.02)
        assert worker_engine.handle("parked").result() == "answer=yes"
    finally:
        stop.set()
        t.join(10)
        worker_engine.close()


def test_a_freed_slot_claims_the_next_run_at_once(eng: Engine) -> None:
    """A full worker woken by an enqueue (nothing it can claim yet) claims that run as
    soon as its own run ends, not at its next poll (60 s away here)."""
    GATE["hold"] = threading.Event()
    first = gated.enqueue(0, run_id="g0")
    stop = threading.Event()
    worker = threading.Thread(
        target=eng.worker, kwargs={"stop": stop, "concurrency": 1, "poll_interval": 60}
    )
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while eng.journal.get_run("g0").status != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        second = gated.enqueue(1, run_id="g1")  # wakes the full worker (PostgreSQL)
        time.sleep(0.3)  # let the wake-up find no free slot
        GATE["hold"].set()
        assert first.result(timeout=15) == 0
        assert second.result(timeout=15) == 1
    finally:
        GATE["hold"].set()
        stop.set()
        worker.join(10)
