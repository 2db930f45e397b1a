"""LlamaIndex's WorkflowCheckpointer, served from the journal: checkpoints per run with
LlamaIndex's fields and rule (one per step that returned an event), filters, run_from as
a fork that lists only its own checkpoints, per-step enabling, the checkpoint callback,
and no journal write of its own."""

from __future__ import annotations

import asyncio
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

from engine import (
    Context,
    Engine,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCheckpointer,
    WorkflowStepDoesNotExistError,
    WrongFunction,
    configure,
    step,
)
from engine.checkpointer import Checkpoint
from engine.workflow_context import WorkflowContext
from journal import EntryKind, Journal, RunNotFound

CALLS: Counter[str] = Counter()


class Picked(Event):
    n: int


class Doubled(Event):
    n: int


class Special(Picked):
    """A subclass: exact-type filters tell it from Picked."""


class Branchy(Workflow):
    """start -> pick -> (Picked | Special) -> double (also sends a Doubled) -> finish,
    which returns None for the first Doubled it sees and stops on the second."""

    @step
    async def pick(self, ctx: Context, ev: StartEvent) -> Picked | Special:
        CALLS["pick"] += 1
        await ctx.store.set("picked", ev.n)
        return Special(n=ev.n) if ev.n < 0 else Picked(n=ev.n)

    @step
    async def double(self, ctx: Context, ev: Picked) -> Doubled:
        CALLS["double"] += 1
        ctx.send_event(Doubled(n=0))  # sent, not returned: no checkpoint of its own
        return Doubled(n=ev.n * 2)

    @step(num_workers=1)
    async def finish(self, ctx: Context, ev: Doubled) -> StopEvent | None:
        CALLS["finish"] += 1
        seen = await ctx.store.get("seen", 0) + 1
        await ctx.store.set("seen", seen)
        if seen < 2:
            return None
        return StopEvent(result=await ctx.store.get("picked"))


class Asking(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="name?")

    @step
    async def greet(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hi {ev.response}")


class Other(Workflow):
    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="other")


@pytest.fixture(autouse=True)
def fresh(db_path: Path) -> Iterator[Engine]:
    CALLS.clear()
    eng = configure(db_path, lease_seconds=0)
    yield eng
    eng.close()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _finish(handler: Any) -> Any:
    return await handler


