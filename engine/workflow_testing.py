"""``WorkflowTestRunner``: run a workflow to its end in a test and see what it streamed
(LlamaIndex's ``workflows.testing`` helper)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .events import Event, StartEvent

if TYPE_CHECKING:
    from .workflow import Workflow
    from .workflow_context import WorkflowContext

__all__ = ["WorkflowTestResult", "WorkflowTestRunner"]


@dataclass
class WorkflowTestResult:
    """What one run gave: the events it streamed, how many of each type, its result and
    its Context."""

    collected: list[Event]
    event_types: dict[type[Event], int]
    result: Any
    ctx: WorkflowContext


class WorkflowTestRunner:
    """Runs ``workflow`` to its end and collects the events it streams."""

    def __init__(self, workflow: Workflow) -> None:
        self._workflow = workflow

    async def run(
        self,
        start_event: StartEvent | None = None,
        ctx: WorkflowContext | None = None,
        exclude_events: list[type[Event]] | None = None,
    ) -> WorkflowTestResult:
        """Start a run (``start_event``, default the workflow's start event class with no
        arguments), stream it to its end and await its result."""
        handler = self._workflow.run(ctx=ctx, start_event=start_event)
        excluded = tuple(exclude_events or ())
        collected = [ev async for ev in handler.stream_events() if not isinstance(ev, excluded)]
        result = await handler
        counts = Counter(type(ev) for ev in collected)
        return WorkflowTestResult(collected, dict(counts), result, handler.ctx)
