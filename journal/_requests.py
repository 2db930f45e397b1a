"""What a write asks of the journal: a run to create, one run's append, and ``UNSET``
(leave a column as it is)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from .errors import RunEnded
from .records import NewEntry, Run

__all__ = ["UNSET", "AppendRequest", "CreateRequest", "only_entries", "run_ended"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final[Any] = _Unset()
"""Marks an optional field of an update as "leave as it is" (``None`` means NULL)."""


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A run to create in a (possibly batched) write: see :meth:`Journal.new_run`."""

    run: Run
    entries: Sequence[NewEntry]
    meta: str
    lease_seconds: float | None = None
    """With an owner: the lease, measured by the journal's clock when the row is written."""


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One run's part of a (possibly batched) append: the entries and the run update.

    ``output`` must already be encoded (see :meth:`Journal.encode`); ``UNSET``
    fields leave the run row as it is.
    """

    run_id: str
    entries: Sequence[NewEntry]
    expected_seq: int
    epoch: int | None = None
    status: str | None = None
    output: Any = UNSET
    error: Any = UNSET
    wake_at: Any = UNSET
    release: bool = False


def only_entries(req: AppendRequest) -> bool:
    """True if ``req`` changes nothing of the run's row but its entries."""
    return (
        req.status is None
        and req.output is UNSET
        and req.error is UNSET
        and req.wake_at is UNSET
        and not req.release
    )


def run_ended(run_id: str, status: str) -> RunEnded:
    """The error for a write to a run that has ended."""
    return RunEnded(
        f"run {run_id!r} is {status}: a finished run takes no more entries or changes; "
        "nothing was written",
        run_id=run_id,
        status=status,
    )
