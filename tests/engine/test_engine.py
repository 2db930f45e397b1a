"""Semantics of @durable functions and steps (in-process; real SIGKILL crashes are in
test_engine_crash.py). A ``Crash`` (a BaseException) raised mid-run stands in for a
dead process here: the engine writes nothing for it, exactly as after a kill."""

from __future__ import annotations

import asyncio
import enum
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import engine
from engine import (
    Context,
    Engine,
    FencedOff,
    FunctionNotFound,
    RunCancelled,
    RunFailed,
    StepFailed,
    StepTimeout,
    WrongFunction,
    configure,
    durable,
    idempotency_key,
    step,
)
from engine.hashing import args_hash
from journal import EntryKind, Journal, SerializationError

CALLS: Counter[str] = Counter()
CRASH_AT: dict[str, Any] = {}
GATE: dict[str, threading.Event] = {}


class Crash(BaseException):
    """Stands in for the process dying: not an Exception, so nothing is recorded."""


def maybe_crash(point: str) -> None:
    if CRASH_AT.pop(point, None):
        raise Crash(point)


@pytest.fixture(autouse=True)
def fresh(db_path: Path) -> Iterator[Engine]:
    CALLS.clear()
    CRASH_AT.clear()
    GATE.clear()
    eng = configure(db_path, lease_seconds=0)
    yield eng
    eng.close()


class OnBothBackends:
    """Runs the class's tests on each backend: ``db_path`` becomes ``journal_location``
    (a file path, then a fresh PostgreSQL schema's URL; the engine takes either)."""

    @pytest.fixture
    def db_path(self, journal_location: str) -> str:
        return journal_location


def recover_with_new_engine(db_path: Path) -> engine.RecoveryReport:
    """A second engine (another owner) resumes what the first left behind."""
    other = Engine(db_path)
    try:
        return other.recover(timeout=30)
    finally:
        other.close()


def entries(db_path: Path, run_id: str) -> list[Any]:
    with Journal(db_path) as j:
        return list(j.read(run_id))


# -- the workloads ---------------------------------------------------------------------


@step
def square(i: int) -> int:
    CALLS[f"square:{i}"] += 1
    maybe_crash(f"in:{i}")
    return i * i


@durable
def sum_squares(ctx: Context, n: int) -> int:
    total = 0
    for i in range(n):
        maybe_crash(f"before:{i}")
        total += square(i)
        ctx.state["total"] = total
        maybe_crash(f"after:{i}")
    return total


@step
async def double(i: int) -> int:
    CALLS[f"double:{i}"] += 1
    await asyncio.sleep(0.001 * (5 - i % 5))  # finish out of order
    maybe_crash(f"adouble:{i}")
    return 2 * i


@durable
async def gathered(ctx: Context, n: int) -> list[int]:
    values = await asyncio.gather(*(double(i) for i in range(n)))
    ctx.state["values"] = list(values)
    maybe_crash("after-gather")
    more = await double(100)
    return [*values, more]


class TestRunning:
    """Running durable functions to completion."""

    def test_sync_run_returns_result_and_journals_state(self, db_path: Path) -> None:
        """A call runs the body and records every step and mutation."""
        assert sum_squares(4) == 14
        run = engine.default_engine().journal.list_runs()[0]
        assert run.status == "completed"
        kinds = [e.kind for e in entries(db_path, run.run_id)]
        assert kinds.count(EntryKind.STEP_COMPLETED) == 4
        assert kinds.count(EntryKind.STATE_SET) == 4
        assert engine.default_engine().journal.state_at(run.run_id).values == {"total": 14}

    def test_async_run_with_gather(self, db_path: Path) -> None:
        """Async bodies and steps work; gather numbers steps in call order."""
        assert asyncio.run(gathered(5)) == [0, 2, 4, 6, 8, 200]
        run = engine.default_engine().journal.list_runs()[0]
        steps = [e.step for e in entries(db_path, run.run_id) if e.kind == EntryKind.STEP_COMPLETED]
        assert sorted(steps) == sorted([f"{double.__qualname__}#{i}" for i in range(1, 7)])

    def test_steps_outside_a_run_are_plain_calls(self) -> None:
        """A step called outside any run just runs."""
        assert square(3) == 9
        assert engine.default_engine().journal.list_runs() == []

    def test_start_with_same_run_id_is_idempotent(self) -> None:
        """Starting an existing run id returns that run; the body runs once."""
        first = sum_squares.start(3, run_id="nightly-42")
        assert first.result(timeout=10) == 5
        second = sum_squares.start(3, run_id="nightly-42")
        assert second.run_id == "nightly-42" and second.result(timeout=10) == 5
        assert CALLS["square:2"] == 1
        assert len(engine.default_engine().journal.list_runs()) == 1

    def test_run_id_of_another_function_is_refused(self) -> None:
        """A run id that belongs to a different function is WrongFunction."""
        sum_squares.run(2, run_id="shared")
        with pytest.raises(WrongFunction, match="shared"):
            gathered_sync.run(2, run_id="shared")

    def test_handle_status_and_result(self) -> None:
        """A handle reports status and result."""
        handle = sum_squares.start(2)
        assert handle.result(timeout=10) == 1
        assert handle.status == "completed"


