"""``Context``: what a durable run's body sees of its run."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from .errors import NotInRun
from .execution import current_step, require_execution
from .state import State, TypedState

if TYPE_CHECKING:
    from .execution import RunExecution

__all__ = ["Context", "current_context", "idempotency_key"]

StateT = TypeVar("StateT")


class Context(Generic[StateT]):
    """A run's context: journaled state, deterministic helpers, durable sleep and
    injected resources. ``Context[MyModel]`` gives a typed, validated state."""

    def __init__(self, execution: RunExecution, model: type[BaseModel] | None = None) -> None:
        self._ex = execution
        self.state: Any = TypedState(execution, model) if model else State(execution)
        """The run's state: every assignment is journaled."""

    @property
    def run_id(self) -> str:
        """This run's id."""
        return self._ex.run_id

    @property
    def resources(self) -> Mapping[str, Any]:
        """Transient objects made by the resource factories on start and on recovery."""
        return self._ex.resources

    @property
    def history_size(self) -> int:
        """Entries this run has journaled so far (grows with every step)."""
        return self._ex.seq

    @property
    def replaying(self) -> bool:
        """True while the body is catching up with the journal after a restart."""
        return self._ex.history.replaying

    def now(self) -> dt.datetime:
        """The current UTC time, journaled: a replay returns the same instant."""
        return self._ex.now()

    def uuid(self) -> uuid.UUID:
        """A random UUID, journaled."""
        return self._ex.uuid4()

    def random(self) -> float:
        """A random float in [0, 1), journaled."""
        return self._ex.random()

    def sleep(self, seconds: float) -> Any:
        """Durable sleep. In an ``async def`` run, ``await ctx.sleep(s)``."""
        if self._ex.is_async:
            return self._ex.sleep_async(seconds)
        self._ex.sleep(seconds)
        return None

    def patched(self, change_id: str) -> bool:
        """Branch on a code change: True for runs that reach this point under the new
        code, False when replaying a run recorded before it."""
        return self._ex.patched(change_id)

    def __repr__(self) -> str:
        return f"Context(run_id={self.run_id!r})"


def current_context() -> Context[Any]:
    """The Context of the run executing here (in its body or in one of its steps)."""
    ctx: Context[Any] = require_execution("current_context()").context
    return ctx


def idempotency_key() -> str:
    """A key stable across retries and restarts of the current step: ``run_id:step#n``.

    Hand it to external systems so a step re-executed after a crash does not
    repeat a side effect.
    """
    ex = require_execution("idempotency_key()")
    scope = current_step()
    if scope is None:
        raise NotInRun("idempotency_key() must be called inside a @step")
    return f"{ex.run_id}:{scope.key}"
