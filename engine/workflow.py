"""Event-driven workflows: ``@step`` methods consume events by their type annotation.

Durable by construction: every store change and every emitted, consumed and
streamed event is journaled, a step's whole effect in one commit, and a crashed
run resumes from its latest snapshot plus the tail of its journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import types
import typing
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Union

from pydantic import BaseModel, ValidationError

from journal import Codec, ConflictError, EntryKind, Run, RunEnded, to_jsonable
from journal import payloads as P
from journal.ids import new_run_id

from .context import Context
from .errors import (
    FencedOff,
    RunCancelled,
    RunFinished,
    WorkerStopping,
    WorkflowConfigurationError,
    WorkflowRuntimeError,
    WorkflowValidationError,
    WrongFunction,
)
from .events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
)
from .queues import WAKE_CHANNEL
from .registry import qualified_name, register, resolve, warn_if_local
from .replay import ReplayReport
from .resources import ResourceManager, resource_parameters
from .runids import check_same_start
from .runtime import Engine, RunHandle, default_engine
from .services import ServiceManager
from .steps import StepSpec
from .timetravel import fork, history, state_at
from .workflow_context import CURRENT_SCOPE, WorkflowContext
from .workflow_run import CHECKPOINT_CALLBACKS, WorkflowRun, is_stream_end, new_delivery_key

if typing.TYPE_CHECKING:
    from .checkpointer import Checkpoint

__all__ = [
    "RunFinished",
    "StepInfo",
    "Workflow",
    "WorkflowCheckpoint",
    "WorkflowHandler",
    "WorkflowValidationError",
    "send_event",
]

K = EntryKind
_log = logging.getLogger(__name__)
_registered_names: set[str] = set()


@dataclass(frozen=True)
class StepInfo:
    """A workflow step: its function, policies, and the event types in and out.

    ``event_param`` and ``ctx_param`` name the parameters the event and the Context
    are passed to (found by their annotations, in any order); ``bound`` is False for
    a free function added with ``@step(workflow=W)``."""

    name: str
    fn: Callable[..., Any]
    spec: StepSpec
    accepts: tuple[type[Event], ...]
    returns: tuple[type[Event], ...]
    is_async: bool
    event_param: str = "ev"
    ctx_param: str | None = None
    bound: bool = True
    num_workers: int = 4
    resources: tuple[tuple[str, Any, Any], ...] = ()
    """``(parameter, descriptor, annotated type)`` of each ``Annotated[T, Resource()]``."""
    services: tuple[tuple[str, type, Any], ...] = ()
    """``(parameter, Workflow class, default)`` of each workflow injected into the step."""
    is_handler: bool = False
    """A ``@catch_error`` handler."""
    handles: tuple[str, ...] | None = None
    """The steps a handler covers (None: every step no other handler claims)."""
    max_recoveries: int = 1


@dataclass
class StepConfig:
    """A step's configuration as LlamaIndex exposes it on the step function."""

    accepted_events: list[Any]
    event_name: str
    return_types: list[Any]
    context_parameter: str | None
    num_workers: int
    retry_policy: Any
    resources: list[str]


def _event_types(annotation: Any) -> tuple[type[Event], ...]:
    if annotation is None or annotation is type(None):
        return ()
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _event_types(arg))
    if isinstance(annotation, type) and issubclass(annotation, Event):
        return (annotation,)
    return ()


def _context_model(annotation: Any) -> tuple[bool, type[BaseModel] | None]:
    """(is it a Context annotation, the typed state model of ``Context[Model]``)."""
    origin = typing.get_origin(annotation)
    if origin is not None and isinstance(origin, type) and issubclass(origin, Context):
        args = typing.get_args(annotation)
        model = args[0] if args and isinstance(args[0], type) else None
        return True, model if model is not None and issubclass(model, BaseModel) else None
    return isinstance(annotation, type) and issubclass(annotation, Context), None


