"""Events of event-driven workflows: pydantic models, routed to steps by type.

An event is also a small mapping: keyword arguments that are not declared fields are
kept as its data (``ev["k"]``, ``ev.k``, ``ev.get("k")``, ``"k" in ev``, ``keys()``,
``values()``, ``items()``, ``len(ev)``, ``ev._data``, ``ev.to_dict()``), as in
LlamaIndex workflows. That data is stored as pydantic extras, so the journal's codecs
round-trip it with the declared fields.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import typing
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator

__all__ = [
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "StartEvent",
    "StepFailedEvent",
    "StopEvent",
    "WorkflowFailedEvent",
]


class Event(BaseModel):
    """Base class of workflow events. Subclass it with typed fields; steps receive an
    event by the type annotation of their event parameter."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    def __init__(self, **params: Any) -> None:
        # Private attributes given as keywords (``Ev(_secret=1)``) are set after
        # validation: pydantic would otherwise take them for data.
        private = {k: params.pop(k) for k in list(params) if k in self.__private_attributes__}
        super().__init__(**params)
        for name, value in private.items():
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        if name in type(self).__private_attributes__:
            return super().__getattr__(name)  # type: ignore[misc]
        extra = self.__pydantic_extra__
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def _data(self) -> dict[str, Any]:
        """The event's undeclared data (what the mapping methods read and write)."""
        extra = self.__pydantic_extra__
        if extra is None:  # only before __init__ finished
            return {}
        return extra

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        """The data under ``key``, or ``default``."""
        return self._data.get(key, default)

    def keys(self) -> KeysView[str]:
        """The data's keys."""
        return self._data.keys()

    def values(self) -> ValuesView[Any]:
        """The data's values."""
        return self._data.values()

    def items(self) -> ItemsView[str, Any]:
        """The data's (key, value) pairs."""
        return self._data.items()

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self._data)

    def __bool__(self) -> bool:
        return True  # an event with no data is still an event (``if ev:``)

    def to_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The event's undeclared data."""
        return self._data


class StartEvent(Event):
    """The event a run starts with: carries the keyword arguments given to ``run()``.

    Subclass it with declared fields to type a workflow's input; the workflow's
    ``start_event_class`` is the one its steps accept."""


class StopEvent(Event):
    """Returning it ends the run. For ``StopEvent`` itself the run's result is
    ``result``; for a subclass, the result is the event instance."""

    result: Any = None

    def __init__(self, result: Any = None, **params: Any) -> None:
        super().__init__(result=result, **params)

    def __str__(self) -> str:
        return str(self.result)


class InputRequiredEvent(Event):
    """Asks a human for input. Returned from a step it is written to the stream (and
    the run waits for a :class:`HumanResponseEvent`); see also ``ctx.wait_for_event``."""

    prefix: str = ""


class HumanResponseEvent(Event):
    """A human's answer, delivered with ``send_event``."""

    response: Any = None


def exception_record(exc: BaseException) -> dict[str, str]:
    """An exception as the journal keeps it: its class's import path and its message."""
    cls = type(exc)
    return {"exception_type": f"{cls.__module__}.{cls.__qualname__}", "exception_message": str(exc)}


def exception_from_record(data: Any) -> Exception:
    """The exception :func:`exception_record` describes, rebuilt without its traceback: its
    own class when that imports and takes a message, else ``Exception(message)``. Only an
    Exception subclass is ever called, so a crafted record runs no other code."""
    if isinstance(data, Exception):
        return data
    if not isinstance(data, dict):
        return Exception(str(data))
    message = str(data.get("exception_message", ""))
    try:
        cls = _import_class(str(data.get("exception_type", "")))
        if isinstance(cls, type) and issubclass(cls, Exception):
            made = cls(message)
            if isinstance(made, Exception):
                return made
    except Exception:
        pass
    return Exception(message)


def _import_class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    found: Any = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


def _event_record(event: Event) -> dict[str, Any]:
    cls = type(event)
    return {
        "event_type": f"{cls.__module__}.{cls.__qualname__}",
        "event": event.model_dump(by_alias=True, round_trip=True),
    }


def _event_from_record(value: Any) -> Event:
    """The event back with its own class when that imports (and is an Event), else a
    plain Event holding its data."""
    if isinstance(value, Event):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("event"), dict):
        raise ValueError(f"expected an Event, got {type(value).__name__}")
    try:
        cls = _import_class(str(value.get("event_type", "")))
    except Exception:
        cls = None
    if isinstance(cls, type) and issubclass(cls, Event):
        return cls.model_validate(value["event"])
    return Event(**value["event"])


StoredException = Annotated[
    Exception,
    PlainSerializer(exception_record, return_type=dict[str, str]),
    PlainValidator(exception_from_record),
]
StoredEvent = Annotated[
    Event,
    PlainSerializer(_event_record, return_type=dict[str, Any]),
    PlainValidator(_event_from_record),
]


class StepFailedEvent(Event):
    """Delivered to a ``@catch_error`` handler when a step failed its last attempt: which
    step, the event it was given, the exception (rebuilt from class and message when read
    back from the journal), how many attempts it had and for how long, and when it
    failed."""

    step_name: str
    input_event: StoredEvent
    exception: StoredException
    attempts: int
    elapsed_seconds: float
    failed_at: dt.datetime


class WorkflowFailedEvent(StopEvent):
    """Streamed as the run's last event when a step failed for good (no retry left and no
    ``@catch_error`` handler, or the handler failed); ``await handler`` then raises."""

    step_name: str
    exception: StoredException
    attempts: int
    elapsed_seconds: float


def _plain_signature(cls: type[Event]) -> None:
    # The signature shows ``exception: Exception``, not the Annotated serializers (whose
    # repr carries memory addresses, unstable in the generated reference).
    sig = inspect.signature(cls)
    params = [
        p.replace(annotation=typing.get_args(p.annotation)[0])
        if typing.get_origin(p.annotation) is Annotated
        else p
        for p in sig.parameters.values()
    ]
    cls.__signature__ = sig.replace(parameters=params)


_plain_signature(StepFailedEvent)
_plain_signature(WorkflowFailedEvent)
