"""Checkpointing a workflow, durable by construction.

LlamaIndex's checkpointing notebook wraps a JokeFlow in a ``WorkflowCheckpointer``
that keeps a checkpoint after every step, lists them, and re-runs from one with
``run_from``. Here every step's effect is journaled in SQLite as it commits, so the
checkpoints outlive the process that made them:

1. A four-step joke workflow (brainstorm, write, critique, polish) starts in a child
   process, which is SIGKILLed while ``critique`` is executing.
2. A new process calls ``engine.recover()``: the run resumes from its last checkpoint;
   brainstorm and write do not run again.
3. ``wf.checkpoints(run_id)`` lists one checkpoint per completed step, with the store.
4. ``wf.run_from(checkpoint, state=...)`` starts a new run from an earlier checkpoint
   with an edited store, and tells a different joke. The original run is untouched.
5. LlamaIndex's own ``WorkflowCheckpointer`` reads the same checkpoints from the journal,
   and ``draw_most_recent_execution_mermaid`` draws the fork.

Run it from the repository root: ``python examples/checkpointing_workflow.py [--db PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter

import engine
from engine import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCheckpointer,
    draw_most_recent_execution_mermaid,
    step,
)

LEASE_SECONDS = 0.5
"""A killed owner's run can be claimed this long after its last heartbeat."""

LOG = ""
"""A side-effect log: one line per real execution of a step, in any process."""

HOLD_IN: str | None = None
"""In the child that gets killed: the step that hangs (so the kill lands inside it)."""


# -- deterministic stand-ins for the LLM calls ------------------------------------------

JOKES = {
    "pirates": "Why couldn't the pirate play cards? He was standing on the deck.",
    "penguins": "Why don't penguins fly? They aren't tall enough to be pilots.",
}


def llm_brainstorm(topic: str) -> list[str]:
    return ["a pun", "a one-liner", "an anti-joke"]


def llm_write(topic: str, angle: str) -> str:
    return JOKES.get(topic, f"I had {angle} about {topic}, but it fell flat.")


def llm_critique(joke: str) -> tuple[int, str]:
    score = 5 + len(joke) % 5
    return score, "land the punchline harder" if score < 8 else "perfect as it is"


def llm_polish(joke: str, note: str) -> str:
    return joke if note == "perfect as it is" else f"{joke} *ba-dum-tss*"


# -- the workflow -----------------------------------------------------------------------


class Ideas(Event):
    angles: list[str]


class Draft(Event):
    joke: str


class Review(Event):
    score: int
    note: str


async def executing(ctx: Context, name: str) -> None:
    """Record one real execution of a step (fsync'd), say so, and hang if told to."""
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(f"{ctx.run_id} {name} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())
    print(f"  [pid {os.getpid()}] executing {name}", flush=True)
    if name == HOLD_IN:
        await asyncio.sleep(60)  # the parent SIGKILLs this process meanwhile


class JokeFlow(Workflow):
    @step
    async def brainstorm(self, ctx: Context, ev: StartEvent) -> Ideas:
        await executing(ctx, "brainstorm")
        angles = llm_brainstorm(ev.topic)
        await ctx.store.set("topic", ev.topic)
        await ctx.store.set("angles", angles)
        return Ideas(angles=angles)

    @step
    async def write(self, ctx: Context, ev: Ideas) -> Draft:
        await executing(ctx, "write")
        joke = llm_write(await ctx.store.get("topic"), ev.angles[0])
        await ctx.store.set("draft", joke)
        return Draft(joke=joke)

    @step
    async def critique(self, ctx: Context, ev: Draft) -> Review:
        await executing(ctx, "critique")
        score, note = llm_critique(ev.joke)
        await ctx.store.set("score", score)
        return Review(score=score, note=note)

    @step
    async def polish(self, ctx: Context, ev: Review) -> StopEvent:
        await executing(ctx, "polish")
        final = llm_polish(await ctx.store.get("draft"), ev.note)
        await ctx.store.set("final", final)
        return StopEvent(result={"joke": final, "score": ev.score})


STEPS = ("brainstorm", "write", "critique", "polish")


# -- the child processes ----------------------------------------------------------------


def child(mode: str, db: str, log: str, *args: str) -> int:
    """``start RUN_ID``: run the workflow (hanging in critique). ``recover``: resume."""
    global LOG, HOLD_IN
    LOG = log
    eng = engine.configure(db, lease_seconds=LEASE_SECONDS)
    try:
        if mode == "start":
            HOLD_IN = "critique"
            JokeFlow().run(run_id=args[0], topic="pirates").result(timeout=60)
            return 1  # never reached: the parent kills this process in critique
        began = time.monotonic()
        while not eng.journal.claimable():  # the dead owner's lease has to run out first
            time.sleep(0.02)
        print(
            f"  [pid {os.getpid()}] the dead owner's lease ran out after "
            f"{time.monotonic() - began:.2f} s; engine.recover()",
            flush=True,
        )
        report = engine.recover(timeout=60)
        for handle in report.handles:
            print(f"  RECOVERED {handle.run_id} -> {handle.result()}", flush=True)
        return 0 if report.handles and not report.errors else 1
    finally:
        eng.close()


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True
    )