class TestCheckpoints:
    def test_one_checkpoint_per_step_that_returned_an_event(self) -> None:
        """LlamaIndex's fields; a step returning None and an event only sent make none;
        the StopEvent step makes one whose output is the StopEvent."""
        ckpt = WorkflowCheckpointer(workflow=Branchy())
        handler = ckpt.run(n=3)
        assert _run(_finish(handler)) == 3
        assert list(ckpt.checkpoints) == [handler.run_id]
        cps = ckpt.checkpoints[handler.run_id]
        assert [c.last_completed_step for c in cps] == ["pick", "double", "finish"]
        assert all(isinstance(c, Checkpoint) for c in cps)
        assert cps[0].input_event == StartEvent(n=3) and cps[0].output_event == Picked(n=3)
        assert cps[1].input_event == Picked(n=3) and cps[1].output_event == Doubled(n=6)
        stop = cps[2].output_event
        assert type(stop) is StopEvent and stop.result == 3
        assert cps[2].input_event in (Doubled(n=6), Doubled(n=0))
        assert len({c.id_ for c in cps}) == 3 and cps[0].id == cps[0].id_

    def test_a_request_for_input_makes_no_checkpoint(self) -> None:
        """A step returning an InputRequiredEvent makes none (LlamaIndex streams it);
        the step that took the human's answer makes one."""
        ckpt = WorkflowCheckpointer(workflow=Asking())

        async def converse() -> Any:
            handler = ckpt.run()
            async for ev in handler.stream_events():
                if isinstance(ev, InputRequiredEvent):
                    handler.ctx.send_event(HumanResponseEvent(response="ada"))
            return handler, await handler

        handler, result = _run(converse())
        assert result == "hi ada"
        cps = ckpt.checkpoints[handler.run_id]
        assert [(c.last_completed_step, type(c.input_event)) for c in cps] == [
            ("greet", HumanResponseEvent)
        ]

    def test_ctx_state_is_the_run_after_that_step(self, db_path: Path) -> None:
        """ctx_state is a ctx.to_dict() snapshot at the step, restorable with from_dict."""
        wf = Branchy()
        ckpt = WorkflowCheckpointer(workflow=wf)
        handler = ckpt.run(n=5)
        _run(_finish(handler))
        first = ckpt.checkpoints[handler.run_id][0]
        state = first.ctx_state
        assert state["is_running"] is True and state["run_id"] == handler.run_id
        restored = WorkflowContext.from_dict(wf, state)
        values, pending, running = restored._folded()
        assert values == {"picked": 5} and running
        assert [item["event"] for item in pending.values()] == [Picked(n=5)]
        last = ckpt.checkpoints[handler.run_id][-1].ctx_state
        assert last["is_running"] is False

    def test_filters_match_exact_types(self) -> None:
        """filter_checkpoints by run, step, input and output type (exact, as LlamaIndex)."""
        ckpt = WorkflowCheckpointer(workflow=Branchy())
        plain = ckpt.run(n=2)
        _run(_finish(plain))
        special = ckpt.run(n=-1)  # a Special, which double accepts as a Picked
        assert _run(_finish(special)) == -1
        assert ckpt.filter_checkpoints(run_id=special.run_id)[0].output_event == Special(n=-1)
        by_step = ckpt.filter_checkpoints(last_completed_step="pick")
        assert [c.run_id for c in by_step] == [plain.run_id, special.run_id]
        assert [c.run_id for c in ckpt.filter_checkpoints(output_event_type=Picked)] == [
            plain.run_id
        ]
        assert len(ckpt.filter_checkpoints(output_event_type=Special)) == 1
        by_input = ckpt.filter_checkpoints(input_event_type=Picked)
        assert [(c.run_id, c.last_completed_step) for c in by_input] == [(plain.run_id, "double")]
        assert (
            ckpt.filter_checkpoints(run_id=plain.run_id, output_event_type=StopEvent)[
                0
            ].output_event.result
            == 2
        )
        with pytest.raises(ValueError, match="specify a filter"):
            ckpt.filter_checkpoints()

    def test_unknown_and_foreign_runs_are_typed_errors(self) -> None:
        """A run id the journal lacks, or another workflow's run, raises a typed error."""
        ckpt = WorkflowCheckpointer(workflow=Branchy())
        with pytest.raises(RunNotFound):
            ckpt.filter_checkpoints(run_id="no-such-run")
        other = Other().run(run_id="other-run")
        _run(_finish(other))
        with pytest.raises(WrongFunction, match="other-run"):
            ckpt.filter_checkpoints(run_id="other-run")

    def test_checkpoints_outlive_the_process_that_made_them(self, db_path: Path) -> None:
        """Another engine on the same file (as another process would) lists them."""
        ckpt = WorkflowCheckpointer(workflow=Branchy())
        handler = ckpt.run(n=4, run_id="kept")
        _run(_finish(handler))
        before = [(c.id_, c.output_event) for c in ckpt.checkpoints["kept"]]
        with Engine(db_path) as other:
            again = WorkflowCheckpointer(workflow=Branchy(engine=other))
            assert again.checkpoints == {}  # it started no run
            cps = again.filter_checkpoints(run_id="kept")
            assert [(c.id_, c.output_event) for c in cps] == before


class TestRunFrom:
    def test_run_from_is_a_fork_listing_only_its_own_checkpoints(self, db_path: Path) -> None:
        """The new run goes on with the checkpoint's output event (pick is not run
        again) and lists only the checkpoints it made itself."""
        wf = Branchy()
        ckpt = WorkflowCheckpointer(workflow=wf)
        first = ckpt.run(n=7)
        assert _run(_finish(first)) == 7
        source = ckpt.checkpoints[first.run_id]
        CALLS.clear()
        again = ckpt.run_from(source[0], state={"picked": 70})
        assert _run(_finish(again)) == 70
        assert Counter({"double": 1, "finish": 2}) == CALLS
        assert list(ckpt.checkpoints) == [first.run_id, again.run_id]
        own = ckpt.checkpoints[again.run_id]
        assert [c.last_completed_step for c in own] == ["double", "finish"]
        assert all(c.run_id == again.run_id for c in own)
        assert not {c.id_ for c in own} & {c.id_ for c in source}
        assert [c.step for c in wf.checkpoints(again.run_id)] == ["double", "finish", "finish"]
        with Journal(db_path) as j:
            assert j.get_run(again.run_id).forked_from == first.run_id

    def test_workflow_checkpoints_list_the_stop_event(self) -> None:
        """wf.checkpoints(): the step that stopped lists the StopEvent among its emitted."""
        wf = Branchy()
        handler = wf.run(n=1, run_id="stops")
        _run(_finish(handler))
        cps = wf.checkpoints("stops")
        assert cps[-1].step == "finish" and cps[-1].emitted == ("StopEvent",)
        assert cps[1].emitted == ("Doubled", "Doubled")


