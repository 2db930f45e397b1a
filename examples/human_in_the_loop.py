"""Human in the loop across processes: ask, exit, answer later, resume.

In LlamaIndex a step calls ``ctx.wait_for_event(HumanResponseEvent, waiter_event=
InputRequiredEvent(...))``; to let the human answer tomorrow you serialize the
Context, cancel the run and restore it later. Here the journal is the Context, so
three ordinary processes can share the run:

1. Process A starts the run. ``draft`` writes a post; ``ask_approval`` streams an
   ``InputRequiredEvent`` and waits. A sees the question and EXITS: the run stays
   ``waiting`` in the journal.
2. Process B (the reviewer's tool) delivers the answer with
   ``engine.send_event(run_id, HumanResponseEvent(...))`` and exits.
3. Process C calls ``engine.recover()``: the run resumes, ``ask_approval`` gets the
   answer and ``publish`` runs. ``draft`` is not executed again.

Run it from the repository root: ``python examples/human_in_the_loop.py [--db PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)

LEASE_SECONDS = 0.5
"""A parked run keeps the lease of the process that parked it (renewed while that
process lives); another process can resume it once the lease lapsed. Short here so
the story takes seconds; with the default 30 s lease, process C would wait that long."""

LOG = ""
"""A side-effect log: one line per real execution of a step, in any process."""


def executing(ctx: Context, name: str) -> None:
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(f"{ctx.run_id} {name} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())
    print(f"  [pid {os.getpid()}] executing {name}", flush=True)


def llm_draft(topic: str) -> str:
    """A deterministic stand-in for the LLM that writes the post."""
    return f"Five things nobody tells you about {topic} (number 4 will surprise you)"


# -- the workflow -----------------------------------------------------------------------


class ReviewEvent(Event):
    post: str


class PublishEvent(Event):
    post: str
    approved_by: str


class PublishFlow(Workflow):
    @step
    async def draft(self, ctx: Context, ev: StartEvent) -> ReviewEvent:
        executing(ctx, "draft")
        post = llm_draft(ev.topic)
        await ctx.store.set("draft", post)
        return ReviewEvent(post=post)

    @step
    async def ask_approval(self, ctx: Context, ev: ReviewEvent) -> PublishEvent | StopEvent:
        # A waiting step runs again from its start when another process resumes the
        # run: keep side effects after the wait.
        executing(ctx, "ask_approval")
        answer = await ctx.wait_for_event(
            HumanResponseEvent,
            waiter_event=InputRequiredEvent(prefix="Publish this post? [yes/no]", post=ev.post),
            timeout=600,
        )
        await ctx.store.set("decision", {"response": answer.response, "by": answer.reviewer})
        if answer.response != "yes":
            return StopEvent(result={"published": False, "by": answer.reviewer})
        return PublishEvent(post=ev.post, approved_by=answer.reviewer)

    @step
    async def publish(self, ctx: Context, ev: PublishEvent) -> StopEvent:
        executing(ctx, "publish")
        url = f"https://blog.example.org/{ctx.run_id}"
        await ctx.store.set("url", url)
        return StopEvent(result={"published": True, "url": url, "approved_by": ev.approved_by})


# -- the three processes ----------------------------------------------------------------


async def ask(run_id: str) -> None:
    """Process A: start the run, show the question, and leave once the run is waiting."""
    handler = PublishFlow().run(run_id=run_id, topic="durable execution")
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            print(f"  [pid {os.getpid()}] the run asks: {ev.prefix}", flush=True)
            print(f"  [pid {os.getpid()}]   {ev.post!r}", flush=True)
            break
    journal = engine.default_engine().journal
    while journal.get_run(run_id).status != "waiting":
        await asyncio.sleep(0.01)
    print(f"  [pid {os.getpid()}] nobody is here to answer: this process exits", flush=True)


def child(mode: str, db: str, log: str, *args: str) -> int:
    global LOG
    LOG = log
    eng = engine.configure(db, lease_seconds=LEASE_SECONDS)
    pid = os.getpid()
    try:
        if mode == "ask":
            asyncio.run(ask(args[0]))
        elif mode == "answer":
            run_id, response, reviewer = args
            event = HumanResponseEvent(response=response, reviewer=reviewer)
            engine.send_event(run_id, event)
            print(
                f"  [pid {pid}] {reviewer} answers {response!r}: "
                f"engine.send_event({run_id!r}, HumanResponseEvent(...))",
                flush=True,
            )
        else:  # resume
            while not eng.journal.claimable():  # process A's lease has to run out first
                time.sleep(0.02)
            print(f"  [pid {pid}] engine.recover()", flush=True)
            report = engine.recover(timeout=60)
            for handle in report.handles:
                print(f"  RESUMED {handle.run_id} -> {handle.result()}", flush=True)
            return 0 if report.handles and not report.errors else 1
        return 0
    finally:
        eng.close()


def in_child(*args: str) -> int:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        timeout=60,
    )
    print(proc.stdout, end="")
    return proc.returncode


# -- the story --------------------------------------------------------------------------


def story(db: str, log: str) -> int:
    run_id = f"post-{uuid.uuid4().hex[:6]}"
    open(log, "w").close()
    eng = engine.configure(db)

    def status() -> str:
        return eng.journal.get_run(run_id).status

    print("1. Process A starts the run, which asks for approval")
    if in_child("ask", db, log, run_id) != 0:
        return 1
    print(f"   process A has exited; the run is {status()!r} in the journal")

    print("\n2. Later, process B delivers the reviewer's answer")
    if in_child("answer", db, log, run_id, "yes", "ada") != 0:
        return 1
    print(f"   the answer is journaled; the run is {status()!r}, for any worker to claim")

    print("\n3. Process C resumes the run with engine.recover()")
    if in_child("resume", db, log) != 0:
        return 1
    print(f"   the run is {status()!r}")

    counts: Counter[str] = Counter()
    pids: dict[str, list[str]] = {}
    with open(log, encoding="utf-8") as f:
        for rid, name, pid in (line.split() for line in f):
            if rid == run_id:
                counts[name] += 1
                pids.setdefault(name, []).append(pid)
    print("\n4. What executed where")
    notes = {
        "draft": "in A only: not executed again on resume",
        "ask_approval": "in A (asked, waited) and again in C (the answer was there)",
        "publish": "in C only, after the approval",
    }
    for name, note in notes.items():
        print(f"   {name:<13} {counts[name]}x, pid {', '.join(pids.get(name, [])):<11} {note}")
    asked = sum(1 for e in eng.journal.read(run_id) if e.kind == "event.streamed")
    print(f"   the question was streamed and journaled {asked}x: C did not ask again")

    print(f"\n5. The run's history (engine.history({run_id!r}))")
    labels = {"event.received": "the reviewer's answer", "run.completed": ""}
    for cp in engine.history(run_id):
        print(f"   #{cp.number} {cp.kind:<15} {cp.name or labels.get(cp.kind, '')}")
    expected = Counter({"draft": 1, "ask_approval": 2, "publish": 1})
    return 0 if counts == expected and asked == 1 and status() == "completed" else 1


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
