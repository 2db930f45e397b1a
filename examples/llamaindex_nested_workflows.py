"""LlamaIndex's nested workflows, durable: only the imports changed.

The workflow code below is written the LlamaIndex way: a ``MainWorkflow`` whose step
takes a ``reflection_workflow: Workflow`` parameter, filled by
``main.add_workflows(reflection_workflow=ReflectionFlow())`` (LlamaIndex's
``ServiceManager``), and an LLM client injected as ``Annotated[FakeLLM, Resource(get_llm)]``.
Where LlamaIndex imports from ``llama_index.core.workflow``, it imports from ``engine``:

1. The main workflow starts in a child process; its ``research`` step runs the nested
   ReflectionFlow, which is journaled as a child run. The process is SIGKILLed while the
   nested flow's ``improve`` step is executing.
2. A new process calls ``engine.recover()``: ``research`` runs again and attaches to the
   same child run, which resumes at ``improve``: ``plan`` and ``critique`` do not run again.
3. ``durable runs`` shows the parent and its child run, both completed.

Run it from the repository root: ``python examples/llamaindex_nested_workflows.py [--db PATH]``
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import Annotated

import engine

# -- LlamaIndex code; the only change: `from llama_index.core.workflow import ...` -------
from engine import Context, Event, Resource, StartEvent, StopEvent, Workflow, step

LOG = os.environ.get("NESTED_EXAMPLE_LOG", "")
HOLD_IN = os.environ.get("NESTED_EXAMPLE_HOLD", "")


def record(step_name: str) -> None:
    """One line per real execution of a step (in any process); hang where told to."""
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(f"{step_name}\n")
        f.flush()
        os.fsync(f.fileno())
    print(f"  [pid {os.getpid()}] executing {step_name}", flush=True)
    if step_name == HOLD_IN:
        time.sleep(3600)  # the parent process kills us here


class FakeLLM:
    """A deterministic stand-in for an LLM client."""

    def complete(self, prompt: str) -> str:
        if prompt.startswith("critique"):
            return "cite the 2023 numbers"
        if prompt.startswith("improve"):
            return prompt.removeprefix("improve: ").replace("grow?", "grow in 2023?")
        return f"Revenue grew 12% ({prompt})"


def get_llm() -> FakeLLM:
    return FakeLLM()


class Critiqued(Event):
    query: str
    critique: str


class ReflectionFlow(Workflow):
    @step
    async def critique(
        self, ev: StartEvent, llm: Annotated[FakeLLM, Resource(get_llm)]
    ) -> Critiqued:
        record("critique")
        return Critiqued(query=ev.query, critique=llm.complete(f"critique: {ev.query}"))

    @step
    async def improve(self, ev: Critiqued, llm: Annotated[FakeLLM, Resource(get_llm)]) -> StopEvent:
        record("improve")
        return StopEvent(result=llm.complete(f"improve: {ev.query}"))


class Planned(Event):
    query: str


class Refined(Event):
    query: str


class MainWorkflow(Workflow):
    @step
    async def plan(self, ctx: Context, ev: StartEvent) -> Planned:
        record("plan")
        await ctx.store.set("question", ev.query)
        return Planned(query=ev.query)

    @step
    async def research(self, ctx: Context, ev: Planned, reflection_workflow: Workflow) -> Refined:
        record("research")
        res = await reflection_workflow.run(query=ev.query)
        return Refined(query=res)

    @step
    async def answer(
        self, ctx: Context, ev: Refined, llm: Annotated[FakeLLM, Resource(get_llm)]
    ) -> StopEvent:
        record("answer")
        question = await ctx.store.get("question")
        return StopEvent(result={"question": question, "answer": llm.complete(ev.query)})


main_workflow = MainWorkflow(timeout=60, verbose=False)
main_workflow.add_workflows(reflection_workflow=ReflectionFlow(timeout=60, verbose=False))

# -- the story: run, kill, recover -----------------------------------------------------

LEASE_SECONDS = 0.5
STEPS = ("plan", "research", "critique", "improve", "answer")


def child(mode: str, db: str, run_id: str = "") -> int:
    """``start``: run the workflow (hanging in improve). ``recover``: resume it."""
    eng = engine.configure(db, lease_seconds=LEASE_SECONDS)
    try:
        if mode == "start":
            main_workflow.run(run_id=run_id, query="How did revenue grow?").result(timeout=60)
            return 1  # never reached: the parent kills this process in improve
        while not eng.journal.claimable():  # the dead owner's lease has to run out first
            time.sleep(0.02)
        report = engine.recover(timeout=60)
        for handle in report.handles:
            print(f"  RECOVERED {handle.run_id} -> {handle.result()}", flush=True)
        return 0 if report.handles and not report.errors else 1
    finally:
        eng.close()


def spawn(log: str, hold: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NESTED_EXAMPLE_LOG": log, "NESTED_EXAMPLE_HOLD": hold}
    return subprocess.Popen(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True, env=env
    )


def story(db: str, log: str) -> int:
    run_id = f"research-{uuid.uuid4().hex[:6]}"
    open(log, "w").close()
    print("1. MainWorkflow starts in a child process; its research step runs ReflectionFlow")
    proc = spawn(log, "improve", "start", db, run_id)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line.rstrip())
        if "executing improve" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    print(f"   KILLED pid {proc.pid} with SIGKILL inside improve (the nested run)")

    print("\n2. A new process resumes both runs with engine.recover()")
    proc = spawn(log, "", "recover", db)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line.rstrip())
    if proc.wait() != 0:
        print("recovery failed")
        return 1
    with open(log, encoding="utf-8") as f:
        counts = Counter(line.strip() for line in f)
    notes = {1: "ran once", 2: "ran twice: in flight at the kill"}
    for name in STEPS:
        print(f"   {name:<9} {notes.get(counts[name], f'ran {counts[name]} times: UNEXPECTED')}")

    print("\n3. The journal: the nested run is a child run of the main one")
    eng = engine.configure(db)
    for run in sorted(eng.journal.list_runs(), key=lambda r: r.run_id):
        parent = f" (child of {run.parent_run_id})" if run.parent_run_id else ""
        print(f"   {run.run_id} {run.name.split(':')[-1]}: {run.status}{parent}")
    expected = {"plan": 1, "critique": 1, "answer": 1, "research": 2, "improve": 2}
    return 0 if counts == expected else 1


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return child(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="journal path (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durable-example-") as tmp:
        try:
            return story(args.db or os.path.join(tmp, "journal.db"), os.path.join(tmp, "log"))
        finally:
            engine.default_engine().close()


if __name__ == "__main__":
    sys.exit(main())
