"""The SQLite backend: opening a journal file through apsw, and translating apsw's errors.

apsw's errors are turned into the journal's exception tree here and nowhere else.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import apsw

from ._backend import CommitUnknown
from ._integrity import entry_checksum, entry_rows
from ._recorder import INSERT_ENTRY, Recorder
from ._schema import (
    APPLICATION_ID,
    DDL,
    MIGRATIONS,
    RUN_FIELDS,
    SCHEMA_VERSION,
    SEALED_FIELDS,
    reseal_runs,
)
from .errors import (
    CorruptionError,
    JournalBusy,
    JournalError,
    JournalFull,
    NotAJournalError,
    SchemaVersionError,
)
from .kinds import TERMINAL_STATUSES
from .records import NewEntry

__all__ = ["CommitUnknown", "JournalBusy", "SqliteBackend", "open_connection", "translate"]

SQLITE_HEADER = b"SQLite format 3\x00"

_SYNCHRONOUS = {"full": "FULL", "process": "NORMAL"}

# An append of entries alone (the hot path) writes only its entries: the runs row
# is left as it is, since updating it too cost a second B-tree page per commit
# and a third of the commit's time. So runs.last_seq and runs.updated_at are
# stored only when something else about the run changes (status, output, lease
# release...), and readers take them from the run's newest entry when that is
# newer. Compaction deletes entries only up to the horizon, which never passes
# the last seq, so the horizon bounds a run whose entries were all dropped.
LAST_SEQ = (
    "max(runs.last_seq, runs.horizon, coalesce("
    "(SELECT max(e.seq) FROM entries e WHERE e.run_id = runs.run_id), 0))"
)
_UPDATED_AT = (
    "max(runs.updated_at, coalesce("
    "(SELECT e.ts FROM entries e WHERE e.run_id = runs.run_id ORDER BY e.seq DESC LIMIT 1), 0))"
)
_SINCE = {"queue": (2, "NULL"), "priority": (2, "0"), "checksum": (3, "NULL")}
"""Columns added by a schema version: a read-only view of an older file shows a default."""


def _run_select(version: int) -> str:
    def column(f: str) -> str:
        if f == "last_seq":
            return LAST_SEQ
        if f == "updated_at":
            return _UPDATED_AT
        if f in _SINCE and version < _SINCE[f][0]:
            return _SINCE[f][1]
        return f"runs.{f}"

    return ", ".join(column(f) for f in (*RUN_FIELDS, "checksum"))


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
    if isinstance(exc, apsw.FullError):
        return JournalFull(
            f"{where}: the disk holding the journal {path or ''!r} is full (or the file reached "
            "its size limit); nothing was written. Free space, then resume the run: its lease "
            "was given up, so `durable recover` or a worker takes it",
            where=where,
            path=path,
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
        elif version < SCHEMA_VERSION and not readonly:
            _migrate(conn, path)
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


def _migrate(conn: apsw.Connection, path: str) -> None:
    with transaction(conn, f"upgrading the schema of {path!r}"):
        # Another process may have upgraded it between our check and our lock.
        version = one(conn, "PRAGMA user_version")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                conn.execute(statement)
            if target == 3:
                reseal_runs(conn.execute)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


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


class SqliteBackend(Recorder):
    """A journal file, opened through apsw (WAL; writers take ``BEGIN IMMEDIATE``).

    The write lock covers the whole file, so a guard read inside a transaction
    needs no row lock, and the hot path leaves the runs row alone.
    """

    kind = "sqlite"
    errors = (apsw.Error,)
    last_seq = LAST_SEQ
    stores_last_seq = False
    for_update = ""
    skip_locked = ""
    blob_length = "length"
    no_limit = -1

    def __init__(
        self,
        path: str,
        *,
        durability: str,
        busy_timeout_ms: int,
        readonly: bool,
        vfs: str | None = None,
    ) -> None:
        self.location = path
        self.conn = open_connection(
            path, durability=durability, busy_timeout_ms=busy_timeout_ms, readonly=readonly, vfs=vfs
        )
        version = one(self.conn, "PRAGMA user_version")
        self.run_select = _run_select(version)
        self.sealed = version >= 3
        self.schema_version = version
        self.guard = f"SELECT {LAST_SEQ}, runs.epoch, runs.status FROM runs WHERE runs.run_id = ?"
        sealed = ", ".join(f"runs.{f}" for f in SEALED_FIELDS)
        self.sealed_guard = (
            f"SELECT {LAST_SEQ}, runs.epoch, {sealed}, runs.checksum FROM runs"
            " WHERE runs.run_id = ?"
        )
        # The hot path calls apsw directly: at durability "process" a commit is
        # ~15 µs and a wrapper's call shows.
        self.execute = self.conn.execute  # type: ignore[method-assign,assignment]
        self.executemany = self.conn.executemany  # type: ignore[method-assign,assignment]
        self.changes = self.conn.changes  # type: ignore[method-assign]

    def data_version(self) -> int | None:
        """``PRAGMA data_version``: changes when another connection commits to the file."""
        return int(one(self.conn, "PRAGMA data_version"))

    def append_entries(
        self, run_id: str, entries: Sequence[NewEntry], expected: int, epoch: int | None, now: float
    ) -> int | None:
        # Recorder.append's hot path, spelled out on apsw: at durability "process" a
        # commit is ~15 µs and every call between the statements shows.
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(self.guard, (run_id,)).fetchone()
            if (
                row is None
                or row[0] != expected
                or (epoch is not None and row[1] != epoch)
                or row[2] in TERMINAL_STATUSES
            ):
                conn.execute("ROLLBACK")
                return None
            if len(entries) == 1:
                e = entries[0]
                seq = expected + 1
                checksum = entry_checksum(
                    run_id, seq, e.kind, e.step, e.key, e.payload, e.codec, now
                )
                conn.execute(
                    INSERT_ENTRY,
                    (run_id, seq, e.kind, e.step, e.key, e.payload, e.codec, now, checksum),
                )
            else:
                conn.executemany(INSERT_ENTRY, entry_rows(run_id, entries, expected, now))
        except BaseException as exc:
            self.rollback()
            if isinstance(exc, apsw.Error):
                raise self.translate(exc, f"appending to run {run_id!r}") from exc
            raise
        try:
            conn.execute("COMMIT")
        except apsw.Error as exc:
            # Where it happened is formatted only on failure, not on every commit.
            raise self._commit_failed(exc, f"appending to run {run_id!r}") from exc
        return expected + len(entries)

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self, where: str) -> None:
        try:
            self.conn.execute("COMMIT")
        except apsw.Error as exc:
            raise self._commit_failed(exc, where) from exc

    def _commit_failed(self, exc: apsw.Error, where: str) -> CommitUnknown:
        # A COMMIT that raised may still have committed: the caller re-reads.
        self.rollback()
        return CommitUnknown(
            f"{where}: COMMIT failed ({exc}); outcome unknown",
            where=where,
            full=isinstance(exc, apsw.FullError),  # the caller says so if it did not land
        )

    def rollback(self) -> None:
        with contextlib.suppress(apsw.Error):
            if not self.conn.getautocommit():
                self.conn.execute("ROLLBACK")

    def translate(self, exc: BaseException, where: str) -> JournalError:
        return translate(exc, where, self.location)

    def close(self) -> None:
        self.conn.close()  # closed even if this raises (a failed final checkpoint)

    def integrity_problems(self) -> list[str]:
        rows = [r[0] for r in self.conn.execute("PRAGMA integrity_check").fetchall()]
        return [] if rows == ["ok"] else [f"integrity_check: {r}" for r in rows]

    def size_bytes(self) -> int:
        return int(one(self.conn, "PRAGMA page_count")) * int(one(self.conn, "PRAGMA page_size"))

    def reclaim(self, max_pages: int | None) -> int:
        before = one(self.conn, "PRAGMA freelist_count")
        arg = "" if max_pages is None else f"({int(max_pages)})"
        self.conn.execute(f"PRAGMA incremental_vacuum{arg}").fetchall()
        return int(before - one(self.conn, "PRAGMA freelist_count"))

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        from .export import query  # noqa: PLC0415 - export imports the store, which imports us

        return query(self.location, sql, params)
