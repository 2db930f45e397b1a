"""What a workflow step sees: ``ctx.store``, ``send_event``, ``collect_events``,
``write_event_to_stream`` and ``wait_for_event``.

A step's changes go to a scope of its own and reach the run's shared state only
when the step's commit (its consumed event, mutations and emitted events, in one
transaction) succeeds: a failed or crashed attempt leaves no trace.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import copy
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from journal import EntryKind, NewEntry, appended_items

from .context import Context
from .errors import ContextSerdeError, ContextStateError, WorkflowRuntimeError
from .events import Event
from .retry import RetryInfo
from .serializers import BaseSerializer, JsonSerializer

if TYPE_CHECKING:
    from .workflow_run import WorkflowRun

__all__ = ["DictState", "StepScope", "Store", "WorkflowContext"]

K = EntryKind


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Any = _Missing()
INTERNAL = "@"
"""Prefix of the engine's own keys in a workflow's store (collect buffers, waiters)."""


class StepScope:
    """One attempt of one step on one delivered event: its pending changes."""

    def __init__(self, run: WorkflowRun, step: str, delivery: str, event: Event) -> None:
        self.run = run
        self.step = step
        self.delivery = delivery
        self.event = event
        self.writes: dict[str, Any] = {}
        self.deletes: set[str] = set()
        self.sent: list[tuple[Event, str | None]] = []
        self.streamed: list[Event] = []
        self.consumed: list[str] = []
        self.waits = 0
        self.children = 0
        self.locks: list[Any] = []
        self.recoveries: dict[str, int] = {}
        """``@catch_error`` handler entries along the chain of events this step is on."""
        self.retry = RetryInfo(0, 0.0, None, None)
        self.beat: float | None = None
        """time.monotonic() of the attempt's last ``ctx.heartbeat`` (set from any thread)."""
        self.abandoned = False
        """Set once the attempt was failed as hung while its code still runs."""

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.writes:
            return self.writes[key]
        if key in self.deletes or key not in self.run.values:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return self.run.values[key]

    def set(self, key: str, value: Any) -> None:
        # Encode now so a value the codec cannot encode fails at this line; only what
        # will be journaled (the appended items, for a list extended at its end).
        added = appended_items(self.writes.get(key, self.run.values.get(key)), value)
        journaled = value if added is None else added
        self.run.journal.encode(journaled, codec=self.run.codec, path=f"store[{key!r}]")
        self.writes[key] = value
        self.deletes.discard(key)

    def delete(self, key: str) -> None:
        self.writes.pop(key, None)
        self.deletes.add(key)

    def entries(self) -> list[NewEntry]:
        """The state changes as entries, for the step's commit."""
        j, codec = self.run.journal, self.run.codec
        out = []
        for k, v in self.writes.items():
            added = appended_items(self.run.values.get(k), v)
            kind, payload = (K.STATE_SET, v) if added is None else (K.STATE_APPENDED, added)
            out.append(
                j.entry(kind, payload, key=k, step=self.step, codec=codec, path=f"store[{k!r}]")
            )
        out += [
            j.entry(K.STATE_DELETED, key=k, step=self.step, codec=codec)
            for k in sorted(self.deletes)
            if k in self.run.values
        ]
        return out


CURRENT_SCOPE: contextvars.ContextVar[StepScope | None] = contextvars.ContextVar(
    "durable_workflow_step", default=None
)
"""The workflow step executing here: a workflow run started inside it is its child."""


class _PathNotFound(KeyError, ValueError):
    """A store path that does not exist (a KeyError, and the ValueError LlamaIndex raises)."""


def _step_into(obj: Any, segment: str) -> Any:
    if isinstance(obj, dict):
        return obj[segment]
    if isinstance(obj, list | tuple):
        with contextlib.suppress(ValueError):
            return obj[int(segment)]
    return getattr(obj, segment)


def _assign(obj: Any, segment: str, value: Any) -> None:
    if isinstance(obj, dict):
        obj[segment] = value
    elif isinstance(obj, list):
        obj[int(segment)] = value
    else:
        setattr(obj, segment, value)


