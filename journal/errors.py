"""The journal's exception tree.

Every error the journal raises derives from :class:`JournalError`; driver
errors are translated into this tree in one place per backend: ``journal/_sqlite.py``
(apsw) and ``journal/_postgres.py`` (psycopg).

::

    JournalError
    ├── NotAJournalError        the file is not SQLite, or is SQLite but not a journal
    ├── SchemaVersionError      the journal was written by a newer (or unknown) schema
    ├── CorruptionError         a checksum, snapshot or page does not verify
    │   ├── RunCorrupted        a run row fails its checksum, or holds impossible values
    │   ├── ScheduleCorrupted   a schedule row fails its checksum
    │   └── LineageError        fork/parent links that loop or go deeper than allowed
    │       └── LineageCycle    fork/parent links that form a cycle
    ├── RunNotFound             no run with that id
    ├── ScheduleNotFound        no schedule with that name
    ├── ScheduleConflict        a schedule of that name exists with another definition
    ├── ConflictError           expected seq or epoch did not match: nothing was written
    │   ├── LeaseHeld           another owner holds an unexpired lease on the run
    │   ├── RunEnded            the run is completed, failed or cancelled: it takes no writes
    │   └── NotFailed           a reopen (resume) of a run that is not failed, or no longer
    │                           with the failure the caller saw: nothing was written
    ├── HorizonError            a read before the retained (compacted) horizon
    ├── SerializationError      a value the codec cannot encode (names key path and type)
    ├── DecodeError             a stored payload that does not decode (names run and seq)
    │   └── SignatureError      a pickle refused unpickled: its HMAC does not verify, or
    │       │                   it may not be trusted
    │       └── UntrustedPayload  a pickle this reader does not trust: not unpickled
    │   └── EncryptedPayload    sealed with a key this reader does not hold
    │   └── MisplacedPayload    an encrypted value bound to another run, seq or field
    ├── SeqOutOfRange           a seq past the run's last entry
    ├── JournalClosed           the journal was used after close()
    ├── JournalBusy             locked by another writer past the busy timeout: retry
    ├── JournalFull             the disk (or the database's quota) is full: free space
    ├── MigrationError          a copy between journals refused: the target holds another
    │                           run with the same id, or source and target are one journal
    ├── DatabaseUnavailable     PostgreSQL unreachable, refused the login, or went away
    │   └── ConnectionLost      the connection dropped mid-transaction: nothing was written
    └── BadJournalURL           a postgresql:// URL that cannot be parsed (also ValueError)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadJournalURL",
    "ConflictError",
    "ConnectionLost",
    "CorruptionError",
    "DatabaseUnavailable",
    "DecodeError",
    "EncryptedPayload",
    "HorizonError",
    "JournalBusy",
    "JournalClosed",
    "JournalError",
    "JournalFull",
    "LeaseHeld",
    "LineageCycle",
    "LineageError",
    "MigrationError",
    "MisplacedPayload",
    "NotAJournalError",
    "NotFailed",
    "RunCorrupted",
    "RunEnded",
    "RunNotFound",
    "ScheduleConflict",
    "ScheduleCorrupted",
    "ScheduleNotFound",
    "SchemaVersionError",
    "SeqOutOfRange",
    "SerializationError",
    "SignatureError",
    "UntrustedPayload",
]


class JournalError(Exception):
    """Base class of every error raised by the journal."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.context = context
        for name, value in context.items():
            setattr(self, name, value)


class NotAJournalError(JournalError):
    """The file is not an SQLite database, or it is one that this project did not write."""


class SchemaVersionError(JournalError):
    """The journal's schema version is newer than (or unknown to) this code."""


class CorruptionError(JournalError):
    """Stored data failed verification: an entry checksum, a snapshot, or the file itself."""


class RunCorrupted(CorruptionError):
    """A run's row fails its checksum (its status, input, output, error, lineage or
    creation time was altered on disk) or holds values no writer stores."""


class ScheduleCorrupted(CorruptionError):
    """A schedule's row fails its checksum (what it runs, or when, was altered on disk):
    it fires nothing until it is removed or added again."""


class LineageError(CorruptionError):
    """Following a run's fork (or parent) links went deeper than any journal needs."""


class LineageCycle(LineageError):
    """A run's fork (or parent) links lead back to a run already on the path: a
    crafted or damaged journal. ``runs`` names the runs of the cycle."""


class RunNotFound(JournalError, LookupError):
    """No run with the given id exists in this journal."""


class ScheduleNotFound(JournalError, LookupError):
    """No schedule with the given name exists in this journal."""


class ScheduleConflict(JournalError):
    """A schedule of that name exists with another definition: pass ``replace=True`` to
    change it, or use another name."""


class ConflictError(JournalError):
    """An append or update named a seq or epoch that is no longer current; nothing was written."""


class LeaseHeld(ConflictError):
    """Another owner holds an unexpired lease on the run."""


class RunEnded(ConflictError):
    """The run has a terminal status (``status``: completed, failed or cancelled): nothing
    is appended to it or changed in it any more; nothing was written."""

    status: str


class NotFailed(ConflictError):
    """Only a failed run can be reopened (``status``: what the run is now), and only with
    the failure the caller read (another resume may have reopened it first); nothing
    was written."""

    status: str


class HorizonError(JournalError):
    """The requested seq lies before the retained horizon of a compacted run."""


class SerializationError(JournalError, TypeError):
    """The codec cannot encode a value; the message names the key path and the type."""


class DecodeError(JournalError):
    """A stored payload could not be decoded; the message names where it was read."""


class SignatureError(DecodeError):
    """A pickled payload refused before unpickling: its HMAC did not verify, or the
    reader may not trust it (see :class:`UntrustedPayload`)."""


class UntrustedPayload(SignatureError):
    """A pickled payload this reader may not unpickle: the reader neither holds the
    journal's HMAC key nor passed ``trust_pickle=True``, or it holds a key and the
    payload is unsigned (or signed and it holds none). Never unpickled; read tools show
    an :class:`~journal.Undecoded` placeholder instead."""


class EncryptedPayload(DecodeError):
    """A payload encrypted with a key this reader does not hold (``key_id`` names it);
    read tools show an :class:`~journal.Undecoded` placeholder instead."""


class MisplacedPayload(DecodeError):
    """An encrypted value read at a place (run, seq, field) other than the one it was
    sealed for: moved or swapped in the file. ``run_id`` and ``seq`` name where it was
    read, ``bound_to`` where it belongs. Never decoded."""


class JournalClosed(JournalError):
    """The journal was used after :meth:`Journal.close`."""


class SeqOutOfRange(JournalError, IndexError):
    """A seq beyond the run's last entry (or below 0) was asked for."""


class JournalBusy(JournalError):
    """The journal stayed locked by another writer for longer than ``busy_timeout``."""


class JournalFull(JournalError):
    """A write failed because the disk (or the database server's disk) is full. Nothing
    was written and the run's lease was given up: free space, then resume the run."""


class MigrationError(JournalError):
    """A copy between journals was refused before writing anything: the target holds a
    different run under a copied run's id, a named run is not in the source, or source
    and target are the same journal."""


class DatabaseUnavailable(JournalError):
    """The database server cannot be reached, refused the credentials, or went away."""


class ConnectionLost(DatabaseUnavailable):
    """The connection dropped before COMMIT: the server rolled the transaction back."""


class BadJournalURL(JournalError, ValueError):
    """A ``postgresql://`` URL that cannot be parsed: a raw ``%``, an unknown parameter,
    a bad port or IPv6 literal. The message never holds the password."""
