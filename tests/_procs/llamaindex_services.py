"""Workflows written for LlamaIndex (a nested workflow injected with ``add_workflows``, a
``Resource`` parameter, a ``@catch_error`` handler), with only their imports changed to
``engine``: used by tests/reliability/test_workflow_resources.py in process and under SIGKILL.

Every step body appends a line to ``$LI_LOG`` (fsynced) so a test counts what ran, across
processes; a step whose name is in ``$LI_HOLD`` sleeps there until killed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

from engine import (
    Context,
    Event,
    Resource,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    catch_error,
    step,
)


def log(line: str) -> None:
    """Append ``line`` to $LI_LOG."""
    with open(os.environ["LI_LOG"], "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


async def hold(name: str) -> None:
    """Sleep (until the test kills the process) if ``name`` is in $LI_HOLD."""
    if name in os.environ.get("LI_HOLD", "").split(","):
        await asyncio.sleep(3600)


class Glossary:
    """A stand-in for an expensive client: made once per process by its factory."""

    def __init__(self) -> None:
        log("resource glossary")
        self.terms = {"llm": "large language model", "rag": "retrieval-augmented generation"}


def get_glossary() -> Glossary:
    return Glossary()


class Chunks(Event):
    chunks: list[str]


class Summarizer(Workflow):
    @step
    async def split(self, ev: StartEvent) -> Chunks:
        log("split")
        return Chunks(chunks=ev.text.split())

    @step
    async def condense(
        self, ev: Chunks, glossary: Annotated[Glossary, Resource(get_glossary)]
    ) -> StopEvent:
        log("condense")
        await hold("condense")
        words = [glossary.terms.get(c, c) for c in ev.chunks]
        return StopEvent(result=" ".join(words))


class Outlined(Event):
    outline: str


class Report(Workflow):
    @step
    async def outline(self, ctx: Context, ev: StartEvent) -> Outlined:
        log("outline")
        await ctx.store.set("topic", ev.topic)
        return Outlined(outline=f"{ev.topic}: llm rag")

    @step
    async def delegate(self, ctx: Context, ev: Outlined, summarizer: Summarizer) -> StopEvent:
        log("delegate")
        summary = await summarizer.run(text=ev.outline)
        return StopEvent(result={"topic": await ctx.store.get("topic"), "summary": summary})


class Fetched(Event):
    body: str


class Guarded(Workflow):
    @step
    async def fetch(self, ev: StartEvent) -> Fetched:
        log("fetch")
        raise ConnectionError(f"{ev.url} unreachable")

    @step
    async def render(self, ev: Fetched) -> StopEvent:
        return StopEvent(result=ev.body)

    @catch_error
    async def fallback(self, ctx: Context, ev: StepFailedEvent) -> StopEvent:
        log("fallback")
        await hold("fallback")
        return StopEvent(result=f"cached copy ({ev.step_name} failed: {ev.exception})")