def _step_info(
    owner: str, attr: str, wrapper: Any, *, bound: bool = True
) -> tuple[StepInfo, type[BaseModel] | None]:
    spec: StepSpec = wrapper.__durable_step__
    fn = wrapper.__wrapped__
    where = f"{owner}.{attr}"
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise WorkflowValidationError(
            f"{where}: cannot resolve its annotations ({exc}); define event classes at module level"
        ) from exc
    params = list(inspect.signature(fn).parameters.values())
    if bound and params:
        params = params[1:]  # self
    events: dict[str, tuple[type[Event], ...]] = {}
    ctx_param = None
    model = None
    resources = tuple(resource_parameters(fn))
    injected = {name for name, _, _ in resources}
    services = []
    for param in params:
        if param.name in injected:
            continue
        ann = hints.get(param.name)
        if isinstance(ann, type) and issubclass(ann, Workflow):
            default = None if param.default is inspect.Parameter.empty else param.default
            services.append((param.name, ann, default))
            continue
        is_ctx, found_model = _context_model(ann)
        if is_ctx:
            ctx_param, model = param.name, found_model
            continue
        found = _event_types(ann)
        if found:
            events[param.name] = found
    if not events:
        raise WorkflowValidationError(
            f"{where}: Step signature must have at least one parameter annotated as type Event"
        )
    if len(events) > 1:
        raise WorkflowValidationError(
            f"{where}: Step signature must contain exactly one parameter of type Event but "
            f"found {len(events)}."
        )
    if "return" not in hints:
        raise WorkflowValidationError(
            f"{where}: Return types of workflows step functions must be annotated with their type."
        )
    ((event_param, accepts),) = events.items()
    returns = _event_types(hints["return"])
    name = spec.name if spec.name != fn.__qualname__ else attr
    workers = spec.num_workers
    if workers is None:
        # A step that joins events with collect_events runs one at a time: its buffer is
        # journaled with each step's commit, and two in parallel would each miss the other's.
        workers = 1 if "collect_events" in fn.__code__.co_names else 4
    # LlamaIndex's introspection attribute (``_step_config``; ``__step_config`` before 2.0)
    config = StepConfig(
        accepted_events=list(accepts), event_name=event_param, return_types=list(returns),
        context_parameter=ctx_param, num_workers=workers, retry_policy=spec.retry_policy,
        resources=[name for name, _, _ in resources],
    )  # fmt: skip
    wrapper._step_config = config
    setattr(wrapper, "__step_config", config)
    catch = getattr(wrapper, "__catch_error__", None)
    if catch is not None and accepts != (StepFailedEvent,):
        raise WorkflowValidationError(
            f"@catch_error handler '{attr}' must accept StepFailedEvent as its event parameter."
        )
    info = StepInfo(
        name, fn, spec, accepts, returns, inspect.iscoroutinefunction(fn),
        event_param=event_param, ctx_param=ctx_param, bound=bound, num_workers=workers,
        resources=resources, services=tuple(services), is_handler=catch is not None,
        handles=catch[0] if catch is not None else None,
        max_recoveries=catch[1] if catch is not None else 1,
    )  # fmt: skip
    return info, model


def _handlers(cls: type[Workflow], steps: Mapping[str, StepInfo]) -> dict[str, str]:
    """Which ``@catch_error`` handler covers each step (scoped claims first, then the
    wildcard); WorkflowValidationError for an invalid set of handlers."""
    handlers = [s for s in steps.values() if s.is_handler]
    errors = []
    wildcards = [h for h in handlers if h.handles is None]
    if len(wildcards) > 1:
        errors.append(
            "Only one wildcard @catch_error handler is allowed per workflow, found "
            f"{len(wildcards)}: {', '.join(sorted(h.name for h in wildcards))}"
        )
    names = {h.name for h in handlers}
    owner: dict[str, str] = {}
    for handler in handlers:
        for target in handler.handles or ():
            if target not in steps:
                errors.append(
                    f"@catch_error handler '{handler.name}' lists unknown step '{target}' in "
                    "for_steps."
                )
            elif target in names:
                errors.append(
                    f"@catch_error handler '{handler.name}' cannot cover another handler step "
                    f"'{target}'."
                )
            elif target in owner:
                errors.append(
                    f"Step '{target}' is claimed by two @catch_error handlers: "
                    f"'{owner[target]}' and '{handler.name}'."
                )
            else:
                owner[target] = handler.name
    if errors:
        raise WorkflowValidationError("\n".join(errors))
    if wildcards:
        for name in steps:
            if name not in names:
                owner.setdefault(name, wildcards[0].name)
    return owner


def _config_check(cls: type[Workflow], steps: Mapping[str, StepInfo]) -> tuple[type, type]:
    """The workflow's StartEvent and StopEvent classes; WorkflowConfigurationError if it
    has none or several of either."""
    starts = {a for s in steps.values() for a in s.accepts if issubclass(a, StartEvent)}
    if not starts:
        raise WorkflowConfigurationError(
            f"{cls.__name__}: At least one Event of type StartEvent must be received by any step."
        )
    if len(starts) > 1:
        raise WorkflowConfigurationError(
            f"{cls.__name__}: Only one type of StartEvent is allowed per workflow, found "
            f"{len(starts)}: {', '.join(sorted(t.__name__ for t in starts))}"
        )
    stops = {r for s in steps.values() for r in s.returns if issubclass(r, StopEvent)}
    if not stops:
        raise WorkflowConfigurationError(
            f"{cls.__name__}: At least one Event of type StopEvent must be returned by any step."
        )
    if len(stops) > 1:
        raise WorkflowConfigurationError(
            f"{cls.__name__}: Only one type of StopEvent is allowed per workflow, found "
            f"{len(stops)}: {', '.join(sorted(t.__name__ for t in stops))}"
        )
    return next(iter(starts)), next(iter(stops))


