"""What a workflow step sees: ``ctx.store``, ``send_event``, ``collect_events``,
``write_event_to_stream`` and ``wait_for_event``.

A step's changes go to a scope of its own and reach the run's shared state only
when the step's commit (its consumed event, mutations and emitted events, in one
transaction) succeeds: a failed or crashed attempt leaves no trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from journal import EntryKind, NewEntry, appended_items

from .context import Context
from .events import Event

if TYPE_CHECKING:
    from .workflow_run import WorkflowRun

__all__ = ["StepScope", "Store", "WorkflowContext"]

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


class Store:
    """``ctx.store``: the run's key/value state (async, as in event-driven workflows)."""

    def __init__(self, scope: StepScope, model: type[BaseModel] | None) -> None:
        self._scope = scope
        self._model = model

    async def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value under ``key`` (or ``default``; KeyError if none is given)."""
        return self._scope.get(key, default)

    async def set(self, key: str, value: Any) -> None:
        """Set ``key``: journaled with this step's completion."""
        if key.startswith(INTERNAL):
            raise KeyError(f"keys starting with {INTERNAL!r} are reserved for the engine")
        self._scope.set(key, value)

    async def delete(self, key: str) -> None:
        """Remove ``key``."""
        self._scope.delete(key)

    def get_sync(self, key: str, default: Any = _MISSING) -> Any:
        """``get`` for synchronous steps."""
        return self._scope.get(key, default)

    def set_sync(self, key: str, value: Any) -> None:
        """``set`` for synchronous steps."""
        self._scope.set(key, value)

    async def get_state(self) -> BaseModel:
        """The typed state (``Context[MyState]``) as a model instance (a copy)."""
        model = self._require_model()
        data = {
            name: self._scope.get(name)
            for name in model.model_fields
            if self._scope.get(name, None) is not None or name in self._scope.run.values
        }
        instance: BaseModel = model.model_validate(data)
        return instance

    @contextlib.asynccontextmanager
    async def edit_state(self) -> AsyncIterator[Any]:
        """``async with ctx.store.edit_state() as state:`` edit the typed state; the
        fields that changed are journaled (validated by the model) on exit."""
        before = await self.get_state()
        state = before.model_copy(deep=True)
        yield state
        validated = type(state).model_validate(state.model_dump())
        for name in type(state).model_fields:
            new = getattr(validated, name)
            if new != getattr(before, name):
                self._scope.set(name, new)

    def _require_model(self) -> type[BaseModel]:
        if self._model is None:
            raise TypeError(
                "this workflow has no typed state: annotate a step's ctx as Context[Model]"
            )
        return self._model

    def items(self) -> Iterator[tuple[str, Any]]:
        """Visible (key, value) pairs, the engine's own keys left out."""
        keys = (set(self._scope.run.values) | set(self._scope.writes)) - self._scope.deletes
        for key in sorted(keys):
            if not key.startswith(INTERNAL):
                yield key, self._scope.get(key)


class WorkflowContext(Context[Any]):
    """The Context handed to workflow steps."""

    def __init__(self, scope: StepScope, model: type[BaseModel] | None) -> None:
        self._scope = scope
        self.store = Store(scope, model)
        self.state = self.store

    @property
    def run_id(self) -> str:
        """This run's id."""
        return self._scope.run.run_id

    @property
    def resources(self) -> Any:
        """Transient objects made by the resource factories on start and on recovery."""
        return self._scope.run.resources

    @property
    def history_size(self) -> int:
        """Entries journaled so far."""
        return self._scope.run.seq

    def send_event(self, event: Event, step: str | None = None) -> None:
        """Emit ``event`` to the steps accepting its type (or to ``step``) at commit."""
        if not isinstance(event, Event):
            raise TypeError(f"send_event takes an Event, got {type(event).__name__}")
        self._scope.sent.append((event, step))

    def write_event_to_stream(self, event: Event) -> None:
        """Stream ``event`` to ``handler.stream_events()``: journaled with the step's
        commit (or its next ``wait_for_event``) and shown once that commit returns, so
        a failed attempt's events are never shown."""
        self._scope.streamed.append(event)

    def collect_events(self, event: Event, expected: list[type[Event]]) -> list[Event] | None:
        """Buffer ``event``; once one of each ``expected`` type is buffered, return them
        in that order (and clear the buffer), else None. The buffer is journaled."""
        return self._scope.run.collect(self._scope, event, expected)

    async def wait_for_event(
        self,
        event_type: type[Event],
        *,
        requirements: dict[str, Any] | None = None,
        timeout: float | None = None,
        waiter_event: Event | None = None,
    ) -> Event:
        """Wait for an event of ``event_type`` (matching ``requirements``) sent with
        ``send_event``. The run is marked waiting; if the process exits, the run is
        resumed by whichever worker claims it after the event arrives, and this step
        runs again from its start (so put side effects after the wait)."""
        return await self._scope.run.wait_for(
            self._scope, event_type, requirements or {}, timeout, waiter_event
        )

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
        return f"WorkflowContext(run_id={self.run_id!r}, step={self._scope.step!r})"
