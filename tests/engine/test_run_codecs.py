"""Codecs and state models behave as documented: a codec given to one function or workflow
is used with its options (in the process that started the run and in one that recovers
it), ``Field(exclude=True)`` fields are journaled by neither state model, and a failure
before a run's first step fails the run with the reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _children import REPO
from pydantic import BaseModel, Field

from engine import (
    CannotResume,
    Context,
    Engine,
    RunFailed,
    StartEvent,
    StopEvent,
    Workflow,
    durable,
    step,
)
from engine.worker import Worker
from journal import EntryKind, Journal, PickleSerializer, SerializationError, SignatureError

K = EntryKind
PROCS = REPO / "tests" / "_procs"


def _python(code: str, db: Path, log: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(db)],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(PROCS)]),
            "CODEC_LOG": str(log),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


# -- a codec of one's own, with its options ------------------------------------------------


def test_function_codec_runs_with_its_key(tmp_path: Path) -> None:
    """@durable(codec=PickleSerializer(hmac_key=...)) on a journal without that key runs to
    completion: every payload and snapshot is signed with the function's key."""
    sys.path.insert(0, str(PROCS))
    import codec_workload as w

    os.environ["CODEC_LOG"] = str(tmp_path / "log")
    with Engine(tmp_path / "j.db") as eng:
        out = eng.start(w.job, (4,), {}, run_id="r").result(timeout=60)
        assert out["doubled"] == 8 and out["again"]() == 9
        run = eng.journal.get_run("r")
        assert (run.status, run.codec) == ("completed", "pickle-hmac")
        assert {e.codec for e in eng.journal.read("r")} == {"pickle-hmac"}
        assert eng.journal.snapshots("r"), "snapshot_every=2 wrote no snapshot"
    with Journal(tmp_path / "j.db", hmac_key=w.KEY) as j:
        assert j.state_at("r").values["secret"].n == 4  # from the signed snapshot
    with Journal(tmp_path / "j.db", hmac_key=b"another key") as j:
        with pytest.raises(SignatureError):
            j.state_at("r")


