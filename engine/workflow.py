"""Event-driven workflows: ``@step`` methods consume events by their type annotation.

Durable by construction: every store change and every emitted, consumed and
streamed event is journaled, a step's whole effect in one commit, and a crashed
run resumes from its latest snapshot plus the tail of its journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import types
import typing
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Union

from pydantic import BaseModel

from journal import Codec, ConflictError, EntryKind, Run, RunEnded, to_jsonable

from .context import Context
from .errors import EngineError, FencedOff, WorkerStopping, WrongFunction
from .events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from .queues import WAKE_CHANNEL
from .registry import qualified_name, register, resolve, warn_if_local
from .replay import ReplayReport
from .runids import check_same_start
from .runtime import Engine, RunHandle, default_engine
from .steps import StepSpec
from .timetravel import fork, history, state_at
from .workflow_context import CURRENT_SCOPE
from .workflow_run import WorkflowRun, is_stream_end, new_delivery_key

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


class WorkflowValidationError(EngineError, TypeError):
    """A workflow's steps do not form a valid graph (raised when the class is defined)."""


class RunFinished(EngineError):
    """The run has already ended: it takes no more events."""


@dataclass(frozen=True)
class StepInfo:
    """A workflow step: its function, policies, and the event types in and out."""

    name: str
    fn: Callable[..., Any]
    spec: StepSpec
    accepts: tuple[type[Event], ...]
    returns: tuple[type[Event], ...]
    is_async: bool


def _event_types(annotation: Any) -> tuple[type[Event], ...]:
    if annotation is None or annotation is type(None):
        return ()
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _event_types(arg))
    if isinstance(annotation, type) and issubclass(annotation, Event):
        return (annotation,)
    return ()


def _step_info(cls: type, attr: str, wrapper: Any) -> tuple[StepInfo, type[BaseModel] | None]:
    spec: StepSpec = wrapper.__durable_step__
    fn = wrapper.__wrapped__
    where = f"{cls.__name__}.{attr}"
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise WorkflowValidationError(
            f"{where}: cannot resolve its annotations ({exc}); define event classes at module level"
        ) from exc
    params = list(inspect.signature(fn).parameters)[1:]  # after self
    accepts: tuple[type[Event], ...] = ()
    model = None
    for name in params:
        ann = hints.get(name)
        found = _event_types(ann)
        if found:
            accepts = found
        elif typing.get_origin(ann) is Context:
            args = typing.get_args(ann)
            if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
                model = args[0]
    if not accepts:
        raise WorkflowValidationError(
            f"{where}: a step needs a parameter annotated with the Event type(s) it accepts"
        )
    if "return" not in hints:
        raise WorkflowValidationError(
            f"{where}: annotate the return type with the Event type(s) it may return (or None)"
        )
    returns = _event_types(hints["return"])
    name = spec.name if spec.name != fn.__qualname__ else attr
    info = StepInfo(name, fn, spec, accepts, returns, inspect.iscoroutinefunction(fn))
    return info, model