def _validate(cls: type[Workflow], steps: Mapping[str, StepInfo]) -> None:
    """The graph checks made before a run: every produced event is consumed, no step
    accepts StopEvent, and a StopEvent is reachable from the events that enter from
    outside (the StartEvent, and a HumanResponseEvent a step accepts)."""
    _config_check(cls, steps)
    _handlers(cls, steps)

    def accepting(t: type[Event]) -> list[str]:
        return [s.name for s in steps.values() if any(issubclass(t, a) for a in s.accepts)]

    for info in steps.values():
        if any(issubclass(a, StopEvent) for a in info.accepts):
            raise WorkflowValidationError(
                f"Step '{info.name}' cannot accept StopEvent. StopEvent signals the end of the "
                "workflow. Use a different Event type instead."
            )
    unconsumed = sorted(
        {
            produced.__name__
            for info in steps.values()
            for produced in info.returns
            if not issubclass(produced, StopEvent | InputRequiredEvent) and not accepting(produced)
        }
    )
    if unconsumed:
        raise WorkflowValidationError(
            f"{cls.__name__}: The following events are produced but never consumed: "
            f"{', '.join(unconsumed)}"
        )
    seen: set[type[Event]] = set()
    frontier: list[type[Event]] = [
        a
        for s in steps.values()
        for a in s.accepts
        if issubclass(a, StartEvent | HumanResponseEvent | StepFailedEvent)
    ]
    reached_stop = False
    while frontier:
        event = frontier.pop()
        if event in seen:
            continue
        seen.add(event)
        for info in steps.values():
            if any(issubclass(event, a) for a in info.accepts):
                for produced in info.returns:
                    if issubclass(produced, StopEvent):
                        reached_stop = True
                    frontier.append(produced)
    if not reached_stop:
        raise WorkflowValidationError(
            f"{cls.__name__}: no path of steps from StartEvent (or a HumanResponseEvent) returns "
            "a StopEvent; the workflow could never finish"
        )