def test_function_codec_recovers_in_a_new_process(tmp_path: Path) -> None:
    """Killed after its first step, the run is recovered by another process that knows the
    key only from the function's codec: the first step is not run again."""
    db, log = tmp_path / "j.db", tmp_path / "log"
    crashed = _python(
        """
        import sys, codec_workload as w
        from engine import configure
        configure(sys.argv[1], lease_seconds=1)
        w.job.run(5, run_id="r")
        """,
        db,
        log,
        CODEC_CRASH="1",
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert _lines(log) == ["r first", "r second"]
    with Journal(db) as j:
        assert j.get_run("r").status == "running"
    recovered = _python(
        """
        import sys, time, codec_workload as w
        from engine import Engine
        with Engine(sys.argv[1]) as eng:
            while (eng.journal.get_run("r").lease_expires_at or 0) > time.time():
                time.sleep(0.05)  # the dead process's lease: one second
            report = eng.recover()
            assert report.run_ids == ["r"], (report.run_ids, report.errors)
            out = report.handles[0].result(timeout=60)
            print(out["doubled"], out["again"]())
        """,
        db,
        log,
    )
    assert recovered.returncode == 0, recovered.stderr
    assert recovered.stdout.split() == ["10", "11"]
    assert _lines(log) == ["r first", "r second", "r second"]
    with Journal(db, hmac_key=w_key()) as j:
        run = j.get_run("r")
        assert run.status == "completed"
        assert j.decode(run.output, run.codec, where="output")["doubled"] == 10


def w_key() -> bytes:
    sys.path.insert(0, str(PROCS))
    import codec_workload

    return codec_workload.KEY


def test_workflow_class_codec_recovers_in_a_new_process(tmp_path: Path) -> None:
    """class Flow(Workflow, codec=...) runs with its key, and a process that imports the
    class recovers a run killed between its steps."""
    db, log = tmp_path / "j.db", tmp_path / "log"
    crashed = _python(
        """
        import sys, codec_workload as w
        from engine import Engine
        eng = Engine(sys.argv[1], lease_seconds=1)
        w.Signed(timeout=None, engine=eng).run(run_id="wf", x=7).result(timeout=60)
        """,
        db,
        log,
        CODEC_CRASH="1",
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    recovered = _python(
        """
        import sys, time, codec_workload as w
        from engine import Engine
        with Engine(sys.argv[1]) as eng:
            while (eng.journal.get_run("wf").lease_expires_at or 0) > time.time():
                time.sleep(0.05)
            report = eng.recover()
            assert report.run_ids == ["wf"], (report.run_ids, report.errors)
            print(report.handles[0].result(timeout=60))
        """,
        db,
        log,
    )
    assert recovered.returncode == 0, recovered.stderr
    assert recovered.stdout.split() == ["21"]
    assert _lines(log) == ["wf wf-first", "wf wf-second", "wf wf-second"]
    with Journal(db) as j:
        assert {e.codec for e in j.read("wf")} == {"pickle-hmac"}
        assert j.get_run("wf").status == "completed"


def test_workflow_instance_codec_is_used_with_its_key(tmp_path: Path) -> None:
    """Flow(codec=...) signs with its own key in the process that gave it."""
    key = b"an instance's key"

    class Box(BaseModel):
        n: int

    class Flow(Workflow):
        @step
        async def only(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            await ctx.store.set("box", Box(n=ev.n))
            return StopEvent(result=ev.n + 1)

    with Engine(tmp_path / "j.db") as eng:
        handler = Flow(timeout=None, engine=eng, codec=PickleSerializer(hmac_key=key))
        assert handler.run(run_id="f", n=1).result(timeout=60) == 2
    with Journal(tmp_path / "j.db", hmac_key=key) as j:
        assert j.state_at("f").values["box"] == Box(n=1)


# -- Field(exclude=True) --------------------------------------------------------------------


class Cached(BaseModel):
    n: int = 0
    cache: str = Field(default="cold", exclude=True)


@durable
def typed_job(ctx: Context[Cached], x: int) -> list[Any]:
    ctx.state.n = x
    ctx.state.cache = "hot"
    return [ctx.state.n, ctx.state.cache, ctx.state.model().cache]


class TypedFlow(Workflow):
    @step
    async def only(self, ctx: Context[Cached], ev: StartEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state.n = ev.x
            state.cache = "hot"
        return StopEvent(result=(await ctx.store.get_state()).cache)


def _state_keys(j: Journal, run_id: str) -> set[str | None]:
    return {e.key for e in j.read(run_id) if e.kind in (K.STATE_SET, K.STATE_APPENDED)}


def test_excluded_fields_are_not_journaled_by_durable_state(tmp_path: Path) -> None:
    """A @durable body sees its excluded field while it runs; the journal never holds it."""
    with Engine(tmp_path / "j.db") as eng:
        assert eng.start(typed_job, (3,), {}, run_id="d").result(timeout=60) == [3, "hot", "hot"]
        assert _state_keys(eng.journal, "d") == {"n"}
        assert eng.journal.state_at("d").values == {"n": 3}


def test_excluded_fields_are_not_journaled_by_workflow_state(tmp_path: Path) -> None:
    """A workflow's typed state drops an excluded field (it comes back as its default)."""
    with Engine(tmp_path / "j.db") as eng:
        assert TypedFlow(timeout=None, engine=eng).run(run_id="w", x=3).result(timeout=60) == (
            "cold"
        )
        assert _state_keys(eng.journal, "w") == {"n"}


# -- failures before the first step ---------------------------------------------------------


def _failed(j: Journal, run_id: str, *words: str) -> None:
    run = j.get_run(run_id)
    assert run.status == "failed", (run.status, run.error)
    assert all(word in (run.error or "") for word in words), run.error
    assert [e.kind for e in j.read(run_id)][-1] == K.RUN_FAILED
    assert run.owner is None


def test_a_run_whose_codec_is_missing_here_is_marked_then_resumed_with_it(
    tmp_path: Path,
) -> None:
    """Recovering a run whose payloads need a key this process lacks: refused before
    anything is unpickled, the run marked with the reason and its lease free (never held,
    never looped); a process with the key resumes it to the end."""
    with Journal(tmp_path / "j.db", hmac_key=b"gone") as j:
        j.create_run("s", name=typed_job.name, status="running",
                     codec=PickleSerializer(hmac_key=b"gone"),
                     input={"args": [1], "kwargs": {}})  # fmt: skip
    with Engine(tmp_path / "j.db") as eng:
        report = eng.recover()
        assert report.run_ids == []
        # Without the key a pickle-hmac payload is untrusted (UntrustedPayload, a
        # SignatureError): refused before anything is unpickled.
        assert isinstance(report.errors["s"], CannotResume)
        run = eng.journal.get_run("s")
        assert run.error is not None and run.error.startswith("cannot resume: UntrustedPayload")
        assert run.owner is None and run.lease_expires_at is None
    with Engine(tmp_path / "j.db", hmac_key=b"gone") as eng:
        report = eng.recover()
        assert report.run_ids == ["s"]
        assert report.handles[0].result(timeout=30) == [1, "hot", "hot"]
        run = eng.journal.get_run("s")
        assert (run.status, run.error) == ("completed", None)


def test_a_workflow_resource_that_fails_at_start_fails_the_run(tmp_path: Path) -> None:
    """A workflow whose resource factory raises fails with the reason, never left running."""

    def broken() -> Any:
        raise RuntimeError("no database today")

    with Engine(tmp_path / "j.db") as eng:
        flow = TypedFlow(timeout=None, engine=eng, resources={"db": broken})
        handler = flow.run(run_id="w", x=1)
        with pytest.raises(RunFailed, match="no database today"):
            handler.result(timeout=30)
        _failed(eng.journal, "w", "RuntimeError", "no database today")


def test_input_that_cannot_be_encoded_writes_no_run(tmp_path: Path) -> None:
    """An input the codec refuses raises at the call and leaves no run behind."""
    with Engine(tmp_path / "j.db") as eng:
        with pytest.raises(SerializationError, match="input"):
            eng.start(typed_job, (object(),), {}, run_id="bad")
        with pytest.raises(SerializationError):
            TypedFlow(timeout=None, engine=eng).run(run_id="badwf", x=object())
        assert eng.journal.list_runs() == []


def test_a_run_no_worker_can_import_goes_back_to_pending(tmp_path: Path) -> None:
    """A queued run whose function this worker cannot import is released as pending."""
    with Engine(tmp_path / "j.db") as eng:
        eng.journal.create_run("q", name="nowhere_module:gone", queue="default")
        report = Worker(eng, concurrency=1).claim_once()
        assert "q" in report.errors
        run = eng.journal.get_run("q")
        assert (run.status, run.owner) == ("pending", None)
