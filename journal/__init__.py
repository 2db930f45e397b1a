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
    Undecoded,
    codec_for_name,
    decode_for_reading,
    register_type,
    registered_name,
)
from .compaction import CompactionRecord, CompactionReport
from .encryption import EncryptedCodec, Place
from .errors import (
    BadJournalURL,
    ConflictError,
    ConnectionLost,
    CorruptionError,
    DatabaseUnavailable,
    DecodeError,
    EncryptedPayload,
    HorizonError,
    JournalBusy,
    JournalClosed,
    JournalError,
    JournalFull,
    LeaseHeld,
    LineageCycle,
    LineageError,
    MigrationError,
    MisplacedPayload,
    NotAJournalError,
    NotFailed,
    RunCorrupted,
    RunEnded,
    RunNotFound,
    ScheduleConflict,
    ScheduleCorrupted,
    ScheduleNotFound,
    SchemaVersionError,
    SeqOutOfRange,
    SerializationError,
    SignatureError,
    UntrustedPayload,
)
from .fold import FOLD_VERSION, FoldedState, appended_items, fold
from .kinds import ENTRY_KINDS, RUN_STATUSES, TERMINAL_STATUSES, EntryKind
from .lineage import MAX_LINEAGE_DEPTH, ancestors, fork_lineage
from .migrate import MigrationReport, copy_journal
from .policies import Durability, RetentionPolicy, SnapshotPolicy
from .records import Entry, NewEntry, ResumeRecord, Run, ScheduleRecord, SnapshotInfo
from .render import to_jsonable
from .retention import Retention, RetentionReport, apply_retention
from .schedules import Schedules
from .search import search_payloads
from .store import (
    DEFAULT_PATH,
    ENV_VAR,
    UNSET,
    AppendRequest,
    CreateRequest,
    Journal,
    resolve_path,
)
from .tags import check_tags, parse_tag
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
    "MAX_LINEAGE_DEPTH",
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "UNSET",
    "AppendRequest",
    "BadJournalURL",
    "Codec",
    "CompactionRecord",
    "CompactionReport",
    "ConflictError",
    "ConnectionLost",
    "CorruptionError",
    "CreateRequest",
    "DatabaseUnavailable",
    "DecodeError",
    "Durability",
    "EncryptedCodec",
    "EncryptedPayload",
    "Entry",
    "EntryKind",
    "FoldedState",
    "HorizonError",
    "Journal",
    "JournalBusy",
    "JournalClosed",
    "JournalError",
    "JournalFull",
    "JsonPickleSerializer",
    "JsonSerializer",
    "LeaseHeld",
    "LineageCycle",
    "LineageError",
    "Listener",
    "MigrationError",
    "MigrationReport",
    "MisplacedPayload",
    "NewEntry",
    "NotAJournalError",
    "NotFailed",
    "PickleSerializer",
    "Place",
    "ResumeRecord",
    "Retention",
    "RetentionPolicy",
    "RetentionReport",
    "Run",
    "RunCorrupted",
    "RunEnded",
    "RunNotFound",
    "ScheduleConflict",
    "ScheduleCorrupted",
    "ScheduleNotFound",
    "ScheduleRecord",
    "Schedules",
    "SchemaVersionError",
    "SeqOutOfRange",
    "SerializationError",
    "SignatureError",
    "SnapshotInfo",
    "SnapshotPolicy",
    "Undecoded",
    "UntrustedPayload",
    "VerifyReport",
    "__version__",
    "ancestors",
    "appended_items",
    "apply_retention",
    "check_tags",
    "codec_for_name",
    "copy_journal",
    "decode_for_reading",
    "fold",
    "fork_lineage",
    "is_url",
    "parse_tag",
    "redact_location",
    "register_type",
    "registered_name",
    "resolve_path",
    "search_payloads",
    "to_jsonable",
]
