"""The journal's schema: its columns, and the SQLite spelling of its tables.

In a file, ``PRAGMA user_version`` holds SCHEMA_VERSION and ``PRAGMA
application_id`` marks it as a journal of this project. (PostgreSQL's spelling of
the same tables is in ``_postgres.py``.)
"""

from __future__ import annotations

APPLICATION_ID = 0x44524231  # "DRB1": tells a journal from any other SQLite file
SCHEMA_VERSION = 2

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
ENTRY_COLUMNS = "run_id, seq, kind, step, key, payload, codec, ts, checksum"

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # version 2: the durable queue (enqueue with a queue name and a priority).
    2: (
        "ALTER TABLE runs ADD COLUMN queue TEXT",
        "ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX runs_by_queue ON runs(status, queue, priority DESC, created_at)",
    ),
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
        priority         INTEGER NOT NULL DEFAULT 0
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
)
