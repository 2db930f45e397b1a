"""LlamaIndex's step-failure API: ``@catch_error`` handlers receiving a
``StepFailedEvent``, their ``max_recoveries`` budget along a chain of events,
``WorkflowFailedEvent`` as the stream's last event, ``ctx.retry_info()``, and the
composable retry primitives (``retry_policy(retry=, wait=, stop=)``), all journaled."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Context,
    Engine,
    Event,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowFailedEvent,
    WorkflowValidationError,
    catch_error,
    configure,
    retry_if_exception_cause_type,
    retry_if_exception_message,
    retry_if_exception_type,
    retry_if_not_exception_message,
    retry_never,
    retry_policy,
    step,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
    stop_never,
    wait_chain,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_incrementing,
    wait_none,
    wait_random,
    wait_random_exponential,
)
from journal import EntryKind, Journal

K = EntryKind
CALLS: Counter[str] = Counter()
SEEN: list[Any] = []


@pytest.fixture(autouse=True)
def fresh(db_path: Path) -> Iterator[Engine]:
    CALLS.clear()
    SEEN.clear()
    eng = configure(db_path, lease_seconds=0)
    yield eng
    eng.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def result_of(handler: Any) -> Any:
    return await handler


async def stream_then_result(handler: Any) -> tuple[list[Event], Any]:
    events = [ev async for ev in handler.stream_events()]
    try:
        return events, await handler
    except Exception as exc:
        return events, exc


class Job(StartEvent):
    url: str = "https://example.org"


class Fetched(Event):
    body: str


class Retry(Event):
    url: str


class Recovers(Workflow):
    @step(retry_policy=retry_policy(wait=wait_none(), stop=stop_after_attempt(2)))
    async def fetch(self, ev: Job | Retry) -> Fetched:
        CALLS["fetch"] += 1
        raise ConnectionError(f"{ev.url} unreachable")

    @step
    async def render(self, ev: Fetched) -> StopEvent:
        return StopEvent(result=ev.body)

    @catch_error(for_steps=["fetch"], max_recoveries=2)
    async def again(self, ctx: Context, ev: StepFailedEvent) -> Retry:
        SEEN.append(ev)
        return Retry(url=f"{ev.input_event.url}/mirror")


class Handled(Workflow):
    @step
    async def fetch(self, ev: Job) -> Fetched:
        raise KeyError("no such page")

    @step
    async def render(self, ev: Fetched) -> StopEvent:
        return StopEvent(result=ev.body)

    @catch_error
    async def fallback(self, ev: StepFailedEvent) -> StopEvent:
        SEEN.append(ev)
        return StopEvent(result=f"fallback for {ev.step_name}")


class HandlerFails(Workflow):
    @step
    async def fetch(self, ev: Job) -> StopEvent:
        raise KeyError("no such page")

    @catch_error
    async def fallback(self, ev: StepFailedEvent) -> StopEvent:
        raise RuntimeError("the fallback failed too")


class Unhandled(Workflow):
    @step
    async def fetch(self, ev: Job) -> StopEvent:
        raise ValueError("bad input")


class TestCatchError:
    """A step's last failure goes to its handler; the budget bounds the recoveries."""

    def test_wildcard_handler_recovers_with_a_stop_event(self, db_path: Path) -> None:
        events, result = run(stream_then_result(Handled().run(run_id="h", url="u")))
        assert result == "fallback for fetch"
        (failed,) = SEEN
        assert failed.step_name == "fetch" and failed.attempts == 1
        assert isinstance(failed.input_event, Job) and failed.input_event.url == "u"
        assert isinstance(failed.exception, KeyError) and failed.elapsed_seconds >= 0
        assert failed.failed_at.tzinfo is not None
        assert not any(isinstance(e, WorkflowFailedEvent) for e in events)
        with Journal(db_path) as j:
            final = [j.decode_entry(e) for e in j.read("h") if e.kind == K.STEP_FAILED]
            (handed,) = [j.decode_entry(e) for e in j.read("h") if e.kind == K.EVENT_EMITTED
                         and isinstance(j.decode_entry(e)["event"], StepFailedEvent)]  # fmt: skip
        assert final == [{"attempt": 1, "type": "KeyError", "error": "'no such page'",
                          "final": True, "handler": "fallback"}]  # fmt: skip
        # the journal gives the event back with its classes: a recovered run's handler
        # sees what this one saw
        assert handed["to"] == "fallback" and isinstance(handed["event"].input_event, Job)
        assert isinstance(handed["event"].exception, KeyError)

    def test_budget_per_chain_then_the_run_fails(self) -> None:
        events, error = run(stream_then_result(Recovers().run()))
        # 3 rounds of 2 attempts: the first failure, then two recoveries (max_recoveries=2)
        assert CALLS["fetch"] == 6 and len(SEEN) == 2
        assert [e.input_event.url for e in SEEN] == [
            "https://example.org", "https://example.org/mirror"]  # fmt: skip
        assert isinstance(error, ConnectionError) and "mirror/mirror" in str(error)
        last = events[-1]
        assert isinstance(last, WorkflowFailedEvent)
        assert last.step_name == "fetch" and last.attempts == 2
        assert isinstance(last.exception, ConnectionError)

    def test_a_failing_handler_fails_the_run(self) -> None:
        events, error = run(stream_then_result(HandlerFails().run()))
        assert isinstance(error, RuntimeError) and "failed too" in str(error)
        assert isinstance(events[-1], WorkflowFailedEvent)
        assert events[-1].step_name == "fallback"

    def test_without_handler_the_stream_ends_with_workflow_failed(self, db_path: Path) -> None:
        events, error = run(stream_then_result(Unhandled().run(run_id="u")))
        assert isinstance(error, ValueError)
        assert [type(e) for e in events] == [WorkflowFailedEvent]
        with Journal(db_path) as j:
            streamed = [j.decode_entry(e) for e in j.read("u") if e.kind == K.EVENT_STREAMED]
        assert [type(e) for e in streamed] == [WorkflowFailedEvent]  # journaled with it

    def test_invalid_handlers_refused(self) -> None:
        with pytest.raises(WorkflowValidationError, match="must accept StepFailedEvent"):

            class Wrong(Workflow):
                @step
                async def a(self, ev: StartEvent) -> StopEvent:
                    return StopEvent()

                @catch_error
                async def h(self, ev: StartEvent) -> StopEvent:
                    return StopEvent()

        with pytest.raises(WorkflowValidationError, match="max_recoveries"):
            catch_error(max_recoveries=0)
        with pytest.raises(WorkflowValidationError, match="for_steps"):
            catch_error(for_steps="a")  # type: ignore[arg-type]

        class TwoWildcards(Workflow):
            @step
            async def a(self, ev: StartEvent) -> StopEvent:
                return StopEvent()

            @catch_error
            async def h1(self, ev: StepFailedEvent) -> StopEvent:
                return StopEvent()

            @catch_error
            async def h2(self, ev: StepFailedEvent) -> StopEvent:
                return StopEvent()

        with pytest.raises(WorkflowValidationError, match="Only one wildcard"):
            TwoWildcards().validate()

        class Unknown(Workflow):
            @step
            async def a(self, ev: StartEvent) -> StopEvent:
                return StopEvent()

            @catch_error(for_steps=["b"])
            async def h(self, ev: StepFailedEvent) -> StopEvent:
                return StopEvent()

        with pytest.raises(WorkflowValidationError, match="unknown step 'b'"):
            Unknown().run()