def _validate(cls: type[Workflow], steps: Mapping[str, StepInfo]) -> None:
    def accepting(t: type[Event]) -> list[str]:
        return [s.name for s in steps.values() if any(issubclass(t, a) for a in s.accepts)]

    if not accepting(StartEvent):
        raise WorkflowValidationError(f"{cls.__name__}: no step accepts StartEvent")
    for info in steps.values():
        for produced in info.returns:
            if issubclass(produced, StopEvent | InputRequiredEvent):
                continue
            if not accepting(produced):
                raise WorkflowValidationError(
                    f"{cls.__name__}.{info.name} returns {produced.__name__}, which no step accepts"
                )
    seen: set[type[Event]] = set()
    frontier: list[type[Event]] = [StartEvent]
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
            f"{cls.__name__}: no path of steps from StartEvent returns a StopEvent; the "
            "workflow could never finish"
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

    def __init_subclass__(
        cls, name: str | None = None, codec: Codec | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if codec is not None:
            cls._class_codec = codec
        steps: dict[str, StepInfo] = {}
        model = None
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if hasattr(value, "__durable_step__"):
                    info, found = _step_info(cls, attr, value)
                    steps[info.name] = info
                    model = found or model
        if not steps:
            return  # an abstract base: its subclasses define the steps
        _validate(cls, steps)
        cls._steps = steps
        cls._state_model = model
        # A stable name (class Flow(Workflow, name="jobs:flow")) survives moving or
        # renaming the class, and a script's workflows are not all "__main__:...".
        if name is None:
            warn_if_local(cls, "workflow")
        cls._name = name or qualified_name(cls)
        register(cls._name, cls)

    def __init__(
        self,
        timeout: float | None = None,
        *,
        engine: Engine | None = None,
        codec: Codec | None = None,
        resources: dict[str, Callable[[], Any]] | None = None,
        snapshot_every: int | None = None,
        verbose: bool = False,
    ) -> None:
        if not type(self)._steps:
            raise WorkflowValidationError(f"{type(self).__name__} has no @step methods")
        self.timeout = timeout
        self._engine = engine
        self._codec = codec or type(self)._class_codec
        self.resources = dict(resources or {})
        self.snapshot_every = snapshot_every
        self.verbose = verbose

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
        self, *, run_id: str | None = None, start_event: StartEvent | None = None, **kwargs: Any
    ) -> WorkflowHandler:
        """Start a run (``StartEvent(**kwargs)``) and return its handler at once.

        ``run_id`` is an idempotency key: an existing id attaches to that run,
        resuming it if it is unfinished and nobody holds it; started with another
        input, it raises :class:`RunIdConflict`. Started inside a step of
        another workflow, the run is that run's child: linked to it, with an id derived
        from the step's event, so a step run again attaches to the same child."""
        eng = self.engine
        parent = None
        scope = CURRENT_SCOPE.get()
        if scope is not None and run_id is None:
            scope.children += 1
            parent = scope.run.run_id
            run_id = f"{parent}/{scope.step}:{scope.delivery}#{scope.children}"
        start = start_event or StartEvent(**kwargs)
        journal = eng.journal
        codec = self._codec_for(eng)
        entries = [
            journal.entry(
                K.RUN_STARTED, {"owner": eng.owner, "timeout": self.timeout}, codec=codec
            ),
            *(
                journal.entry(K.EVENT_EMITTED, {"to": to, "event": start}, key=new_delivery_key(),
                              codec=codec, path="start event")
                for to in self.accepting(type(start))
            ),
        ]  # fmt: skip
        with eng._lock:
            request = journal.new_run(
                run_id, name=type(self)._name, kind="workflow", input=start, codec=codec,
                status="running", entries=entries, owner=eng.owner, lease_seconds=eng.lease_seconds,
                snapshot_every=self.snapshot_every, parent_run_id=parent,
            )  # fmt: skip
            run, created = journal.create(request)
            future: concurrent.futures.Future[Any] | None = None
            execute = created
            if not created:
                if parent is None:
                    check_same_start(journal, run, request.run)
                if run.name != type(self)._name:
                    raise WrongFunction(
                        f"run {run.run_id!r} belongs to {run.name!r}, not {type(self)._name!r}",
                        run_id=run.run_id,
                    )
                future = eng._running.get(run.run_id)
                if not run.finished and future is None:
                    claimed = eng._claim_existing(run)
                    if claimed is not None:
                        run, future = claimed
                        execute = True
            if created:
                future = eng._hold(run)
        handler = WorkflowHandler(self, eng, run.run_id, future)
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
            asyncio.run_coroutine_threadsafe(coro, eng._background_loop())

    @classmethod
    def launch(cls, engine: Engine, run: Run, future: concurrent.futures.Future[Any]) -> None:
        """Resume a claimed run of this workflow in the background (recovery, forks).

        The instance is made with ``cls()`` but keeps the timeout the run was started
        with (journaled in its ``run.started`` entry); its living time so far is read from
        the journal, so the timeout counts across restarts."""
        instance = cls()
        try:
            engine._bind_codec(run, instance._codec)
            instance.timeout = _started_timeout(engine, run, instance.timeout)
        except Exception as exc:
            engine._setup_failed(run, exc, future)  # fails the run with the reason
            return
        asyncio.run_coroutine_threadsafe(
            instance._execute(engine, run, future, None), engine._background_loop()
        )

    async def _execute(
        self,
        eng: Engine,
        run: Run,
        future: concurrent.futures.Future[Any],
        handler: WorkflowHandler | None,
    ) -> Any:
        try:
            eng._bind_codec(run, self._codec)
            state = eng.journal.state_at(run.run_id)
            wr = WorkflowRun(
                eng, self, run, state, resources={k: f() for k, f in self.resources.items()}
            )
        except Exception as exc:
            # Before its first step (state, codec, resources): a run started here fails
            # with the reason; one being resumed (a worker, recover, a fork) is marked and
            # left for a process that can (this one may lack what it needs).
            eng._setup_failed(run, exc, future, resumed=handler is None)
            return None
        try:
            if handler is not None:
                handler._attach(wr)
            eng._executions[run.run_id] = wr
            eng._ensure_heartbeat()
            eng._resumed(run)
            result = await wr.main()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if isinstance(exc, WorkerStopping):
                eng._let_go(run.run_id, run.epoch)
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
            eng._finished(run.run_id)

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoints(self, run_id: str, *, step: str | None = None) -> list[WorkflowCheckpoint]:
        """A checkpoint after every completed step of the run (optionally of one step)."""
        eng = self.engine
        out = []
        for cp in history(run_id, engine=eng):
            if cp.kind != K.STEP_COMPLETED or (step is not None and cp.name != step):
                continue
            out.append(
                WorkflowCheckpoint(
                    workflow=self, run_id=run_id, number=cp.number, seq=cp.seq, step=cp.name or "",
                    consumed=str(cp.detail.get("consumed", "")),
                    emitted=tuple(cp.detail.get("emitted", ())),
                    source_run_id=cp.run_id,
                )
            )  # fmt: skip
        return out

    def run_from(
        self,
        checkpoint: WorkflowCheckpoint,
        *,
        state: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> WorkflowHandler:
        """Start a new run from ``checkpoint`` (a fork), optionally with ``state`` edits."""
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
    payload = journal.decode_entry(first)
    if not isinstance(payload, dict) or "timeout" not in payload:
        return default
    timeout = payload["timeout"]
    return None if timeout is None else float(timeout)


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
    ) -> None:
        super().__init__(engine, run_id, future)
        self.workflow = workflow
        self._codec = workflow._codec
        self._task: asyncio.Task[Any] | None = None
        self._run: WorkflowRun | None = None

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

    async def stream_events(self) -> AsyncIterator[Event]:
        """Events the run's steps write to the stream, each once the commit that journals
        it returned, until the run ends (this process)."""
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

    def send_event(self, event: Event) -> str:
        """Deliver ``event`` to the run (see :func:`send_event`)."""
        return send_event(self.run_id, event, engine=self.engine)

    @property
    def ctx(self) -> WorkflowHandler:
        """``handler.ctx.send_event(...)``, as in event-driven workflow libraries."""
        return self

    @property
    def checkpoints(self) -> list[WorkflowCheckpoint]:
        """The run's checkpoints so far."""
        return self.workflow.checkpoints(self.run_id)


def send_event(
    run_id: str, event: Event | Mapping[str, Any], *, engine: Engine | None = None
) -> str:
    """Deliver ``event`` to a workflow run from any process (human in the loop).

    The event is journaled at once; a step waiting for it (``ctx.wait_for_event``)
    or the steps that accept its type get it, in whichever process runs the run
    (a parked run is resumed by the next worker that claims it). A mapping is
    turned into the workflow's event class named by its ``"type"`` key. Returns
    the id the event was journaled under.
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
    ex = eng._executions.get(run_id)
    codec = ex.codec if isinstance(ex, WorkflowRun) else eng._codec_of(run)
    entry = journal.entry(K.EVENT_RECEIVED, {"to": None, "event": event}, key=key,
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
