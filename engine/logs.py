"""Logging that a replay does not repeat.

A ``@durable`` body runs again from the top on every recovery: the journal answers its
steps, but a ``print`` or a log call between them would say the same thing once per
recovery. ``ctx.log`` and :class:`ReplayFilter` are silent while the body replays, and
tag every record they let through with the run and step it came from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from .execution import current_execution, current_step

if TYPE_CHECKING:
    from .execution import RunExecution

__all__ = ["RUN_LOGGER", "ReplayFilter", "RunLog"]

RUN_LOGGER = "durable.run"
"""The logger ``ctx.log`` writes to (records carry ``run_id`` and ``step``)."""


def _replaying(ex: RunExecution) -> bool:
    history = getattr(ex, "history", None)
    return bool(history is not None and history.replaying)


class ReplayFilter(logging.Filter):
    """Drop records logged by a run's body while it replays; tag the others.

    Add it to a handler (``handler.addFilter(ReplayFilter())``) to make any logger,
    not only ``ctx.log``, say things once per run rather than once per recovery. Records
    logged outside a run pass untouched; the others get ``run_id`` and ``step`` (the
    step's key, or None in the body).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ex = current_execution()
        if ex is None:
            return True
        if _replaying(ex):
            return False
        scope = current_step()
        record.run_id = ex.run_id
        record.step = scope.key if scope is not None else None
        return True


class RunLog(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only from 3.11
    """``ctx.log``: a logger for one run, silent while ``replaying()`` says it replays."""

    def __init__(self, run_id: str, replaying: Callable[[], bool]) -> None:
        super().__init__(logging.getLogger(RUN_LOGGER), {"run_id": run_id})
        self._run_id = run_id
        self._replaying = replaying

    def isEnabledFor(self, level: int) -> bool:
        return not self._replaying() and self.logger.isEnabledFor(level)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        scope = current_step()
        tags = {"run_id": self._run_id, "step": scope.key if scope is not None else None}
        kwargs["extra"] = {**tags, **(kwargs.get("extra") or {})}
        return msg, kwargs