class TestEnableAndCallback:
    def test_disabled_steps_are_left_out(self) -> None:
        """disabled_steps / disable_checkpoint / enable_checkpoint, each for the steps
        completed while it is in force; unknown names refused."""
        ckpt = WorkflowCheckpointer(workflow=Branchy(), disabled_steps=["double"])
        handler = ckpt.run(n=1)
        _run(_finish(handler))
        assert [c.last_completed_step for c in ckpt.checkpoints[handler.run_id]] == [
            "pick",
            "finish",
        ]
        ckpt.enable_checkpoint("double")
        ckpt.disable_checkpoint("pick")
        # A setting applies to the steps completed while it is in force: the past run
        # lists what it listed (as in LlamaIndex, where checkpoints are kept or not as
        # steps complete), a run started now lists by the new setting.
        assert [c.last_completed_step for c in ckpt.checkpoints[handler.run_id]] == [
            "pick",
            "finish",
        ]
        assert ckpt.filter_checkpoints(run_id=handler.run_id, last_completed_step="double") == []
        later = ckpt.run(n=1)
        _run(_finish(later))
        assert [c.last_completed_step for c in ckpt.checkpoints[later.run_id]] == [
            "double",
            "finish",
        ]
        assert [c.last_completed_step for c in ckpt.checkpoints[handler.run_id]] == [
            "pick",
            "finish",
        ]
        with pytest.raises(WorkflowStepDoesNotExistError, match="nope"):
            ckpt.disable_checkpoint("nope")
        with pytest.raises(KeyError):
            ckpt.enable_checkpoint("nope")

    def test_callback_per_new_checkpoint(self) -> None:
        """workflow.run(checkpoint_callback=) gets LlamaIndex's arguments after each step
        that returned an event; through the checkpointer, for enabled steps only; a
        failing callback does not fail the run (the step had committed)."""
        seen: list[tuple[str, str, str, Any]] = []

        async def callback(
            run_id: str, last_completed_step: str, input_ev: Event, output_ev: Event, ctx: Context
        ) -> None:
            state = ctx.to_dict()["state"]
            seen.append((last_completed_step, type(input_ev).__name__, type(output_ev).__name__,
                         sorted(state)))  # fmt: skip

        wf = Branchy()
        handler = wf.run(n=1, checkpoint_callback=callback)
        _run(_finish(handler))
        assert seen == [
            ("pick", "StartEvent", "Picked", ["picked"]),
            ("double", "Picked", "Doubled", ["picked"]),
            ("finish", "Doubled", "StopEvent", ["picked", "seen"]),
        ]
        names: list[str] = []
        ckpt = WorkflowCheckpointer(workflow=wf, disabled_steps=["pick"])
        sync = ckpt.run(
            n=2, checkpoint_callback=lambda **kw: names.append(kw["last_completed_step"])
        )
        _run(_finish(sync))
        assert names == ["double", "finish"]

        def broken(**kw: Any) -> None:
            raise RuntimeError("callback broke")

        assert _run(_finish(wf.run(n=9, checkpoint_callback=broken))) == 9

    def test_run_from_passes_the_callback_to_the_new_run(self) -> None:
        """run_from(checkpoint, checkpoint_callback=) calls it for the new run's steps."""
        ckpt = WorkflowCheckpointer(workflow=Branchy())
        first = ckpt.run(n=2)
        _run(_finish(first))
        got: list[str] = []
        again = ckpt.run_from(
            ckpt.checkpoints[first.run_id][0],
            checkpoint_callback=lambda **kw: got.append(kw["run_id"]),
        )
        _run(_finish(again))
        assert got == [again.run_id, again.run_id]


class TestNoExtraWrites:
    def test_the_journal_is_the_same_with_and_without_the_checkpointer(self, db_path: Path) -> None:
        """Same entries (count and kinds) for a run with and without the checkpointer;
        reading checkpoints and their ctx_state writes nothing."""
        wf = Branchy()
        plain = wf.run(n=3, run_id="plain")
        _run(_finish(plain))
        ckpt = WorkflowCheckpointer(workflow=wf)
        watched = ckpt.run(n=3, run_id="watched", checkpoint_callback=lambda **kw: None)
        _run(_finish(watched))
        with Journal(db_path) as j:
            kinds = [[e.kind for e in j.read(r)] for r in ("plain", "watched")]
            assert kinds[0] == kinds[1] and len(kinds[0]) > 0
            total = j.query("SELECT count(*) AS n FROM entries")[0]["n"]
        for cps in ckpt.checkpoints.values():
            for c in cps:
                assert c.ctx_state["version"]
        ckpt.filter_checkpoints(run_id="plain")
        with Journal(db_path) as j:
            assert j.query("SELECT count(*) AS n FROM entries")[0]["n"] == total

    def test_returned_is_recorded_only_when_the_emitted_events_do_not_tell(
        self, db_path: Path
    ) -> None:
        """step.completed carries `returned` only for a step that also sent events: the
        entries of other steps are as they were."""
        _run(_finish(Branchy().run(n=1, run_id="sizes")))
        with Journal(db_path) as j:
            done = {
                e.step: j.decode_entry(e)
                for e in j.read("sizes")
                if e.kind == EntryKind.STEP_COMPLETED
            }
        assert "returned" not in done["pick"] and "returned" not in done["finish"]
        assert done["double"]["returned"] == "Doubled"