@durable
def gathered_sync(n: int) -> int:
    return n


class TestRecovery(OnBothBackends):
    """Resuming a crashed run re-executes nothing that completed."""

    @pytest.mark.parametrize("point", ["before:3", "in:3", "after:3", "before:0", "after:5"])
    def test_recovered_result_equals_uninterrupted(self, db_path: Path, point: str) -> None:
        """Crash anywhere: the result and state equal an uninterrupted run's."""
        CRASH_AT[point] = True
        with pytest.raises(Crash):
            sum_squares.run(6, run_id="r")
        report = recover_with_new_engine(db_path)
        assert report.run_ids == ["r"]
        with Journal(db_path) as j:
            run = j.get_run("r")
            assert run.status == "completed"
            assert j.decode(run.output, run.codec, where="t") == 55
            assert j.state_at("r").values == {"total": 55}
        in_flight = 3 if point == "in:3" else None
        for i in range(6):
            assert CALLS[f"square:{i}"] == (2 if i == in_flight else 1), i

    def test_async_recovery_skips_completed_gathered_steps(self, db_path: Path) -> None:
        """An async run crashed after a gather resumes without redoing it."""
        CRASH_AT["after-gather"] = True
        eng = engine.default_engine()
        with pytest.raises(Crash):
            asyncio.run(eng.acall(gathered, (5,), {}, run_id="g"))
        recover_with_new_engine(db_path)
        with Journal(db_path) as j:
            run = j.get_run("g")
            assert j.decode(run.output, run.codec, where="t") == [0, 2, 4, 6, 8, 200]
        assert all(CALLS[f"double:{i}"] == 1 for i in range(5))
        assert CALLS["double:100"] == 1

    def test_starting_an_abandoned_run_id_resumes_it(self, db_path: Path) -> None:
        """Starting the id of a run whose owner died resumes it instead of waiting forever."""
        CRASH_AT["after:2"] = True
        with pytest.raises(Crash):
            sum_squares.run(5, run_id="abandoned")
        with Engine(db_path) as other:
            handle = other.start(sum_squares, (5,), {}, run_id="abandoned")
            assert handle.result(timeout=30) == 30
        assert all(CALLS[f"square:{i}"] == 1 for i in range(5))

    def test_unimportable_function_is_reported_and_left_untouched(self, db_path: Path) -> None:
        """Recovery names the missing function and writes nothing to that run."""
        with Journal(db_path) as j:
            j.create_run("lost", name="no_such_module_xyz:job", status="running")
            before = j.get_run("lost")
        report = recover_with_new_engine(db_path)
        assert isinstance(report.errors["lost"], FunctionNotFound)
        assert "no_such_module_xyz:job" in str(report.errors["lost"])
        with Journal(db_path) as j:
            after = j.get_run("lost")
        assert (after.status, after.last_seq, after.epoch) == (before.status, 0, before.epoch)


@step
def flaky(key: str, failures: int) -> str:
    CALLS[f"flaky:{key}"] += 1
    if CALLS[f"flaky:{key}"] <= failures:
        raise ConnectionError(f"attempt {CALLS[f'flaky:{key}']} failed")
    return idempotency_key()


flaky_retrying = step(name="flaky_retrying", retries=3, backoff=0)(flaky.__wrapped__)