class Workflow:
    """Subclass with ``@step`` methods; ``run(**kwargs)`` starts a durable run.

    ``class Flow(Workflow, name="jobs:flow")`` fixes the name recorded in the journal
    (default ``module:qualname``); ``class Flow(Workflow, codec=...)`` gives every run of
    the class its codec, in every process (``Flow(codec=...)`` only in this one).

    ``timeout`` (seconds of living time, default none) fails a run that has not
    stopped in time: it counts only time the run is executing in some process,
    summed across restarts, never time dead (between a crash and its recovery) nor
    time parked waiting for an event from outside. ``resources`` maps names to factories
    called on start and on recovery; the objects reach steps as ``ctx.resources``
    and are never serialized. Recovery re-creates the workflow with ``cls()``:
    keep constructor arguments optional.
    """

    _steps: ClassVar[dict[str, StepInfo]] = {}
    _state_model: ClassVar[type[BaseModel] | None] = None
    _name: ClassVar[str] = ""
    _class_codec: ClassVar[Codec | None] = None
    _valid: ClassVar[bool] = False

    def __init_subclass__(
        cls, name: str | None = None, codec: Codec | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if codec is not None:
            cls._class_codec = codec
        steps: dict[str, StepInfo] = {}
        model = None
        for klass in reversed(cls.__mro__):
            free = vars(klass).get("_free_steps", {})
            for attr, value in [*vars(klass).items(), *free.items()]:
                if hasattr(value, "__durable_step__"):
                    bound = attr not in free
                    info, found = _step_info(cls.__name__, attr, value, bound=bound)
                    steps[info.name] = info
                    model = found or model
        cls._free_steps = {}
        cls._step_functions = {
            attr: value
            for klass in reversed(cls.__mro__)
            for attr, value in vars(klass).items()
            if hasattr(value, "__durable_step__")
        }
        cls._steps = steps
        cls._state_model = model
        cls._valid = False
        cls._handler_table = None
        # A stable name (class Flow(Workflow, name="jobs:flow")) survives moving or
        # renaming the class, and a script's workflows are not all "__main__:...".
        cls._name = name or qualified_name(cls)
        if steps:
            if name is None:
                warn_if_local(cls, "workflow")
            register(cls._name, cls)

    _free_steps: ClassVar[dict[str, Any]] = {}
    _handler_table: ClassVar[dict[str, str] | None] = None
    _step_functions: ClassVar[dict[str, Any]] = {}
    """Every step's function by name (methods and free functions), as LlamaIndex names it."""

    @classmethod
    def add_step(cls, func: Callable[..., Any]) -> None:
        """Add a free function decorated with ``@step`` as a step of this workflow
        (what ``@step(workflow=cls)`` does)."""
        if not hasattr(func, "__durable_step__"):
            raise WorkflowValidationError(
                f"Step function {getattr(func, '__name__', func)} is missing the `@step` decorator."
            )
        attr = func.__name__
        if attr in cls._steps:
            raise WorkflowValidationError(
                f"A step {attr} is already part of this workflow, please choose another name."
            )
        info, model = _step_info(cls.__name__, attr, func, bound=False)
        cls._free_steps = {**cls._free_steps, attr: func}
        cls._step_functions = {**cls._step_functions, attr: func}
        cls._steps = {**cls._steps, info.name: info}
        cls._state_model = cls._state_model or model
        cls._valid = False
        cls._handler_table = None
        if cls._name and cls._name not in _registered_names:
            register(cls._name, cls)
            _registered_names.add(cls._name)

    def __init__(
        self,
        timeout: float | None = 45.0,
        disable_validation: bool = False,
        verbose: bool = False,
        *,
        engine: Engine | None = None,
        codec: Codec | None = None,
        resources: dict[str, Callable[[], Any]] | None = None,
        resource_manager: ResourceManager | None = None,
        snapshot_every: int | None = None,
        **kwargs: Any,
    ) -> None:
        cls = type(self)
        if not cls._steps:
            raise WorkflowValidationError(f"{cls.__name__} has no @step methods")
        self.timeout = timeout
        self._disable_validation = disable_validation
        self._engine = engine
        self._codec = codec or cls._class_codec
        self.resources = dict(resources or {})
        self._resource_manager = resource_manager or ResourceManager()
        self._service_manager = ServiceManager()
        self.snapshot_every = snapshot_every
        self.verbose = verbose
        self._start_event_class: type[StartEvent] = StartEvent
        self._stop_event_class: type[StopEvent] = StopEvent
        if not disable_validation:
            self._start_event_class, self._stop_event_class = _config_check(cls, cls._steps)

    _class_services: ClassVar[dict[str, Workflow]] = {}

    def add_workflows(self, **workflows: Workflow) -> None:
        """Make ``workflows`` available to this workflow's steps: a step parameter named
        as a keyword here and annotated with a Workflow class receives that workflow.

        Also remembered for the class in this process, so a run recovered here (made
        again with ``cls()``) gets the same workflows."""
        for name, wf in workflows.items():
            self._service_manager.add(name, wf)
        type(self)._class_services = {**type(self)._class_services, **workflows}

    def _service(self, name: str, cls: type[Workflow], default: Workflow | None) -> Workflow:
        """The workflow for a step parameter: added to this instance, else to the class in
        this process, else the parameter's default, else ``cls()`` (what a process
        recovering the run without having added it can make)."""
        if name in self._service_manager:
            return self._service_manager.get(name)
        found = type(self)._class_services.get(name) or default
        return found if found is not None else cls()

    @classmethod
    def _catch_handler(cls, step: str) -> StepInfo | None:
        """The ``@catch_error`` handler covering ``step``, if any."""
        table = cls.__dict__.get("_handler_table")
        if table is None:
            table = _handlers(cls, cls._steps)
            cls._handler_table = table
        name = table.get(step)
        return cls._steps.get(name) if name is not None else None

    @property
    def _timeout(self) -> float | None:
        return self.timeout

    @property
    def _verbose(self) -> bool:
        return self.verbose

    @property
    def start_event_class(self) -> type[StartEvent]:
        """The StartEvent (sub)class the workflow's first step accepts."""
        return self._start_event_class

    @property
    def stop_event_class(self) -> type[StopEvent]:
        """The StopEvent (sub)class the workflow's steps return."""
        return self._stop_event_class

    def _validate(self) -> None:
        """The graph checks made before the first run (skipped with ``disable_validation``)."""
        cls = type(self)
        if self._disable_validation or cls._valid:
            return
        _validate(cls, cls._steps)
        cls._valid = True

    def validate(self) -> bool:
        """Check the workflow's graph now; True if it asks for human input
        (a step accepts a HumanResponseEvent or returns an InputRequiredEvent)."""
        _validate(type(self), type(self)._steps)
        return any(
            issubclass(t, HumanResponseEvent | InputRequiredEvent)
            for s in type(self)._steps.values()
            for t in (*s.accepts, *s.returns)
        )

    def _get_start_event_instance(
        self, start_event: StartEvent | None, **kwargs: Any
    ) -> StartEvent:
        if start_event is not None:
            if kwargs:
                _log.warning(
                    "Keyword arguments are not supported when 'run()' is invoked with the "
                    "'start_event' parameter. These keyword arguments will be ignored: %s",
                    kwargs,
                )
            return start_event
        try:
            return self._start_event_class(**kwargs)
        except ValidationError as exc:
            raise WorkflowRuntimeError(
                f"Failed creating a start event of type '{self._start_event_class.__name__}' "
                f"with the keyword arguments: {kwargs}"
            ) from exc

    # -- introspection ---------------------------------------------------------------------

    @classmethod
    def steps(cls) -> Mapping[str, StepInfo]:
        """The workflow's steps by name."""
        return cls._steps

    @classmethod
    def state_model(cls) -> type[BaseModel] | None:
        """The typed state model (from a step's ``ctx: Context[Model]``), if any."""
        return cls._state_model

    @classmethod
    def accepting(cls, event_type: type[Event]) -> list[str]:
        """Names of the steps that accept ``event_type``."""
        return [
            s.name for s in cls._steps.values() if any(issubclass(event_type, a) for a in s.accepts)
        ]

    @property
    def engine(self) -> Engine:
        """The engine runs of this workflow execute on."""
        return self._engine or default_engine()

    def _codec_for(self, engine: Engine) -> Codec:
        # The workflow's own codec is bound to each run it executes (Engine._bind_codec).
        return self._codec or engine.journal.codec

    # -- running ---------------------------------------------------------------------------

    def run(
        self,
        ctx: WorkflowContext | None = None,
        start_event: StartEvent | None = None,
        *,
        run_id: str | None = None,
        checkpoint_callback: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> WorkflowHandler:
        """Start a run (``start_event``, or the start event class built from ``kwargs``)
        and return its handler at once; ``await handler`` gives the result.

        ``ctx`` continues from a Context: one bound to an unfinished run attaches to that
        run; one from a finished run, from ``Context.from_dict`` or ``Context(workflow)``
        starts a new run with its store (and, for a snapshot taken mid-run, its queued
        and in-flight events and waiters instead of a new start event). The handler's
        ``ctx`` is that Context, bound to the new run.

        ``run_id`` is an idempotency key: an existing id attaches to that run,
        resuming it if it is unfinished and nobody holds it; started with another
        input, it raises :class:`RunIdConflict`. Started inside a step of
        another workflow, the run is that run's child: linked to it, with an id derived
        from the step's event, so a step run again attaches to the same child.

        ``checkpoint_callback(run_id=, last_completed_step=, input_ev=, output_ev=, ctx=)``
        (LlamaIndex's) is called, and awaited if async, after each step that returned an
        event commits, in this process."""
        self._validate()
        scope = CURRENT_SCOPE.get()
        # A workflow started inside a step runs on that step's engine unless given its
        # own: a process recovering the parent on another journal keeps the child there.
        eng = self._engine or (scope.run.engine if scope is not None else default_engine())
        seed = None
        if ctx is not None:
            if not isinstance(ctx, WorkflowContext):
                raise TypeError(f"ctx must be a workflow Context, not {type(ctx).__name__}")
            live = ctx._unfinished_run()
            if live is not None:
                handler = WorkflowHandler(self, eng, live, eng.holding(live), ctx=ctx)
                return handler
            seed = ctx._seed()
        parent = None
        if scope is not None and run_id is None:
            scope.children += 1
            parent = scope.run.run_id
            run_id = f"{parent}/{scope.step}:{scope.delivery}#{scope.children}"
        start = (
            None
            if seed is not None and seed.running
            else self._get_start_event_instance(start_event, **kwargs)
        )
        journal = eng.journal
        codec = self._codec_for(eng)
        entries = [
            journal.entry(
                K.RUN_STARTED, P.run_started(eng.owner, timeout=self.timeout), codec=codec
            ),
        ]
        if seed is not None:
            entries += [
                journal.entry(K.STATE_SET, value, key=key, codec=codec, path=f"store[{key!r}]")
                for key, value in seed.values.items()
            ]
            entries += [
                journal.entry(K.EVENT_EMITTED if item.get("to") else K.EVENT_RECEIVED,
                              P.event_delivery(item.get("to"), item["event"],
                                               item.get("recoveries")),
                              key=key, codec=codec, path="queued event")
                for key, item in seed.pending.items()
            ]  # fmt: skip
        if start is not None:
            entries += [
                journal.entry(K.EVENT_EMITTED, P.event_delivery(to, start), key=new_delivery_key(),
                              codec=codec, path="start event")
                for to in self.accepting(type(start))
            ]  # fmt: skip
        meta = None
        if eng.telemetry is not None:  # OpenTelemetry: the trace the run joins
            meta = eng.telemetry._creation_meta("start", type(self)._name, run_id)
        request = journal.new_run(
            run_id, name=type(self)._name, kind="workflow", input=start, codec=codec,
            status="running", entries=entries, owner=eng.owner, lease_seconds=eng.lease_seconds,
            snapshot_every=self.snapshot_every, parent_run_id=parent, meta=meta,
        )  # fmt: skip

        def vet(found: Run) -> None:  # the run asked for, not another with its id
            if parent is None:
                check_same_start(journal, found, request.run)
            if found.name != type(self)._name:
                raise WrongFunction(
                    f"run {found.run_id!r} belongs to {found.name!r}, not {type(self)._name!r}",
                    run_id=found.run_id,
                )

        run, future, execute = eng.create_or_claim(request, vet)
        handler = WorkflowHandler(self, eng, run.run_id, future, ctx=ctx)
        if checkpoint_callback is not None:
            CHECKPOINT_CALLBACKS[(id(eng), run.run_id)] = checkpoint_callback
        if execute:
            assert future is not None
            self._launch_on(eng, run, future, handler)
        return handler

    def _launch_on(
        self,
        eng: Engine,
        run: Run,
        future: concurrent.futures.Future[Any],
        handler: WorkflowHandler | None,
    ) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        coro = self._execute(eng, run, future, handler)
        if loop is not None:
            task = loop.create_task(coro)
            task.add_done_callback(_observe)
            if handler is not None:
                handler._task = task
        else:
            asyncio.run_coroutine_threadsafe(coro, eng.background_loop())

    @classmethod
    def launch(cls, engine: Engine, run: Run, future: concurrent.futures.Future[Any]) -> None:
        """Resume a claimed run of this workflow in the background (recovery, forks).

        The instance is made with ``cls()`` but keeps the timeout the run was started
        with (journaled in its ``run.started`` entry); its living time so far is read from
        the journal, so the timeout counts across restarts."""
        instance = cls()
        try:
            engine.bind_codec(run, instance._codec)
            instance.timeout = _started_timeout(engine, run, instance.timeout)
        except Exception as exc:
            engine.setup_failed(run, exc, future)  # fails the run with the reason
            return
        asyncio.run_coroutine_threadsafe(
            instance._execute(engine, run, future, None), engine.background_loop()
        )

    async def _execute(
        self,
        eng: Engine,
        run: Run,
        future: concurrent.futures.Future[Any],
        handler: WorkflowHandler | None,
    ) -> Any:
        try:
            eng.bind_codec(run, self._codec)
            state = eng.journal.state_at(run.run_id)
            wr = WorkflowRun(
                eng, self, run, state, resources={k: f() for k, f in self.resources.items()}
            )
        except Exception as exc:
            # Before its first step (state, codec, resources): a run started here fails
            # with the reason; one being resumed (a worker, recover, a fork) is marked and
            # left for a process that can (this one may lack what it needs).
            eng.setup_failed(run, exc, future, resumed=handler is None)
            return None
        try:
            if handler is not None:
                handler._attach(wr)
            eng.attach(run, wr)
            if eng.telemetry is not None:  # OpenTelemetry: the run's span, ended in forget
                eng.telemetry._run_begun(wr, resumed=handler is None)
            result = await wr.main()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if isinstance(exc, WorkerStopping):
                eng.let_go(run.run_id, run.epoch)
            # The outcome travels to the handler through the future; re-raising here
            # would let a dying run's exception stop the whole event loop.
            if not future.done():
                future.set_exception(exc)
            return None
        else:
            if not future.done():
                future.set_result(result)
            return result
        finally:
            eng.forget(run.run_id)

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoints(self, run_id: str, *, step: str | None = None) -> list[WorkflowCheckpoint]:
        """A checkpoint after every completed step of the run (optionally of one step)."""
        eng = self.engine
        out = []
        stop = self.stop_event_class.__name__
        for cp in history(run_id, engine=eng):
            if cp.kind != K.STEP_COMPLETED or (step is not None and cp.name != step):
                continue
            if cp.run_id != run_id:  # a fork's source's: as in LlamaIndex, its own only
                continue
            emitted = tuple(cp.detail.get("emitted", ())) + (
                (stop,) if cp.detail.get("stopped") else ()
            )
            out.append(
                WorkflowCheckpoint(
                    workflow=self, run_id=run_id, number=cp.number, seq=cp.seq, step=cp.name or "",
                    consumed=str(cp.detail.get("consumed", "")), emitted=emitted,
                    source_run_id=cp.run_id,
                )
            )  # fmt: skip
        return out

    def run_from(
        self,
        checkpoint: WorkflowCheckpoint | Checkpoint,
        ctx_serializer: Any = None,
        checkpoint_callback: Callable[..., Any] | None = None,
        *,
        state: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> WorkflowHandler:
        """Start a new run from ``checkpoint`` (a fork), optionally with ``state`` edits.
        ``ctx_serializer`` is accepted for LlamaIndex's signature: a fork needs none."""
        if checkpoint_callback is not None:
            run_id = run_id or new_run_id()
            CHECKPOINT_CALLBACKS[(id(self.engine), run_id)] = checkpoint_callback
        handle = fork(
            checkpoint.run_id,
            at=checkpoint.number,
            state=state,
            new_run_id=run_id,
            engine=self.engine,
        )
        return WorkflowHandler(self, self.engine, handle.run_id, handle._future)

    # -- replay ------------------------------------------------------------------------------

    @classmethod
    def replay_run(cls, engine: Engine, run: Run, *, until: int | None = None) -> ReplayReport:
        """Check a recorded run against today's steps without executing anything: every
        recorded step must still exist and accept the event it consumed, and every event it
        emitted must still have a step that accepts it."""
        journal = engine.journal
        report = ReplayReport(run_id=run.run_id, name=run.name, ok=True)
        types_by_delivery: dict[str, str] = {}
        emitted_in_group: list[tuple[int, str, str]] = []
        for entry in journal.read(run.run_id, run.horizon + 1):
            if entry.kind in (K.EVENT_EMITTED, K.EVENT_RECEIVED):
                payload = journal.decode_entry(entry)
                types_by_delivery[entry.key or ""] = type(payload["event"]).__name__
                if entry.kind == K.EVENT_EMITTED:
                    emitted_in_group.append(
                        (entry.seq, payload["to"], type(payload["event"]).__name__)
                    )
            if entry.kind != K.STEP_COMPLETED:
                continue
            problem = cls._check_step(
                entry.step or "", types_by_delivery.get(entry.key or ""), emitted_in_group
            )
            emitted_in_group = []
            if problem:
                report.ok = False
                report.error = f"non-deterministic replay at seq {entry.seq}: {problem}"
                report.divergence = {
                    "seq": entry.seq,
                    "recorded": f"step {entry.step}",
                    "got": problem,
                }
                return report
            report.calls_replayed += 1
            if until is not None and report.calls_replayed >= until:
                report.stopped = f"stopped after {until} steps"
                report.state = {
                    k: to_jsonable(v)
                    for k, v in journal.state_at(run.run_id, entry.seq).values.items()
                }
                return report
        report.state = {k: to_jsonable(v) for k, v in journal.state_at(run.run_id).values.items()}
        return report

    @classmethod
    def _check_step(
        cls, step: str, consumed: str | None, emitted: list[tuple[int, str, str]]
    ) -> str | None:
        by_name = {t.__name__: t for s in cls._steps.values() for t in (*s.accepts, *s.returns)}
        info = cls._steps.get(step)
        if info is None:
            return f"the journal recorded step {step!r}, which {cls.__name__} no longer has"
        if consumed is not None and not any(
            a.__name__ == consumed or (consumed in by_name and issubclass(by_name[consumed], a))
            for a in info.accepts
        ):
            return f"step {step!r} no longer accepts {consumed}, which it consumed"
        for _, to, event_name in emitted:
            target = cls._steps.get(to)
            if target is None or not any(
                a.__name__ == event_name
                or (event_name in by_name and issubclass(by_name[event_name], a))
                for a in target.accepts
            ):
                return f"{event_name} was delivered to step {to!r}, which no longer accepts it"
        return None


def _started_timeout(engine: Engine, run: Run, default: float | None) -> float | None:
    """The ``timeout`` in the run's ``run.started`` entry; ``default`` if that entry was
    compacted away or the run is a fork (whose first entry is ``run.forked``)."""
    if run.horizon > 0 or run.last_seq < 1:
        return default
    journal = engine.journal
    first = journal.read_one(run.run_id, 1)
    if first.kind != K.RUN_STARTED:
        return default
    started = P.read_run_started(journal.decode_entry(first))
    return started.timeout if started.has_timeout else default


def _observe(task: asyncio.Task[Any]) -> None:
    # The outcome reaches the handler through its future; this only keeps asyncio
    # from warning that the task's exception was never retrieved.
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class WorkflowCheckpoint:
    """The state of a workflow run after one completed step."""

    workflow: Workflow
    run_id: str
    number: int
    seq: int
    step: str
    consumed: str
    emitted: tuple[str, ...]
    source_run_id: str

    @property
    def state(self) -> dict[str, Any]:
        """The store as it was after this step (the engine's own keys left out)."""
        view = state_at(self.run_id, step=self.number, engine=self.workflow.engine)
        return {k: v for k, v in view.values.items() if not k.startswith("@")}


class WorkflowHandler(RunHandle[Any]):
    """A started workflow run: ``await handler`` for the result, ``stream_events()``
    for progress, ``send_event()`` for human input, ``checkpoints`` after each step."""

    def __init__(
        self,
        workflow: Workflow,
        engine: Engine,
        run_id: str,
        future: concurrent.futures.Future[Any] | None,
        *,
        ctx: WorkflowContext | None = None,
    ) -> None:
        super().__init__(engine, run_id, future)
        self.workflow = workflow
        self._codec = workflow._codec
        self._task: asyncio.Task[Any] | None = None
        self._run: WorkflowRun | None = None
        self._ctx = ctx if ctx is not None else WorkflowContext(workflow)
        self._ctx._bind(workflow, engine, run_id)
        self._streaming = False

    def _attach(self, wr: WorkflowRun) -> None:
        self._run = wr

    def __await__(self) -> Any:
        return self._result_async().__await__()

    async def _result_async(self) -> Any:
        if self._future is not None:
            try:
                return await asyncio.wrap_future(self._future)
            except (FencedOff, asyncio.CancelledError):
                pass  # another worker took the run over: its outcome is in the journal
        return await asyncio.get_running_loop().run_in_executor(None, self.result)

    def is_done(self) -> bool:
        """True once the run has ended (completed, failed or cancelled)."""
        if self._future is not None:
            return self._future.done()
        return self.engine.journal.get_run(self.run_id).finished

    def done(self) -> bool:
        """Same as :meth:`is_done` (the handler is awaitable like a future)."""
        return self.is_done()

    def exception(self) -> BaseException | None:
        """The exception the run ended with (None if it completed or is still running)."""
        if self._future is not None:
            if not self._future.done():
                return None
            return self._future.exception()
        run = self.engine.journal.get_run(self.run_id)
        if run.status in ("failed", "cancelled"):
            try:
                self.result()
            except Exception as exc:
                return exc
        return None

    @property
    def is_running(self) -> bool:
        """True while the run has not ended."""
        return not self.is_done()

    async def cancel_run(self) -> None:
        """Cancel the run (journaled); a run executing in this process stops now (its
        steps in flight are dropped uncommitted), so ``exception()`` soon says so."""
        self.cancel()
        wr = self._run
        if wr is not None and wr.loop is not None and not wr.loop.is_closed():
            wr.cancel_requested.set()
            error = RunCancelled(f"run {self.run_id!r} was cancelled", run_id=self.run_id)
            wr.loop.call_soon_threadsafe(wr._finish_with, error)
        await asyncio.sleep(0)

    async def stream_events(self, expose_internal: bool = False) -> AsyncIterator[Event]:
        """Events the run's steps write to the stream, each once the commit that journals
        it returned, until the run ends (this process). One consumer per handler: a
        second call raises :class:`WorkflowRuntimeError`."""
        if self._streaming:
            raise WorkflowRuntimeError(
                f"run {self.run_id!r}: its events are already being streamed; a handler's "
                "stream has one consumer"
            )
        self._streaming = True
        while self._run is None or self._run.loop is None:
            if self._future is not None and self._future.done():
                return
            await asyncio.sleep(0.005)
        wr = self._run
        assert wr.loop is not None
        same_loop = asyncio.get_running_loop() is wr.loop
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if same_loop:
            wr.listen(queue)
        else:
            wr.loop.call_soon_threadsafe(wr.listen, queue)
        while True:
            if same_loop:
                item = await queue.get()
            else:
                assert wr.loop is not None
                item = await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(queue.get(), wr.loop)
                )
            if is_stream_end(item):
                return
            yield item

    def send_event(self, event: Event, step: str | None = None) -> str:
        """Deliver ``event`` to the run (see :func:`send_event`)."""
        return send_event(self.run_id, event, engine=self.engine, step=step)

    @property
    def ctx(self) -> WorkflowContext:
        """The run's Context: ``ctx.store``, ``ctx.send_event(...)``, ``ctx.to_dict()``."""
        return self._ctx

    @property
    def checkpoints(self) -> list[WorkflowCheckpoint]:
        """The run's checkpoints so far."""
        return self.workflow.checkpoints(self.run_id)


def send_event(
    run_id: str,
    event: Event | Mapping[str, Any],
    *,
    engine: Engine | None = None,
    step: str | None = None,
) -> str:
    """Deliver ``event`` to a workflow run from any process (human in the loop).

    The event is journaled at once; a step waiting for it (``ctx.wait_for_event``)
    or the steps that accept its type get it, in whichever process runs the run
    (a parked run is resumed by the next worker that claims it). A mapping is
    turned into the workflow's event class named by its ``"type"`` key. Returns
    the id the event was journaled under. ``step`` delivers it to that step only.
    """
    eng = engine or default_engine()
    journal = eng.journal
    run = journal.get_run(run_id)
    if run.kind != "workflow":
        raise WrongFunction(
            f"run {run_id!r} is not a workflow run; send_event goes to workflows", run_id=run_id
        )
    if run.finished:
        raise RunFinished(f"run {run_id!r} is {run.status}; it takes no more events", run_id=run_id)
    if not isinstance(event, Event):
        event = _event_from_mapping(run, event)
    key = f"x{new_delivery_key()[1:]}"
    ex = eng.execution_of(run_id)
    codec = ex.codec if isinstance(ex, WorkflowRun) else eng.codec_of(run)
    entry = journal.entry(K.EVENT_RECEIVED, P.event_delivery(step, event), key=key,
                          codec=codec, path="event")  # fmt: skip
    while True:
        # Appended after the seq whose status was read: a wait that parks the run
        # meanwhile conflicts, so a parked run always gets "pending" with its answer
        # (and is claimed at once if its holder died), never stays parked beside it.
        try:
            journal.append(run_id, [entry], expected_seq=run.last_seq,
                           status="pending" if run.status == "waiting" else None)  # fmt: skip
            break
        except RunEnded as exc:  # it ended since it was read: final, nothing was written
            raise RunFinished(
                f"run {run_id!r} is {exc.status}; it takes no more events", run_id=run_id
            ) from exc
        except ConflictError:
            run = journal.get_run(run_id)
            if run.finished:
                raise RunFinished(
                    f"run {run_id!r} is {run.status}; it takes no more events", run_id=run_id
                ) from None
    journal.notify(WAKE_CHANNEL, run_id)  # a parked run resumes now, not at the next poll
    if isinstance(ex, WorkflowRun):
        ex.poke()
    return key


def _event_from_mapping(run: Run, data: Mapping[str, Any]) -> Event:
    target = resolve(run.name, run_id=run.run_id)
    name = data.get("type")
    if not isinstance(name, str):
        raise ValueError('an event given as a mapping needs a "type" naming its Event class')
    known: dict[str, type[Event]] = {
        t.__name__: t
        for s in getattr(target, "_steps", {}).values()
        for t in (*s.accepts, *s.returns)
    }
    known.update(
        {t.__name__: t for t in (HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent)}
    )
    cls = known.get(name)
    if cls is None:
        raise ValueError(
            f"unknown event type {name!r} for {run.name}; known: {', '.join(sorted(known))}"
        )
    return cls.model_validate({k: v for k, v in data.items() if k != "type"})
