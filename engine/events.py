"""Events of event-driven workflows: pydantic models, routed to steps by type."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Event", "HumanResponseEvent", "InputRequiredEvent", "StartEvent", "StopEvent"]


class Event(BaseModel):
    """Base class of workflow events. Subclass it with typed fields; steps receive an
    event by the type annotation of their event parameter."""

    model_config = ConfigDict(extra="allow")

    def __getattr__(self, name: str) -> Any:
        # StartEvent(topic=...) keeps undeclared fields as extras; reading them as
        # attributes is what users of event-driven workflows expect.
        extra = self.__pydantic_extra__
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")


class StartEvent(Event):
    """The event a run starts with: carries the keyword arguments given to ``run()``."""


class StopEvent(Event):
    """Returning it ends the run; ``result`` is the run's result."""

    result: Any = None


class InputRequiredEvent(Event):
    """Streamed to ask a human for input (see ``ctx.wait_for_event``)."""

    prefix: str = ""


class HumanResponseEvent(Event):
    """A human's answer, delivered with ``send_event``."""

    response: Any = None
