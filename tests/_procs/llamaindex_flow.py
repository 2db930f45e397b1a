"""A workflow written for llama-index-workflows 2.x, with only its imports changed to
``engine``: used by tests/engine/test_workflow_llamaindex.py, in process and under SIGKILL.

``Review`` drafts, asks a human (an ``InputRequiredEvent`` returned from a step, answered
by a ``HumanResponseEvent``), then publishes through a step that fails until its third
attempt under a ``ConstantDelayRetryPolicy``. Every step body appends a line to the file
``$LI_LOG`` names (fsynced), so a test counts what really ran, across processes.
"""

from __future__ import annotations

import os

from engine import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


def log(line: str) -> int:
    """Append ``line`` to $LI_LOG; return how many lines starting with its first word
    (the step) the log holds now."""
    path = os.environ["LI_LOG"]
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    with open(path) as f:
        return sum(1 for x in f if x.split()[0] == line.split(maxsplit=1)[0])


DELAY = float(os.environ.get("LI_DELAY", "0.05"))


class TopicStart(StartEvent):
    topic: str


class Drafted(Event):
    text: str


class Approved(Event):
    text: str


class Published(StopEvent):
    url: str
    attempts: int


class Review(Workflow):
    @step
    async def draft(self, ev: TopicStart, ctx: Context) -> InputRequiredEvent:
        log(f"draft {ev.topic}")
        await ctx.store.set("doc", {})
        await ctx.store.set("doc.title", ev.topic.title())
        await ctx.store.set("doc.body", f"all about {ev.topic}")
        return InputRequiredEvent(prefix=f"publish {ev.topic}?")

    @step
    async def decide(self, ctx: Context, ev: HumanResponseEvent) -> Approved | Published:
        log(f"decide {ev.response}")
        if ev.response != "yes":
            return Published(url="", attempts=0)
        return Approved(text=await ctx.store.get("doc.body"))

    @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=5, delay=DELAY))
    async def publish(self, ev: Approved, ctx: Context) -> Published:
        info = ctx.retry_info()
        log(f"retry {info.retry_number} {info.last_exception!r}")
        tries = log(f"publish {ev.text}")
        if tries < int(os.environ.get("LI_SUCCEED_ON", "3")):
            raise ConnectionError(f"publish attempt {tries} failed")
        return Published(url=f"https://example.org/{len(ev.text)}", attempts=tries)
