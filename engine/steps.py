"""``@step``: a memoized, journaled unit of work inside a durable run."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from .execution import _CURRENT_RUN, _CURRENT_STEP
from .policies import RetryPolicy

__all__ = ["StepSpec", "step"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A step's name and policies, as given to ``@step``."""

    name: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    num_workers: int = 1


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
    num_workers: int = 1,
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
    num_workers: int = 1,
) -> Any:
    """Mark a function as a step: inside a durable run each call is journaled and,
    once completed, never executed again (its recorded result is returned).

    ``retries`` extra attempts with exponential ``backoff`` (or a full
    :class:`RetryPolicy`), and ``timeout`` seconds per attempt. Outside a run the
    function is called as it is. Works on ``def`` and ``async def`` functions.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        policy = retry or RetryPolicy(
            attempts=retries + 1, wait_initial=backoff, wait_max=max_backoff
        )
        spec = StepSpec(name or func.__qualname__, policy, timeout, num_workers)
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
        return wrapper

    return decorate(fn) if fn is not None else decorate
