"""Code written for llama-index-workflows 2.x runs on ``engine`` with only its imports
changed, and is durable: step signatures, the Event mapping API, custom start and stop
events, human in the loop by returned events, ``ctx.store`` paths and state, Context
snapshots (``to_dict`` / ``from_dict`` / ``run(ctx=)``), serializers, retry policies and
LlamaIndex's error types. The SIGKILL test runs ``tests/_procs/llamaindex_flow.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _children import REPO
from pydantic import BaseModel, PrivateAttr

from engine import (
    ConstantDelayRetryPolicy,
    Context,
    ContextSerdeError,
    ContextStateError,
    DictState,
    Engine,
    Event,
    ExponentialBackoffRetryPolicy,
    HumanResponseEvent,
    InputRequiredEvent,
    JsonSerializer,
    PickleSerializer,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowConfigurationError,
    WorkflowContext,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    WorkflowValidationError,
    configure,
    step,
)
from journal import EntryKind, Journal, RunNotFound

K = EntryKind
PROCS = REPO / "tests" / "_procs"
CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def fresh(db_path: Path) -> Iterator[Engine]:
    CALLS.clear()
    eng = configure(db_path, lease_seconds=0)
    yield eng
    eng.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def result_of(handler: Any) -> Any:
    return await handler


# -- module-level workflows (recoverable) ---------------------------------------------


class Query(StartEvent):
    q: str


class Answer(StopEvent):
    text: str


class Hop(Event):
    n: int


class Shapes(Workflow):
    """Every step signature LlamaIndex accepts, and a union return."""

    @step
    async def start(self, ev: Query) -> Hop:
        return Hop(n=len(ev.q))

    @step
    async def middle(self, ev: Hop, ctx: Context) -> Hop | None:
        await ctx.store.set("seen", ev.n)
        return None if ev.n >= 1000 else Hop(n=ev.n + 1000)

    @step
    def sync_end(self, ctx: Context, ev: Hop) -> Answer | None:
        return Answer(text=f"{ev.n}") if ev.n >= 1000 else None


class Joined(Event):
    v: int


class Fan(Workflow):
    @step
    async def split(self, ctx: Context, ev: StartEvent) -> Hop | None:
        for i in range(6):
            ctx.send_event(Hop(n=i))
        return None

    @step
    async def work(self, ev: Hop) -> Joined:
        CALLS["active"] += 1
        CALLS["peak"] = max(CALLS["peak"], CALLS["active"])
        await asyncio.sleep(0.05)
        CALLS["active"] -= 1
        return Joined(v=ev.n)

    @step
    async def join(self, ctx: Context, ev: Joined) -> StopEvent | None:
        got = ctx.collect_events(ev, [Joined] * 6)
        return None if got is None else StopEvent(result=sorted(e.v for e in got))


class Asks(Workflow):
    """LlamaIndex's human in the loop: an InputRequiredEvent returned, a
    HumanResponseEvent consumed by another step."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        CALLS["ask"] += 1
        await ctx.store.set("asked", CALLS["ask"])
        return InputRequiredEvent(prefix="number?")

    @step
    async def answer(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        CALLS["answer"] += 1
        return StopEvent(result=f"{ev.response}/{await ctx.store.get('asked')}")


class Counts(Workflow):
    @step
    async def bump(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n = await ctx.store.get("n", default=0)
        await ctx.store.set("n", n + 1)
        await ctx.store.set("deep", {"a": {}})
        await ctx.store.set("deep.a.b", n)
        await ctx.store.set("file.txt", "a key with a dot")
        return StopEvent(result=n + 1)


class Profile(BaseModel):
    name: str = "anon"
    visits: int = 0


class Typed(Workflow):
    @step
    async def visit(self, ctx: Context[Profile], ev: StartEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state.visits += 1
            state.name = ev.get("name", state.name)
        state = await ctx.store.get_state()
        return StopEvent(result=(state.name, state.visits))


class Untyped(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("a", 1)
        async with ctx.store.edit_state() as state:
            state["b"] = state["a"] + 1
        whole = await ctx.store.get_state()
        await ctx.store.clear()
        await ctx.store.set_state(DictState(kept=whole["b"]))
        return StopEvent(result=dict(ctx.store.items()))


class Boom(Workflow):
    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        raise ValueError("the step's own error")


class Bogus(Workflow):
    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        return "not an event"  # type: ignore[return-value]


class Flaky(Workflow):
    @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=0))
    async def go(self, ev: StartEvent) -> StopEvent:
        CALLS["go"] += 1
        if CALLS["go"] < ev.get("succeed_on", 99):
            raise ConnectionError(f"attempt {CALLS['go']}")
        return StopEvent(result=CALLS["go"])


class Targeted(Workflow):
    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Hop | None:
        ctx.send_event(Hop(n=1), step="second")
        return None

    @step
    async def second(self, ev: Hop) -> StopEvent:
        return StopEvent(result="second")

    @step
    async def third(self, ev: Hop) -> StopEvent:
        return StopEvent(result="third")


class Free(Workflow):
    pass


@step(workflow=Free)
async def free_start(ev: StartEvent) -> StopEvent:
    return StopEvent(result=f"free {ev.get('x')}")


# -- steps -------------------------------------------------------------------------------


class TestSteps:
    """Step signatures, free functions, num_workers, refusals with LlamaIndex's errors."""

    def test_every_signature_and_custom_start_stop(self) -> None:
        """(self, ev), (self, ev, ctx), (self, ctx, ev); a StopEvent subclass is the result."""
        wf = Shapes()
        assert wf.start_event_class is Query and wf.stop_event_class is Answer
        result = run(result_of(wf.run(q="abc")))
        assert isinstance(result, Answer) and result.text == "1003"

    def test_free_function_step(self) -> None:
        """@step(workflow=W) adds a free function, called with the event alone."""
        assert "free_start" in Free.steps()
        assert run(result_of(Free().run(x=7))) == "free 7"

    def test_free_function_name_clash_refused(self) -> None:
        with pytest.raises(WorkflowValidationError, match="already part of this workflow"):

            @step(workflow=Free)
            async def free_start(ev: StartEvent) -> StopEvent:
                return StopEvent()

    def test_num_workers_default_and_collect(self) -> None:
        """Steps run 4 at a time by default; one that collects runs alone and joins all."""
        assert Fan.steps()["work"].num_workers == 4
        assert Fan.steps()["join"].num_workers == 1
        assert run(result_of(Fan().run())) == [0, 1, 2, 3, 4, 5]
        assert CALLS["peak"] == 4

    def test_invalid_num_workers(self) -> None:
        for bad in (0, -1, 0.5, True):
            with pytest.raises(WorkflowValidationError, match="num_workers must be an integer"):
                step(num_workers=bad)  # type: ignore[arg-type]

    def test_bad_signatures_refused_with_the_class(self) -> None:
        with pytest.raises(WorkflowValidationError, match="at least one parameter annotated"):

            class NoEvent(Workflow):
                @step
                async def a(self, ctx: Context) -> StopEvent:
                    return StopEvent()

        with pytest.raises(WorkflowValidationError, match="exactly one parameter of type Event"):

            class TwoEvents(Workflow):
                @step
                async def a(self, ev: StartEvent, other: Hop) -> StopEvent:
                    return StopEvent()

        with pytest.raises(WorkflowValidationError, match="must be annotated"):

            class NoReturn(Workflow):
                @step
                async def a(self, ev: StartEvent):  # type: ignore[no-untyped-def]
                    return StopEvent()

    def test_graph_refused_when_built_or_run(self) -> None:
        class NoStart(Workflow):
            @step
            async def a(self, ev: Hop) -> StopEvent:
                return StopEvent()

        class TwoStops(Workflow):
            @step
            async def a(self, ev: StartEvent) -> StopEvent | Answer:
                return StopEvent()

        class AcceptsStop(Workflow):
            @step
            async def a(self, ev: StartEvent) -> StopEvent:
                return StopEvent()

            @step
            async def b(self, ev: StopEvent) -> StopEvent:
                return StopEvent()

        with pytest.raises(WorkflowConfigurationError, match="StartEvent must be received"):
            NoStart()
        with pytest.raises(WorkflowConfigurationError, match="Only one type of StopEvent"):
            TwoStops()
        NoStart(disable_validation=True)
        with pytest.raises(WorkflowValidationError, match="Step 'b' cannot accept StopEvent"):
            AcceptsStop().run()

    def test_human_response_step_is_not_refused(self) -> None:
        """A step taking HumanResponseEvent is an entry point, not an unreachable step."""
        assert Asks().validate() is True


# -- events ------------------------------------------------------------------------------


class Secretive(Event):
    param: str
    _hidden: str = PrivateAttr(default="")


class TestEvents:
    """The Event mapping API, and events through the journal."""

    def test_mapping_api(self) -> None:
        ev = Secretive(param="p", a=1, _hidden="h")
        assert ev.param == "p" and ev._hidden == "h"
        assert ev["a"] == ev.a == ev.get("a") == 1 and ev.get("zz", 5) == 5
        assert "a" in ev and "param" not in ev
        ev["b"] = 2
        ev.c = 3
        assert ev._data == {"a": 1, "b": 2, "c": 3} == ev.to_dict()
        assert list(ev.keys()) == ["a", "b", "c"] and list(ev.values()) == [1, 2, 3]
        assert next(iter(ev.items())) == ("a", 1) and len(ev) == 3 and list(ev) == ["a", "b", "c"]
        assert bool(Secretive(param="x")) is True
        with pytest.raises(AttributeError):
            _ = ev.missing

    def test_event_data_round_trips(self) -> None:
        ser = JsonSerializer()
        back = ser.deserialize(ser.serialize(Secretive(param="p", extra=[1, 2])))
        assert type(back) is Secretive and back.param == "p" and back._data == {"extra": [1, 2]}

    def test_stop_event_result(self) -> None:
        assert StopEvent(result=3).result == 3 and StopEvent(3).result == 3
        assert str(StopEvent(result="done")) == "done"

    def test_start_event_kwargs_refused_with_workflow_runtime_error(self) -> None:
        with pytest.raises(
            WorkflowRuntimeError, match="Failed creating a start event of type 'Query'"
        ):
            Shapes().run(nope=1)


# -- human in the loop, context snapshots ------------------------------------------------


class TestContext:
    """ctx.store paths and state, Context snapshots, send_event from outside."""

    def test_returned_input_required_is_streamed_and_answered(self, db_path: Path) -> None:
        """The InputRequiredEvent reaches the stream; handler.ctx.send_event answers it;
        the run was parked as waiting in the journal meanwhile."""

        async def main() -> Any:
            handler = Asks().run(run_id="hitl")
            statuses = []
            async for ev in handler.stream_events():
                if isinstance(ev, InputRequiredEvent):
                    assert ev.prefix == "number?"
                    statuses.append(handler.status)
                    handler.ctx.send_event(HumanResponseEvent(response="42"))
            return await handler, statuses

        result, statuses = run(main())
        assert result == "42/1" and statuses == ["waiting"]
        with Journal(db_path) as j:
            streamed = [j.decode_entry(e) for e in j.read("hitl") if e.kind == K.EVENT_STREAMED]
        assert [type(e).__name__ for e in streamed] == ["InputRequiredEvent"]

    def test_snapshot_mid_run_continues_in_a_new_run(self) -> None:
        """to_dict while waiting for the human, cancel, from_dict, run(ctx=): the answer
        goes to the new run, and no step runs twice."""

        async def main() -> Any:
            handler = Asks().run()
            data = None
            async for ev in handler.stream_events():
                if isinstance(ev, InputRequiredEvent):
                    data = handler.ctx.to_dict()
                    await handler.cancel_run()
                    break
            await asyncio.sleep(0.01)
            assert handler.exception() is not None
            assert data is not None and data["is_running"] is True
            restored = Context.from_dict(Asks(), json.loads(json.dumps(data)))
            again = Asks().run(ctx=restored)
            again.ctx.send_event(HumanResponseEvent(response="7"))
            return await again, await again.ctx.store.get("asked")

        assert run(main()) == ("7/1", 1)
        assert CALLS["ask"] == 1 and CALLS["answer"] == 1

    def test_continue_a_finished_run_and_dotted_paths(self) -> None:
        async def main() -> Any:
            first = Counts().run()
            assert await first == 1
            assert await first.ctx.store.get("deep.a.b") == 0
            assert await first.ctx.store.get("deep") == {"a": {"b": 0}}
            assert await first.ctx.store.get("file.txt") == "a key with a dot"
            with pytest.raises(ValueError, match="not found"):
                await first.ctx.store.get("deep.a.zz")
            assert await first.ctx.store.get("deep.a.zz", default="d") == "d"
            with pytest.raises(ContextStateError):
                await first.ctx.store.set("n", 100)
            second = Counts().run(ctx=first.ctx)
            assert await second == 2 and second.ctx is first.ctx
            third = Counts().run()
            return await third

        assert run(main()) == 1  # a run without ctx starts from an empty store

    def test_context_before_a_run(self) -> None:
        """Context(workflow) takes a store and queued events before the run starts."""

        async def main() -> Any:
            wf = Counts()
            ctx = Context(wf)
            assert isinstance(ctx, WorkflowContext) and not ctx.is_running
            await ctx.store.set("n", 41)
            return await wf.run(ctx=ctx)

        assert run(main()) == 42

    def test_serializers_and_serde_errors(self) -> None:
        async def main() -> Any:
            handler = Counts().run()
            await handler
            return handler.ctx

        ctx = run(main())
        ctx_data = ctx.to_dict(serializer=PickleSerializer())
        restored = Context.from_dict(Counts(), ctx_data, serializer=PickleSerializer())
        assert run(restored.store.get("n")) == 1
        with pytest.raises(ContextSerdeError):
            Context.from_dict(Counts(), {"state": {}})

        class Unjsonable:
            pass

        seed = Context(Counts())
        run(seed.store.set("obj", Unjsonable()))
        with pytest.raises(ValueError, match=r"store\['obj'\]"):
            seed.to_dict()
        assert "obj" in seed.to_dict(serializer=PickleSerializer())["state"]

    def test_typed_and_dict_state(self) -> None:
        assert run(result_of(Typed().run(name="ada"))) == ("ada", 1)
        assert run(result_of(Untyped().run())) == {"kept": 2}

    def test_send_event_to_a_named_step(self) -> None:
        assert run(result_of(Targeted().run())) == "second"


# -- errors and retries --------------------------------------------------------------------


class TestErrors:
    """What await handler raises, and LlamaIndex's retry policies, journaled."""

    def test_await_raises_the_steps_own_exception(self) -> None:
        with pytest.raises(ValueError, match="the step's own error"):
            run(result_of(Boom().run()))

    def test_non_event_return(self) -> None:
        with pytest.raises(WorkflowRuntimeError, match="returned str instead of an Event"):
            run(result_of(Bogus().run()))

    def test_timeout_error(self) -> None:
        with pytest.raises(WorkflowTimeoutError):
            run(result_of(Asks(timeout=0.3).run()))

    def test_constant_delay_retries_are_journaled(self, db_path: Path) -> None:
        assert run(result_of(Flaky().run(succeed_on=3, run_id="f"))) == 3
        with Journal(db_path) as j:
            failed = [j.decode_entry(e)["attempt"] for e in j.read("f") if e.kind == K.STEP_FAILED]
        assert failed == [1, 2]
        CALLS.clear()
        with pytest.raises(ConnectionError, match="attempt 3"):
            run(result_of(Flaky().run(run_id="g")))

    def test_policy_decisions(self) -> None:
        constant = ConstantDelayRetryPolicy(maximum_attempts=3, delay=2)
        assert [constant.next(0, n, ValueError()) for n in (1, 2, 3)] == [2.0, 2.0, None]
        plain = ExponentialBackoffRetryPolicy(maximum_attempts=4, initial_delay=1, max_delay=5,
                                              jitter=False)  # fmt: skip
        assert [plain.next(0, n, ValueError()) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, None]
        jittered = ExponentialBackoffRetryPolicy()
        waits = {jittered.next(0, 2, ValueError(), seed=s) for s in range(5)}
        assert all(0 <= w <= 4 for w in waits if w is not None) and len(waits) > 1
        assert jittered.next(0, 2, ValueError(), seed=1) == jittered.next(
            0, 2, ValueError(), seed=1
        )


def test_llamaindex_module_survives_sigkill_and_keeps_its_retry_count(tmp_path: Path) -> None:
    """A LlamaIndex module (imports changed only) killed in its retry wait is recovered by
    another process: steps that completed never run again, and the retry count goes on
    from the journal (attempt 2, then 3), not from zero; so does ``ctx.retry_info()``."""
    db, log = str(tmp_path / "li.db"), tmp_path / "steps.log"
    env = {**os.environ, "LI_LOG": str(log), "LI_DELAY": "30", "LI_SUCCEED_ON": "3"}
    child = [sys.executable, str(PROCS / "llamaindex_child.py")]
    proc = subprocess.Popen([*child, "start", db, "li"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first publish attempt never failed"
            if Path(db).exists():
                with Journal(db) as j, contextlib.suppress(RunNotFound):
                    if any(e.kind == K.STEP_FAILED for e in j.read("li")):
                        break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    env["LI_DELAY"] = "0.05"
    out = subprocess.run([*child, "recover", db], env=env, capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"recovered": ["li"], "errors": {}} or report["recovered"] == ["li"], out
    sys.path.insert(0, str(PROCS))
    import llamaindex_flow  # noqa: F401  (decoding the result needs its classes)

    with Journal(db) as j:
        run_row = j.get_run("li")
        assert run_row.status == "completed", run_row.error
        result = j.decode(run_row.output, run_row.codec, where="result")
        entries = list(j.read("li"))
        failed = [j.decode_entry(e)["attempt"] for e in entries if e.kind == K.STEP_FAILED]
        done = {e.step: j.decode_entry(e)["attempt"] for e in entries if e.kind == K.STEP_COMPLETED}
    assert type(result).__name__ == "Published" and result.url.startswith("https://example.org/")
    assert failed == [1, 2] and done["publish"] == 3
    ran = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert ran["draft"] == 1 and ran["decide"] == 1 and ran["publish"] == 3
    # ctx.retry_info() goes on after the kill: attempt 2's last exception is read back
    # from the journal (the process that raised it is dead), attempt 3's from memory
    retries = [line.split(maxsplit=2)[1:] for line in log.read_text().splitlines()
               if line.startswith("retry ")]  # fmt: skip
    assert retries == [["0", "None"], ["1", "ConnectionError('publish attempt 1 failed')"],
                       ["2", "ConnectionError('publish attempt 2 failed')"]]  # fmt: skip
