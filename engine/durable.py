"""``@durable``: a function whose every call is a run that survives crashes."""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import typing
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from pydantic import BaseModel

from journal import Codec, Run, check_tags

from .context import Context
from .execution import current_execution, current_step
from .queues import Queue, enqueue, queue_name
from .registry import qualified_name, register, warn_if_local
from .runtime import Engine, RunHandle, default_engine
from .schedules import Schedule, declare

__all__ = ["DurableFunction", "durable"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
S = TypeVar("S")
# An async function's R is its coroutine; its handles hold what the coroutine returns.
_Async = Coroutine[Any, Any, T]


def _context_parameter(fn: Callable[..., Any]) -> tuple[bool, type[BaseModel] | None]:
    """Does ``fn`` take a Context first, and is it ``Context[SomeModel]``?"""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        return False, None
    first = params[0]
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    ann = hints.get(first.name, first.annotation)
    if isinstance(ann, str) and ann.replace(" ", "").startswith(("Context[", "engine.Context[")):
        raise TypeError(
            f"{qualified_name(fn)}: cannot resolve the annotation {ann!r}: define the state "
            "model at module level so the engine can find it"
        )
    origin = typing.get_origin(ann)
    if ann is Context or origin is Context:
        args = typing.get_args(ann)
        model = (
            args[0]
            if args and isinstance(args[0], type) and issubclass(args[0], BaseModel)
            else None
        )
        return True, model
    return first.name == "ctx", None


class DurableFunction(Generic[P, R]):
    """A ``@durable`` function. Call it to run it to completion; ``start()`` for a handle.

    Typed as ``DurableFunction[P, R]``: it is called, run, started and enqueued with
    the function's own parameters ``P``, a first ``Context`` parameter left out (the
    engine passes it); ``start()`` and ``enqueue()`` return a ``RunHandle[R]`` (for an
    ``async def``, ``R`` is what it returns when awaited). Calls that pass ``run_id``,
    ``queue`` or ``priority`` have their result type checked, their arguments at run
    time. A ``run_id`` names one start: the same arguments attach to the existing
    run, other arguments (or another function) raise :class:`RunIdConflict`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        engine: Engine | None = None,
        codec: Codec | None = None,
        resources: dict[str, Callable[[], Any]] | None = None,
        snapshot_every: int | None = None,
        queue: str | Queue | None = None,
        tags: Mapping[str, str] | None = None,
        schedule: str | Schedule | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        if name is None:
            warn_if_local(fn, "durable function", stacklevel=4)
        self.name = name or qualified_name(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.takes_ctx, self.state_model = _context_parameter(fn)
        self._engine = engine
        self._codec = codec
        self.resources = dict(resources or {})
        self.snapshot_every = snapshot_every
        self.queue = queue_name(queue)
        self.tags = check_tags(tags)
        self.schedule = Schedule(schedule) if isinstance(schedule, str) else schedule
        register(self.name, self)
        if self.schedule is not None:
            declare(self, self.schedule)

    @property
    def engine(self) -> Engine:
        """The engine this function runs on (the default engine unless one was given)."""
        return self._engine or default_engine()

    @property
    def codec(self) -> Codec:
        """The codec of this function's runs (the journal's default unless one was given)."""
        return self._codec or self.engine.journal.codec

    def make_resources(self) -> dict[str, Any]:
        """Call every resource factory: done on start and on each recovery."""
        return {name: factory() for name, factory in self.resources.items()}

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        ex = current_execution()
        if ex is not None and current_step() is None:
            if self.is_async:
                return ex.engine.child_async(ex, self, args, kwargs)  # type: ignore[return-value]
            return ex.engine.child_sync(ex, self, args, kwargs)  # type: ignore[no-any-return]
        if self.is_async:
            return self.engine.acall(self, args, kwargs)  # type: ignore[return-value]
        return self.engine.call(self, args, kwargs)  # type: ignore[no-any-return]

    # The options (run_id, queue, priority) cannot join P in a signature: a call
    # without them is checked against the function's parameters; a call with them
    # has its return type checked (the arguments are checked at run time).
    @overload
    def run(self, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def run(self, *args: Any, run_id: str | None, **kwargs: Any) -> R: ...
    def run(self, *args: Any, run_id: str | None = None, **kwargs: Any) -> Any:  # type: ignore[misc]
        """Run to completion under ``run_id`` (an idempotency key) and return the result."""
        if self.is_async:
            return self.engine.acall(self, args, kwargs, run_id=run_id)
        return self.engine.call(self, args, kwargs, run_id=run_id)

    @overload
    def start(
        self: DurableFunction[P, _Async[T]], *args: P.args, **kwargs: P.kwargs
    ) -> RunHandle[T]: ...
    @overload
    def start(
        self: DurableFunction[P, _Async[T]], *args: Any, run_id: str | None, **kwargs: Any
    ) -> RunHandle[T]: ...
    @overload
    def start(
        self: DurableFunction[P, _Async[T]],
        *args: Any,
        tags: Mapping[str, str] | None,
        run_id: str | None = None,
        **kwargs: Any,
    ) -> RunHandle[T]: ...
    @overload
    def start(self, *args: P.args, **kwargs: P.kwargs) -> RunHandle[R]: ...
    @overload
    def start(self, *args: Any, run_id: str | None, **kwargs: Any) -> RunHandle[R]: ...
    @overload
    def start(
        self,
        *args: Any,
        tags: Mapping[str, str] | None,
        run_id: str | None = None,
        **kwargs: Any,
    ) -> RunHandle[R]: ...
    def start(  # type: ignore[misc]
        self,
        *args: Any,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> RunHandle[Any]:
        """Start a run in the background and return its handle at once.

        Starting an existing ``run_id`` with the same arguments returns that run: it is
        never executed twice. Other arguments raise :class:`RunIdConflict`. ``tags``
        (str to str) are added to the function's own (``@durable(tags=...)``), stored
        with the run and indexed: ``journal.list_runs(tags=...)`` finds it.
        """
        return self.engine.start(self, args, kwargs, run_id=run_id, tags=tags)

    @overload
    def enqueue(
        self: DurableFunction[P, _Async[T]], *args: P.args, **kwargs: P.kwargs
    ) -> RunHandle[T]: ...
    @overload
    def enqueue(
        self: DurableFunction[P, _Async[T]],
        *args: Any,
        run_id: str | None,
        queue: str | Queue | None = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> RunHandle[T]: ...
    @overload
    def enqueue(
        self: DurableFunction[P, _Async[T]],
        *args: Any,
        queue: str | Queue | None,
        priority: int = 0,
        **kwargs: Any,
    ) -> RunHandle[T]: ...
    @overload
    def enqueue(
        self: DurableFunction[P, _Async[T]], *args: Any, priority: int, **kwargs: Any
    ) -> RunHandle[T]: ...
    @overload
    def enqueue(
        self: DurableFunction[P, _Async[T]],
        *args: Any,
        tags: Mapping[str, str] | None,
        run_id: str | None = None,
        queue: str | Queue | None = None,
        priority: int = 0,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> RunHandle[T]: ...
    @overload
    def enqueue(
        self: DurableFunction[P, _Async[T]],
        *args: Any,
        dedup_key: str | None,
        queue: str | Queue | None = None,
        priority: int = 0,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> RunHandle[T]: ...
    @overload
    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> RunHandle[R]: ...
    @overload
    def enqueue(
        self,
        *args: Any,
        run_id: str | None,
        queue: str | Queue | None = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> RunHandle[R]: ...
    @overload
    def enqueue(
        self, *args: Any, queue: str | Queue | None, priority: int = 0, **kwargs: Any
    ) -> RunHandle[R]: ...
    @overload
    def enqueue(self, *args: Any, priority: int, **kwargs: Any) -> RunHandle[R]: ...
    @overload
    def enqueue(
        self,
        *args: Any,
        tags: Mapping[str, str] | None,
        run_id: str | None = None,
        queue: str | Queue | None = None,
        priority: int = 0,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> RunHandle[R]: ...
    @overload
    def enqueue(
        self,
        *args: Any,
        dedup_key: str | None,
        queue: str | Queue | None = None,
        priority: int = 0,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> RunHandle[R]: ...
    def enqueue(  # type: ignore[misc]
        self,
        *args: Any,
        run_id: str | None = None,
        queue: str | Queue | None = None,
        priority: int = 0,
        tags: Mapping[str, str] | None = None,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> RunHandle[Any]:
        """Queue a run for a worker (``durable worker``) and return its handle at once.

        ``queue`` defaults to the function's (``@durable(queue=...)``), else
        ``"default"``; higher ``priority`` runs are claimed first. Enqueuing an
        existing ``run_id`` with the same arguments returns that run: it is never
        queued twice. Other arguments raise :class:`RunIdConflict`. ``tags`` are added
        to the function's own, as for :meth:`start`.

        ``dedup_key``: while a run of this function holding that key in the queue is
        unfinished, enqueuing with the key again returns that run (whatever the
        arguments) instead of queuing another; once it finished, the next enqueue
        queues a new run. The key of another function's unfinished run raises
        :class:`DedupKeyConflict`.
        """
        return enqueue(
            self.engine,
            self,
            args,
            kwargs,
            run_id=run_id,
            queue=queue_name(queue) or self.queue,
            priority=priority,
            tags={**self.tags, **tags} if tags else self.tags or None,
            dedup_key=dedup_key,
        )

    def launch(self, engine: Engine, run: Run, future: concurrent.futures.Future[Any]) -> None:
        """Execute a claimed run of this function in the background (recovery, forks)."""
        engine.launch(self, run, future)

    def __repr__(self) -> str:
        return f"<durable {self.name}>"


class _Decorator(Protocol):
    """What ``durable(name=...)`` returns: ``durable`` with its options bound."""

    @overload
    def __call__(self, fn: Callable[Concatenate[Context[S], P], R], /) -> DurableFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> DurableFunction[P, R]: ...


# A first parameter taking a Context is filled in by the engine: callers never pass it.
@overload
def durable(fn: Callable[Concatenate[Context[S], P], R]) -> DurableFunction[P, R]: ...
@overload
def durable(fn: Callable[P, R]) -> DurableFunction[P, R]: ...
@overload
def durable(
    *,
    name: str | None = None,
    engine: Engine | None = None,
    codec: Codec | None = None,
    resources: dict[str, Callable[[], Any]] | None = None,
    snapshot_every: int | None = None,
    queue: str | Queue | None = None,
    tags: Mapping[str, str] | None = None,
    schedule: str | Schedule | None = None,
) -> _Decorator: ...


def durable(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    engine: Engine | None = None,
    codec: Codec | None = None,
    resources: dict[str, Callable[[], Any]] | None = None,
    snapshot_every: int | None = None,
    queue: str | Queue | None = None,
    tags: Mapping[str, str] | None = None,
    schedule: str | Schedule | None = None,
) -> Any:
    """Make a function durable: each call is a journaled run that survives crashes.

    A first parameter named ``ctx`` (or annotated ``Context``) receives the run's
    :class:`Context`; callers do not pass it. ``name`` fixes the name recorded in
    the journal (default ``module:qualname``; a script run as ``python agent.py``
    records ``agent:qualname``, what a worker importing ``agent`` finds), so
    renaming the function later does not strand runs in flight. ``resources`` maps
    names to factories called on start and on recovery (never serialized). ``queue``
    is where :meth:`DurableFunction.enqueue` puts its runs. ``tags`` (str to str) are
    stored with each run and indexed. ``schedule`` (a cron expression, or a
    :class:`Schedule` with a time zone and a missed-ticks policy) makes every worker
    start a run, with no arguments, on each tick.
    """

    def decorate(func: Callable[..., Any]) -> DurableFunction[Any, Any]:
        return DurableFunction(
            func,
            name=name,
            engine=engine,
            codec=codec,
            resources=resources,
            snapshot_every=snapshot_every,
            queue=queue,
            tags=tags,
            schedule=schedule,
        )

    return decorate(fn) if fn is not None else decorate
