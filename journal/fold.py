"""The fold: how a run's entries reduce to its state at a seq.

This is the one definition of state shared by snapshots, time travel and
recovery. It is deliberately small and knows nothing of workflows:

- ``state.set``     key ← decoded payload
- ``state.deleted`` key removed
- ``state.appended`` the decoded payload (a list) appended to the list under key:
  a list that grows by a few items per step costs bytes linear in its growth
- ``event.emitted`` / ``event.received``  the event (payload) becomes pending under
  its id (the entry's ``key``)
- ``event.consumed`` the pending event with that id is removed

Every other kind leaves the state as it is. ``FOLD_VERSION`` changes whenever
this definition does; snapshots written under another version are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .kinds import EntryKind
from .records import Entry

__all__ = ["FOLD_VERSION", "FoldedState", "appended_items", "fold"]

FOLD_VERSION = 2

_SET = EntryKind.STATE_SET
_DELETED = EntryKind.STATE_DELETED
_APPENDED = EntryKind.STATE_APPENDED
_EMITTED = EntryKind.EVENT_EMITTED
_RECEIVED = EntryKind.EVENT_RECEIVED
_CONSUMED = EntryKind.EVENT_CONSUMED


@dataclass(slots=True)
class FoldedState:
    """A run's state at ``seq``: its key/value store and its pending (unconsumed) events."""

    seq: int = 0
    values: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """The snapshot payload: plain containers a codec can encode."""
        return {"values": self.values, "pending": self.pending}

    @classmethod
    def from_payload(cls, seq: int, payload: dict[str, Any]) -> FoldedState:
        """Inverse of :meth:`to_payload`."""
        return cls(seq=seq, values=dict(payload["values"]), pending=dict(payload["pending"]))


def fold(
    state: FoldedState, entries: Iterable[Entry], decode: Callable[[Entry], Any]
) -> FoldedState:
    """Apply ``entries`` (in seq order, starting at ``state.seq + 1``) to ``state`` in place."""
    values, pending = state.values, state.pending
    for entry in entries:
        kind = entry.kind
        if kind == _SET:
            values[entry.key or ""] = decode(entry)
        elif kind == _DELETED:
            values.pop(entry.key or "", None)
        elif kind == _APPENDED:
            values[entry.key or ""] = [*values.get(entry.key or "", []), *decode(entry)]
        elif kind in (_EMITTED, _RECEIVED):
            pending[entry.key or str(entry.seq)] = decode(entry)
        elif kind == _CONSUMED:
            pending.pop(entry.key or "", None)
        state.seq = entry.seq
    return state


def appended_items(old: Any, new: Any) -> list[Any] | None:
    """The items ``new`` adds at the end of ``old`` when both are lists and ``new``
    extends ``old``; else None (the change is journaled as a whole ``state.set``)."""
    if type(old) is not list or type(new) is not list or new is old:
        return None
    n = len(old)
    if len(new) <= n or new[:n] != old:
        return None
    return new[n:]