def executions(log: str, run_id: str) -> Counter[str]:
    with open(log, encoding="utf-8") as f:
        return Counter(name for rid, name, _ in (line.split() for line in f) if rid == run_id)


# -- the story --------------------------------------------------------------------------


def story(db: str, log: str) -> int:
    global LOG
    LOG = log
    run_id = f"jokes-{uuid.uuid4().hex[:6]}"
    open(log, "w").close()

    print("1. A checkpointed JokeFlow starts in a child process")
    proc = spawn("start", db, log, run_id)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line.rstrip())
        if "executing critique" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    eng = engine.configure(db)
    wf = JokeFlow()
    saved = ", ".join(cp.step for cp in wf.checkpoints(run_id))
    print(f"   KILLED pid {proc.pid} with SIGKILL inside critique")
    print(
        f"   the journal says the run is {eng.journal.get_run(run_id).status!r}, "
        f"with checkpoints after: {saved}"
    )

    print("\n2. A new process resumes the run from its last checkpoint")
    proc = spawn("recover", db, log)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line.rstrip())
    if proc.wait() != 0:
        print("recovery failed")
        return 1
    counts = executions(log, run_id)
    for name in STEPS:
        n = counts[name]
        note = {1: "ran once", 2: "ran twice: in flight at the kill, never checkpointed"}
        print(f"   {name:<10} {note.get(n, f'ran {n} times: UNEXPECTED')}")
    if [counts[s] for s in STEPS] != [1, 1, 2, 1]:
        return 1

    print(f"\n3. wf.checkpoints({run_id!r}): one per completed step")
    checkpoints = wf.checkpoints(run_id)
    for cp in checkpoints:
        emitted = ", ".join(cp.emitted) or "StopEvent"
        print(
            f"   #{cp.number} {cp.step:<10} {cp.consumed:>10} -> {emitted:<9}"
            f" store: {', '.join(sorted(cp.state))}"
        )

    first = checkpoints[0]
    print(f"\n4. wf.run_from(checkpoint #{first.number}, state={{'topic': 'penguins'}})")
    handler = wf.run_from(first, state={"topic": "penguins"}, run_id=f"{run_id}-penguins")
    forked = handler.result(timeout=30)
    original = eng.outcome(eng.journal.get_run(run_id))
    forked_counts = executions(log, handler.run_id)
    print(f"   original run: {original['joke']}")
    print(f"   from #{first.number}:      {forked['joke']}")
    live = ", ".join(s for s in STEPS if forked_counts[s])
    shared = ", ".join(s for s in STEPS if not forked_counts[s])
    print(f"   {shared} did not run again (the fork shares its checkpoint); {live} ran live")
    topic = engine.state_at(run_id).values["topic"]
    print(f"   the original run's store is untouched: topic={topic!r}")

    print("\n5. LlamaIndex's WorkflowCheckpointer over the same journal (it writes nothing)")
    ckpt = WorkflowCheckpointer(workflow=wf)
    reviewed = ckpt.filter_checkpoints(run_id=run_id, output_event_type=Review)[0]
    print(f"   filter_checkpoints(output_event_type=Review): after {reviewed.last_completed_step},"
          f" {reviewed.output_event!r}")  # fmt: skip
    print("   draw_most_recent_execution_mermaid(handler), drawn from the fork's journal:")
    mermaid = draw_most_recent_execution_mermaid(handler, filename=None)
    print("\n".join(f"   {line}" for line in mermaid.splitlines() if "classDef" not in line))
    return 0 if forked != original and topic == "pirates" else 1


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