class Counted(Workflow):
    @step(retry_policy=retry_policy(wait=wait_fixed(0.01), stop=stop_after_attempt(3)))
    async def flaky(self, ctx: Context, ev: StartEvent) -> StopEvent:
        SEEN.append(ctx.retry_info())
        if len(SEEN) < 3:
            raise TimeoutError(f"try {len(SEEN)}")
        return StopEvent(result="ok")


class Picky(Workflow):
    @step(retry_policy=retry_policy(retry=retry_if_exception_type(ConnectionError),
                                    wait=wait_none(), stop=stop_after_attempt(5)))  # fmt: skip
    async def flaky(self, ev: StartEvent) -> StopEvent:
        CALLS["flaky"] += 1
        raise ValueError("not transient") if CALLS["flaky"] > 1 else ConnectionError("again")


class TestRetry:
    """retry_info() per attempt, and what the composed policies decide."""

    def test_retry_info_per_attempt(self) -> None:
        assert run(result_of(Counted().run())) == "ok"
        assert [i.retry_number for i in SEEN] == [0, 1, 2]
        assert SEEN[0].last_exception is None and SEEN[0].last_failed_at is None
        assert SEEN[0].elapsed_seconds == 0.0
        assert str(SEEN[2].last_exception) == "try 2"
        assert isinstance(SEEN[2].last_exception, TimeoutError)
        assert SEEN[2].elapsed_seconds >= 0.02 - 1e-3
        assert isinstance(SEEN[1].last_failed_at, dt.datetime)

    def test_retry_condition_stops_on_other_errors(self) -> None:
        with pytest.raises(ValueError, match="not transient"):
            run(result_of(Picky().run()))
        assert CALLS["flaky"] == 2

    def test_policy_decisions(self) -> None:
        err = ConnectionError("HTTP 503")
        default = retry_policy()
        assert [default.next(0, n, err) for n in (1, 2, 3)] == [5.0, 5.0, None]
        typed = retry_policy(
            retry=retry_if_exception_type(ConnectionError) | retry_if_exception_message(
                match=r"rate limit"), wait=wait_fixed(1), stop=stop_after_attempt(9))  # fmt: skip
        assert typed.next(0, 1, err) == 1.0
        assert typed.next(0, 1, ValueError("rate limit hit")) == 1.0
        assert typed.next(0, 1, ValueError("bad")) is None
        both = retry_if_exception_type(ConnectionError) & retry_if_not_exception_message(
            message="HTTP 503"
        )
        assert both(err) is False and both(ConnectionError("HTTP 502")) is True
        assert retry_policy(retry=retry_never()).next(0, 1, err) is None
        cause = ValueError("wrapped")
        cause.__cause__ = OSError("disk")
        assert retry_if_exception_cause_type(OSError)(cause)
        chained = wait_chain(wait_fixed(1), wait_fixed(2), wait_fixed(5))
        assert [chained(n) for n in (0, 1, 2, 7)] == [1, 2, 5, 5]
        assert (wait_fixed(1) + wait_incrementing(start=0, increment=2))(3) == 7
        assert sum([wait_fixed(1), wait_fixed(2)])(0) == 3  # type: ignore[operator]
        assert [wait_exponential(multiplier=1, max=5)(n) for n in (1, 2, 3)] == [2, 4, 5]
        for wait in (wait_random(1, 2), wait_random_exponential(max=4),
                     wait_exponential_jitter(initial=1, jitter=1)):  # fmt: skip
            assert wait(2, seed=7) == wait(2, seed=7)  # a recovered run waits the same
        assert 1 <= wait_random(1, 2)(0, seed=3) <= 2
        by_time = retry_policy(wait=wait_fixed(3), stop=stop_after_delay(10) | stop_never())
        assert by_time.next(9, 50, err) == 3.0 and by_time.next(10, 1, err) is None
        before = retry_policy(wait=wait_fixed(3), stop=stop_before_delay(10))
        assert before.next(6, 1, err) == 3.0 and before.next(7, 1, err) is None
        both_stop = retry_policy(wait=wait_none(), stop=stop_after_attempt(2) & stop_after_delay(5))
        assert both_stop.next(1, 3, err) == 0.0 and both_stop.next(6, 3, err) is None


