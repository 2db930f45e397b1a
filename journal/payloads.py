"""The payload of each entry kind that stores a structured record: one builder that
writes it and one reader that reads it back.

Builders return the plain dict the entry's codec encodes (its stored shape, documented
in ``docs/explanation/journal-format.md``). Readers take a decoded payload and return a
frozen record, tolerant of keys an older version did not write: a journal reads the
same way forever. The engine writes through the builders and reads through the readers,
so a kind has one shape in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .records import ResumeRecord

__all__ = [
    "UNSET",
    "EventDelivery",
    "ResumeRecord",
    "RunFailed",
    "RunForked",
    "RunStarted",
    "StepCompleted",
    "StepFailed",
    "TimerStarted",
    "event_delivery",
    "read_continued_as",
    "read_event_delivery",
    "read_run_failed",
    "read_run_forked",
    "read_run_started",
    "read_step_completed",
    "read_step_failed",
    "read_timer_started",
    "run_completed_continued",
    "run_failed",
    "run_forked",
    "run_started",
    "step_completed",
    "step_failed",
    "timer_started",
    "workflow_step_completed",
]

UNSET: Final[Any] = object()
"""An argument not given: its key is not written (distinct from None, written as null)."""

TRACEBACK_LIMIT: Final = 8000
"""Characters of a failure's traceback kept in its ``run.failed`` entry (the last ones)."""


