"""What the journal needs from a database: one connection, explicit transactions and a
few SQL spellings that differ between SQLite and PostgreSQL.

:class:`~journal.Journal` holds the logic (guards, seqs, checksums, snapshots) once;
a backend runs its SQL. Statements are written with ``?`` placeholders and the
SQLite spelling; a backend rewrites what its database spells differently.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._schema import SCHEMA_VERSION
from .errors import JournalError

if TYPE_CHECKING:
    from ._recorder import Recorder

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: str) -> bool:
    """True if ``location`` names a PostgreSQL database rather than a journal file."""
    return location.startswith(URL_SCHEMES)


_PASSWORD_PARAM = re.compile(r"(?i)([?&]password=)[^&#]*")


def redact(location: str) -> str:
    """``location`` as messages show it: a URL's password hidden wherever the URL gives
    it (after the user name, or as a ``password=`` parameter); a path as it is.

    Done on the text, not on a parse: a URL that does not parse (a bad IPv6 literal, a
    raw ``/`` or ``@`` in the password) still has it hidden. Everything between the user
    name's ``:`` and the last ``@`` is hidden, which may hide more than the password,
    never less.
    """
    if not is_url(location):
        return location
    scheme, _, rest = location.partition("://")
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        rest = f"{rest[:at].split(':', 1)[0]}:***{rest[at:]}"
    rest = _PASSWORD_PARAM.sub(r"\1***", rest)
    return f"{scheme}://{rest}"


_B = TypeVar("_B", bound="Backend")


class Cursor(Protocol):
    """The part of a DB-API cursor the journal uses."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class CommitUnknown(JournalError):
    """COMMIT raised: the transaction may or may not have been applied; re-read to decide."""


class Listener:
    """Waits for notifications; this one has none to wait for, so it only sleeps."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait(self, timeout: float) -> list[str]:
        """Block until notified or ``timeout`` seconds pass; the payloads received."""
        self._closed.wait(timeout)
        return []

    def close(self) -> None:
        """Stop listening (a waiter returns at once)."""
        self._closed.set()


class Backend:
    """One open connection to a journal's database. Not thread-safe: the journal's
    lock serialises every use."""

    kind: str
    """``"sqlite"`` or ``"postgresql"``."""
    location: str
    """Where the journal is: a file path, or the URL without its password."""
    errors: tuple[type[BaseException], ...]
    """The driver's exception types, translated by :meth:`translate`."""

    # -- SQL that differs ---------------------------------------------------------------
    run_select: str
    """The run columns for ``SELECT ... FROM runs``, in :data:`RUN_FIELDS` order, then
    the row's checksum (NULL in a journal older than version 3)."""
    sealed: bool = True
    """Whether run rows carry a checksum (schema version 3 on; an older journal opened
    read-only is not upgraded)."""
    schema_version: int = SCHEMA_VERSION
    """The journal's schema version (older only when opened read-only, not upgraded)."""
    last_seq: str
    """The expression of a run's last seq in ``SELECT ... FROM runs``."""
    guard: str
    """``(last_seq, epoch, status)`` of run ``?``, locking the row against other writers."""
    sealed_guard: str
    """``(last_seq, epoch)``, then the row's sealed columns (SEALED_FIELDS, status among
    them) and its checksum, locking the row against other writers."""
    stores_last_seq: bool
    """Whether every append also writes ``runs.last_seq``/``updated_at`` (else derived)."""
    for_update: str
    """Suffix locking the rows a SELECT reads until COMMIT (empty where the whole
    database is already locked by the transaction)."""
    skip_locked: str
    """Suffix letting concurrent claimers skip each other's rows."""
    blob_length: str
    no_limit: int | None
    """The LIMIT that means "no limit"."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement."""
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per parameter row."""
        raise NotImplementedError

    def changes(self) -> int:
        """Rows changed by the last INSERT/UPDATE/DELETE."""
        raise NotImplementedError

    def begin(self) -> None:
        """Start a write transaction."""
        raise NotImplementedError

    def commit(self, where: str) -> None:
        """Commit; raises :class:`CommitUnknown` if the outcome cannot be known."""
        raise NotImplementedError

    def rollback(self) -> None:
        """Roll back the open transaction, if any; never raises."""
        raise NotImplementedError

    def settle(self) -> bool:
        """After :class:`CommitUnknown`: make the outcome of the transaction it left
        final before the caller re-reads. True if a re-read now sees the final outcome;
        False if the transaction may still apply later (the re-read cannot rule it out)."""
        return False

    def translate(self, exc: BaseException, where: str) -> JournalError:
        """The journal error for a driver exception, naming ``where`` it happened."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError

    def integrity_problems(self) -> list[str]:
        """The database's own consistency check (empty when sound)."""
        return []

    def reclaim(self, max_pages: int | None) -> int:
        """Return free space to the OS where the database supports it."""
        return 0

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """Rows of an ad-hoc statement run where it cannot write."""
        raise NotImplementedError

    def clock(self) -> float:
        """Now, in Unix seconds, by the clock leases are measured by: this host's for a
        journal file (one machine); the server's on PostgreSQL (see its override)."""
        return time.time()

    def take_turns(self, key: int) -> bool:
        """Try to be the only open transaction that took ``key`` (a journal file's write
        transactions already are): False, without waiting, if another one holds it."""
        return True

    def listener(self, channel: str) -> Listener:
        """Something to wait on for :meth:`notify` calls on ``channel``."""
        return Listener()

    def notify(self, channel: str, payload: str) -> None:
        """Wake listeners on ``channel`` once the open transaction commits (PostgreSQL);
        a journal file has no listeners."""

    @contextlib.contextmanager
    def transaction(self: _B, where: str) -> Iterator[_B]:
        """``BEGIN`` … ``COMMIT``; rolls back on any exception and translates it."""
        try:
            self.begin()
        except self.errors as exc:
            raise self.translate(exc, where) from exc
        try:
            yield self
        except BaseException as exc:
            self.rollback()
            if isinstance(exc, self.errors):
                raise self.translate(exc, where) from exc
            raise
        self.commit(where)


def open_backend(
    location: str,
    *,
    durability: str,
    busy_timeout_ms: int,
    readonly: bool,
    vfs: str | None = None,
) -> Recorder:
    """The recorder for a file path or a ``postgresql://`` URL."""
    if durability not in ("full", "process"):
        raise ValueError(f"durability must be 'full' or 'process', got {durability!r}")
    if is_url(location):
        if vfs is not None:
            raise ValueError("vfs= applies to SQLite journal files, not to PostgreSQL")
        from ._postgres import PostgresBackend  # noqa: PLC0415 - psycopg is an optional extra

        return PostgresBackend(
            location, durability=durability, busy_timeout_ms=busy_timeout_ms, readonly=readonly
        )
    from ._sqlite import SqliteBackend  # noqa: PLC0415 - _sqlite imports this module

    return SqliteBackend(
        location, durability=durability, busy_timeout_ms=busy_timeout_ms, readonly=readonly, vfs=vfs
    )
