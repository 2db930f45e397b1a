"""LlamaIndex's ``Annotated[T, Resource(factory, cache=)]`` and ``ResourceConfig`` step
parameters, and workflows injected into steps with ``add_workflows`` (the seed's
``ServiceManager``): each nested run is journaled as a child run, and a parent killed
with SIGKILL while its child runs is recovered without re-running what either completed.
The crash tests run ``tests/_procs/llamaindex_services_child.py``."""

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
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from engine import (
    CircularResourceError,
    Context,
    Engine,
    Event,
    Resource,
    ResourceConfig,
    ServiceManager,
    ServiceNotFoundError,
    StartEvent,
    StopEvent,
    Workflow,
    configure,
    step,
)
from journal import Journal

REPO = Path(__file__).resolve().parents[2]
PROCS = REPO / "tests" / "_procs"
MADE: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def fresh(db_path: Path) -> Iterator[Engine]:
    MADE.clear()
    eng = configure(db_path, lease_seconds=0)
    yield eng
    eng.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def result_of(handler: Any) -> Any:
    return await handler


class Client:
    def __init__(self, name: str) -> None:
        self.name = name


def make_settings() -> dict[str, str]:
    MADE["settings"] += 1
    return {"region": "eu"}


async def make_client(settings: Annotated[dict[str, str], Resource(make_settings)]) -> Client:
    MADE["client"] += 1
    await asyncio.sleep(0)
    return Client(f"client-{settings['region']}")


def make_scratch() -> list[str]:
    MADE["scratch"] += 1
    return []


class Middle(Event):
    client_id: int


class UsesResources(Workflow):
    @step
    async def first(
        self,
        ev: StartEvent,
        client: Annotated[Client, Resource(make_client)],
        scratch: Annotated[list[str], Resource(make_scratch, cache=False)],
        same_scratch: Annotated[list[str], Resource(make_scratch, cache=False)],
    ) -> Middle:
        scratch.append("first")
        assert scratch is same_scratch  # uncached: one object within a step execution
        return Middle(client_id=id(client))

    @step
    def second(
        self,
        ev: Middle,
        client: Annotated[Client, Resource(make_client)],
        scratch: Annotated[list[str], Resource(make_scratch, cache=False)],
    ) -> StopEvent:
        return StopEvent(result=(client.name, ev.client_id == id(client), scratch))


class TestResources:
    """Factories sync and async, resources of resources, cache semantics as LlamaIndex."""

    def test_injection_and_cache(self) -> None:
        wf = UsesResources()
        assert run(result_of(wf.run())) == ("client-eu", True, [])
        # cached: one client (and its settings) per workflow instance, across steps and runs
        assert MADE == {"settings": 1, "client": 1, "scratch": 2}
        assert run(result_of(wf.run()))[:2] == ("client-eu", True)
        assert MADE == {"settings": 1, "client": 1, "scratch": 4}
        run(result_of(UsesResources().run()))  # another instance makes its own
        assert MADE["client"] == 2 and wf._resource_manager.get_all()

    def test_resource_config(self, tmp_path: Path) -> None:
        path = tmp_path / "classifier.json"
        path.write_text(json.dumps({"models": {"small": {"categories": ["a", "b"], "t": 0.5}}}))
        Configured.config = str(path)
        result = run(result_of(Configured().run()))
        assert result == (["a", "b"], 0.5)
        with pytest.raises(ValueError, match=r"Only JSON files"):
            ResourceConfig(config_file="settings.yaml")

    def test_circular_dependency_fails_the_run(self) -> None:
        with pytest.raises(CircularResourceError, match="Circular resource dependency"):
            run(result_of(Circular().run()))


class ClassifierConfig(BaseModel):
    categories: list[str]
    t: float


class Configured(Workflow):
    config = ""

    @step
    async def classify(self, ev: StartEvent) -> StopEvent:
        descriptor = ResourceConfig(config_file=self.config, path_selector="models.small")
        descriptor.set_type_annotation(ClassifierConfig)
        loaded = await self._resource_manager.get(descriptor)
        return StopEvent(result=(loaded.categories, loaded.t))


def chicken(egg: Annotated[Any, Resource(lambda: None)]) -> str:
    return "chicken"


def _egg(chicken: Annotated[str, Resource(chicken)]) -> str:
    return "egg"


chicken.__annotations__["egg"] = Annotated[Any, Resource(_egg)]


class Circular(Workflow):
    @step
    async def hatch(self, ev: StartEvent, egg: Annotated[str, Resource(_egg)]) -> StopEvent:
        return StopEvent(result=egg)


class Shout(Workflow):
    @step
    async def shout(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.text.upper())