@durable
def uses_flaky(key: str, failures: int) -> str:
    return flaky_retrying(key, failures)


@durable(name="test_engine:grows")
def grows(ctx: Context, n: int) -> int:
    for i in range(n):
        item = square(i)
        maybe_crash(f"grow:{i}")
        ctx.state["items"] = [*ctx.state.get("items", []), f"{item:0>200}"]
    return len(ctx.state["items"])


class TestGrowingState(OnBothBackends):
    """A list extended at its end is journaled as the appended items only."""

    def test_bytes_stay_linear_and_recovery_rebuilds_the_list(self, db_path: Path) -> None:
        """200 appends of 200 bytes write ~40 KB of state, not ~4 MB; a crash recovers it."""
        CRASH_AT["grow:150"] = True
        with pytest.raises(Crash):
            grows.run(200, run_id="g")
        recover_with_new_engine(db_path)
        with Journal(db_path) as j:
            state = [e for e in j.read("g") if e.key == "items"]
            assert {e.kind for e in state} == {EntryKind.STATE_SET, EntryKind.STATE_APPENDED}
            written = sum(len(e.payload or b"") for e in state)
            final = j.state_at("g").values["items"]
        assert final == [f"{i * i:0>200}" for i in range(200)]
        assert written < 2 * 200 * 205  # each item once (plus framing), never the whole list


class TestSteps(OnBothBackends):
    """Retries, timeouts and idempotency keys."""

    def test_retries_journal_each_attempt_and_succeed(self, db_path: Path) -> None:
        """Two failures then success: two step.failed entries, one completion."""
        key = uses_flaky.run("a", 2, run_id="retry")
        assert key == "retry:flaky_retrying#1"
        kinds = [e.kind for e in entries(db_path, "retry")]
        assert kinds.count(EntryKind.STEP_FAILED) == 2
        assert kinds.count(EntryKind.STEP_COMPLETED) == 1

    def test_exhausted_retries_fail_the_run(self, db_path: Path) -> None:
        """After the last attempt the step raises StepFailed and the run is failed."""
        with pytest.raises(StepFailed, match="after 4 attempt"):
            uses_flaky.run("b", 10, run_id="fails")
        assert CALLS["flaky:b"] == 4
        with Journal(db_path) as j:
            run = j.get_run("fails")
        assert run.status == "failed" and "ConnectionError" in (run.error or "")
        with pytest.raises(RunFailed, match="ConnectionError"):
            engine.default_engine().handle("fails").result()

    def test_attempts_survive_a_crash(self, db_path: Path) -> None:
        """Failed attempts before a crash count against the limit after it."""
        CALLS["flaky:c"] = 0
        CRASH_AT["flaky-crash"] = True

        @durable(name="test_engine:crashy_flaky")
        def crashy() -> str:
            try:
                return flaky_retrying("c", 2)
            finally:
                maybe_crash("flaky-crash")

        # First execution: 2 failures then success, then the crash before the run ends.
        with pytest.raises(Crash):
            crashy.run(run_id="cf")
        CALLS["flaky:c"] = 0  # a fresh process would fail again...
        recover_with_new_engine(db_path)
        assert CALLS["flaky:c"] == 0  # ...but the step completed: it is not re-run
        with Journal(db_path) as j:
            failed = [e for e in j.read("cf") if e.kind == EntryKind.STEP_FAILED]
        assert len(failed) == 2

    def test_sync_timeout(self) -> None:
        """A sync step past its timeout raises StepTimeout."""
        release = threading.Event()

        @step(timeout=0.05)
        def slow() -> None:
            release.wait(5)

        @durable(name="test_engine:times_out")
        def times_out() -> None:
            slow()

        with pytest.raises(StepTimeout, match="timed out"):
            times_out.run(run_id="to")
        release.set()

    def test_async_timeout(self) -> None:
        """An async step past its timeout raises StepTimeout."""

        @step(timeout=0.05)
        async def slow() -> None:
            await asyncio.sleep(5)

        @durable(name="test_engine:atimes_out")
        async def atimes_out() -> None:
            await slow()

        with pytest.raises(StepTimeout):
            asyncio.run(atimes_out.run(run_id="ato"))


@step
def blocking(name: str) -> str:
    CALLS[f"blocking:{name}"] += 1
    GATE[name].wait(10)
    return name


