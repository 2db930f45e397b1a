"""Workflow runs under concurrency: answers racing commits, the live stream against the
journal, and sync steps beside other runs.

An answer (``send_event``) can reach the journal at any moment relative to the commit
that records a ``wait_for_event``: just before it (the wait's commit conflicts and
re-reads the journal), just after it (a poke or the watcher absorbs the answer before
the waiting step resumes), from this process or another. The deterministic tests put
the answer exactly at those moments by wrapping ``WorkflowRun.commit``; the trials send
answers from a real second process (and from a thread) at random moments while the run
keeps committing other steps.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
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
    configure,
    send_event,
    step,
)
from engine.workflow_run import WorkflowRun
from journal import EntryKind, Journal, NewEntry

K = EntryKind

# A second process that sends the answers: one run id per stdin line, optionally
# after a random pause (seconds, on the same line); it prints "sent <run id>".
SENDER = """
import random, sys, time
from engine import Engine, HumanResponseEvent, send_event
with Engine(sys.argv[1]) as eng:
    print("ready", flush=True)
    for line in sys.stdin:
        run_id, pause = line.split()
        time.sleep(float(pause))
        send_event(run_id, HumanResponseEvent(response="answer " + run_id), engine=eng)
        print("sent", run_id, flush=True)
"""


@pytest.fixture(autouse=True)
def fresh(db_path: Path) -> Iterator[Engine]:
    eng = configure(db_path, lease_seconds=5)
    yield eng
    eng.close()


class Approval(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Progress(n=0))
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="ship it?"), timeout=120
        )
        return StopEvent(result=answer.response)


async def _await(handler: Any) -> Any:
    return await handler


def _is_wait_record(entries: list[NewEntry]) -> bool:
    return any(
        e.kind == K.STATE_SET and e.key is not None and e.key.startswith("@wait/") for e in entries
    )


def _answer_around_the_wait(
    monkeypatch: pytest.MonkeyPatch, when: str, send: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Send the answer exactly ``before`` the commit of the wait's record is submitted,
    or ``after`` it returned but before the waiting step resumes (long enough for a
    poke's or the watcher's re-read to absorb it first). Returns the run updates that
    landed with the wait's record."""
    original = WorkflowRun.commit
    landed: list[dict[str, Any]] = []

    async def commit(self: WorkflowRun, entries: list[NewEntry], **kw: Any) -> dict[str, Any]:
        wait = _is_wait_record(entries)
        if wait and when == "before":
            send(self.run_id)
        update = await original(self, entries, **kw)
        if wait:
            landed.append(update)
        if wait and when == "after":
            send(self.run_id)
            await asyncio.sleep(0.5)  # the poke's absorb, or the watcher's 0.2 s poll
        return update

    monkeypatch.setattr(WorkflowRun, "commit", commit)
    return landed


def _send_in_process(run_id: str) -> None:
    send_event(run_id, HumanResponseEvent(response="answer " + run_id))


def _send_from_another_process(db_path: Path) -> Callable[[str], None]:
    def send(run_id: str) -> None:
        code = (
            "import sys; from engine import Engine, HumanResponseEvent, send_event\n"
            "with Engine(sys.argv[1]) as e:\n"
            "    send_event(sys.argv[2], HumanResponseEvent(response='answer ' + sys.argv[2]),"
            " engine=e)\n"
        )
        subprocess.run([sys.executable, "-c", code, str(db_path), run_id], check=True)

    return send


