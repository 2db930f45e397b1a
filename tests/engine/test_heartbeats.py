"""Long steps: ctx.heartbeat(details) records progress; a step whose heartbeats stop for
longer than its ``heartbeat_timeout`` is failed (StepHeartbeatTimeout) and retried; a
step longer than several lease periods keeps its run's lease against a second worker
process (tests/_procs/heartbeat_child.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from engine import (
    Context,
    Engine,
    NotInRun,
    RunFailed,
    StartEvent,
    StepFailed,
    StepHeartbeatTimeout,
    StopEvent,
    Workflow,
    current_context,
    durable,
    heartbeat,
    step,
)
from engine.cli import cli
from engine.ui import create_app
from journal import CorruptionError, EntryKind, Journal

REPO = Path(__file__).resolve().parents[2]
PROCS = REPO / "tests" / "_procs"

ATTEMPTS: list[str] = []


@step(heartbeat_timeout=0.5, retries=1, backoff=0.01)
def hangs_first(n: int) -> str:
    ATTEMPTS.append("go")
    if len(ATTEMPTS) == 1:
        time.sleep(3.0)  # hung: never beats (the abandoned thread ends on its own)
        return "late"
    return "second"


@durable
def with_hang(ctx: Context, n: int) -> str:
    return hangs_first(n)


@step(heartbeat_timeout=1.0)
def beats(n: int) -> int:
    ATTEMPTS.append("go")
    for i in range(n):
        time.sleep(0.05)
        current_context().heartbeat({"done": i + 1, "of": n})
    return n


@durable
def long_beating(n: int) -> int:
    return beats(n)


@step(heartbeat_timeout=0.3)
def never_beats() -> None:
    ATTEMPTS.append("go")
    time.sleep(1.5)


@durable
def dead_for_good() -> None:
    never_beats()


@step(heartbeat_timeout=0.5, retries=1, backoff=0.01)
async def async_hangs_first() -> str:
    ATTEMPTS.append("go")
    if len(ATTEMPTS) == 1:
        await asyncio.sleep(5)
    for _ in range(30):  # 1.5 s or more of beats, three times the timeout
        await asyncio.sleep(0.05)
        heartbeat("tick")
    return "ok"


@durable
async def async_flow() -> str:
    return await async_hangs_first()


@step
def progress(n: int) -> int:
    for i in range(n):
        heartbeat({"rows": (i + 1) * 100})
        time.sleep(0.1)
    return n


@durable
def reporting(n: int) -> int:
    return progress(n)


@durable
def body_beats(ctx: Context) -> None:
    ctx.heartbeat("not in a step")


@step
def bad_details() -> None:
    heartbeat({"x": object()})


@durable
def bad_beat() -> None:
    bad_details()


FUNCTIONS = (with_hang, long_beating, dead_for_good, async_flow, reporting, body_beats, bad_beat)


@pytest.fixture
def eng(tmp_path: Path) -> Iterator[Engine]:
    ATTEMPTS.clear()
    e = Engine(tmp_path / "hb.db", lease_seconds=0.6)
    for fn in FUNCTIONS:
        fn._engine = e
    yield e
    for fn in FUNCTIONS:
        fn._engine = None
    e.close()


def _failures(journal: Journal, run_id: str) -> list[dict[str, Any]]:
    return [
        journal.decode_entry(e) for e in journal.read(run_id) if e.kind == EntryKind.STEP_FAILED
    ]


def test_a_hung_step_is_failed_and_retried(eng: Engine) -> None:
    """No heartbeat for longer than heartbeat_timeout: the attempt fails with
    StepHeartbeatTimeout, journaled, and the retry runs."""
    assert with_hang.run(1, run_id="hang") == "second"
    assert ATTEMPTS == ["go", "go"]
    (failed,) = _failures(eng.journal, "hang")
    assert failed["type"] == "StepHeartbeatTimeout"
    assert failed["timeout"] is True and failed["final"] is False


def test_a_beating_step_is_not_failed(eng: Engine) -> None:
    """A step that beats more often than its timeout runs for many timeouts, once."""
    assert long_beating.run(60, run_id="beating") == 60  # 3 s or more, timeout 1 s
    assert ATTEMPTS == ["go"]
    assert _failures(eng.journal, "beating") == []


def test_out_of_retries_the_run_fails_with_the_typed_error(eng: Engine) -> None:
    """With no retry left the step's failure is StepHeartbeatTimeout; the run's error
    names it."""
    with pytest.raises(StepHeartbeatTimeout, match="never_beats"):
        dead_for_good.run(run_id="dead")
    assert ATTEMPTS == ["go"]
    with pytest.raises(RunFailed, match="StepHeartbeatTimeout"):
        eng.handle("dead").result(timeout=5)


def test_async_step_heartbeat_timeout(eng: Engine) -> None:
    """An async step that stops beating is cancelled and retried; the retry beats."""
    assert async_flow.start(run_id="async").result(timeout=30) == "ok"
    assert ATTEMPTS == ["go", "go"]
    (failed,) = _failures(eng.journal, "async")
    assert failed["type"] == "StepHeartbeatTimeout"


def test_progress_is_written_with_the_lease_renewal(eng: Engine) -> None:
    """ctx.heartbeat details reach the run's row at the next lease renewal, not per call."""
    handle = reporting.start(12, run_id="rep")
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not seen:
        seen = eng.journal.heartbeat_of("rep")
        time.sleep(0.05)
    assert handle.result(timeout=10) == 12
    assert list(seen) == ["progress#1"]
    assert seen["progress#1"]["details"]["rows"] >= 100
    assert abs(seen["progress#1"]["at"] - time.time()) < 10
    # No commit per heartbeat: the run's entries are its start, the step, the end.
    kinds = [e.kind for e in eng.journal.read("rep")]
    assert kinds == [EntryKind.RUN_STARTED, EntryKind.STEP_COMPLETED, EntryKind.RUN_COMPLETED]