@durable
def waits_twice() -> str:
    blocking("one")
    return blocking("two")


class TestCancelAndFence(OnBothBackends):
    """Cancellation stops at a step boundary; a stale lease holder writes nothing."""

    def test_cancel_stops_at_next_step(self, db_path: Path) -> None:
        """A cancelled run does not start its next step and ends cancelled."""
        GATE["one"] = threading.Event()
        GATE["two"] = threading.Event()
        handle = waits_twice.start(run_id="c")
        while CALLS["blocking:one"] == 0:
            threading.Event().wait(0.005)
        handle.cancel()
        GATE["one"].set()
        with pytest.raises(RunCancelled):
            handle.result(timeout=10)
        assert CALLS["blocking:two"] == 0
        assert handle.status == "cancelled"
        assert entries(db_path, "c")[-1].kind == EntryKind.RUN_CANCELLED

    def test_stale_lease_holder_is_fenced_off(self, db_path: Path) -> None:
        """When another worker claims the run mid-step, the old one writes nothing more."""
        GATE["one"] = threading.Event()
        handle = waits_twice.start(run_id="f")
        while CALLS["blocking:one"] == 0:
            threading.Event().wait(0.005)
        with Journal(db_path) as j:
            j.claim_run("f", "worker-b", lease_seconds=60, steal=True)
            seq_before = j.get_run("f").last_seq
        GATE["one"].set()
        with pytest.raises(FencedOff):
            handle._future.result(10)  # type: ignore[union-attr]
        with Journal(db_path) as j:
            run = j.get_run("f")
        assert run.last_seq == seq_before and run.owner == "worker-b"


class TestLeases(OnBothBackends):
    """Leases are handed back on a clean shutdown and reported when held elsewhere."""

    def test_close_hands_running_runs_back(self, db_path: Path) -> None:
        """An engine closing while a run executes releases its lease at once."""
        GATE["one"] = threading.Event()
        GATE["two"] = threading.Event()
        eng = Engine(db_path, lease_seconds=600)
        eng.start(waits_twice, (), {}, run_id="handback")
        while CALLS["blocking:one"] == 0:
            threading.Event().wait(0.005)
        with Journal(db_path) as j:
            assert j.get_run("handback").owner == eng.owner
            assert j.claimable() == []
        eng.close()
        with Journal(db_path) as j:
            assert j.get_run("handback").owner is None
            assert [r.run_id for r in j.claimable()] == ["handback"]
        GATE["one"].set()
        GATE["two"].set()

    def test_recover_reports_runs_leased_elsewhere(self, db_path: Path) -> None:
        """A run another worker holds is listed with the time left on its lease."""
        with Journal(db_path) as j:
            j.create_run("held", name="test_engine:sum_squares", status="running")
            j.claim_run("held", "someone-else", lease_seconds=120)
        with Engine(db_path) as other:
            report = other.recover()
        assert report.run_ids == [] and 100 < report.leased["held"] <= 120


@durable(name="test_engine:versioned")
def versioned_v1() -> int:
    a = square(1)
    maybe_crash("v-mid")
    b = square(2)
    maybe_crash("v-end")
    return a + b


