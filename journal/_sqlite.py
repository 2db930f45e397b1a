"""Opening a journal file through apsw, and translating apsw's errors.

Driver errors are turned into the journal's exception tree here and nowhere else.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import apsw

from ._schema import APPLICATION_ID, DDL, SCHEMA_VERSION
from .errors import CorruptionError, JournalError, NotAJournalError, SchemaVersionError

SQLITE_HEADER = b"SQLite format 3\x00"

_SYNCHRONOUS = {"full": "FULL", "process": "NORMAL"}


class JournalBusy(JournalError):
    """The journal stayed locked by another writer for longer than ``busy_timeout``."""


def translate(exc: BaseException, where: str, path: str | None = None) -> JournalError:
    """Map an apsw exception to the journal's tree, naming ``where`` it happened."""
    if isinstance(exc, JournalError):
        return exc
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return JournalBusy(
            f"{where}: the journal stayed locked by another writer past busy_timeout; "
            "retry, or raise busy_timeout",
            where=where,
        )
    if isinstance(exc, apsw.NotADBError):
        return NotAJournalError(f"{where}: not an SQLite database ({exc})", where=where, path=path)
    if isinstance(exc, apsw.CorruptError):
        return CorruptionError(f"{where}: the database file is corrupt ({exc})", where=where)
    return JournalError(f"{where}: {type(exc).__name__}: {exc}", where=where)


def _check_header(path: str) -> bool:
    """Return True if the file holds data; refuse, without opening it through SQLite
    (which would create -wal/-shm files beside it), what the header already shows is
    not a journal of ours."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return False
    if not head:
        return False
    if not head.startswith(SQLITE_HEADER) or len(head) < 100:
        raise NotAJournalError(
            f"{path!r} is not an SQLite database (bad header); refusing to open it as a journal",
            path=path,
        )
    pages = int.from_bytes(head[28:32], "big")
    version = int.from_bytes(head[60:64], "big")
    app_id = int.from_bytes(head[68:72], "big")
    if app_id not in (0, APPLICATION_ID) or (
        # A journal's schema is created in WAL mode, so until its first checkpoint the
        # main file's header still says 0 and a -wal file exists beside it.
        app_id == 0 and pages > 1 and not os.path.exists(path + "-wal")
    ):
        raise NotAJournalError(
            f"{path!r} is an SQLite database but not a durable journal "
            f"(application_id={app_id}); refusing to touch it",
            path=path,
        )
    if app_id == APPLICATION_ID and version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path!r} has journal schema version {version}; this code reads up to "
            f"{SCHEMA_VERSION}: upgrade the package",
            path=path,
            found=version,
            supported=SCHEMA_VERSION,
        )
    return True


def _create_private(path: str) -> None:
    # Owner-only from the first byte: journals hold inputs, outputs and state.
    # SQLite gives the -wal and -shm files the database file's permissions.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def one(conn: apsw.Connection, sql: str, params: Any = ()) -> Any:
    """The first column of the one row ``sql`` returns (aggregates, pragmas, lookups)."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]


def _pragma(conn: apsw.Connection, name: str, value: object | None = None) -> Any:
    # One statement at a time and read back: a multi-statement execute stops at
    # the first statement that returns a row unless the cursor is read.
    if value is not None:
        conn.execute(f"PRAGMA {name}={value}").fetchall()
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return None if row is None else row[0]


