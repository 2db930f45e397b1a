"""Heartbeats in Workflow steps: ``ctx.heartbeat(details)`` (or ``heartbeat()`` in a step
without a Context) is written with the next lease renewal and shown by ``durable show``,
the web view and the API; ``@step(heartbeat_timeout=)`` fails an attempt whose heartbeats
stop with StepHeartbeatTimeout, which the step's retry policy sees; sync steps beat from
their threads."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from engine import (
    ConstantDelayRetryPolicy,
    Context,
    ContextStateError,
    Engine,
    Event,
    StartEvent,
    StepHeartbeatTimeout,
    StopEvent,
    Workflow,
    heartbeat,
    step,
)
from engine.cli import cli
from engine.ui import create_app
from journal import EntryKind, Journal

K = EntryKind
ATTEMPTS: Counter[str] = Counter()
SEEN: list[str] = []
"""Exception types the recording retry policy was asked about."""


class Recording(ConstantDelayRetryPolicy):
    """LlamaIndex's constant-delay policy, noting each error it decides on."""

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        SEEN.append(type(error).__name__)
        return super().next(elapsed_time, attempts, error)


class HangsOnce(Workflow):
    """A sync step whose first attempt hangs without beating; the retry beats."""

    @step(heartbeat_timeout=0.5, retries=1, backoff=0.01)
    def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ATTEMPTS["work"] += 1
        if ATTEMPTS["work"] == 1:
            time.sleep(2.0)  # hung (its abandoned thread ends on its own)
            ctx.heartbeat("too late")
            return StopEvent(result="late")
        for i in range(20):  # 1 s or more, twice the timeout, beating
            time.sleep(0.05)
            ctx.heartbeat({"done": i + 1})
        return StopEvent(result="second")


class AsyncHangsOnce(Workflow):
    @step(heartbeat_timeout=0.5, retry_policy=Recording(delay=0.01, maximum_attempts=2))
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ATTEMPTS["work"] += 1
        if ATTEMPTS["work"] == 1:
            await asyncio.sleep(5)
        for _ in range(20):
            await asyncio.sleep(0.05)
            ctx.heartbeat("tick")
        return StopEvent(result="ok")


class NeverBeats(Workflow):
    @step(heartbeat_timeout=0.3)
    def work(self, ev: StartEvent) -> StopEvent:
        ATTEMPTS["work"] += 1
        time.sleep(1.2)
        return StopEvent(result="never")


class Part(Event):
    i: int


class Done(Event):
    i: int


class Joined(Workflow):
    """start -> four parts beating in threads -> joined by collect_events -> stop."""

    @step
    async def fan(self, ctx: Context, ev: StartEvent) -> Part | None:
        for i in range(4):
            ctx.send_event(Part(i=i))
        return None

    @step(num_workers=4, heartbeat_timeout=2.0)
    def part(self, ev: Part) -> Done:
        ATTEMPTS["part"] += 1
        for k in range(50):  # 1.5 s: several lease renewals (0.2 s) even on a loaded machine
            heartbeat({"part": ev.i, "rows": (k + 1) * 100})
            time.sleep(0.03)
        return Done(i=ev.i)

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        got = ctx.collect_events(ev, [Done] * 4)
        if got is None:
            return None
        return StopEvent(result=sorted(e.i for e in got))


class BadDetails(Workflow):
    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.heartbeat({"x": object()})
        return StopEvent()


@pytest.fixture
def eng(tmp_path: Path) -> Iterator[Engine]:
    ATTEMPTS.clear()
    SEEN.clear()
    e = Engine(tmp_path / "hb.db", lease_seconds=0.6)
    yield e
    e.close()


def _run(handler: Any) -> Any:
    async def wait() -> Any:
        return await handler

    return asyncio.run(wait())


def _failures(journal: Journal, run_id: str) -> list[dict[str, Any]]:
    return [journal.decode_entry(e) for e in journal.read(run_id) if e.kind == K.STEP_FAILED]