class TestAnswerRacingTheWaitsCommit:
    """The answer reaches the waiting step whenever it lands around the wait's commit."""

    @pytest.mark.parametrize("when", ["before", "after"])
    @pytest.mark.parametrize("sender", ["in-process", "other process"])
    def test_answer_is_delivered(
        self, monkeypatch: pytest.MonkeyPatch, db_path: Path, when: str, sender: str
    ) -> None:
        """Recorded and delivered: the run ends with the answer, not at its timeout."""
        send = _send_in_process if sender == "in-process" else _send_from_another_process(db_path)
        landed = _answer_around_the_wait(monkeypatch, when, send)
        started = time.monotonic()
        result = asyncio.run(_await(Approval(timeout=180).run(run_id="r")))
        assert result == "answer r"
        # A lost wake-up shows as a run that ends only at the wait's 120 s timeout; the
        # margin is wide so that a loaded machine's slow sender is not taken for one.
        assert time.monotonic() - started < 60
        if when == "before":
            # The wait's commit conflicted with the answer and was retried knowing it:
            # the run was never marked waiting beside its answer.
            assert landed == [{}]
        with Journal(db_path) as j:
            entries = list(j.read("r"))
            assert j.get_run("r").status == "completed"
        received = [e.key for e in entries if e.kind == K.EVENT_RECEIVED]
        consumed = {e.key for e in entries if e.kind == K.EVENT_CONSUMED}
        assert len(received) == 1 and received[0] in consumed

    def test_a_park_between_send_events_read_and_append(
        self, monkeypatch: pytest.MonkeyPatch, fresh: Engine
    ) -> None:
        """send_event reads the run as running, the run parks, then the answer lands:
        the run is left pending (claimable as soon as its holder is gone), not parked
        until its deadline beside its answer."""
        journal = fresh.journal
        journal.create_run("p", name=Approval._name, kind="workflow", status="running")
        real_get_run = type(journal).get_run
        parked = []

        def get_run(self: Journal, run_id: str) -> Any:
            run = real_get_run(self, run_id)
            if not parked:  # the run parks right after send_event read it
                parked.append(True)
                self.append(run_id, [self.entry(K.STATE_SET, 1, key="@wait/x/1")],
                            expected_seq=run.last_seq, status="waiting",
                            wake_at=time.time() + 3600)  # fmt: skip
            return run

        monkeypatch.setattr(type(journal), "get_run", get_run)
        send_event("p", HumanResponseEvent(response="yes"))
        monkeypatch.undo()
        assert parked
        assert journal.get_run("p").status == "pending"


class Busy(Event):
    i: int


class Asked(Event):
    pass


class Progress(Event):
    n: int


class BusyApproval(Workflow):
    """Waits for an answer while another branch keeps committing steps."""

    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Asked | Busy:
        ctx.send_event(Busy(i=0))
        return Asked()

    @step
    async def ask(self, ctx: Context, ev: Asked) -> StopEvent:
        answer = await ctx.wait_for_event(HumanResponseEvent, timeout=15)
        return StopEvent(result=answer.response)

    @step
    async def busy(self, ctx: Context, ev: Busy) -> Busy | None:
        await ctx.store.set("busy", ev.i)
        return Busy(i=ev.i + 1) if ev.i < 30 else None


