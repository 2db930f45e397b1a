"""The entry vocabulary: every kind an entry of the journal may have.

Kinds are extended, never reused for another meaning: a stored journal must
read the same way forever.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ENTRY_KINDS", "RUN_KINDS", "RUN_STATUSES", "TERMINAL_STATUSES", "EntryKind"]


class EntryKind:
    """Names of entry kinds, as stored in ``entries.kind``."""

    RUN_STARTED: Final = "run.started"
    STEP_STARTED: Final = "step.started"
    STEP_COMPLETED: Final = "step.completed"
    STEP_FAILED: Final = "step.failed"
    STATE_SET: Final = "state.set"
    STATE_DELETED: Final = "state.deleted"
    STATE_APPENDED: Final = "state.appended"
    EVENT_EMITTED: Final = "event.emitted"
    EVENT_CONSUMED: Final = "event.consumed"
    EVENT_RECEIVED: Final = "event.received"
    EVENT_STREAMED: Final = "event.streamed"
    TIMER_STARTED: Final = "timer.started"
    TIMER_FIRED: Final = "timer.fired"
    VALUE_RECORDED: Final = "value.recorded"
    PATCH_MARKED: Final = "patch.marked"
    CHILD_STARTED: Final = "child.started"
    CHILD_COMPLETED: Final = "child.completed"
    RUN_FORKED: Final = "run.forked"
    RUN_COMPLETED: Final = "run.completed"
    RUN_FAILED: Final = "run.failed"
    RUN_CANCELLED: Final = "run.cancelled"
    RUN_RESUMED: Final = "run.resumed"
    """A failed run reopened by ``resume``: the one entry that may follow ``run.failed``."""


ENTRY_KINDS: Final[frozenset[str]] = frozenset(
    value for name, value in vars(EntryKind).items() if name.isupper()
)

RUN_STATUSES: Final = ("pending", "running", "waiting", "completed", "failed", "cancelled")
TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "cancelled"})
RUN_KINDS: Final = ("function", "workflow")
