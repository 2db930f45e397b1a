"""``Context``: what a durable run's body sees of its run."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any, Generic, NoReturn

from pydantic import BaseModel
from typing_extensions import TypeVar

from .errors import NotInRun
from .execution import _CURRENT_RUN, RunExecution, current_step, require_execution
from .logs import RunLog
from .state import State, TypedState

__all__ = ["Context", "current_context", "heartbeat", "idempotency_key"]

# A default lets a bare ``ctx: Context`` pass ``mypy --strict``; ``object``, not Any,
# so that ``@durable`` can tell (by overload) a function taking a Context from others.
StateT = TypeVar("StateT", default=object)


def _is_workflow(value: Any) -> bool:
    from .workflow import Workflow  # noqa: PLC0415 - workflow imports this module

    return isinstance(value, Workflow)


class Context(Generic[StateT]):
    """A run's context: journaled state, deterministic helpers, durable sleep and
    injected resources. ``Context[MyModel]`` gives a typed, validated state."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # Context(workflow) (LlamaIndex's spelling) builds a workflow run's Context.
        target = args[0] if args else kwargs.get("workflow")
        # A @durable run's Context (given its execution) is made once per run: the
        # workflow check (an import) is left to other targets.
        if (
            cls is Context
            and target is not None
            and not isinstance(target, RunExecution)
            and _is_workflow(target)
        ):
            from .workflow_context import WorkflowContext  # noqa: PLC0415 - imports this one

            return object.__new__(WorkflowContext)
        return super().__new__(cls)

    @classmethod
    def from_dict(cls, workflow: Any, data: dict[str, Any], serializer: Any = None) -> Any:
        """A workflow Context restored from ``ctx.to_dict()`` (see WorkflowContext)."""
        from .workflow_context import WorkflowContext  # noqa: PLC0415 - imports this one

        return WorkflowContext.from_dict(workflow, data, serializer=serializer)

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

    @property
    def log(self) -> RunLog:
        """A logger (``durable.run``) that is silent while the body replays, so each
        message is said once per run, not once per recovery; records carry ``run_id``
        and ``step``."""
        return RunLog(self.run_id, lambda: self.replaying)

    def heartbeat(self, details: Any = None) -> None:
        """Inside a step: say the attempt is alive, with ``details`` (JSON) of its
        progress. Keeps a step with ``heartbeat_timeout`` from being failed as dead;
        the last details of each step show in ``durable show`` and the web view."""
        self._ex.heartbeat(details)

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

    def continue_as_new(self, *args: Any, **kwargs: Any) -> NoReturn:
        """End this run and start its continuation, the same function called with
        ``args``/``kwargs`` (without the Context), in one commit: a long loop keeps
        each run's journal short. The new run's id is ``<first run id>~<n>``; its
        lineage shows in ``durable show``, and ``result()`` on any run of the chain
        returns the last one's result. Never returns."""
        raise self._ex.continue_as_new(args, kwargs)

    def patched(self, change_id: str) -> bool:
        """Branch on a code change: True for runs that reach this point under the new
        code, False when replaying a run recorded before it."""
        return self._ex.patched(change_id)

    # The workflow-step API, declared here so that steps annotated ``ctx: Context``
    # type-check; a @durable body has ``ctx.state`` instead.
    store: Any
    """In a workflow step: the run's store (``await ctx.store.get/set``)."""

    def send_event(self, event: Any, step: str | None = None) -> None:
        """In a workflow step: emit ``event`` when the step commits."""
        raise NotInRun("send_event() is for workflow steps; a @durable body calls its steps")

    def collect_events(self, event: Any, expected: list[Any]) -> list[Any] | None:
        """In a workflow step: buffer events until one of each ``expected`` type is in."""
        raise NotInRun("collect_events() is for workflow steps")

    def write_event_to_stream(self, event: Any) -> None:
        """In a workflow step: stream ``event`` to ``handler.stream_events()``."""
        raise NotInRun("write_event_to_stream() is for workflow steps")

    async def wait_for_event(
        self,
        event_type: Any,
        *,
        requirements: dict[str, Any] | None = None,
        timeout: float | None = None,
        waiter_event: Any = None,
    ) -> Any:
        """In a workflow step: wait for an event sent with ``send_event``."""
        raise NotInRun("wait_for_event() is for workflow steps")

    def __repr__(self) -> str:
        return f"Context(run_id={self.run_id!r})"


def current_context() -> Context[Any]:
    """The Context of the run executing here (in its body or in one of its steps)."""
    ctx: Context[Any] = require_execution("current_context()").context
    return ctx


def heartbeat(details: Any = None) -> None:
    """``ctx.heartbeat(details)`` for a step that has no ``ctx`` at hand (a @durable
    step, or a workflow step without a Context parameter)."""
    if _CURRENT_RUN.get() is None:
        from .workflow_context import CURRENT_SCOPE  # noqa: PLC0415 - imports this module

        scope = CURRENT_SCOPE.get()
        if scope is not None:
            scope.run.heartbeat(scope, details)
            return
    require_execution("heartbeat()").heartbeat(details)


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