def _trials(db_path: Path, trials: int, batch: int, sender: str) -> None:
    """Run ``trials`` BusyApproval runs, ``batch`` at a time, each answered after a
    random pause (0-30 ms after its start: before, during or after its wait's commit)
    by a second process or by a thread of this one."""
    rng = random.Random(trials * 7919 + batch)
    proc = None
    if sender == "other process":
        proc = subprocess.Popen(
            [sys.executable, "-c", SENDER, str(db_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

    def answer(run_id: str, pause: float) -> None:
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.write(f"{run_id} {pause}\n")
            proc.stdin.flush()
        else:
            threading.Timer(pause, _send_in_process, args=(run_id,)).start()

    async def main() -> None:
        for first in range(0, trials, batch):
            ids = [f"t{i}" for i in range(first, min(trials, first + batch))]
            handlers = []
            for run_id in ids:
                handlers.append(BusyApproval(timeout=30).run(run_id=run_id))
                answer(run_id, rng.uniform(0, 0.03))
            results = await asyncio.wait_for(
                asyncio.gather(*(_await(h) for h in handlers)), timeout=25
            )
            assert results == [f"answer {r}" for r in ids]

    try:
        asyncio.run(main())
    finally:
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
    with Journal(db_path) as j:
        for i in range(trials):
            run = j.get_run(f"t{i}")
            assert run.status == "completed", (run.run_id, run.status, run.error)


class TestAnswersAtRandomMoments:
    """Answers sent at random moments while the run commits steps are all delivered."""

    @pytest.mark.parametrize("sender", ["thread", "other process"])
    def test_short(self, db_path: Path, sender: str) -> None:
        """20 runs, each answered once at a random moment."""
        _trials(db_path, 20, 10, sender)

    @pytest.mark.slow
    @pytest.mark.parametrize("sender", ["thread", "other process"])
    def test_many(self, db_path: Path, sender: str) -> None:
        """200 runs, 20 at a time, each answered once at a random moment."""
        _trials(db_path, 200, 20, sender)


class TestLiveStreamIsTheJournal:
    """The live stream carries only what the journal records, in its order."""

    def test_failed_attempts_events_are_not_streamed(self, db_path: Path) -> None:
        """A failed attempt's streamed event is neither journaled nor shown."""

        async def main() -> tuple[list[Event], Any]:
            handler = Flaky().run(run_id="f")
            seen = [ev async for ev in handler.stream_events()]
            return seen, await handler

        seen, result = asyncio.run(main())
        assert result == 3
        with Journal(db_path) as j:
            journaled = [j.decode_entry(e) for e in j.read("f") if e.kind == K.EVENT_STREAMED]
        assert journaled == [Progress(n=3)]
        # The stream ends with the StopEvent (as in LlamaIndex), journaled as the run's output.
        assert seen == [*journaled, StopEvent(result=3)]

    def test_events_before_a_wait_are_shown_while_it_waits(self, db_path: Path) -> None:
        """What a step streamed before its wait is journaled with the wait, so whoever
        answers sees it (and the prompt) while the step is parked."""

        async def main() -> tuple[list[Event], Any]:
            handler = Approval().run(run_id="a")
            seen = []
            async for ev in handler.stream_events():
                seen.append(ev)
                if isinstance(ev, InputRequiredEvent):
                    handler.ctx.send_event(HumanResponseEvent(response="yes"))
            return seen, await handler

        seen, result = asyncio.run(main())
        assert result == "yes"
        with Journal(db_path) as j:
            journaled = [j.decode_entry(e) for e in j.read("a") if e.kind == K.EVENT_STREAMED]
        assert journaled == [Progress(n=0), InputRequiredEvent(prefix="ship it?")]
        assert seen == [*journaled, StopEvent(result="yes")]  # the output ends the stream


FLAKY_CALLS: list[int] = []


class Flaky(Workflow):
    @step(retries=3, backoff=0)
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        FLAKY_CALLS.append(1)
        attempt = len(FLAKY_CALLS)
        ctx.write_event_to_stream(Progress(n=attempt))
        if attempt < 3:
            raise ConnectionError(f"attempt {attempt}")
        return StopEvent(result=attempt)


GATE = threading.Event()


class Tick(Event):
    i: int


class Blocking(Workflow):
    @step
    def hold(self, ctx: Context, ev: StartEvent) -> StopEvent:
        # Released by the test once the other run finished; False if it never was.
        return StopEvent(result=(GATE.wait(timeout=5), threading.current_thread().name))


class Quick(Workflow):
    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Tick:
        return Tick(i=0)

    @step
    async def count(self, ctx: Context, ev: Tick) -> Tick | StopEvent:
        return StopEvent(result=ev.i) if ev.i == 20 else Tick(i=ev.i + 1)


class TestSyncSteps:
    """A sync step runs off the event loop: it stalls no other run."""

    def test_a_blocked_sync_step_does_not_stall_another_run(self) -> None:
        """One run's sync step blocks on a threading.Event; a second run on the same
        loop finishes its 22 steps meanwhile, then the first is released."""
        GATE.clear()
        FLAKY_CALLS.clear()

        async def main() -> tuple[Any, Any, str]:
            blocked = Blocking().run(run_id="blocked")
            quick = await asyncio.wait_for(_await(Quick().run(run_id="quick")), timeout=4)
            GATE.set()
            return quick, await blocked, threading.current_thread().name

        quick, (released, step_thread), loop_thread = asyncio.run(main())
        assert quick == 20
        assert released, "the other run could not progress while the sync step blocked"
        assert step_thread != loop_thread


@pytest.fixture(autouse=True)
def _reset_flaky() -> None:
    FLAKY_CALLS.clear()
