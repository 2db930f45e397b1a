"""The journal's schema: its columns, and the SQLite spelling of its tables.

In a file, ``PRAGMA user_version`` holds SCHEMA_VERSION and ``PRAGMA
application_id`` marks it as a journal of this project. (PostgreSQL's spelling of
the same tables is in ``_postgres.py``.)
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

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

# Version 4: run tags (the sealed copy is the "tags" object of runs.meta; run_tags is
# its index, written in the run's creating transaction) and schedules.
_V4_SQLITE = (
    """
    CREATE TABLE IF NOT EXISTS run_tags (
        key    TEXT NOT NULL,
        value  TEXT NOT NULL,
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        PRIMARY KEY (key, value, run_id)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS run_tags_by_run ON run_tags(run_id)",
    """
    CREATE TABLE IF NOT EXISTS schedules (
        name       TEXT PRIMARY KEY,
        target     TEXT NOT NULL,
        cron       TEXT NOT NULL,
        timezone   TEXT NOT NULL,
        missed     TEXT NOT NULL,
        codec      TEXT NOT NULL,
        input      BLOB,
        tags       TEXT NOT NULL DEFAULT '{}',
        queue      TEXT,
        origin     TEXT NOT NULL,
        created_at REAL NOT NULL,
        paused     INTEGER NOT NULL DEFAULT 0,
        next_at    REAL,
        updated_at REAL NOT NULL,
        checksum   INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS schedules_by_next ON schedules(paused, next_at)",
)

# Version 5: when a queued run was first claimed (a queue's rate limit counts these
# inside the claim) and the progress its steps last reported (ctx.heartbeat). Neither
# is sealed nor read with the run: both change as workers go, and only the claim and
# the read tools look at them.
_V5_SQLITE = (
    "ALTER TABLE runs ADD COLUMN started_at REAL",
    "ALTER TABLE runs ADD COLUMN heartbeat TEXT",
    "CREATE INDEX IF NOT EXISTS runs_by_start ON runs(queue, started_at)",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # version 2: the durable queue (enqueue with a queue name and a priority).
    2: (
        "ALTER TABLE runs ADD COLUMN queue TEXT",
        "ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX runs_by_queue ON runs(status, queue, priority DESC, created_at)",
    ),
    # version 3: run rows are checksummed (reseal_runs fills the column for old rows).
    3: ("ALTER TABLE runs ADD COLUMN checksum INTEGER NOT NULL DEFAULT 0",),
    # version 4: run tags and schedules (no run carries tags yet: nothing to fill).
    4: _V4_SQLITE,
    # version 5: queue rate limits and step heartbeats (old runs have neither).
    5: _V5_SQLITE,
}
"""Statements taking a journal from the version before each key to that version."""

DDL = (
    """
    CREATE TABLE runs (
        run_id           TEXT PRIMARY KEY,
        kind             TEXT NOT NULL,
        name             TEXT NOT NULL,
        status           TEXT NOT NULL,
        codec            TEXT NOT NULL,
        input            BLOB,
        output           BLOB,
        error            TEXT,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        last_seq         INTEGER NOT NULL DEFAULT 0,
        epoch            INTEGER NOT NULL DEFAULT 0,
        owner            TEXT,
        lease_expires_at REAL,
        wake_at          REAL,
        parent_run_id    TEXT REFERENCES runs(run_id),
        forked_from      TEXT REFERENCES runs(run_id),
        forked_at        INTEGER,
        code_version     TEXT,
        snapshot_every   INTEGER,
        horizon          INTEGER NOT NULL DEFAULT 0,
        meta             TEXT NOT NULL DEFAULT '{}',
        queue            TEXT,
        priority         INTEGER NOT NULL DEFAULT 0,
        checksum         INTEGER NOT NULL
    )
    """,
    "CREATE INDEX runs_by_queue ON runs(status, queue, priority DESC, created_at)",
    "CREATE INDEX runs_by_status ON runs(status, wake_at, lease_expires_at)",
    "CREATE INDEX runs_by_name ON runs(name, created_at)",
    "CREATE INDEX runs_by_created ON runs(created_at)",
    "CREATE INDEX runs_by_parent ON runs(parent_run_id)",
    """
    CREATE TABLE entries (
        run_id   TEXT NOT NULL REFERENCES runs(run_id),
        seq      INTEGER NOT NULL,
        kind     TEXT NOT NULL,
        step     TEXT,
        key      TEXT,
        payload  BLOB,
        codec    TEXT NOT NULL,
        ts       REAL NOT NULL,
        checksum INTEGER NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE snapshots (
        run_id      TEXT NOT NULL REFERENCES runs(run_id),
        seq         INTEGER NOT NULL,
        state       BLOB NOT NULL,
        codec       TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        checksum    INTEGER NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID
    """,
    *_V4_SQLITE,
    *_V5_SQLITE,
)


def reseal_runs(execute: Any) -> int:
    """Compute ``runs.checksum`` for every row (the upgrade to version 3); ``execute``
    runs one statement with ``?`` placeholders and returns a cursor. Returns the rows."""
    rows = execute(f"SELECT {SEALED_COLUMNS} FROM runs").fetchall()
    for row in rows:
        execute("UPDATE runs SET checksum = ? WHERE run_id = ?", (run_checksum(row), row[0]))
    return len(rows)
