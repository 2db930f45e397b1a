"""Event-driven workflows: routing, state, streaming, checkpoints, recovery (in-process;
real SIGKILL crashes are in test_workflow_crash.py). A ``Crash`` (BaseException) in a
step stands in for the process dying: nothing is recorded for it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from engine import (
    Context,
    Engine,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    NoStepForEvent,
    RunCancelled,
    RunFailed,
    RunFinished,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowConfigurationError,
    WorkflowTimeout,
    WorkflowValidationError,
    configure,
    history,
    replay,
    send_event,
    step,
)
from journal import EntryKind, Journal, RunNotFound, SnapshotPolicy

CALLS: Counter[str] = Counter()
CRASH: dict[str, int] = {}


class Crash(BaseException):
    """Stands in for the process dying."""


@pytest.fixture(autouse=True)
def fresh(db_path: Path) -> Iterator[Engine]:
    CALLS.clear()
    CRASH.clear()
    eng = configure(db_path, lease_seconds=0)
    yield eng
    eng.close()


def recover_with_new_engine(db_path: Path, **options: Any) -> list[str]:
    """A second engine (another owner) resumes what the first left behind."""
    with Engine(db_path, **options) as other:
        report = other.recover(timeout=30)
        assert not report.errors, report.errors
        return report.run_ids


def output(db_path: Path, run_id: str) -> Any:
    with Journal(db_path) as j:
        run = j.get_run(run_id)
        assert run.status == "completed", (run.status, run.error)
        return j.decode(run.output, run.codec, where="t")


class Draft(Event):
    text: str


class Part(Event):
    i: int


class Done(Event):
    i: int
    v: int


class Essay(Workflow):
    @step
    async def write(self, ctx: Context, ev: StartEvent) -> Draft:
        CALLS["write"] += 1
        await ctx.store.set("topic", ev.topic)
        ctx.write_event_to_stream(Draft(text="progress"))
        return Draft(text=f"about {ev.topic}")

    @step
    async def review(self, ctx: Context, ev: Draft) -> StopEvent:
        CALLS["review"] += 1
        if CRASH.pop("review", 0):
            raise Crash("review")
        return StopEvent(result=ev.text.upper())


class FanOut(Workflow):
    @step
    async def split(self, ctx: Context, ev: StartEvent) -> Part | None:
        CALLS["split"] += 1
        for i in range(ev.n):
            ctx.send_event(Part(i=i))
        await ctx.store.set("n", ev.n)
        return None

    @step(num_workers=3)
    async def work(self, ctx: Context, ev: Part) -> Done:
        CALLS[f"work:{ev.i}"] += 1
        await asyncio.sleep(0.001 * (ev.i % 3))
        if CRASH.get("work") == ev.i:
            del CRASH["work"]
            raise Crash(f"work {ev.i}")
        await ctx.store.set(f"square{ev.i}", ev.i * ev.i)
        return Done(i=ev.i, v=ev.i * ev.i)

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        n = await ctx.store.get("n")
        got = ctx.collect_events(ev, [Done] * n)
        if got is None:
            return None
        return StopEvent(result=sorted(e.v for e in got))


class TestRunning:
    """Running workflows to their StopEvent."""

    def test_run_stream_and_result(self, db_path: Path) -> None:
        """Steps route by annotation; streamed events reach the handler, the StopEvent last
        (as in LlamaIndex); the store is journaled."""

        async def main() -> tuple[Any, list[Event]]:
            handler = Essay().run(topic="tides", run_id="e")
            streamed = [ev async for ev in handler.stream_events()]
            return await handler, streamed

        result, streamed = asyncio.run(main())
        assert result == "ABOUT TIDES"
        assert streamed == [Draft(text="progress"), StopEvent(result="ABOUT TIDES")]
        with Journal(db_path) as j:
            assert j.state_at("e").values == {"topic": "tides"}
            kinds = [e.kind for e in j.read("e")]
        assert kinds.count(EntryKind.STEP_COMPLETED) == 2
        assert EntryKind.EVENT_STREAMED in kinds and kinds[-1] == EntryKind.RUN_COMPLETED

    def test_sync_result_without_a_loop(self) -> None:
        """Called from sync code, the run executes in the background and result() waits."""
        assert Essay().run(topic="sync").result(timeout=30) == "ABOUT SYNC"

    def test_fan_out_fan_in_with_workers(self, db_path: Path) -> None:
        """send_event fans out, num_workers runs them in parallel, collect_events joins."""
        result = FanOut().run(n=7, run_id="f").result(timeout=30)
        assert result == [i * i for i in range(7)]
        assert all(CALLS[f"work:{i}"] == 1 for i in range(7))
        with Journal(db_path) as j:
            state = j.state_at("f")
        assert {k: v for k, v in state.values.items() if k.startswith("square")} == {
            f"square{i}": i * i for i in range(7)
        }
        assert state.pending == {}  # every delivery was consumed

    def test_run_id_is_idempotent(self) -> None:
        """Running an existing id attaches to that run instead of starting another."""
        assert Essay().run(topic="a", run_id="same").result(timeout=30) == "ABOUT A"
        assert Essay().run(topic="a", run_id="same").result(timeout=30) == "ABOUT A"
        assert CALLS["write"] == 1

    def test_history_lists_each_step(self) -> None:
        """Each completed step is a checkpoint with the events it consumed and emitted."""
        Essay().run(topic="h", run_id="h").result(timeout=30)
        cps = history("h")
        assert [(c.kind, c.name) for c in cps] == [
            (EntryKind.STEP_COMPLETED, "write"),
            (EntryKind.STEP_COMPLETED, "review"),
            (EntryKind.RUN_COMPLETED, None),
        ]
        assert cps[0].set_keys == ("topic",) and len(cps[0].emitted) == 1


class Cart(BaseModel):
    items: list[str] = []
    total: float = 0.0


class Shop(Workflow):
    @step
    async def add(self, ctx: Context[Cart], ev: StartEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state.items = [*state.items, ev.item]
            state.total = state.total + ev.price
        final = await ctx.store.get_state()
        return StopEvent(result=final.model_dump())


class TestState:
    """Typed state and values the codec cannot encode."""

    def test_typed_state_edit(self, db_path: Path) -> None:
        """edit_state journals the fields that changed."""
        result = Shop().run(item="pear", price=2.5, run_id="s").result(timeout=30)
        assert result == {"items": ["pear"], "total": 2.5}
        with Journal(db_path) as j:
            assert j.state_at("s").values == {"items": ["pear"], "total": 2.5}

    def test_unencodable_store_value_fails_at_the_set(self, db_path: Path) -> None:
        """A value the codec cannot encode fails at ctx.store.set, naming the key."""

        class Bad(Workflow, name="test_workflow:Bad"):
            @step
            async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
                await ctx.store.set("conn", object())
                return StopEvent(result=1)

        with pytest.raises(RunFailed, match=r"store\['conn'\]"):
            Bad().run(run_id="bad").result(timeout=30)
        with Journal(db_path) as j:
            assert all(e.key != "conn" for e in j.read("bad"))


class TestValidation:
    """Invalid workflows are refused where LlamaIndex refuses them: a bad step signature
    when the class is defined, a bad graph when the workflow is built or first run."""

    def test_no_path_to_stop(self) -> None:
        """A workflow that can never reach StopEvent is refused before it runs."""

        class Loops(Workflow):
            @step
            async def a(self, ctx: Context, ev: StartEvent) -> Draft | StopEvent:
                return Draft(text="")

            @step
            async def b(self, ctx: Context, ev: Draft) -> Draft:
                return ev

            @step
            async def c(self, ev: Part) -> StopEvent:
                return StopEvent()

        class Cycle(Workflow):
            @step
            async def a(self, ev: StartEvent) -> Draft:
                return Draft(text="")

            @step
            async def b(self, ev: Draft) -> Draft:
                return ev

            @step
            async def c(self, ev: Part) -> StopEvent | Part:
                return StopEvent()

        assert Loops().validate() is False  # a StopEvent is reachable from StartEvent
        with pytest.raises(WorkflowValidationError, match="could never finish"):
            Cycle().run()

    def test_no_stop_event_at_all(self) -> None:
        """A workflow whose steps return no StopEvent cannot be built."""

        class Loops(Workflow):
            @step
            async def a(self, ctx: Context, ev: StartEvent) -> Draft:
                return Draft(text="")

            @step
            async def b(self, ctx: Context, ev: Draft) -> Draft:
                return ev

        with pytest.raises(WorkflowConfigurationError, match="type StopEvent must be returned"):
            Loops()

    def test_step_without_event_annotation(self) -> None:
        """A step whose parameters name no Event type is refused with its class."""
        with pytest.raises(WorkflowValidationError, match="parameter annotated"):

            class NoEvent(Workflow):
                @step
                async def a(self, ctx: Context, ev: int) -> StopEvent:
                    return StopEvent()

    def test_returned_event_nobody_accepts(self) -> None:
        """A step returning an event type no step accepts is refused before it runs."""

        class Orphan(Workflow):
            @step
            async def a(self, ctx: Context, ev: StartEvent) -> Part | StopEvent:
                return StopEvent()

        with pytest.raises(WorkflowValidationError, match="produced but never consumed: Part"):
            Orphan().run()

    def test_sent_event_nobody_accepts_fails_the_run(self) -> None:
        """An event sent at run time that no step accepts fails the run, naming it."""

        class Sends(Workflow, name="test_workflow:Sends"):
            @step
            async def a(self, ctx: Context, ev: StartEvent) -> StopEvent:
                ctx.send_event(Done(i=1, v=1))
                return StopEvent()

        with pytest.raises(NoStepForEvent, match="Done, which no step"):
            asyncio.run(_await(Sends().run()))


async def _await(handler: Any) -> Any:
    return await handler


class Retrying(Workflow):
    @step(retries=2, backoff=0)
    async def flaky(self, ctx: Context, ev: StartEvent) -> StopEvent:
        CALLS["flaky"] += 1
        if CALLS["flaky"] < ev.succeed_on:
            raise ConnectionError(f"attempt {CALLS['flaky']}")
        return StopEvent(result=CALLS["flaky"])


class TestRetries:
    """Retry policies on workflow steps."""

    def test_retry_then_succeed(self, db_path: Path) -> None:
        """Failed attempts are journaled; the step succeeds within its retries."""
        assert Retrying().run(succeed_on=3, run_id="r").result(timeout=30) == 3
        with Journal(db_path) as j:
            failed = [e for e in j.read("r") if e.kind == EntryKind.STEP_FAILED]
        assert len(failed) == 2

    def test_exhausted_retries_fail_the_run(self, db_path: Path) -> None:
        """Past its retries the step fails the run: awaiting the handler raises the step's
        own exception (noting its attempts), and the journal records the failure."""
        with pytest.raises(ConnectionError, match="attempt 3") as caught:
            asyncio.run(_await(Retrying().run(succeed_on=10, run_id="rf")))
        assert any("after 3 attempt" in note for note in caught.value.__notes__)
        with pytest.raises(RunFailed, match="StepFailed: step 'flaky' failed after 3 attempt"):
            Retrying().run(succeed_on=10, run_id="rf").result(timeout=30)
        with Journal(db_path) as j:
            run = j.get_run("rf")
        assert run.status == "failed" and "ConnectionError" in (run.error or "")


class Approval(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        CALLS["ask"] += 1
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="ship it?"), timeout=60
        )
        return StopEvent(result=f"answer={answer.response}")


class TestHumanInTheLoop:
    """wait_for_event parks the run until send_event delivers the answer."""

    def test_in_process_answer_through_the_handler(self) -> None:
        """The InputRequiredEvent is streamed; the answer resumes the waiting step."""

        async def main() -> Any:
            handler = Approval().run(run_id="hitl")
            async for ev in handler.stream_events():
                if isinstance(ev, InputRequiredEvent):
                    assert ev.prefix == "ship it?"
                    handler.ctx.send_event(HumanResponseEvent(response="yes"))
            return await handler

        assert asyncio.run(main()) == "answer=yes"
        assert CALLS["ask"] == 1

    def test_answer_sent_as_a_mapping_from_outside(self, db_path: Path) -> None:
        """send_event(run_id, {"type": ...}) reaches a run waiting in the background."""
        handler = Approval().run(run_id="hitl2")
        with Journal(db_path) as j:
            while j.get_run("hitl2").status != "waiting":
                asyncio.run(asyncio.sleep(0.01))
        send_event("hitl2", {"type": "HumanResponseEvent", "response": "later"})
        assert handler.result(timeout=30) == "answer=later"

    def test_send_event_bad_targets(self) -> None:
        """Unknown runs, finished runs and unknown event types are clear errors."""
        with pytest.raises(RunNotFound):
            send_event("ghost", HumanResponseEvent(response=1))
        Essay().run(topic="x", run_id="finished").result(timeout=30)
        with pytest.raises(RunFinished, match="completed"):
            send_event("finished", HumanResponseEvent(response=1))
        waiting = Approval().run(run_id="w")
        with pytest.raises(ValueError, match="unknown event type 'Nope'"):
            send_event("w", {"type": "Nope"})
        waiting.cancel()
        with pytest.raises(RunCancelled):
            waiting.result(timeout=30)


class Sleepy(Workflow):
    @step
    async def nap(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(ev.seconds)
        return StopEvent(result="rested")


class TestTimeout:
    """A workflow's timeout counts living time: not time parked waiting for an event."""

    def test_default_timeout_is_llamaindex_s(self) -> None:
        """45 seconds of living time unless told otherwise (LlamaIndex's default); None: none."""
        assert Essay().timeout == 45.0
        assert Essay(timeout=None).timeout is None

    def test_running_past_the_timeout_fails(self, db_path: Path) -> None:
        """A step that runs longer than the workflow's timeout fails the run."""
        with pytest.raises(WorkflowTimeout, match=r"within 0\.3s of living time"):
            asyncio.run(_await(Sleepy(timeout=0.3).run(seconds=5, run_id="slow")))
        with Journal(db_path) as j:
            run = j.get_run("slow")
        assert run.status == "failed" and (run.error or "").startswith("WorkflowTimeout")

    def test_parked_longer_than_the_timeout_then_answered_completes(self, db_path: Path) -> None:
        """timeout=0.5, parked 1.5 s for a human in this process, answered: completes."""
        handler = Approval(timeout=0.5).run(run_id="patient")
        with Journal(db_path) as j:
            while j.get_run("patient").status != "waiting":
                asyncio.run(asyncio.sleep(0.01))
        asyncio.run(asyncio.sleep(1.5))
        send_event("patient", {"type": "HumanResponseEvent", "response": "late"})
        assert handler.result(timeout=30) == "answer=late"
        with Journal(db_path) as j:
            done = [j.decode_entry(e) for e in j.read("patient")
                    if e.kind == EntryKind.STEP_COMPLETED]  # fmt: skip
        assert done[-1]["living"] < 0.5