def _dict(payload: Any) -> Mapping[str, Any]:
    return payload if isinstance(payload, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- run.started --------------------------------------------------------------------------


def run_started(
    owner: str | None,
    *,
    queue: str | None = UNSET,
    schedule: str = UNSET,
    tick: str = UNSET,
    timeout: float | None = UNSET,
) -> dict[str, Any]:
    """``run.started``: the creating owner; a queued run's queue (and the schedule and
    tick that enqueued it), a workflow's timeout (present, possibly null, for workflows)."""
    payload: dict[str, Any] = {"owner": owner}
    for name, value in (("queue", queue), ("schedule", schedule), ("tick", tick),
                        ("timeout", timeout)):  # fmt: skip
        if value is not UNSET:
            payload[name] = value
    return payload


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A read ``run.started`` payload."""

    owner: str | None = None
    queue: str | None = None
    schedule: str | None = None
    tick: str | None = None
    timeout: float | None = None
    has_timeout: bool = False
    """Whether a timeout was written (a workflow run's, possibly null)."""


def read_run_started(payload: Any) -> RunStarted:
    """Read a decoded ``run.started`` payload."""
    d = _dict(payload)
    return RunStarted(
        owner=_str(d.get("owner")),
        queue=_str(d.get("queue")),
        schedule=_str(d.get("schedule")),
        tick=_str(d.get("tick")),
        timeout=_num(d.get("timeout")),
        has_timeout="timeout" in d,
    )


# -- run.completed ------------------------------------------------------------------------


def run_completed_continued(continued_as: str) -> dict[str, Any]:
    """``run.completed`` of a run that continued as new (a plain completion has no payload)."""
    return {"continued_as": continued_as}


def read_continued_as(payload: Any) -> str | None:
    """The continuation's run id in a decoded ``run.completed`` payload, if any."""
    return _str(_dict(payload).get("continued_as"))


# -- run.failed ---------------------------------------------------------------------------


def run_failed(
    exc: BaseException,
    *,
    step: str | None = None,
    during: str | None = None,
    traceback: str | None = None,
    diverged: bool = False,
) -> dict[str, Any]:
    """``run.failed``, one shape for every writer: the exception's type and text, the key
    of the step whose failure ended the run (or null), what was being done when it was
    not the body (``"start"``: loading the run), the traceback's tail (or null) and
    whether the run diverged from its journal."""
    return {
        "type": type(exc).__qualname__,
        "error": str(exc),
        "step": step,
        "during": during,
        "traceback": traceback[-TRACEBACK_LIMIT:] if traceback is not None else None,
        "diverged": diverged,
    }


@dataclass(frozen=True, slots=True)
class RunFailed:
    """A read ``run.failed`` payload (any shape ever written)."""

    type: str | None = None
    error: str | None = None
    step: str | None = None
    during: str | None = None
    traceback: str | None = None
    diverged: bool = False
    names_step: bool = False
    """Whether the entry says which step ended the run (``step``, possibly null: none
    did). False for a failure written before runs named it and for a start failure."""

    @property
    def message(self) -> str:
        """``Type: error``, as the run's ``error`` column says it."""
        return f"{self.type or 'error'}: {self.error or ''}"


def read_run_failed(payload: Any) -> RunFailed:
    """Read a decoded ``run.failed`` payload: today's shape, or an older one (without
    ``during``, or without ``traceback``/``diverged``/``step``)."""
    d = _dict(payload)
    return RunFailed(
        type=_str(d.get("type")),
        error=_str(d.get("error")),
        step=_str(d.get("step")),
        during=_str(d.get("during")),
        traceback=_str(d.get("traceback")),
        diverged=d.get("diverged") is True,
        names_step="step" in d and d.get("during") is None,
    )


# -- run.forked ---------------------------------------------------------------------------


def run_forked(source: str, at_seq: int, at_step: int, edits: Iterable[str]) -> dict[str, Any]:
    """``run.forked``: the run forked, the seq and checkpoint number it was forked at,
    and the state keys edited (sorted; their values follow as ``state.set`` entries)."""
    return {"from": source, "at_seq": at_seq, "at_step": at_step, "edits": sorted(edits)}


@dataclass(frozen=True, slots=True)
class RunForked:
    """A read ``run.forked`` payload."""

    source: str | None = None
    at_seq: int | None = None
    at_step: int | None = None
    edits: tuple[str, ...] = ()


def read_run_forked(payload: Any) -> RunForked:
    """Read a decoded ``run.forked`` payload."""
    d = _dict(payload)
    edits = d.get("edits")
    return RunForked(
        source=_str(d.get("from")),
        at_seq=_int(d.get("at_seq")),
        at_step=_int(d.get("at_step")),
        edits=tuple(str(e) for e in edits) if isinstance(edits, list | tuple) else (),
    )


# -- step.completed / step.failed ---------------------------------------------------------


def step_completed(result: Any, attempt: int, started: float, duration: float) -> dict[str, Any]:
    """``step.completed`` of a ``@durable`` step. The per-step hot path spells this dict
    inline (a call per step costs); ``tests/journal/test_payloads.py`` holds both equal."""
    return {"result": result, "attempt": attempt, "started": started, "duration": duration}


def workflow_step_completed(  # noqa: PLR0917 - one field each
    attempt: int,
    started: float,
    duration: float,
    consumed: str,
    emitted: list[str],
    stopped: bool,
    living: Any,
    returned: str | None = UNSET,
) -> dict[str, Any]:
    """``step.completed`` of a workflow step: the event it consumed, the names of those it
    emitted, whether it stopped the run, the run's living time; ``returned`` (the name of
    the event returned) only when the emitted ones do not tell."""
    done = {"attempt": attempt, "started": started, "duration": duration,
            "consumed": consumed, "emitted": emitted, "stopped": stopped,
            "living": living}  # fmt: skip
    if returned is not UNSET:
        done["returned"] = returned
    return done


_NOT_RETURNED: Final[Any] = ...


@dataclass(frozen=True, slots=True)
class StepCompleted:
    """A read ``step.completed`` payload, of either execution model."""

    result: Any = None
    attempt: int | None = None
    started: float | None = None
    duration: float | None = None
    consumed: str | None = None
    emitted: tuple[str, ...] = ()
    stopped: bool = False
    returned: Any = _NOT_RETURNED
    """The returned event's name (or None), or ``...`` when not written."""


def read_step_completed(payload: Any) -> StepCompleted:
    """Read a decoded ``step.completed`` payload."""
    d = _dict(payload)
    emitted = d.get("emitted")
    return StepCompleted(
        result=d.get("result"),
        attempt=_int(d.get("attempt")),
        started=_num(d.get("started")),
        duration=_num(d.get("duration")),
        consumed=_str(d.get("consumed")),
        emitted=tuple(str(e) for e in emitted) if isinstance(emitted, list | tuple) else (),
        stopped=bool(d.get("stopped")),
        returned=d.get("returned", _NOT_RETURNED),
    )


def step_failed(
    attempt: int,
    exc: BaseException,
    *,
    final: bool,
    timeout: bool = UNSET,
    handler: str = UNSET,
) -> dict[str, Any]:
    """``step.failed``: the attempt and its exception; ``timeout`` (``@durable``: whether
    the attempt timed out), ``handler`` (workflow: the ``@catch_error`` step it went to)."""
    payload: dict[str, Any] = {"attempt": attempt, "type": type(exc).__qualname__,
                               "error": str(exc)}  # fmt: skip
    if timeout is not UNSET:
        payload["timeout"] = timeout
    payload["final"] = final
    if handler is not UNSET:
        payload["handler"] = handler
    return payload


@dataclass(frozen=True, slots=True)
class StepFailed:
    """A read ``step.failed`` payload."""

    attempt: int | None = None
    type: str | None = None
    error: str | None = None
    final: bool = False
    timeout: bool = False
    handler: str | None = None

    @property
    def message(self) -> str:
        """``Type: error``."""
        return f"{self.type or 'error'}: {self.error or ''}"


def read_step_failed(payload: Any) -> StepFailed:
    """Read a decoded ``step.failed`` payload."""
    d = _dict(payload)
    return StepFailed(
        attempt=_int(d.get("attempt")),
        type=_str(d.get("type")),
        error=_str(d.get("error")),
        final=bool(d.get("final")),
        timeout=bool(d.get("timeout")),
        handler=_str(d.get("handler")),
    )


# -- timer.started ------------------------------------------------------------------------


def timer_started(deadline: float, seconds: float) -> dict[str, Any]:
    """``timer.started``: when the durable sleep ends (Unix time) and how long it was."""
    return {"deadline": deadline, "seconds": seconds}


@dataclass(frozen=True, slots=True)
class TimerStarted:
    """A read ``timer.started`` payload."""

    deadline: float | None = None
    seconds: float | None = None


def read_timer_started(payload: Any) -> TimerStarted:
    """Read a decoded ``timer.started`` payload."""
    d = _dict(payload)
    return TimerStarted(deadline=_num(d.get("deadline")), seconds=_num(d.get("seconds")))


# -- event.emitted / event.received -------------------------------------------------------


def event_delivery(
    to: str | None, event: Any, recoveries: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """``event.emitted`` / ``event.received``: the step it is for (null: any accepting
    one) and the event; ``recoveries``, the ``@catch_error`` budget spent along its chain,
    only when some was."""
    payload: dict[str, Any] = {"to": to, "event": event}
    if recoveries:
        payload["recoveries"] = dict(recoveries)
    return payload


@dataclass(frozen=True, slots=True)
class EventDelivery:
    """A read ``event.emitted`` / ``event.received`` payload."""

    to: str | None = None
    event: Any = None
    recoveries: Mapping[str, int] | None = None


def read_event_delivery(payload: Any) -> EventDelivery:
    """Read a decoded ``event.emitted`` / ``event.received`` payload."""
    d = _dict(payload)
    spent = d.get("recoveries")
    return EventDelivery(
        to=_str(d.get("to")),
        event=d.get("event"),
        recoveries=dict(spent) if isinstance(spent, Mapping) and spent else None,
    )