class _Seed:
    """The state of a Context that is not bound to a run (built before a run, or
    restored with ``from_dict``): the store, the queued events, and whether the
    snapshot was taken mid-run (then the next run continues it, with no new start)."""

    def __init__(
        self,
        values: dict[str, Any] | None = None,
        pending: dict[str, dict[str, Any]] | None = None,
        running: bool = False,
    ) -> None:
        self.values = dict(values or {})
        self.pending = dict(pending or {})
        self.running = running

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.values:
            return self.values[key]
        if default is _MISSING:
            raise KeyError(key)
        return default

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)

    def keys(self) -> builtins.set[str]:
        return builtins.set(self.values)


class _Finished:
    """A bound run's store, read-only: from the live run in this process, else the journal."""

    def __init__(self, ctx: WorkflowContext) -> None:
        self._ctx = ctx

    def _values(self) -> dict[str, Any]:
        return self._ctx._folded()[0]

    def get(self, key: str, default: Any = _MISSING) -> Any:
        values = self._values()
        if key in values:
            return values[key]
        if default is _MISSING:
            raise KeyError(key)
        return default

    def set(self, key: str, value: Any) -> None:
        raise self._ctx._read_only()

    def delete(self, key: str) -> None:
        raise self._ctx._read_only()

    def keys(self) -> builtins.set[str]:
        return builtins.set(self._values())


def _keys_of(backend: Any) -> set[str]:
    if isinstance(backend, StepScope):
        return (set(backend.run.values) | set(backend.writes)) - backend.deletes
    keys: set[str] = backend.keys()
    return keys


class Store:
    """``ctx.store``: the run's key/value state (async, as in LlamaIndex workflows).

    Paths may be dotted (``"user.profile.name"``): the first segment is the journaled
    key, the rest walk dicts, lists and attributes inside its value. Inside a step,
    changes are journaled with the step's completion."""

    def __init__(self, scope: Any, model: type[BaseModel] | None) -> None:
        self._scope = scope
        self._model = model

    def _backend(self) -> Any:
        scope = self._scope
        return scope._store_backend() if isinstance(scope, WorkflowContext) else scope

    def _get(self, path: str, default: Any = _MISSING) -> Any:
        if not path:
            raise ValueError("a store path cannot be empty")
        backend = self._backend()
        if path in _keys_of(backend):  # a key holding dots is itself first
            return backend.get(path)
        head, *rest = path.split(".")
        try:
            value = backend.get(head)
            for segment in rest:
                value = _step_into(value, segment)
        except (KeyError, IndexError, AttributeError, TypeError) as exc:
            if default is not _MISSING:
                return default
            raise _PathNotFound(f"Path '{path}' not found in state") from exc
        return value

    def _set(self, path: str, value: Any) -> None:
        if not path:
            raise ValueError("a store path cannot be empty")
        head, *rest = path.split(".")
        if head.startswith(INTERNAL):
            raise KeyError(f"keys starting with {INTERNAL!r} are reserved for the engine")
        backend = self._backend()
        keys = _keys_of(backend)
        if rest and (path in keys or head not in keys):
            # A dotted path walks into an existing value; otherwise it is one key, so
            # keys that hold dots (file names, URLs) keep working as they always did.
            head, rest = path, []
        if rest:
            # The journal records whole top-level values: change a copy, set it whole.
            root = copy.deepcopy(backend.get(head, None))
            if root is None:
                root = {}
            current = root
            for segment in rest[:-1]:
                try:
                    current = _step_into(current, segment)
                except (KeyError, IndexError, AttributeError, TypeError):
                    nested: dict[str, Any] = {}
                    _assign(current, segment, nested)
                    current = nested
            _assign(current, rest[-1], value)
            value = root
        backend.set(head, value)

    async def get(self, path: str, default: Any = _MISSING) -> Any:
        """The value at ``path`` (or ``default``; a KeyError/ValueError if none is given)."""
        return self._get(path, default)

    async def set(self, path: str, value: Any) -> None:
        """Set ``path``: journaled with this step's completion."""
        self._set(path, value)

    async def delete(self, key: str) -> None:
        """Remove ``key``."""
        self._backend().delete(key)

    async def clear(self) -> None:
        """Remove every key (a typed state goes back to its model's defaults)."""
        backend = self._backend()
        for key in _keys_of(backend):
            if not key.startswith(INTERNAL):
                backend.delete(key)
        if self._model is not None:
            await self.set_state(self._model())

    def get_sync(self, key: str, default: Any = _MISSING) -> Any:
        """``get`` for synchronous steps."""
        return self._get(key, default)

    def set_sync(self, key: str, value: Any) -> None:
        """``set`` for synchronous steps."""
        self._set(key, value)

    async def get_state(self) -> BaseModel:
        """The state as a model instance (a copy): the typed state of ``Context[Model]``,
        else a :class:`DictState` holding every key."""
        backend = self._backend()
        if self._model is None:
            return DictState(**dict(self.items()))
        model = self._model
        data = {name: backend.get(name) for name in model.model_fields if name in _keys_of(backend)}
        instance: BaseModel = model.model_validate(data)
        return instance

    async def set_state(self, state: BaseModel) -> None:
        """Replace the state with ``state`` (every field, or every key of a DictState)."""
        if self._model is not None and not isinstance(state, self._model):
            raise ContextStateError(
                f"set_state takes a {self._model.__name__}, got {type(state).__name__}"
            )
        if isinstance(state, DictState):
            for key in list(_keys_of(self._backend())):
                if not key.startswith(INTERNAL) and key not in state:
                    self._backend().delete(key)
            for key, value in state.items():
                self._set(key, value)
            return
        for name in type(state).model_fields:
            self._set(name, getattr(state, name))

    @contextlib.asynccontextmanager
    async def edit_state(self) -> AsyncIterator[Any]:
        """``async with ctx.store.edit_state() as state:`` edit the state; what changed
        is journaled (validated by the model) on exit."""
        before = await self.get_state()
        state = before.model_copy(deep=True)
        yield state
        if isinstance(state, DictState):
            await self.set_state(state)
            return
        validated = type(state).model_validate(state.model_dump())
        for name in type(state).model_fields:
            new = getattr(validated, name)
            if new != getattr(before, name):
                self._set(name, new)

    def items(self) -> Iterator[tuple[str, Any]]:
        """Visible (key, value) pairs, the engine's own keys left out."""
        backend = self._backend()
        for key in sorted(_keys_of(backend)):
            if not key.startswith(INTERNAL):
                yield key, backend.get(key)