def open_connection(
    path: str,
    *,
    durability: str,
    busy_timeout_ms: int,
    readonly: bool,
    vfs: str | None = None,
) -> apsw.Connection:
    """Open (creating if allowed) and verify a journal; return a configured connection."""
    if durability not in _SYNCHRONOUS:
        raise ValueError(f"durability must be 'full' or 'process', got {durability!r}")
    exists = _check_header(path)
    if readonly and not exists:
        raise NotAJournalError(f"{path!r} does not exist (opened read-only)", path=path)
    if not readonly and not exists:
        _create_private(path)
        # An empty file someone else created becomes a journal: owner-only, like ours.
        os.chmod(path, 0o600)
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
    conn = None
    try:
        conn = apsw.Connection(path, flags=flags, vfs=vfs)
        conn.set_busy_timeout(busy_timeout_ms)
        # One statement, so one read transaction: a creator committing between two
        # separate reads would make a half-seen new journal look foreign.
        app_id, version, tables = conn.execute(
            "SELECT (SELECT application_id FROM pragma_application_id),"
            " (SELECT user_version FROM pragma_user_version),"
            " (SELECT count(*) FROM sqlite_schema)"
        ).fetchone() or (0, 0, 0)
    except apsw.Error as exc:
        if conn is not None:
            conn.close()
        raise translate(exc, f"opening {path!r}", path) from exc
    if app_id != APPLICATION_ID:
        if app_id != 0 or tables != 0 or version != 0:
            conn.close()
            raise NotAJournalError(
                f"{path!r} is an SQLite database but not a durable journal "
                f"(application_id={app_id}, {tables} schema objects); refusing to touch it",
                path=path,
            )
        if readonly:
            conn.close()
            raise NotAJournalError(f"{path!r} is an empty database, not a journal", path=path)
    elif version > SCHEMA_VERSION:
        conn.close()
        raise SchemaVersionError(
            f"{path!r} has journal schema version {version}; this code reads up to "
            f"{SCHEMA_VERSION}: upgrade the package",
            path=path,
            found=version,
            supported=SCHEMA_VERSION,
        )
    try:
        if app_id != APPLICATION_ID:
            # Must precede WAL and the first table, or SQLite ignores it; INCREMENTAL
            # lets Journal.reclaim() return freed pages without a full VACUUM.
            _pragma(conn, "auto_vacuum", "INCREMENTAL")
        if not readonly:
            _retry_busy(lambda: _pragma(conn, "journal_mode", "WAL"), busy_timeout_ms)
        _pragma(conn, "synchronous", _SYNCHRONOUS[durability])
        _pragma(conn, "foreign_keys", "ON")
        if app_id != APPLICATION_ID:
            _create_schema(conn)
    except apsw.Error as exc:
        conn.close()
        raise translate(exc, f"opening {path!r}", path) from exc
    return conn


def _retry_busy(action: Callable[[], Any], timeout_ms: int) -> Any:
    # Switching to WAL upgrades a read lock, and SQLite does not call the busy
    # handler for that upgrade: another opener holding the file fails it at once.
    deadline = time.monotonic() + timeout_ms / 1000
    delay = 0.001
    while True:
        try:
            return action()
        except apsw.BusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _create_schema(conn: apsw.Connection) -> None:
    with transaction(conn, "creating the schema"):
        # Another process may have created it between our check and our lock.
        if one(conn, "PRAGMA application_id") == APPLICATION_ID:
            return
        for statement in DDL:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


@contextlib.contextmanager
def transaction(conn: apsw.Connection, where: str) -> Iterator[apsw.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception and translates it."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except apsw.Error as exc:
        raise translate(exc, where) from exc
    try:
        yield conn
    except BaseException as exc:
        with contextlib.suppress(apsw.Error):
            conn.execute("ROLLBACK")
        if isinstance(exc, apsw.Error):
            raise translate(exc, where) from exc
        raise
    try:
        conn.execute("COMMIT")
    except apsw.Error as exc:
        # A COMMIT that raised may still have committed: the caller re-reads.
        with contextlib.suppress(apsw.Error):
            if not conn.getautocommit():
                conn.execute("ROLLBACK")
        raise CommitUnknown(
            f"{where}: COMMIT failed ({exc}); outcome unknown", where=where
        ) from exc


class CommitUnknown(JournalError):
    """COMMIT raised: the transaction may or may not have been applied; re-read to decide."""
