"""LlamaIndex's ``WorkflowCheckpointer``, served from the journal.

LlamaIndex keeps a ``Checkpoint`` in memory each time a step returns an event. Here
every step's commit is already journaled, so a checkpoint is read back from the
journal: the checkpointer writes nothing of its own, its checkpoints survive the
process (any run of the workflow can be asked for by id), and ``run_from`` is a fork
at that step.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from journal import EntryKind, Journal, Run
from journal import payloads as P

from .errors import WorkflowStepDoesNotExistError, WrongFunction
from .events import Event, InputRequiredEvent, StopEvent
from .recorded import lineage
from .serializers import BaseSerializer, JsonSerializer
from .timetravel import CHECKPOINT_KINDS
from .workflow_context import WorkflowContext, _Seed

if TYPE_CHECKING:
    from .workflow import Workflow, WorkflowHandler

__all__ = [
    "Checkpoint",
    "CheckpointCallback",
    "WorkflowCheckpointer",
    "WorkflowStepDoesNotExistError",
    "run_checkpoints",
]

K = EntryKind
_NUMBERED = CHECKPOINT_KINDS - {K.RUN_FORKED}  # a fork's run.forked shares its point's number

CheckpointCallback = Callable[..., Any]
"""``callback(run_id=, last_completed_step=, input_ev=, output_ev=, ctx=)``, sync or async."""


@dataclass(frozen=True)
class Checkpoint:
    """A workflow run after one step that returned an event (LlamaIndex's fields).

    ``ctx_state`` (a ``ctx.to_dict()`` snapshot of the run at that point) is read from
    the journal when first asked for. ``run_id`` and ``number`` place it in the run's
    history (``durable history``); ``run_from`` forks there."""

    id_: str
    last_completed_step: str | None
    input_event: Event | None
    output_event: Event
    run_id: str
    number: int
    seq: int
    _workflow: Any = field(repr=False, compare=False)
    _serializer: BaseSerializer = field(repr=False, compare=False)
    _finished: bool = field(default=False, repr=False, compare=False)
    _at: float = field(default=0.0, repr=False, compare=False)
    """When the step's commit was written (the entry's time): which setting applied."""

    @property
    def id(self) -> str:
        """Same as ``id_``."""
        return self.id_

    @functools.cached_property
    def ctx_state(self) -> dict[str, Any]:
        """The run's Context after this step, as ``ctx.to_dict(serializer)`` gives it."""
        journal = self._workflow.engine.journal
        folded = journal.state_at(self.run_id, self.seq)
        ctx = WorkflowContext(self._workflow)
        ctx._seed_state = _Seed(folded.values, folded.pending, not self._finished)
        data = ctx.to_dict(serializer=self._serializer)
        data["run_id"] = self.run_id
        return data


def _stop_event(workflow: Workflow, journal: Journal, run: Run) -> StopEvent:
    """The StopEvent a completed run ended with: its output is the event for a
    StopEvent subclass, the ``result`` of a plain StopEvent."""
    out = journal.decode_run_value(run, "output")
    if isinstance(out, StopEvent):
        return out
    return StopEvent(result=out)


def run_checkpoints(
    workflow: Workflow, run_id: str, *, serializer: BaseSerializer | None = None
) -> list[Checkpoint]:
    """The checkpoints of one run of ``workflow``, from the journal: one per step that
    returned an event (LlamaIndex's rule), the run's own only (a fork's source's are the
    source's)."""
    journal = workflow.engine.journal
    run = journal.get_run(run_id)
    if run.kind != "workflow" or run.name != type(workflow)._name:
        raise WrongFunction(
            f"run {run_id!r} belongs to {run.name!r}, not {type(workflow)._name!r}",
            run_id=run_id,
        )
    return list(_iter_checkpoints(workflow, journal, run, serializer or JsonSerializer()))


def _iter_checkpoints(
    workflow: Workflow, journal: Journal, run: Run, serializer: BaseSerializer
) -> Iterator[Checkpoint]:
    events: dict[str, Event] = {}  # delivery key -> event, across the lineage
    outputs: list[Event] = []  # what the step now committing emitted
    number = 0
    for segment_id, upto in lineage(journal, run):
        segment = journal.get_run(segment_id)
        for entry in journal.read(segment_id, segment.horizon + 1, upto):
            kind = entry.kind
            if kind in _NUMBERED:
                number += 1
            if kind in (K.EVENT_EMITTED, K.EVENT_RECEIVED):
                event = P.read_event_delivery(journal.decode_entry(entry)).event
                if isinstance(event, Event):
                    events[entry.key or ""] = event
                    if kind == K.EVENT_EMITTED and entry.step is not None:
                        outputs.append(event)
                continue
            if kind != K.STEP_COMPLETED:
                if kind in _NUMBERED:  # the end of another commit
                    outputs = []
                continue
            step_outputs, outputs = outputs, []
            if segment_id != run.run_id:
                continue
            done = P.read_step_completed(journal.decode_entry(entry))
            returned = done.returned  # written only when the emitted do not tell
            output: Event | None = None
            if done.stopped and (returned is ... or returned is not None):
                output = _stop_event(workflow, journal, journal.get_run(run.run_id))
            elif returned is ...:
                output = step_outputs[-1] if step_outputs else None
            elif returned is not None:
                # The returned event is emitted after what the step sent with send_event.
                output = next(
                    (e for e in reversed(step_outputs) if type(e).__name__ == returned), None
                )
            if output is None or isinstance(output, InputRequiredEvent):
                continue
            yield Checkpoint(
                id_=f"{run.run_id}@{entry.seq}",
                last_completed_step=entry.step,
                input_event=events.get(entry.key or ""),
                output_event=output,
                run_id=run.run_id,
                number=number,
                seq=entry.seq,
                _workflow=workflow,
                _serializer=serializer,
                _finished=done.stopped,
                _at=entry.ts,
            )