class TestNonDeterminism:
    """Replay that meets different code stops with a precise error."""

    def test_renamed_step_is_reported_with_seq(self, db_path: Path) -> None:
        """A different step at a recorded position names seq, recorded and actual call."""
        CRASH_AT["v-mid"] = True
        with pytest.raises(Crash):
            versioned_v1.run(run_id="nd")

        @durable(name="test_engine:versioned")
        def versioned_v2() -> int:
            return double_sync(1) + square(2)

        with Engine(db_path) as other:
            report = other.recover(timeout=30)
            assert report.run_ids == ["nd"]
            with pytest.raises(RunFailed, match="diverged"):
                report.handles[0].result()
        with Journal(db_path) as j:
            run = j.get_run("nd")
        assert run.status == "failed"
        assert run.error is not None and run.error.startswith("diverged: NonDeterminismError")
        assert "seq 2" in run.error and "square#1" in run.error and "double_sync#1" in run.error

    def test_changed_arguments_are_a_divergence(self, db_path: Path) -> None:
        """The same step called with other arguments is caught by the argument hash."""
        CRASH_AT["v-mid"] = True
        with pytest.raises(Crash):
            versioned_v1.run(run_id="nd2")

        @durable(name="test_engine:versioned")
        def versioned_v3() -> int:
            return square(7) + square(2)

        recover_with_new_engine(db_path)
        with Journal(db_path) as j:
            error = j.get_run("nd2").error or ""
        assert "arguments hashing" in error

    def test_patched_keeps_old_runs_on_the_old_path(self, db_path: Path) -> None:
        """ctx.patched() is False for a run recorded before the change, True for new runs."""
        CRASH_AT["v-end"] = True
        with pytest.raises(Crash):
            versioned_v1.run(run_id="old")

        @durable(name="test_engine:versioned")
        def versioned_v4(ctx: Context) -> int:
            a = square(1)
            if ctx.patched("use-double"):
                return a + double_sync(2)
            return a + square(2)

        recover_with_new_engine(db_path)
        with Journal(db_path) as j:
            run = j.get_run("old")
            assert j.decode(run.output, run.codec, where="t") == 5
        assert CALLS["double_sync:2"] == 0  # the old run replayed its recorded path
        assert versioned_v4.run(run_id="new") == 5  # 1 + 2*2, on the new path
        assert CALLS["double_sync:2"] == 1


class Cart(BaseModel):
    items: list[str] = []
    total: float = 0.0


@step
def double_sync(i: int) -> int:
    CALLS[f"double_sync:{i}"] += 1
    return 2 * i


class TestContext:
    """Deterministic helpers, typed state, resources."""

    def test_now_uuid_random_replay_identically(self, db_path: Path) -> None:
        """Recorded values come back the same after a crash."""

        @durable(name="test_engine:values")
        def values(ctx: Context) -> list[str]:
            got = [ctx.now().isoformat(), str(ctx.uuid()), repr(ctx.random())]
            ctx.state["first"] = got
            square(1)
            maybe_crash("values")
            return [*got, *ctx.state["first"]]

        CRASH_AT["values"] = True
        with pytest.raises(Crash):
            values.run(run_id="v")
        recover_with_new_engine(db_path)
        with Journal(db_path) as j:
            run = j.get_run("v")
            out = j.decode(run.output, run.codec, where="t")
        assert out[:3] == out[3:]

    def test_typed_state_validates_and_journals(self, db_path: Path) -> None:
        """Context[Model] validates assignments by field type and journals them."""

        @durable(name="test_engine:typed")
        def shop(ctx: Context[Cart]) -> float:
            ctx.state.items = [*ctx.state.items, "apple"]
            ctx.state.total = "2.5"  # validated: becomes a float
            return ctx.state.total  # type: ignore[no-any-return]

        assert shop.run(run_id="t") == 2.5
        with Journal(db_path) as j:
            assert j.state_at("t").values == {"items": ["apple"], "total": 2.5}

        @durable(name="test_engine:typed_bad")
        def bad(ctx: Context[Cart]) -> None:
            ctx.state.total = "not a number"

        with pytest.raises(ValidationError):
            bad.run(run_id="tb")

    def test_unresolvable_state_model_is_a_clear_error(self) -> None:
        """A typed state whose model cannot be found is refused at decoration."""

        class Local(BaseModel):
            n: int = 0

        def body(ctx: Context[Local]) -> None:
            pass

        with pytest.raises(TypeError, match="module level"):
            durable(name="test_engine:local_model")(body)

    def test_resources_injected_on_start_and_recovery_never_serialized(self, db_path: Path) -> None:
        """Resource factories run on each start/recovery; the object never reaches the journal."""
        made: list[object] = []

        class Client:
            pass

        def make_client() -> Client:
            made.append(Client())
            return made[-1]

        @durable(name="test_engine:uses_client", resources={"client": make_client})
        def uses_client(ctx: Context) -> str:
            assert ctx.resources["client"] is made[-1]
            square(1)
            maybe_crash("client")
            return type(ctx.resources["client"]).__name__

        CRASH_AT["client"] = True
        with pytest.raises(Crash):
            uses_client.run(run_id="res")
        recover_with_new_engine(db_path)
        assert len(made) == 2
        with Journal(db_path) as j:
            assert j.decode(j.get_run("res").output, "json", where="t") == "Client"
            assert all(b"Client" not in (e.payload or b"") for e in j.read("res"))


