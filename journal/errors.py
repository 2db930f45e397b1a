"""The journal's exception tree.

Every error the journal raises derives from :class:`JournalError`; driver
errors are translated into this tree in one place per backend: ``journal/_sqlite.py``
(apsw) and ``journal/_postgres.py`` (psycopg).

::

    JournalError
    ├── NotAJournalError        the file is not SQLite, or is SQLite but not a journal
    ├── SchemaVersionError      the journal was written by a newer (or unknown) schema
    ├── CorruptionError         a checksum, snapshot or page does not verify
    ├── RunNotFound             no run with that id
    ├── ConflictError           expected seq or epoch did not match: nothing was written
    │   ├── LeaseHeld           another owner holds an unexpired lease on the run
    │   └── RunEnded            the run is completed, failed or cancelled: it takes no writes
    ├── HorizonError            a read before the retained (compacted) horizon
    ├── SerializationError      a value the codec cannot encode (names key path and type)
    ├── DecodeError             a stored payload that does not decode (names run and seq)
    │   └── SignatureError      a signed pickle whose HMAC does not verify
    ├── SeqOutOfRange           a seq past the run's last entry
    ├── JournalClosed           the journal was used after close()
    ├── JournalBusy             locked by another writer past the busy timeout: retry
    ├── MigrationError          a copy between journals refused: the target holds another
    │                           run with the same id, or source and target are one journal
    └── DatabaseUnavailable     PostgreSQL unreachable, refused the login, or went away
        └── ConnectionLost      the connection dropped mid-transaction: nothing was written
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConflictError",
    "ConnectionLost",
    "CorruptionError",
    "DatabaseUnavailable",
    "DecodeError",
    "HorizonError",
    "JournalBusy",
    "JournalClosed",
    "JournalError",
    "LeaseHeld",
    "MigrationError",
    "NotAJournalError",
    "RunEnded",
    "RunNotFound",
    "SchemaVersionError",
    "SeqOutOfRange",
    "SerializationError",
    "SignatureError",
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


class RunNotFound(JournalError, LookupError):
    """No run with the given id exists in this journal."""


class ConflictError(JournalError):
    """An append or update named a seq or epoch that is no longer current; nothing was written."""


class LeaseHeld(ConflictError):
    """Another owner holds an unexpired lease on the run."""


class RunEnded(ConflictError):
    """The run has a terminal status (``status``: completed, failed or cancelled): nothing
    is appended to it or changed in it any more; nothing was written."""

    status: str


class HorizonError(JournalError):
    """The requested seq lies before the retained horizon of a compacted run."""


class SerializationError(JournalError, TypeError):
    """The codec cannot encode a value; the message names the key path and the type."""


class DecodeError(JournalError):
    """A stored payload could not be decoded; the message names where it was read."""


class SignatureError(DecodeError):
    """A signed payload's HMAC did not verify; it was refused before unpickling."""


class JournalClosed(JournalError):
    """The journal was used after :meth:`Journal.close`."""


class SeqOutOfRange(JournalError, IndexError):
    """A seq beyond the run's last entry (or below 0) was asked for."""


class JournalBusy(JournalError):
    """The journal stayed locked by another writer for longer than ``busy_timeout``."""


class MigrationError(JournalError):
    """A copy between journals was refused before writing anything: the target holds a
    different run under a copied run's id, a named run is not in the source, or source
    and target are the same journal."""


class DatabaseUnavailable(JournalError):
    """The database server cannot be reached, refused the credentials, or went away."""


class ConnectionLost(DatabaseUnavailable):
    """The connection dropped before COMMIT: the server rolled the transaction back."""
