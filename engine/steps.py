"""``@step``: a memoized, journaled unit of work inside a durable run."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from .errors import WorkflowValidationError
from .execution import _CURRENT_RUN, _CURRENT_STEP
from .policies import RetryPolicy

__all__ = ["StepSpec", "catch_error", "step"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A step's name and policies, as given to ``@step``.

    ``num_workers`` None is the default: 4 concurrent executions of a workflow step
    (LlamaIndex's default), 1 for a step that calls ``ctx.collect_events``.
    ``retry_policy`` is a LlamaIndex-style policy (``next(elapsed, attempts, error)``);
    when set it decides a workflow step's retries instead of ``retry``.
    ``heartbeat_timeout``: seconds an attempt may go without ``ctx.heartbeat()``
    before it is failed as dead (:class:`StepHeartbeatTimeout`)."""

    name: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    num_workers: int | None = None
    retry_policy: Any = None
    heartbeat_timeout: float | None = None


@overload
def step(fn: F) -> F: ...
@overload
def step(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 0.1,
    max_backoff: float = 30.0,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    num_workers: int | None = None,
    retry_policy: Any = None,
    workflow: type[Any] | None = None,
    heartbeat_timeout: float | None = None,
) -> Callable[[F], F]: ...


def step(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 0.1,
    max_backoff: float = 30.0,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    num_workers: int | None = None,
    retry_policy: Any = None,
    workflow: type[Any] | None = None,
    heartbeat_timeout: float | None = None,
) -> Any:
    """Mark a function as a step: inside a durable run each call is journaled and,
    once completed, never executed again (its recorded result is returned).

    ``retries`` extra attempts with exponential ``backoff`` (or a full
    :class:`RetryPolicy`), and ``timeout`` seconds per attempt. With
    ``heartbeat_timeout``, an attempt that goes that many seconds without calling
    ``ctx.heartbeat()`` is failed with :class:`StepHeartbeatTimeout` (the retry
    policy decides what next). Outside a run the function is called as it is. Works
    on ``def`` and ``async def`` functions.

    On a workflow step, ``num_workers`` bounds its concurrent executions and
    ``retry_policy`` takes a LlamaIndex retry policy; ``workflow=W`` adds a free
    function (``(ev)`` or ``(ctx, ev)``, no ``self``) to workflow class ``W``.
    """
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers <= 0
    ):
        raise WorkflowValidationError("num_workers must be an integer greater than 0")
    if heartbeat_timeout is not None and (
        isinstance(heartbeat_timeout, bool)
        or not isinstance(heartbeat_timeout, int | float)
        or not 0 < heartbeat_timeout < float("inf")
    ):
        raise ValueError(
            f"heartbeat_timeout must be a number of seconds > 0, got {heartbeat_timeout!r}"
        )

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        policy = retry or RetryPolicy(
            attempts=retries + 1, wait_initial=backoff, wait_max=max_backoff
        )
        spec = StepSpec(
            name or func.__qualname__, policy, timeout, num_workers, retry_policy, heartbeat_timeout
        )
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                ex = _CURRENT_RUN.get()
                if ex is None or _CURRENT_STEP.get() is not None:
                    return func(*args, **kwargs)
                # The call index is taken now, when the coroutine is made, so
                # gather() numbers steps in program order, not completion order.
                return ex.call_step_async(spec, func, args, kwargs, ex.take_index())

            wrapper = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                ex = _CURRENT_RUN.get()
                if ex is None or _CURRENT_STEP.get() is not None:
                    return func(*args, **kwargs)
                return ex.call_step(spec, func, args, kwargs)

            wrapper = sync_wrapper
        wrapper.__durable_step__ = spec  # type: ignore[attr-defined]
        if workflow is not None:
            workflow.add_step(wrapper)
        return wrapper

    return decorate(fn) if fn is not None else decorate


def catch_error(
    fn: Callable[..., Any] | None = None,
    *,
    for_steps: list[str] | None = None,
    max_recoveries: int = 1,
) -> Any:
    """Mark a workflow step as the handler of steps that fail their last attempt: it
    receives a ``StepFailedEvent`` and may return any event (a StopEvent ends the run
    with a result; raising fails it).

    ``for_steps`` names the steps it covers (None: every step no other handler claims);
    ``max_recoveries`` bounds how often it may be entered along one chain of events
    (the count travels, journaled, with the events that follow a recovery)."""
    if (
        isinstance(max_recoveries, bool)
        or not isinstance(max_recoveries, int)
        or max_recoveries < 1
    ):
        raise WorkflowValidationError("@catch_error max_recoveries must be an integer >= 1")
    if for_steps is not None and (
        not isinstance(for_steps, list) or not all(isinstance(s, str) for s in for_steps)
    ):
        raise WorkflowValidationError(
            "@catch_error for_steps must be None or a list of step name strings"
        )

    def decorate(func: Callable[..., Any]) -> Any:
        wrapper: Any = step(num_workers=1)(func)
        wrapper.__catch_error__ = (  # read when the workflow class is built
            None if for_steps is None else tuple(for_steps),
            max_recoveries,
        )
        return wrapper

    return decorate(fn) if fn is not None else decorate