class TestBadInput:
    """Values the codec cannot encode fail where they are made and write nothing."""

    def test_unencodable_argument_fails_at_the_call(self, db_path: Path) -> None:
        """An argument the codec cannot encode names its path; no run is created."""
        with pytest.raises(SerializationError, match=r"input\['args'\]\[0\]"):
            gathered_sync.run(object(), run_id="bad-arg")
        assert engine.default_engine().journal.find_run("bad-arg") is None

    def test_unencodable_state_value_fails_at_the_assignment(self, db_path: Path) -> None:
        """A state value the codec cannot encode names the key; it is never journaled."""

        @durable(name="test_engine:bad_state")
        def bad_state(ctx: Context) -> None:
            ctx.state["ok"] = 1
            ctx.state["conn"] = threading.Lock()

        with pytest.raises(SerializationError, match=r"state\['conn'\]"):
            bad_state.run(run_id="bs")
        keys = [e.key for e in entries(db_path, "bs") if e.kind == EntryKind.STATE_SET]
        assert keys == ["ok"]


@durable
async def child_job(n: int) -> int:
    CALLS["child"] += 1
    return await double(n)


@durable
def child_sync_job(n: int) -> int:
    CALLS["child_sync"] += 1
    return square(n)


@durable
def parent_job(n: int) -> int:
    a = child_sync_job(n)
    maybe_crash("parent-mid")
    return a + child_sync_job(n + 1)


class TestChildRuns(OnBothBackends):
    """A durable function called from another is a linked child run, run once."""

    def test_child_runs_are_linked_and_not_rerun_after_a_crash(self, db_path: Path) -> None:
        """After a crash between two children, recovery does not rerun the first."""
        CRASH_AT["parent-mid"] = True
        with pytest.raises(Crash):
            parent_job.run(3, run_id="p")
        recover_with_new_engine(db_path)
        with Journal(db_path) as j:
            run = j.get_run("p")
            assert j.decode(run.output, run.codec, where="t") == 9 + 16
            children = j.list_runs(parent_run_id="p")
        assert [c.status for c in children] == ["completed", "completed"]
        assert CALLS["child_sync"] == 2 and CALLS["square:3"] == 1

    def test_async_child_run(self) -> None:
        """An async durable function awaited inside another is a child run."""

        @durable(name="test_engine:aparent")
        async def aparent() -> int:
            return await child_job(4) + 1

        assert asyncio.run(aparent.run(run_id="ap")) == 9
        children = engine.default_engine().journal.list_runs(parent_run_id="ap")
        assert len(children) == 1 and children[0].status == "completed"


class TestGroupCommit:
    """Many async runs in one process share commits."""

    def test_concurrent_runs_share_transactions(self) -> None:
        """200 runs in flight finish with fewer batches than step commits."""
        eng = engine.default_engine()

        async def main() -> list[list[int]]:
            return await asyncio.gather(*(eng.acall(gathered, (3,), {}) for _ in range(200)))

        results = asyncio.run(main())
        assert all(r == [0, 2, 4, 200] for r in results)
        committers = list(eng._committers.values())
        assert committers and committers[0].requests >= 200 * 5
        assert committers[0].batches < committers[0].requests / 5


class HashColor(enum.Enum):
    RED = 1


class TestHotPath:
    """What the per-step and per-run fast paths must keep."""

    @pytest.mark.parametrize(
        ("args", "kwargs", "expected"),
        [
            ((), {}, "4f134c96f3e15439"),
            ((5,), {}, "c0aefe5d918a7a16"),
            (("abc", 2.5, None, True, b"x"), {}, "c0dcb61a4f49a054"),
            (([1, (2, 3)], {"k": {1, 2}}), {"z": HashColor.RED, "a": 1}, "0220120241d058c0"),
        ],
    )
    def test_argument_hash_is_pinned(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], expected: str
    ) -> None:
        """Runs recorded by older versions replay only if the hash never changes."""
        assert args_hash(args, kwargs) == expected

    def test_a_new_run_reads_no_history(self, fresh: Engine) -> None:
        """A run this engine just created has nothing to replay: nothing is read back."""
        before = fresh.journal.entries_read
        assert sum_squares(3) == 5
        assert fresh.journal.entries_read == before
