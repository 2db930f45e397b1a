"""Events of event-driven workflows: pydantic models, routed to steps by type.

An event is also a small mapping: keyword arguments that are not declared fields are
kept as its data (``ev["k"]``, ``ev.k``, ``ev.get("k")``, ``"k" in ev``, ``keys()``,
``values()``, ``items()``, ``len(ev)``, ``ev._data``, ``ev.to_dict()``), as in
LlamaIndex workflows. That data is stored as pydantic extras, so the journal's codecs
round-trip it with the declared fields.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Event", "HumanResponseEvent", "InputRequiredEvent", "StartEvent", "StopEvent"]


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