class DictState(Event):
    """The state of a workflow without a typed model, as ``get_state`` returns it:
    its keys are the store's (``state["k"]``, ``state.k``, ``state.get("k")``)."""


class WorkflowContext(Context[Any]):
    """The Context of a workflow run: handed to steps, and ``handler.ctx``.

    ``Context(workflow)`` builds one before a run (give it to ``workflow.run(ctx=)``);
    ``to_dict()`` and ``Context.from_dict(workflow, data)`` move a snapshot of a run
    (store, queued and in-flight events, waiters) into a new run on any journal.
    Inside a step, store changes are journaled with the step's completion; outside
    one, the store of a bound run is read-only."""

    def __init__(
        self, scope: Any = None, model: type[BaseModel] | None = None, **kwargs: Any
    ) -> None:
        workflow = kwargs.pop("workflow", None)
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        if isinstance(scope, StepScope):
            self._scope: Any = scope
            self._workflow: Any = scope.run.workflow
            self._engine: Any = scope.run.engine
            self._run_id: str | None = scope.run.run_id
        else:
            if workflow is None:
                workflow = scope
            self._scope = None
            self._workflow = workflow
            self._engine = None
            self._run_id = None
            self._seed_state = _Seed()
            model = model or (type(workflow).state_model() if workflow is not None else None)
        self.store = Store(self if self._scope is None else self._scope, model)
        self.state = self.store

    # -- outside a step: binding, snapshots -------------------------------------------

    def _store_backend(self) -> Any:
        if self._run_id is None:
            return self._seed_state
        return _Finished(self)

    def _read_only(self) -> ContextStateError:
        return ContextStateError(
            f"run {self._run_id!r}: its store changes only inside its steps, where they are "
            "journaled; to continue a finished run with another store, give "
            "Context.from_dict(workflow, ctx.to_dict()) edited to workflow.run(ctx=...)",
            run_id=self._run_id,
        )

    def _bind(self, workflow: Any, engine: Any, run_id: str) -> None:
        if self._scope is None:
            self._workflow, self._engine, self._run_id = workflow, engine, run_id

    def _folded(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]], bool]:
        """(values, pending events, unfinished) of the context's run or seed."""
        if self._run_id is None:
            seed = self._seed_state
            return seed.values, seed.pending, seed.running
        live = self._engine.execution_of(self._run_id)
        if live is not None and getattr(live, "workflow", None) is not None and not live.finished:
            return dict(live.values), dict(live.pending), True
        journal = self._engine.journal
        state = journal.state_at(self._run_id)
        return state.values, state.pending, not journal.get_run(self._run_id).finished

    def _unfinished_run(self) -> str | None:
        if self._run_id is None:
            return None
        return None if self._engine.journal.get_run(self._run_id).finished else self._run_id

    def _seed(self) -> _Seed:
        """What a new run started with this context begins from."""
        values, pending, running = self._folded()
        if self._run_id is not None and not running:
            # A finished run continued: its store, without what belonged to its events.
            values = {
                k: v
                for k, v in values.items()
                if not k.startswith((f"{INTERNAL}wait/", f"{INTERNAL}attempts/"))
            }
            return _Seed(values, {}, False)
        return _Seed(values, pending, running)

    @property
    def is_running(self) -> bool:
        """True while the context's run (or the run its snapshot was taken from) is unfinished."""
        return self._folded()[2]

    def to_dict(self, serializer: BaseSerializer | None = None) -> dict[str, Any]:
        """A portable snapshot: the store, the queued and in-flight events and the
        waiters, each value a string made by ``serializer`` (default JsonSerializer).
        :class:`ContextSerdeError` (a ValueError) names a value it cannot serialize."""
        ser = serializer or JsonSerializer()
        values, pending, running = self._folded()
        state = {}
        for key, value in values.items():
            try:
                state[key] = ser.serialize(value)
            except ContextSerdeError as exc:
                raise ContextSerdeError(f"store[{key!r}]: {exc}", path=f"store[{key!r}]") from exc
        queued = []
        for key, item in pending.items():
            try:
                event = ser.serialize(item["event"])
            except ContextSerdeError as exc:
                raise ContextSerdeError(f"queued event {key!r}: {exc}", path=key) from exc
            entry = {"id": key, "step": item.get("to"), "event": event}
            if item.get("recoveries"):  # a @catch_error budget spent along its chain
                entry["recoveries"] = dict(item["recoveries"])
            queued.append(entry)
        return {
            "version": SNAPSHOT_VERSION,
            "workflow": type(self._workflow)._name if self._workflow is not None else None,
            "run_id": self._run_id,
            "is_running": running,
            "serializer": type(ser).__name__,
            "state": state,
            "queued": queued,
        }

    @classmethod
    def from_dict(
        cls, workflow: Any, data: dict[str, Any], serializer: BaseSerializer | None = None
    ) -> WorkflowContext:
        """A Context holding the snapshot ``data`` (``to_dict``'s), for ``workflow.run(ctx=)``."""
        ser = serializer or JsonSerializer()
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            raise ContextSerdeError(
                "not a workflow Context snapshot of this engine (made by ctx.to_dict(), "
                f"version {SNAPSHOT_VERSION})"
            )
        try:
            values = {k: ser.deserialize(v) for k, v in dict(data.get("state", {})).items()}
            pending = {
                str(q["id"]): {"to": q.get("step"), "event": ser.deserialize(q["event"])}
                for q in data.get("queued", [])
            }
            for q in data.get("queued", []):
                spent = q.get("recoveries")
                if spent:
                    pending[str(q["id"])]["recoveries"] = {str(k): int(v) for k, v in spent.items()}
        except ContextSerdeError:
            raise
        except Exception as exc:
            raise ContextSerdeError(f"cannot restore the Context snapshot: {exc}") from exc
        steps = type(workflow).steps()
        for key, item in pending.items():
            if not isinstance(item["event"], Event):
                raise ContextSerdeError(f"queued item {key!r} is not an Event")
            if item["to"] is not None and item["to"] not in steps:
                raise ContextSerdeError(
                    f"queued event {key!r} is for step {item['to']!r}, which "
                    f"{type(workflow).__name__} does not have"
                )
        ctx = cls(workflow)
        ctx._seed_state = _Seed(values, pending, bool(data.get("is_running")))
        return ctx

    # -- what a step (or the handler) uses --------------------------------------------

    @property
    def run_id(self) -> str:
        """This run's id."""
        if self._run_id is None:
            raise ContextStateError("this Context is not bound to a run yet")
        return self._run_id

    @property
    def resources(self) -> Any:
        """Transient objects made by the resource factories on start and on recovery."""
        return self._scope.run.resources

    @property
    def history_size(self) -> int:
        """Entries journaled so far."""
        return int(self._scope.run.seq)

    def send_event(self, event: Event, step: str | None = None) -> None:
        """Emit ``event`` to the steps accepting its type (or to ``step``): from a step,
        at its commit; from outside (``handler.ctx``), journaled now and delivered to
        the run; before a run, queued for it."""
        if not isinstance(event, Event):
            raise TypeError(f"send_event takes an Event, got {type(event).__name__}")
        if (
            step is not None
            and self._workflow is not None
            and step not in type(self._workflow).steps()
        ):
            raise WorkflowRuntimeError(f"Step {step} does not exist")
        if self._scope is not None:
            self._scope.sent.append((event, step))
        elif self._run_id is None:
            key = f"x{uuid.uuid4().hex[:16]}"
            self._seed_state.pending[key] = {"to": step, "event": event}
        else:
            from .workflow import send_event  # noqa: PLC0415 - workflow imports this module

            send_event(self._run_id, event, engine=self._engine, step=step)

    def write_event_to_stream(self, event: Event) -> None:
        """Stream ``event`` to ``handler.stream_events()``: journaled with the step's
        commit (or its next ``wait_for_event``) and shown once that commit returns, so
        a failed attempt's events are never shown."""
        self._in_step("write_event_to_stream").streamed.append(event)

    def collect_events(self, event: Event, expected: list[type[Event]]) -> list[Event] | None:
        """Buffer ``event``; once one of each ``expected`` type is buffered, return them
        in that order (and clear the buffer), else None. The buffer is journaled."""
        scope = self._in_step("collect_events")
        result: list[Event] | None = scope.run.collect(scope, event, expected)
        return result

    async def wait_for_event(
        self,
        event_type: type[Event],
        waiter_event: Event | None = None,
        waiter_id: str | None = None,
        requirements: dict[str, Any] | None = None,
        timeout: float | None = 2000,
    ) -> Event:
        """Wait for an event of ``event_type`` (matching ``requirements``) sent with
        ``send_event``; ``waiter_event`` is streamed once the wait is journaled. The
        run is marked waiting; if the process exits, the run is resumed by whichever
        worker claims it after the event arrives, and this step runs again from its
        start (so put side effects after the wait)."""
        scope = self._in_step("wait_for_event")
        event: Event = await scope.run.wait_for(
            scope, event_type, requirements or {}, timeout, waiter_event
        )
        return event

    def heartbeat(self, details: Any = None) -> None:
        """Inside a step: say the attempt is alive, with ``details`` (JSON) of its
        progress. Keeps a step with ``heartbeat_timeout`` from being failed as dead;
        the last details of each step show in ``durable show`` and the web view.
        Callable from a sync step's thread."""
        scope = self._in_step("heartbeat")
        scope.run.heartbeat(scope, details)

    def retry_info(self) -> RetryInfo:
        """The executing step's retry state: ``retry_number`` (0 on the first attempt),
        seconds since the first attempt, the previous attempt's exception and when it
        failed. Journaled: a recovered run goes on counting."""
        retry: RetryInfo = self._in_step("retry_info").retry
        return retry

    def _in_step(self, what: str) -> StepScope:
        if self._scope is None:
            raise ContextStateError(f"ctx.{what}() is only available inside a step")
        scope: StepScope = self._scope
        return scope

    # A completed workflow step is never re-run, so inside one these need no journal.
    def now(self) -> dt.datetime:
        """The current UTC time."""
        return dt.datetime.now(dt.timezone.utc)

    def uuid(self) -> uuid.UUID:
        """A random UUID."""
        return uuid.uuid4()

    def random(self) -> float:
        """A random float in [0, 1)."""
        return random.random()

    def sleep(self, seconds: float) -> Any:
        """``await ctx.sleep(s)``."""
        return asyncio.sleep(seconds)

    @property
    def replaying(self) -> bool:
        """Workflow steps never replay: completed ones are skipped on recovery."""
        return False

    def __repr__(self) -> str:
        step = self._scope.step if self._scope is not None else None
        return f"WorkflowContext(run_id={self._run_id!r}, step={step!r})"


SNAPSHOT_VERSION = 1
"""Version of the dict ``WorkflowContext.to_dict`` makes."""