class WorkflowCheckpointer:
    """LlamaIndex's checkpointer over a workflow: ``run()`` / ``run_from()`` start runs
    whose checkpoints ``checkpoints`` lists by run id, each read from the journal.

    ``disabled_steps`` (and ``disable_checkpoint``) leave a step's checkpoints out of
    what is listed; nothing is written either way. As in LlamaIndex, where a
    checkpoint is kept or not when its step completes, a setting applies to the steps
    that complete while it is in force: changing it later does not change what past
    runs list."""

    def __init__(
        self,
        workflow: Workflow,
        checkpoint_serializer: BaseSerializer | None = None,
        disabled_steps: list[str] | None = None,
    ) -> None:
        self.workflow = workflow
        self._checkpoint_serializer = checkpoint_serializer or JsonSerializer()
        self._run_ids: list[str] = []
        self.enabled_checkpoints: set[str] = set(type(workflow).steps())
        for name in disabled_steps or []:
            self._check_step(name)
            self.enabled_checkpoints.discard(name)
        self._initial = frozenset(self.enabled_checkpoints)
        self._changes: list[tuple[float, str, bool]] = []
        """(time.time(), step, enabled) of each change after construction, in order."""

    def _check_step(self, step: str) -> None:
        if step not in type(self.workflow).steps():
            raise WorkflowStepDoesNotExistError(
                f"This workflow does not contain a step with name {step}"
            )

    def enable_checkpoint(self, step: str) -> None:
        """From now on, keep the checkpoints made after ``step`` (the default for every
        step); those of steps completed while it was disabled stay out."""
        self._check_step(step)
        self.enabled_checkpoints.add(step)
        self._changed(step, True)

    def disable_checkpoint(self, step: str) -> None:
        """From now on, leave the checkpoints made after ``step`` out; those made
        before stay listed."""
        self._check_step(step)
        self.enabled_checkpoints.discard(step)
        self._changed(step, False)

    def _changed(self, step: str, enabled: bool) -> None:
        self._changes.append((time.time(), step, enabled))

    def _enabled_at(self, step: str | None, at: float) -> bool:
        """Whether ``step``'s checkpoints were enabled at time ``at``."""
        enabled = step in self._initial
        for when, name, on in self._changes:
            if when > at:
                break
            if name == step:
                enabled = on
        return enabled

    def _callback(self, user: CheckpointCallback | None) -> CheckpointCallback | None:
        if user is None:
            return None

        def for_enabled(**kwargs: Any) -> Any:
            if kwargs.get("last_completed_step") in self.enabled_checkpoints:
                return user(**kwargs)
            return None

        return for_enabled

    def run(
        self, checkpoint_callback: CheckpointCallback | None = None, **kwargs: Any
    ) -> WorkflowHandler:
        """Start a run of the workflow (``workflow.run(**kwargs)``); its checkpoints are
        listed under its run id. ``checkpoint_callback`` is called after each enabled step."""
        handler = self.workflow.run(
            checkpoint_callback=self._callback(checkpoint_callback), **kwargs
        )
        self._remember(handler.run_id)
        return handler

    def run_from(
        self,
        checkpoint: Checkpoint,
        checkpoint_callback: CheckpointCallback | None = None,
        **kwargs: Any,
    ) -> WorkflowHandler:
        """Start a new run from ``checkpoint``: a fork of its run at that step, which
        goes on with the step's output event (``state=`` edits the store, ``run_id=``
        names the new run). The new run lists only its own checkpoints."""
        handler = self.workflow.run_from(
            checkpoint,
            ctx_serializer=self._checkpoint_serializer,
            checkpoint_callback=self._callback(checkpoint_callback),
            **kwargs,
        )
        self._remember(handler.run_id)
        return handler

    def _remember(self, run_id: str) -> None:
        if run_id not in self._run_ids:
            self._run_ids.append(run_id)

    def _of(self, run_id: str) -> list[Checkpoint]:
        cps = run_checkpoints(self.workflow, run_id, serializer=self._checkpoint_serializer)
        return [c for c in cps if self._enabled_at(c.last_completed_step, c._at)]

    @property
    def checkpoints(self) -> dict[str, list[Checkpoint]]:
        """Run id -> its checkpoints so far, for the runs started here that have one."""
        out = {}
        for run_id in self._run_ids:
            cps = self._of(run_id)
            if cps:
                out[run_id] = cps
        return out

    def filter_checkpoints(
        self,
        run_id: str | None = None,
        last_completed_step: str | None = None,
        input_event_type: type[Event] | None = None,
        output_event_type: type[Event] | None = None,
    ) -> list[Checkpoint]:
        """The checkpoints that match every filter given (event types exactly, as in
        LlamaIndex). ``run_id`` may name any run of the workflow in the journal, also one
        started by another process; ``ValueError`` without any filter."""
        if not (run_id or last_completed_step or input_event_type or output_event_type):
            raise ValueError("Please specify a filter.")
        if run_id:
            candidates = self._of(run_id)
        else:
            candidates = [c for cps in self.checkpoints.values() for c in cps]
        return [
            c
            for c in candidates
            if (not last_completed_step or c.last_completed_step == last_completed_step)
            and (not input_event_type or type(c.input_event) is input_event_type)
            and (not output_event_type or type(c.output_event) is output_event_type)
        ]