PROCS = Path(__file__).resolve().parents[1] / "_procs"


def test_checkpoints_survive_sigkill_and_run_from_goes_on(tmp_path: Path) -> None:
    """A run killed inside its second step keeps the first step's checkpoint (the child
    printed it from the callback); another process recovers the run and a fresh
    checkpointer lists both; run_from the first one here reruns only the second step."""
    db, block = str(tmp_path / "ck.db"), tmp_path / "block"
    block.touch()
    env = {**os.environ, "CK_BLOCK": str(block)}
    child = [sys.executable, str(PROCS / "checkpointer_child.py")]
    proc = subprocess.Popen([*child, "start", db], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the callback runs after step one's commit
        assert line.split() == ["checkpoint", "one"], (line, proc.stderr)
        with Journal(db) as j:  # the second step is in flight, not committed
            assert [e.step for e in j.read("ck") if e.kind == EntryKind.STEP_COMPLETED] == ["one"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    block.unlink()
    out = subprocess.run([*child, "recover", db], env=env, capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["recovered"] == ["ck"]
    steps = [(step, output) for _, step, output in report["checkpoints"]]
    assert steps == [("one", "Half(n=40)"), ("two", "StopEvent(result=41)")]
    sys.path.insert(0, str(PROCS))
    import checkpointer_child  # the workflow's classes, as the children have them

    with Engine(db) as eng:
        ckpt = WorkflowCheckpointer(workflow=checkpointer_child.Slow(engine=eng))
        cps = ckpt.filter_checkpoints(run_id="ck")
        assert [c.id_ for c in cps] == [c[0] for c in report["checkpoints"]]
        again = ckpt.run_from(cps[0], state={}, run_id="ck-again")
        assert again.result(timeout=60) == 41
        assert [c.last_completed_step for c in ckpt.checkpoints["ck-again"]] == ["two"]


class TestSettingDuringARun:
    def test_a_change_mid_run_applies_to_the_steps_completed_after_it(self) -> None:
        """Disabled while the run is parked between two steps: the steps before keep
        their checkpoints, those after have none; enabled again, nothing past changes."""
        ckpt = WorkflowCheckpointer(workflow=Asking())
        handler = ckpt.run(run_id="mid")
        eng = ckpt.workflow.engine
        deadline = time.monotonic() + 10
        while eng.journal.get_run("mid").status != "waiting" and time.monotonic() < deadline:
            time.sleep(0.01)
        ckpt.disable_checkpoint("greet")
        handler.ctx.send_event(HumanResponseEvent(response="ann"))
        assert _run(_finish(handler)) == "hi ann"
        assert [c.last_completed_step for c in ckpt.filter_checkpoints(run_id="mid")] == []
        ckpt.enable_checkpoint("greet")
        assert [c.last_completed_step for c in ckpt.filter_checkpoints(run_id="mid")] == []
        again = ckpt.run(run_id="mid-2")
        while eng.journal.get_run("mid-2").status != "waiting" and time.monotonic() < deadline:
            time.sleep(0.01)
        again.ctx.send_event(HumanResponseEvent(response="bo"))
        assert _run(_finish(again)) == "hi bo"
        assert [c.last_completed_step for c in ckpt.filter_checkpoints(run_id="mid-2")] == ["greet"]


def test_the_checkpointer_module_names_llamaindex_imports() -> None:
    """A LlamaIndex module imports ``Checkpoint`` and ``WorkflowCheckpointer`` from the
    checkpointer module: ``engine.checkpointer`` has both, and its ``Checkpoint`` (what
    the checkpointer lists) is not ``engine.Checkpoint`` (the time-travel checkpoint)."""
    import engine
    import engine.checkpointer as module

    assert {"Checkpoint", "WorkflowCheckpointer"} <= set(module.__all__)
    assert module.WorkflowCheckpointer is engine.WorkflowCheckpointer
    assert module.Checkpoint is Checkpoint and module.Checkpoint is not engine.Checkpoint
    # engine.WorkflowCheckpoint is wf.checkpoints()'s item: neither is the checkpointer's.
    assert engine.WorkflowCheckpoint is not module.Checkpoint
