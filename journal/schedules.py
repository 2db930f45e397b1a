"""Stored schedules: rows of the ``schedules`` table, read and written for the engine.

The journal knows nothing of cron: it keeps each schedule's definition (sealed by a
checksum, like a run's row) and the next tick to fire, which workers move on with a
compare-and-set so that two of them never both advance from the same tick.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace as _replace
from typing import TYPE_CHECKING, Any

from ._schema import SCHEDULE_FIELDS, SCHEDULE_SEALED, run_checksum
from .errors import ScheduleConflict, ScheduleCorrupted, ScheduleNotFound
from .records import ScheduleRecord

if TYPE_CHECKING:
    from .store import Journal

__all__ = ["Schedules"]

_DEFINITION = ("target", "cron", "timezone", "missed", "codec", "input", "tags", "queue")
"""What makes two schedules of one name the same schedule."""


def _values(record: ScheduleRecord) -> list[Any]:
    values: list[Any] = [getattr(record, f) for f in SCHEDULE_FIELDS]
    values[SCHEDULE_FIELDS.index("tags")] = json.dumps(record.tags, sort_keys=True)
    values[SCHEDULE_FIELDS.index("paused")] = int(record.paused)
    return values


def _record(row: Sequence[Any]) -> ScheduleRecord:
    *values, checksum = row
    if checksum != run_checksum(values[:SCHEDULE_SEALED]):
        raise ScheduleCorrupted(
            f"schedule {values[0]!r}: its row fails its checksum (what it runs, or when, was "
            "altered on disk); it fires nothing: remove it and add it again",
            name=values[0],
        )
    fields = dict(zip(SCHEDULE_FIELDS, values, strict=True))
    try:
        tags = json.loads(fields["tags"])
    except (TypeError, ValueError):
        tags = None
    if not isinstance(tags, dict):
        raise ScheduleCorrupted(f"schedule {values[0]!r}: its tags are not a JSON object")
    fields["tags"] = tags
    fields["paused"] = bool(fields["paused"])
    return ScheduleRecord(**fields)


class Schedules:
    """The schedules stored in one journal (``journal.schedules``)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def _stored(self) -> bool:
        # A journal older than version 4 opened read-only has no schedules table.
        return self._journal.backend.schema_version >= 4

    def _select(self, what: str, **which: Any) -> list[ScheduleRecord]:
        if not self._stored():
            return []
        with self._journal.lock:
            rows = self._journal._read(what, self._journal.backend.schedule_rows, **which)
        return [_record(r) for r in rows]

    def find(self, name: str) -> ScheduleRecord | None:
        """The schedule named ``name``, or ``None``."""
        found = self._select(f"reading schedule {name!r}", name=name)
        return found[0] if found else None

    def get(self, name: str) -> ScheduleRecord:
        """The schedule named ``name``; raises :class:`ScheduleNotFound`."""
        found = self.find(name)
        if found is None:
            raise ScheduleNotFound(
                f"no schedule {name!r} in journal {self._journal.where!r}", name=name
            )
        return found

    def all(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        return self._select("listing schedules")

    def due(self, now: float, *, limit: int = 100) -> list[ScheduleRecord]:
        """Schedules not paused whose next tick is at or before ``now``, soonest first."""
        return self._select("reading due schedules", due=now, limit=limit)

    def next_due(self) -> float | None:
        """The soonest tick of any schedule not paused (Unix time), or ``None``."""
        if not self._stored():
            return None
        with self._journal.lock:
            due: float | None = self._journal._read(
                "reading schedules", self._journal.backend.next_schedule_due
            )
        return due

    def put(self, record: ScheduleRecord, *, replace: bool = False) -> tuple[ScheduleRecord, bool]:
        """Store ``record`` unless a schedule of its name exists: ``(stored, written)``.

        The same definition returns the stored schedule as it is (its next tick and
        pause kept). Another definition raises :class:`ScheduleConflict` unless
        ``replace``: then the definition and next tick are ``record``'s, the pause kept.
        """
        journal = self._journal
        where = f"storing schedule {record.name!r}"
        with journal.lock:
            db = journal._c()
            with db.transaction(where):
                row = db.locked_schedule_row(record.name)
                old = None if row is None else _record(row)
                if old is not None:
                    same = all(getattr(old, f) == getattr(record, f) for f in _DEFINITION)
                    if same and old.origin == record.origin:
                        return old, False
                    if not replace:
                        changed = [f for f in _DEFINITION if getattr(old, f) != getattr(record, f)]
                        raise ScheduleConflict(
                            f"schedule {record.name!r} exists with another "
                            f"{', '.join(changed) or 'origin'}; pass replace=True to change "
                            "it, or use another name",
                            name=record.name,
                            differences=changed,
                        )
                    record = _replace(record, paused=old.paused, created_at=old.created_at)
                    db.delete_schedule(record.name)
                values = _values(record)
                # ON CONFLICT: a concurrent adder of the same name (PostgreSQL, where the
                # row lock above locks nothing yet) wins; its schedule is returned.
                inserted = db.insert_schedule((*values, run_checksum(values[:SCHEDULE_SEALED])))
        if not inserted:
            return self.get(record.name), False
        return record, True

    def advance(self, name: str, expected: float, next_at: float | None) -> bool:
        """Move ``name``'s next tick from ``expected`` to ``next_at``: False (nothing
        written) if it is no longer ``expected`` (another worker moved it first)."""
        return self._update(
            name, {"next_at": next_at, "updated_at": time.time()}, next_at_was=expected
        )

    def set_paused(self, name: str, paused: bool, *, next_at: float | None = None) -> bool:
        """Pause or resume ``name`` (resuming sets its next tick to ``next_at``); False if
        there is no such schedule."""
        if paused:
            return self._update(name, {"paused": 1, "updated_at": time.time()})
        return self._update(name, {"paused": 0, "next_at": next_at, "updated_at": time.time()})

    def remove(self, name: str) -> bool:
        """Delete ``name``; False if there was no such schedule. Its runs stay."""
        journal = self._journal
        with journal.lock, journal.backend.transaction(f"removing schedule {name!r}") as db:
            removed: bool = db.delete_schedule(name)
        return removed

    def _update(self, name: str, changes: dict[str, Any], next_at_was: float | None = None) -> bool:
        journal = self._journal
        with journal.lock, journal.backend.transaction(f"updating schedule {name!r}") as db:
            updated: bool = db.update_schedule(name, changes, next_at_was=next_at_was)
        return updated