class Parks(Event):
    url: str


class BudgetAcrossSnapshot(Workflow):
    @step
    async def fetch(self, ev: Job | Retry) -> Parks:
        CALLS["fetch"] += 1
        raise ConnectionError(f"{ev.url} unreachable")

    @step
    async def wait(self, ctx: Context, ev: Parks) -> StopEvent:
        return StopEvent(result=ev.url)

    @catch_error(max_recoveries=1)
    async def again(self, ctx: Context, ev: StepFailedEvent) -> Retry:
        SEEN.append(ev.step_name)
        return Retry(url="mirror")


def test_a_snapshot_keeps_the_recovery_budget() -> None:
    """ctx.to_dict() carries the budget a chain of events has spent: the run restored
    from a snapshot taken after a recovery does not get a fresh one."""
    from engine import Context as Ctx

    wf = BudgetAcrossSnapshot()
    seed = Ctx(wf)
    seed.send_event(Retry(url="mirror"), step="fetch")
    data = seed.to_dict()
    # what a snapshot taken just after a recovery holds: the Retry, one recovery spent
    data["queued"][0]["recoveries"] = {"again": 1}
    data["is_running"] = True  # taken mid-run: no new start event
    restored = Ctx.from_dict(wf, data)
    with pytest.raises(ConnectionError, match="mirror unreachable"):
        run(result_of(wf.run(ctx=restored)))
    assert CALLS["fetch"] == 1 and SEEN == []  # the budget was spent: no second recovery
    assert Ctx.from_dict(wf, restored.to_dict()).to_dict()["queued"][0]["recoveries"] == {
        "again": 1}  # fmt: skip