class TestRecovery:
    """A crashed run resumes from snapshot + tail, without re-running completed steps."""

    def test_crash_in_last_step_reruns_only_it(self, db_path: Path) -> None:
        """After a crash in review, recovery runs review again but not write."""
        CRASH["review"] = 1
        with pytest.raises(Crash):
            asyncio.run(_await(Essay().run(topic="t", run_id="c")))
        assert recover_with_new_engine(db_path) == ["c"]
        assert output(db_path, "c") == "ABOUT T"
        assert Counter({"write": 1, "review": 2}) == CALLS

    def test_crash_mid_fan_out(self, db_path: Path) -> None:
        """Completed parallel steps are not re-run; the join still sees every result."""
        CRASH["work"] = 4
        with pytest.raises(Crash):
            asyncio.run(_await(FanOut().run(n=6, run_id="fo")))
        ran_before = {i for i in range(6) if CALLS[f"work:{i}"]}
        recover_with_new_engine(db_path)
        assert output(db_path, "fo") == [i * i for i in range(6)]
        assert CALLS["split"] == 1
        for i in range(6):
            assert CALLS[f"work:{i}"] <= 2, (CALLS, ran_before)
        with Journal(db_path) as j:
            completions = Counter(
                e.step for e in j.read("fo") if e.kind == EntryKind.STEP_COMPLETED
            )
        assert completions["work"] == 6  # each part committed exactly once
        assert ran_before  # the crash happened mid-way

    @pytest.mark.slow
    def test_recovery_reads_only_the_tail(self, tmp_path: Path) -> None:
        """A 10,000-step loop recovers from its last snapshot: it reads only the tail."""
        path = tmp_path / "loop.db"
        eng = configure(path, lease_seconds=0, durability="process",
                        snapshots=SnapshotPolicy(every=500))  # fmt: skip
        CRASH["count"] = 10_000
        with pytest.raises(Crash):
            asyncio.run(_await(Counting(timeout=None).run(n=10_050, run_id="loop")))
        eng.close()
        with Journal(path) as j:
            last = j.get_run("loop").last_seq
            snaps = j.snapshots("loop")
        assert last > 40_000 and snaps and snaps[-1].seq > last - 500
        with Engine(path, durability="process") as other:
            before = other.journal.entries_read
            other.recover(timeout=60)
            read = other.journal.entries_read - before
        assert read < 2_000, read  # the tail after the snapshot, plus the 50 new steps
        assert output(path, "loop") == 10_050
        assert CALLS["count"] == 10_051  # the crashed step ran twice, no other


