"""The journal: durable's event-sourced storage layer.

One SQLite file (through apsw) holds runs, their append-only entries and
periodic snapshots of their folded state. It knows nothing of workflows.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._backend import Listener, is_url
from ._backend import redact as redact_location
from .codecs import (
    Codec,
    JsonPickleSerializer,
    JsonSerializer,
    PickleSerializer,
    codec_for_name,
    register_type,
    registered_name,
)
from .compaction import CompactionReport
from .errors import (
    ConflictError,
    ConnectionLost,
    CorruptionError,
    DatabaseUnavailable,
    DecodeError,
    HorizonError,
    JournalBusy,
    JournalClosed,
    JournalError,
    LeaseHeld,
    MigrationError,
    NotAJournalError,
    RunEnded,
    RunNotFound,
    SchemaVersionError,
    SeqOutOfRange,
    SerializationError,
    SignatureError,
)
from .fold import FOLD_VERSION, FoldedState, appended_items, fold
from .kinds import ENTRY_KINDS, RUN_STATUSES, TERMINAL_STATUSES, EntryKind
from .migrate import MigrationReport, copy_journal
from .policies import Durability, RetentionPolicy, SnapshotPolicy
from .records import Entry, NewEntry, Run, SnapshotInfo
from .render import to_jsonable
from .store import (
    DEFAULT_PATH,
    ENV_VAR,
    UNSET,
    AppendRequest,
    CreateRequest,
    Journal,
    resolve_path,
)
from .verify import VerifyReport

try:
    __version__ = version("durable")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_PATH",
    "ENTRY_KINDS",
    "ENV_VAR",
    "FOLD_VERSION",
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "UNSET",
    "AppendRequest",
    "Codec",
    "CompactionReport",
    "ConflictError",
    "ConnectionLost",
    "CorruptionError",
    "CreateRequest",
    "DatabaseUnavailable",
    "DecodeError",
    "Durability",
    "Entry",
    "EntryKind",
    "FoldedState",
    "HorizonError",
    "Journal",
    "JournalBusy",
    "JournalClosed",
    "JournalError",
    "JsonPickleSerializer",
    "JsonSerializer",
    "LeaseHeld",
    "Listener",
    "MigrationError",
    "MigrationReport",
    "NewEntry",
    "NotAJournalError",
    "PickleSerializer",
    "RetentionPolicy",
    "Run",
    "RunEnded",
    "RunNotFound",
    "SchemaVersionError",
    "SeqOutOfRange",
    "SerializationError",
    "SignatureError",
    "SnapshotInfo",
    "SnapshotPolicy",
    "VerifyReport",
    "__version__",
    "appended_items",
    "codec_for_name",
    "copy_journal",
    "fold",
    "is_url",
    "redact_location",
    "register_type",
    "registered_name",
    "resolve_path",
    "to_jsonable",
]