def test_a_hung_sync_step_is_failed_and_retried(eng: Engine) -> None:
    """No heartbeat for longer than heartbeat_timeout: the attempt fails with
    StepHeartbeatTimeout, journaled, and the retry (which beats) completes the run."""
    handler = HangsOnce(engine=eng).run(run_id="hang")
    assert _run(handler) == "second"
    assert ATTEMPTS["work"] == 2
    (failed,) = _failures(eng.journal, "hang")
    assert failed["type"] == "StepHeartbeatTimeout" and failed["final"] is False
    time.sleep(1.5)  # the abandoned first attempt wakes and beats: that goes nowhere
    beats = eng.journal.heartbeat_of("hang")
    assert all(b["details"] != "too late" for b in beats.values())


def test_an_async_step_and_the_retry_policy_sees_the_typed_error(eng: Engine) -> None:
    """An async step that stops beating is cancelled; a LlamaIndex retry policy is asked
    about a StepHeartbeatTimeout and retries it; the retry beats for twice the timeout."""
    assert _run(AsyncHangsOnce(engine=eng).run(run_id="async")) == "ok"
    assert ATTEMPTS["work"] == 2
    assert SEEN == ["StepHeartbeatTimeout"]
    (failed,) = _failures(eng.journal, "async")
    assert failed["type"] == "StepHeartbeatTimeout"


def test_out_of_retries_the_run_fails_with_the_typed_error(eng: Engine) -> None:
    with pytest.raises(StepHeartbeatTimeout, match="'work'"):
        _run(NeverBeats(engine=eng).run(run_id="dead"))
    assert ATTEMPTS["work"] == 1
    run = eng.journal.get_run("dead")
    assert run.status == "failed" and "StepHeartbeatTimeout" in (run.error or "")


def test_threads_beat_and_the_lease_heartbeat_writes_them(eng: Engine) -> None:
    """Four sync steps at once beat from their threads (module-level heartbeat, no
    Context parameter); each step's last details reach the run's row with the lease
    renewal, with no entry of their own."""
    handler = Joined(engine=eng).run(run_id="rep")
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not seen:
        seen = eng.journal.heartbeat_of("rep")
        time.sleep(0.02)
    assert _run(handler) == [0, 1, 2, 3]
    assert ATTEMPTS["part"] == 4  # none failed as dead while beating
    beats = eng.journal.heartbeat_of("rep")
    parts = {k: v for k, v in beats.items() if k.startswith("part/")}
    assert seen and all(k.startswith("part/") for k in seen)
    assert {v["details"]["part"] for v in parts.values()} <= {0, 1, 2, 3}
    assert all(v["details"]["rows"] >= 100 for v in parts.values())
    assert not any(e.kind == K.STEP_FAILED for e in eng.journal.read("rep"))
    kinds = Counter(e.kind for e in eng.journal.read("rep"))
    assert kinds[K.STEP_COMPLETED] == 9  # fan, four parts, four joins: none per heartbeat


def test_progress_shows_in_show_the_web_view_and_the_api(eng: Engine, tmp_path: Path) -> None:
    assert _run(HangsOnce(engine=eng).run(run_id="shown")) == "second"
    eng.close()
    db = str(tmp_path / "hb.db")
    with Journal(db) as journal:
        beats = journal.heartbeat_of("shown")
    (key,) = beats  # the retry beat for 1 s, renewals every 0.2 s
    assert key.startswith("work/") and beats[key]["details"]["done"] >= 1
    runner = CliRunner()
    text = runner.invoke(cli, ["--db", db, "show", "shown"])
    assert text.exit_code == 0, text.output
    assert "heartbeats" in text.output and key in text.output
    doc = json.loads(runner.invoke(cli, ["--db", db, "show", "shown", "--json"]).output)
    assert doc["heartbeats"][key]["details"]["done"] >= 1
    app = create_app(db)
    with TestClient(
        app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {app.state.token}"}
    ) as client:
        page = client.get("/runs/shown")
        assert page.status_code == 200 and "heartbeats" in page.text and key in page.text
        assert client.get("/api/runs/shown").json()["heartbeats"][key]["details"]["done"] >= 1


def test_heartbeat_needs_a_step_and_json(eng: Engine) -> None:
    """Outside a step a workflow Context refuses it; details must be JSON (the step
    fails with the reason)."""
    ctx = Context(BadDetails(engine=eng))
    with pytest.raises(ContextStateError, match="heartbeat"):
        ctx.heartbeat("x")
    with pytest.raises(TypeError, match="JSON"):
        _run(BadDetails(engine=eng).run(run_id="bad"))