class Tick(Event):
    i: int


class Counting(Workflow):
    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Tick:
        await ctx.store.set("n", ev.n)
        return Tick(i=0)

    @step
    async def count(self, ctx: Context, ev: Tick) -> Tick | StopEvent:
        CALLS["count"] += 1
        if CRASH.get("count") == ev.i:
            del CRASH["count"]
            raise Crash("count")
        await ctx.store.set("i", ev.i + 1)
        if ev.i + 1 >= await ctx.store.get("n"):
            return StopEvent(result=ev.i + 1)
        return Tick(i=ev.i + 1)


class Summarise(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        CALLS["child"] += 1
        return StopEvent(result=f"summary of {ev.text}")


class Report(Workflow):
    @step
    async def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
        CALLS["parent"] += 1
        summary = await Summarise().run(text=ev.text)
        if CRASH.pop("after-child", 0):
            raise Crash("after child")
        return StopEvent(result=summary.upper())


class TestChildWorkflows:
    """A workflow started inside a step is a linked child run, executed once."""

    def test_child_is_linked_and_its_result_returned(self, db_path: Path) -> None:
        """The child run records its parent; the parent gets its result."""
        assert asyncio.run(_await(Report().run(text="q3", run_id="rep"))) == "SUMMARY OF Q3"
        with Journal(db_path) as j:
            children = j.list_runs(parent_run_id="rep")
        assert [c.status for c in children] == ["completed"]
        assert children[0].run_id.startswith("rep/write:")

    def test_a_step_run_again_attaches_to_the_same_child(self, db_path: Path) -> None:
        """After a crash past the child, recovery re-runs the step but not the child."""
        CRASH["after-child"] = 1
        with pytest.raises(Crash):
            asyncio.run(_await(Report().run(text="q4", run_id="rep2")))
        recover_with_new_engine(db_path)
        assert output(db_path, "rep2") == "SUMMARY OF Q4"
        assert Counter({"parent": 2, "child": 1}) == CALLS
        with Journal(db_path) as j:
            assert len(j.list_runs(parent_run_id="rep2")) == 1


class TestCheckpoints:
    """The familiar checkpoint API: list, inspect, run_from."""

    def test_checkpoints_and_run_from(self, db_path: Path) -> None:
        """A checkpoint per step with its state; run_from forks from it with edits."""
        wf = Essay()
        wf.run(topic="cp", run_id="cp").result(timeout=30)
        cps = wf.checkpoints("cp")
        assert [c.step for c in cps] == ["write", "review"]
        assert cps[0].state == {"topic": "cp"} and cps[0].consumed == "StartEvent"
        assert wf.checkpoints("cp", step="review")[0].number == 2
        CALLS.clear()
        handler = wf.run_from(cps[0], state={"topic": "edited"}, run_id="cp2")
        assert handler.result(timeout=30) == "ABOUT CP"  # the Draft was already emitted
        assert Counter({"review": 1}) == CALLS  # write was not re-run
        with Journal(db_path) as j:
            assert j.state_at("cp2").values == {"topic": "edited"}
            assert j.get_run("cp").status == "completed"

    def test_replay_checks_steps_against_todays_code(self) -> None:
        """A recorded run replays ok against the same workflow."""
        Essay().run(topic="r", run_id="rp").result(timeout=30)
        report = replay("rp")
        assert report.ok and report.calls_replayed == 2