def test_progress_shows_in_show_and_the_web_view(eng: Engine, tmp_path: Path) -> None:
    """`durable show` (text and --json), the run page and GET /api/runs/{id} show the
    steps' last heartbeat."""
    assert reporting.run(12, run_id="shown") == 12
    db = str(tmp_path / "hb.db")
    runner = CliRunner()
    text = runner.invoke(cli, ["--db", db, "show", "shown"])
    assert text.exit_code == 0, text.output
    assert "heartbeats" in text.output and "progress#1" in text.output
    assert '"rows"' in text.output
    doc = json.loads(runner.invoke(cli, ["--db", db, "show", "shown", "--json"]).output)
    assert doc["heartbeats"]["progress#1"]["details"]["rows"] >= 100
    app = create_app(db)
    with TestClient(
        app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {app.state.token}"}
    ) as client:
        page = client.get("/runs/shown")
        assert page.status_code == 200
        assert "heartbeats" in page.text and "progress#1" in page.text
        api = client.get("/api/runs/shown").json()
        assert api["heartbeats"]["progress#1"]["details"]["rows"] >= 100


def test_heartbeat_needs_a_step_and_json(eng: Engine) -> None:
    """Outside a step (or a run) ctx.heartbeat is NotInRun; details must be JSON."""
    with pytest.raises(NotInRun):
        heartbeat("x")

    with pytest.raises(NotInRun, match="inside a @step"):
        body_beats.run(run_id="body")
    with pytest.raises(StepFailed, match="JSON"):
        bad_beat.run(run_id="bad")


def test_heartbeat_timeout_is_checked() -> None:
    """heartbeat_timeout is a positive number of seconds, on any step."""
    for value in (0, -1, "5", True, float("inf")):
        with pytest.raises(ValueError, match="heartbeat_timeout"):
            step(heartbeat_timeout=value)  # type: ignore[arg-type]

    class Beating(
        Workflow
    ):  # a workflow step takes it too (tests/engine/test_workflow_heartbeats.py)
        @step(heartbeat_timeout=5)
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=1)

    assert Beating.steps()["go"].spec.heartbeat_timeout == 5


def test_a_crafted_heartbeat_column_is_a_typed_error(eng: Engine, tmp_path: Path) -> None:
    """A heartbeat value that is not the engine's JSON object: CorruptionError naming the run."""
    reporting.run(1, run_id="r")
    conn = apsw.Connection(str(tmp_path / "hb.db"))
    conn.execute("UPDATE runs SET heartbeat = '[1, 2]' WHERE run_id = 'r'")
    conn.close()
    with pytest.raises(CorruptionError, match="'r'"):
        eng.journal.heartbeat_of("r")


# -- a long step against a second worker process -----------------------------------------


def _child(location: str, *args: str, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(PROCS / "heartbeat_child.py"), location, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HEARTBEAT_LOG": str(log), "PYTHONPATH": f"{PROCS}{os.pathsep}{REPO}"},
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "long.db")
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["sync", "async", "workflow"])
def test_a_long_step_keeps_its_lease(location: str, tmp_path: Path, kind: str) -> None:
    """Lease 1 s, a step of 4 s (four lease periods) in process A; a worker process B
    polls the journal all along and would take the run over if its lease lapsed: no
    takeover (epoch 1), A finishes it, and the step executed once."""
    log = tmp_path / "steps.log"
    second = _child(location, "worker", kind, log=log)
    try:
        assert second.stdout is not None
        assert second.stdout.readline().strip() == "ready"
        first = _child(location, "own", kind, log=log)
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert out.split() == ["started", "done", kind]
        with Journal(location) as j:
            run = j.get_run("long")
        assert (run.status, run.epoch) == ("completed", 1)  # claimed once: never taken over
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    assert log.read_text().split() == ["begin", "end"]
