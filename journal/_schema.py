"""The journal's schema: its columns, and its tables rendered for SQLite.

In a file, ``PRAGMA user_version`` holds SCHEMA_VERSION and ``PRAGMA
application_id`` marks it as a journal of this project. The tables are declared once,
in ``_ddl.py``, and rendered for each dialect (PostgreSQL's in ``_postgres.py``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from ._ddl import create, upgrade

APPLICATION_ID = 0x44524231  # "DRB1": tells a journal from any other SQLite file
SCHEMA_VERSION = 5

RUN_FIELDS = (
    "run_id",
    "kind",
    "name",
    "status",
    "codec",
    "input",
    "output",
    "error",
    "created_at",
    "updated_at",
    "last_seq",
    "epoch",
    "owner",
    "lease_expires_at",
    "wake_at",
    "parent_run_id",
    "forked_from",
    "forked_at",
    "code_version",
    "snapshot_every",
    "horizon",
    "meta",
    "queue",
    "priority",
)
RUN_COLUMNS = ", ".join(RUN_FIELDS)
UNSEALED_FIELDS = frozenset(
    ("updated_at", "last_seq", "epoch", "owner", "lease_expires_at", "wake_at")
)
SEALED_FIELDS = tuple(f for f in RUN_FIELDS if f not in UNSEALED_FIELDS)
"""The run columns ``runs.checksum`` covers: what a run means. Left out are those the
engine rewrites as it works (last_seq and updated_at on every append, the lease,
epoch and wake time), so that the per-step path never has to reseal the row."""
SEALED_COLUMNS = ", ".join(SEALED_FIELDS)
SEALED_INDEX = tuple(RUN_FIELDS.index(f) for f in SEALED_FIELDS)
"""Where each sealed field is in a row read in RUN_FIELDS order."""


def run_checksum(values: Sequence[Any]) -> int:
    """CRC-32 over a run's sealed columns (``values`` in SEALED_FIELDS order).

    Each value is tagged with its type and length, so NULL, ``"None"``, ``b""``, ``0``
    and ``"0"`` all differ, and a value moved from one column to the next is caught.
    """
    # One CRC over the parts joined is the CRC chained part by part: the parts are
    # gathered, exact types first, and checksummed once (a run computes this three times).
    parts: list[bytes] = []
    add = parts.append
    for value in values:
        t = type(value)
        if t is str:
            data = value.encode("utf-8", "surrogatepass")
            add(b"s%d:" % len(data))
            add(data)
        elif value is None:
            add(b"n\x1f")
        elif t is int:
            add(b"i%d\x1f" % value)
        elif t is bytes:
            add(b"b%d:" % len(value))
            add(value)
        elif t is float:
            add(f"float:{value!r}\x1f".encode())
        elif isinstance(value, bytes | bytearray | memoryview):
            add(b"b%d:" % len(value))
            add(bytes(value))
        elif isinstance(value, str):
            data = value.encode("utf-8", "surrogatepass")
            add(b"s%d:" % len(data))
            add(data)
        elif isinstance(value, int):
            add(b"i%d\x1f" % value)
        else:
            add(f"{type(value).__name__}:{value!r}\x1f".encode())
    return zlib.crc32(b"".join(parts))


ENTRY_COLUMNS = "run_id, seq, kind, step, key, payload, codec, ts, checksum"

SCHEDULE_FIELDS = (
    "name",
    "target",
    "cron",
    "timezone",
    "missed",
    "codec",
    "input",
    "tags",
    "queue",
    "origin",
    "created_at",
    "paused",
    "next_at",
    "updated_at",
)
SCHEDULE_COLUMNS = ", ".join(SCHEDULE_FIELDS)
SCHEDULE_SEALED = 11
"""``schedules.checksum`` covers the first SCHEDULE_SEALED fields (what the schedule
runs, and when); paused, next_at and updated_at change as workers fire it."""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    version: upgrade("sqlite", version) for version in range(2, SCHEMA_VERSION + 1)
}
"""Statements taking a journal file from the version before each key to that version
(rendered from the one declaration of the tables, ``_ddl.py``)."""

DDL = create("sqlite")
"""The statements creating a new journal file's tables (see ``_ddl.py``)."""


def reseal_runs(execute: Any) -> int:
    """Compute ``runs.checksum`` for every row (the upgrade to version 3); ``execute``
    runs one statement with ``?`` placeholders and returns a cursor. Returns the rows."""
    rows = execute(f"SELECT {SEALED_COLUMNS} FROM runs").fetchall()
    for row in rows:
        execute("UPDATE runs SET checksum = ? WHERE run_id = ?", (run_checksum(row), row[0]))
    return len(rows)