class Caller(Workflow):
    @step
    async def call(self, ctx: Context, ev: StartEvent, shouter: Shout) -> StopEvent:
        first = await shouter.run(text=ev.text)
        second = await shouter.run(text=ev.text + "!")
        return StopEvent(result=[first, second])


DEFAULT_SHOUT = Shout(timeout=5)


class DefaultCaller(Workflow):
    @step
    async def call(self, ev: StartEvent, shouter: Shout = DEFAULT_SHOUT) -> StopEvent:
        return StopEvent(result=await shouter.run(text="hi"))


class TestNestedWorkflows:
    """add_workflows: the step gets the workflow; each nested run is a child run."""

    def test_nested_runs_are_child_runs(self, db_path: Path) -> None:
        wf = Caller()
        wf.add_workflows(shouter=Shout())
        assert run(result_of(wf.run(run_id="parent", text="hey"))) == ["HEY", "HEY!"]
        with Journal(db_path) as j:
            runs = {r.run_id: r for r in j.list_runs()}
        children = sorted(k for k in runs if k != "parent")
        assert len(children) == 2 and all(k.startswith("parent/call:") for k in children)
        assert [k[-2:] for k in children] == ["#1", "#2"]
        assert all(runs[k].parent_run_id == "parent" for k in children)
        assert all(runs[k].status == "completed" for k in runs)

    def test_parameter_default_and_service_manager(self) -> None:
        assert run(result_of(DefaultCaller().run())) == "HI"
        services = ServiceManager()
        shout = Shout()
        services.add("s", shout)
        assert services.get("s") is shout and services.get("t", shout) is shout
        with pytest.raises(ServiceNotFoundError, match="Service t not found"):
            services.get("t")


def _wait_for_line(log: Path, line: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not (log.exists() and line in log.read_text().split("\n")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{line!r} never ran"
        time.sleep(0.02)


def _kill_then_recover(
    tmp_path: Path, workflow: str, run_id: str, hold: str
) -> tuple[Path, Counter[str], str]:
    """Start ``workflow`` in a child process, SIGKILL it once step ``hold`` runs, recover
    in another process; return the journal, what ran (by log line) and the recovery's
    output."""
    db, log = tmp_path / "li.db", tmp_path / "steps.log"
    env = {**os.environ, "LI_LOG": str(log), "LI_HOLD": hold}
    child = [sys.executable, str(PROCS / "llamaindex_services_child.py")]
    proc = subprocess.Popen([*child, "start", str(db), workflow, run_id], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _wait_for_line(log, hold, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    env["LI_HOLD"] = ""
    out = subprocess.run([*child, "recover", str(db)], env=env, capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    ran = Counter(log.read_text().split())
    return db, ran, out.stdout


def test_nested_run_survives_sigkill(tmp_path: Path) -> None:
    """The parent is killed while its child workflow runs its second step: a new process
    recovers the parent, whose step attaches to the same child run, which resumes; the
    child's completed step and the parent's first step never run again."""
    sys.path.insert(0, str(PROCS))
    db, ran, out = _kill_then_recover(tmp_path, "report", "rep", "condense")
    assert json.loads(out.strip().splitlines()[-1])["errors"] == {}, out
    with Journal(db) as j:
        runs = {r.run_id: r for r in j.list_runs()}
        (child,) = [r for r in runs.values() if r.run_id != "rep"]
        assert child.parent_run_id == "rep" and child.run_id.startswith("rep/delegate:")
        assert runs["rep"].status == "completed" and child.status == "completed"
        result = j.decode(runs["rep"].output, runs["rep"].codec, where="result")
    assert result == {"topic": "agents", "summary": "agents: large language model "
                      "retrieval-augmented generation"}  # fmt: skip
    assert ran["outline"] == 1 and ran["split"] == 1  # completed steps: never again
    assert ran["delegate"] == 2 and ran["condense"] == 2  # in flight when killed
    assert ran["glossary"] == 2  # the resource is made again in the new process


def test_catch_error_handler_survives_sigkill(tmp_path: Path) -> None:
    """Killed inside the @catch_error handler: the recovered run enters the handler again
    from its journaled StepFailedEvent; the failed step does not run again."""
    sys.path.insert(0, str(PROCS))
    db, ran, out = _kill_then_recover(tmp_path, "guarded", "g", "fallback")
    assert json.loads(out.strip().splitlines()[-1]) == {"recovered": ["g"], "errors": {}}
    with Journal(db) as j:
        row = j.get_run("g")
        assert row.status == "completed", row.error
        result = j.decode(row.output, row.codec, where="result")
    assert result == "cached copy (fetch failed: https://example.org unreachable)"
    assert ran["fetch"] == 1 and ran["fallback"] == 2
