"""The journal: runs, their append-only entries and snapshots, in one SQLite file or a
PostgreSQL database (see ``_backend.py``)."""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, NoReturn

from ._backend import Backend, CommitUnknown, Listener, open_backend
from ._schema import (
    ENTRY_COLUMNS,
    RUN_COLUMNS,
    RUN_FIELDS,
    SEALED_COLUMNS,
    SEALED_FIELDS,
    SEALED_INDEX,
    run_checksum,
)
from .codecs import Codec, JsonSerializer, Undecoded, codec_for_name, decode_for_reading
from .compaction import CompactionRecord, compact, compaction_record, kept_compaction
from .errors import (
    ConflictError,
    ConnectionLost,
    CorruptionError,
    DecodeError,
    HorizonError,
    JournalClosed,
    JournalError,
    JournalFull,
    LeaseHeld,
    RunCorrupted,
    RunEnded,
    RunNotFound,
    SeqOutOfRange,
    SerializationError,
    UntrustedPayload,
)
from .export import export_run
from .fold import FOLD_VERSION, FoldedState, fold
from .ids import new_run_id
from .kinds import RUN_KINDS, RUN_STATUSES, TERMINAL_STATUSES
from .lineage import ancestors
from .policies import Durability, SnapshotPolicy
from .records import Entry, NewEntry, Run, SnapshotInfo
from .schedules import Schedules
from .tags import check_tags, tag_clauses
from .verify import VerifyReport, verify

__all__ = [
    "DEFAULT_PATH",
    "ENV_VAR",
    "UNSET",
    "AppendRequest",
    "CreateRequest",
    "Journal",
    "resolve_path",
]

DEFAULT_PATH: Final = "durable.db"
ENV_VAR: Final = "DURABLE_DB"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final[Any] = _Unset()
"""Marks an optional field of an update as "leave as it is" (``None`` means NULL)."""

_CLAIMABLE = (
    "((status IN ('pending', 'running') AND (owner IS NULL OR lease_expires_at < ?))"
    " OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?"
    "     AND (owner IS NULL OR lease_expires_at < ?)))"
)
"""Unfinished runs nobody holds (three parameters: now, now, now)."""
_PARENT_DONE = (
    "(parent_run_id IS NULL OR EXISTS (SELECT 1 FROM runs p WHERE p.run_id = runs.parent_run_id"
    " AND p.status IN ('completed', 'failed', 'cancelled')))"
)
"""A child run is claimable on its own only once its parent has finished."""
_QUEUE_TURNS = 0x44524232  # claimers of a limited queue take turns on a key made from this


def _queue_room(
    db: Backend,
    queue: str,
    *,
    now: float,
    concurrency: int | None,
    rate: tuple[int, float] | None,
    limit: int,
) -> int:
    """How many more runs of a limited ``queue`` one claim may take at ``now``, inside
    the claim's transaction and turn: at most ``concurrency`` running (leased) at once,
    and at most ``rate[0]`` first claimed (``runs.started_at``) in the last ``rate[1]``
    seconds. Counted from the runs themselves, so every worker and process sharing the
    journal is held to one limit."""
    room = limit
    if concurrency is not None:
        (active,) = db.execute(
            "SELECT count(*) FROM runs WHERE queue = ? AND status = 'running'"
            " AND owner IS NOT NULL AND lease_expires_at >= ?",
            (queue, now),
        ).fetchone()
        room = min(room, concurrency - active)
    if rate is not None:
        n, seconds = rate
        (started,) = db.execute(
            "SELECT count(*) FROM runs WHERE queue = ? AND started_at > ?",
            (queue, now - seconds),
        ).fetchone()
        room = min(room, n - started)
    return room


def _queue_turn(queue: str) -> int:
    """The advisory-lock key of a limited queue's claim turn (a signed 64-bit int)."""
    return (_QUEUE_TURNS << 31) ^ zlib.crc32(queue.encode())


_INSERT_ENTRY = f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"


ENTRY_FOLD_BYTES: Final = 64
"""What folding one entry costs beyond its payload, in payload bytes (a row read, a
checksum, a decode call): a tail of many tiny entries is not free to fold."""


def resolve_path(path: str | os.PathLike[str] | None) -> str:
    """The journal's location (a file path or a ``postgresql://`` URL): the argument,
    else ``$DURABLE_DB``, else ``./durable.db``."""
    if path is not None:
        return os.fspath(path)
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


def _storable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def entry_checksum(  # noqa: PLR0917 - one positional per stored column, in column order
    run_id: str,
    seq: int,
    kind: str,
    step: str | None,
    key: str | None,
    payload: bytes | None,
    codec: str,
    ts: float,
) -> int:
    """CRC-32 over every field of an entry: a flipped byte anywhere is detected on read."""
    head = f"{run_id}\x1f{seq}\x1f{kind}\x1f{step}\x1f{key}\x1f{codec}\x1f{ts!r}".encode()
    return zlib.crc32(payload or b"", zlib.crc32(head))


def _entry_rows(
    run_id: str, entries: Sequence[NewEntry], base: int, now: float
) -> list[tuple[Any, ...]]:
    """The stored rows of ``entries`` as seqs ``base+1..``, checksums included."""
    return [
        (
            run_id,
            seq,
            e.kind,
            e.step,
            e.key,
            e.payload,
            e.codec,
            now,
            entry_checksum(run_id, seq, e.kind, e.step, e.key, e.payload, e.codec, now),
        )
        for seq, e in enumerate(entries, base + 1)
    ]


def _only_entries(req: AppendRequest) -> bool:
    """True if ``req`` changes nothing of the run's row but its entries."""
    return (
        req.status is None
        and req.output is UNSET
        and req.error is UNSET
        and req.wake_at is UNSET
        and not req.release
    )


def _snapshot_checksum(run_id: str, seq: int, state: bytes, fingerprint: str) -> int:
    return zlib.crc32(state, zlib.crc32(f"{run_id}\x1f{seq}\x1f{fingerprint}".encode()))


_GUARD_STATUS = 2
"""Where the status is in a row read with ``guard``: ``(last_seq, epoch, status)``."""
_SEALED_STATUS = 2 + SEALED_FIELDS.index("status")
"""Where the status is in a row read with ``sealed_guard``: ``(last_seq, epoch, *sealed,
checksum)``."""

_KEPT_BINDINGS = 1024
"""Runs the engine left whose own codec stays bound (see :meth:`Journal.use_codec`)."""


def _ended(run_id: str, status: str) -> RunEnded:
    return RunEnded(
        f"run {run_id!r} is {status}: a finished run takes no more entries or changes; "
        "nothing was written",
        run_id=run_id,
        status=status,
    )


_NUMBER = (int, float)
_SHAPE = {
    "last_seq": (int,),
    "epoch": (int,),
    "updated_at": _NUMBER,
    "owner": (str, type(None)),
    "lease_expires_at": (*_NUMBER, type(None)),
    "wake_at": (*_NUMBER, type(None)),
}
"""The types of the columns the checksum leaves out (it covers the others)."""


def _run_from_row(row: Sequence[Any] | None, sealed: bool = True) -> Run:
    """The run of a row read with ``run_select``, its checksum verified (``sealed``)."""
    assert row is not None
    *values, checksum = row
    run_id = values[0]
    if sealed and checksum != run_checksum([values[i] for i in SEALED_INDEX]):
        raise RunCorrupted(
            f"run {run_id!r}: its row fails its checksum (its status, input, output, error, "
            "lineage or creation time was altered on disk)",
            run_id=run_id,
        )
    fields = dict(zip(RUN_FIELDS, values, strict=True))
    for name, types in _SHAPE.items():
        if not isinstance(fields[name], types):
            raise RunCorrupted(
                f"run {run_id!r}: its {name} column holds {fields[name]!r}, which no writer "
                "stores (the row was altered on disk)",
                run_id=run_id,
            )
    try:
        fields["meta"] = json.loads(fields["meta"])
    except (TypeError, ValueError) as exc:
        raise RunCorrupted(
            f"run {run_id!r}: its meta column is not a JSON object ({exc})", run_id=run_id
        ) from None
    if not isinstance(fields["meta"], dict):
        raise RunCorrupted(f"run {run_id!r}: its meta column is not a JSON object", run_id=run_id)
    return Run(**fields)


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A run to create in a (possibly batched) write: see :meth:`Journal.new_run`."""

    run: Run
    entries: Sequence[NewEntry]
    meta: str
    lease_seconds: float | None = None
    """With an owner: the lease, measured by the journal's clock when the row is written."""


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One run's part of a (possibly batched) append: the entries and the run update.

    ``output`` must already be encoded (see :meth:`Journal.encode`); ``UNSET``
    fields leave the run row as it is.
    """

    run_id: str
    entries: Sequence[NewEntry]
    expected_seq: int
    epoch: int | None = None
    status: str | None = None
    output: Any = UNSET
    error: Any = UNSET
    wake_at: Any = UNSET
    release: bool = False


class Journal:
    """An event-sourced journal in one SQLite file (through apsw) or a PostgreSQL
    database (through psycopg, for a ``postgresql://`` URL).

    ``Journal()`` opens ``$DURABLE_DB`` or ``./durable.db``, creating it (mode
    0600) if missing. Every append names the seq it expects and, for leased runs,
    the epoch it holds, and is checked in the transaction that writes it.

    Payloads decode with the codec of their ``codec`` column, but a pickled one only
    when ``codec`` is that pickle codec, ``hmac_key`` verifies it, or
    ``trust_pickle=True`` (unpickling runs code: trust it only for journals whose
    every writer you trust).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        durability: Durability = "full",
        codec: Codec | None = None,
        hmac_key: bytes | str | None = None,
        snapshots: SnapshotPolicy | None = None,
        busy_timeout_ms: int = 30_000,
        readonly: bool = False,
        vfs: str | None = None,
        trust_pickle: bool = False,
    ) -> None:
        self.path = resolve_path(path)
        self.durability = durability
        self.readonly = readonly
        self.codec: Codec = codec or JsonSerializer()
        self.snapshot_policy = snapshots or SnapshotPolicy()
        self._hmac_key = hmac_key
        self.trust_pickle = trust_pickle
        # The codecs payloads decode with, by column value: the journal's own codec is
        # here from the start (the writer's lookup stays one dict hit), and a column
        # never picks pickle on its own. A function's own codec is bound to its runs
        # (use_codec): to the runs in flight, then to the last ones left.
        self._codecs: dict[str, Codec] = {self.codec.name: self.codec}
        self._run_codecs: dict[str, Codec] = {}
        self._left_codecs: OrderedDict[str, Codec] = OrderedDict()
        self._snapshot_every: dict[str, int | None] = {}
        # Per run in flight, for size-chosen snapshots: [seq accounted to, tail bytes
        # since the last snapshot, that snapshot's bytes, its seq]. A cache: a run
        # another writer moved on (or a rolled-back append) is measured again.
        self._tails: dict[str, list[int]] = {}
        self._altered: set[str] = set()
        """Runs whose row failed its checksum when a claim read it: never claimed again."""
        self._lock = threading.RLock()
        self.entries_read = 0
        """Entries read from disk since open: lets tests prove recovery reads only a tail."""
        self._db: Backend | None = open_backend(
            self.path,
            durability=durability,
            busy_timeout_ms=busy_timeout_ms,
            readonly=readonly,
            vfs=vfs,
        )
        self.where = self._db.location
        """Where the journal is, for messages: the path, or the URL without its password."""

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; further use raises :class:`JournalClosed`."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                try:
                    db.close()
                except db.errors as exc:
                    raise db.translate(exc, f"closing {self.where!r}") from exc

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({self.where!r}, durability={self.durability!r})"

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._db is None

    def _c(self) -> Backend:
        if self._db is None:
            raise JournalClosed(f"journal {self.where!r} is closed", path=self.where)
        return self._db

    def _read(self, sql: str, params: Sequence[Any] = (), *, where: str) -> list[Any]:
        db = self._c()
        try:
            return db.execute(sql, params).fetchall()
        except db.errors as exc:
            raise db.translate(exc, where) from exc
        except UnicodeDecodeError as exc:
            raise CorruptionError(
                f"{where}: a stored text is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                "the file was altered or damaged",
                where=where,
            ) from None

    # -- codecs ----------------------------------------------------------------------

    def use_codec(self, run_id: str, codec: Codec | None) -> None:
        """Read and write run ``run_id``'s payloads named ``codec.name`` with ``codec``
        itself (a function's own codec, with its options: its HMAC key, its compression):
        the code configured it, so it is trusted for that run, and that run only.
        ``None``: the engine left the run; the binding is kept among the last 1024 left,
        so the run's result and state still read here (the cache stays bounded)."""
        with self._lock:
            if codec is not None:
                self._left_codecs.pop(run_id, None)
                self._run_codecs[run_id] = codec
                return
            left = self._run_codecs.pop(run_id, None)
            if left is not None:
                self._left_codecs[run_id] = left
                while len(self._left_codecs) > _KEPT_BINDINGS:
                    self._left_codecs.popitem(last=False)

    def codec_named(self, name: str, *, run_id: str | None = None) -> Codec:
        """The codec stored under ``name``: the one :meth:`use_codec` gave ``run_id``, else
        the journal's own, else one with this journal's HMAC key. A pickle codec the
        journal was not configured with refuses to unpickle unless ``trust_pickle`` (see
        :func:`~journal.codec_for_name`): a column alone never picks pickle."""
        if run_id is not None:
            own = self._run_codecs.get(run_id) or self._left_codecs.get(run_id)
            if own is not None and own.name == name:
                return own
        codec = self._codecs.get(name)
        if codec is None:
            codec = codec_for_name(name, hmac_key=self._hmac_key, trust_pickle=self.trust_pickle)
            self._codecs[name] = codec
        return codec

    def encode(self, value: Any, *, codec: Codec | None = None, path: str = "value") -> bytes:
        """Encode ``value``; raises :class:`SerializationError` naming ``path`` on failure."""
        return (codec or self.codec).encode(value, path=path)

    def decode(
        self,
        data: bytes | None,
        codec: str,
        *,
        where: str,
        strict: bool = True,
        run_id: str | None = None,
    ) -> Any:
        """Decode a stored payload (of run ``run_id``: see :meth:`use_codec`); ``None``
        stays ``None``.

        ``strict=False`` is for reading, not executing: a pickle this journal may not
        unpickle, or a value whose class cannot be used here, comes back as a
        :class:`~journal.Undecoded` placeholder instead of an error.
        """
        if data is None:
            return None
        if strict:
            return self.codec_named(codec, run_id=run_id).decode(data, where=where)
        try:
            use = self.codec_named(codec, run_id=run_id)
        except UntrustedPayload as exc:
            return Undecoded("pickle", size=len(data), reason=str(exc))
        return decode_for_reading(use, data, where=where)

    def decode_entry(self, entry: Entry, *, strict: bool = True) -> Any:
        """Decode an entry's payload; errors name the run and seq (``strict``: see
        :meth:`decode`)."""
        return self.decode(
            entry.payload,
            entry.codec,
            where=f"run {entry.run_id!r} seq {entry.seq}",
            strict=strict,
            run_id=entry.run_id,
        )

    def _read_entry(self, entry: Entry) -> Any:
        return self.decode_entry(entry, strict=False)

    def entry(
        self,
        kind: str,
        value: Any = UNSET,
        *,
        step: str | None = None,
        key: str | None = None,
        codec: Codec | None = None,
        path: str | None = None,
    ) -> NewEntry:
        """Build a :class:`NewEntry`, encoding ``value`` now: a bad value fails before any write."""
        use = codec or self.codec
        for label, text in (("key", key), ("step", step)):
            if text is not None and not _storable(text):
                raise SerializationError(
                    f"cannot store {kind} entry: its {label} {text!r} is not valid Unicode "
                    "(a lone surrogate); use text that encodes as UTF-8",
                    path=f"{label} {text!r}",
                    type_name="str",
                )
        payload = (
            None
            if value is UNSET
            else use.encode(value, path=path or (f"state[{key!r}]" if key else kind))
        )
        return NewEntry(kind=kind, payload=payload, codec=use.name, step=step, key=key)

    # -- runs ------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str | None = None,
        *,
        name: str,
        kind: str = "function",
        input: Any = None,
        codec: Codec | None = None,
        status: str = "pending",
        entries: Sequence[NewEntry] = (),
        owner: str | None = None,
        lease_seconds: float | None = None,
        parent_run_id: str | None = None,
        forked_from: str | None = None,
        forked_at: int | None = None,
        code_version: str | None = None,
        snapshot_every: int | None = None,
        wake_at: float | None = None,
        meta: dict[str, Any] | None = None,
        queue: str | None = None,
        priority: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[Run, bool]:
        """Create a run, or return the existing one: ``(run, created)``.

        ``run_id`` is an idempotency key: creating an id that exists writes
        nothing and returns that run with ``created=False``. ``entries`` are
        appended from seq 1 in the same transaction; with ``owner`` the run is
        claimed at once (epoch 1). ``queue``/``priority`` place a pending run in
        a durable queue (see :meth:`claim_next`). ``tags`` (str to str) are sealed
        with the row and indexed: :meth:`list_runs` finds runs by them.
        """
        req = self.new_run(
            run_id,
            name=name,
            kind=kind,
            input=input,
            codec=codec,
            status=status,
            entries=entries,
            owner=owner,
            lease_seconds=lease_seconds,
            parent_run_id=parent_run_id,
            forked_from=forked_from,
            forked_at=forked_at,
            code_version=code_version,
            snapshot_every=snapshot_every,
            wake_at=wake_at,
            meta=meta,
            queue=queue,
            priority=priority,
            tags=tags,
        )
        return self.create(req)

    def create(self, request: CreateRequest) -> tuple[Run, bool]:
        """Carry out a request from :meth:`new_run` in a transaction of its own:
        ``(run, created)`` as :meth:`create_run` returns."""
        with self._lock:
            db = self._c()
            try:
                with db.transaction(f"creating run {request.run.run_id!r}"):
                    return self._create(request)
            except CommitUnknown:
                return self._resolve_unknown_create(request)

    def new_run(
        self,
        run_id: str | None = None,
        *,
        name: str,
        kind: str = "function",
        input: Any = None,
        codec: Codec | None = None,
        status: str = "pending",
        entries: Sequence[NewEntry] = (),
        owner: str | None = None,
        lease_seconds: float | None = None,
        parent_run_id: str | None = None,
        forked_from: str | None = None,
        forked_at: int | None = None,
        code_version: str | None = None,
        snapshot_every: int | None = None,
        wake_at: float | None = None,
        meta: dict[str, Any] | None = None,
        queue: str | None = None,
        priority: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> CreateRequest:
        """The request :meth:`create_run` carries out, for :meth:`append_batch`: checked
        and encoded now (a bad value fails here, before any write)."""
        if kind not in RUN_KINDS:
            raise ValueError(f"kind must be one of {RUN_KINDS}, got {kind!r}")
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        use = codec or self.codec
        input_data = use.encode(input, path="input")
        rid = run_id if run_id is not None else new_run_id()
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"run_id must be a non-empty string, got {rid!r}")
        tagged = check_tags(tags)
        if tagged:
            # In meta, the row's sealed column: the checksum covers the tags, and the
            # run_tags index is rebuilt from them, never the other way round.
            meta = {**(meta or {}), "tags": tagged}
        now = time.time()
        epoch = 1 if owner else 0
        lease = now + lease_seconds if owner and lease_seconds is not None else None
        # The row as it will be stored, so a created run is returned without a re-read.
        run = Run(rid, kind, name, status, use.name, input_data, None, None, now, now,
                  len(entries), epoch, owner, lease, wake_at, parent_run_id, forked_from,
                  forked_at, code_version, snapshot_every, 0, dict(meta or {}), queue,
                  priority)  # fmt: skip
        return CreateRequest(
            run,
            tuple(entries),
            json.dumps(meta) if meta else "{}",
            lease_seconds if owner else None,
        )

    def _create(self, req: CreateRequest, clock: list[float] | None = None) -> tuple[Run, bool]:
        """Carry out ``req`` in the open transaction (``clock``: the journal's time,
        read once for a whole batch)."""
        db = self._c()
        run = req.run
        for ref in (run.parent_run_id, run.forked_from):
            if ref is not None and not self._exists(ref):
                raise RunNotFound(f"no run {ref!r} in {self.where!r}", run_id=ref)
        if run.forked_from is not None:
            self._check_fork_point(run.forked_from, run.forked_at or 0)
        if req.lease_seconds is not None:
            # By the journal's clock, as every claim measures it: a lease written by a
            # host whose clock is off would end too soon (and be stolen) or too late.
            if clock is None:
                clock = []
            if not clock:
                clock.append(db.clock())
            run = replace(run, lease_expires_at=clock[0] + req.lease_seconds)
        if not self._insert_run(run, req.meta):
            row = db.execute(
                f"SELECT {db.run_select} FROM runs WHERE run_id = ?", (run.run_id,)
            ).fetchone()
            return _run_from_row(row, db.sealed), False
        self._snapshot_every[run.run_id] = run.snapshot_every
        if run.meta.get("tags"):
            self.index_tags(run.run_id, run.tags)
        self._tails[run.run_id] = [0, 0, 0, 0]  # nothing to measure in a new run
        if req.entries:
            # A run created in this transaction has no entries: no guard needed.
            self._insert(run.run_id, req.entries, 0, run.created_at)
        return run, True

    def _insert_run(self, run: Run, meta: str) -> bool:
        """Insert ``run``'s row unless its id exists; True if inserted."""
        db = self._c()
        checksum = run_checksum(
            (run.run_id, run.kind, run.name, run.status, run.codec, run.input, None, None,
             run.created_at, run.parent_run_id, run.forked_from, run.forked_at,
             run.code_version, run.snapshot_every, 0, meta, run.queue, run.priority)
        )  # fmt: skip
        # ON CONFLICT: a concurrent creator of the same id (PostgreSQL, where writers
        # of different runs do not exclude each other) wins; the caller returns its run.
        db.execute(
            f"INSERT INTO runs ({RUN_COLUMNS}, checksum) VALUES "
            "(?,?,?,?,?,?,NULL,NULL,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?)"
            " ON CONFLICT (run_id) DO NOTHING",
            (
                run.run_id,
                run.kind,
                run.name,
                run.status,
                run.codec,
                run.input,
                run.created_at,
                run.updated_at,
                run.last_seq,
                run.epoch,
                run.owner,
                run.lease_expires_at,
                run.wake_at,
                run.parent_run_id,
                run.forked_from,
                run.forked_at,
                run.code_version,
                run.snapshot_every,
                meta,
                run.queue,
                run.priority,
                checksum,
            ),
        )
        return db.changes() > 0

    def _resealed(
        self,
        run_id: str,
        *,
        status: str | None = None,
        output: Any = UNSET,
        error: Any = UNSET,
        horizon: int | None = None,
        claim: bool = False,
        row: Sequence[Any] | None = None,
    ) -> int:
        """The checksum of ``run_id``'s row once the given columns change (``claim``:
        a pending run becomes running), in the open write transaction. The row as
        stored (``row``: its sealed columns and checksum, read here if not given) is
        verified first: a write never reseals a row altered on disk."""
        if row is None:
            row = (
                self._c()
                .execute(f"SELECT {SEALED_COLUMNS}, checksum FROM runs WHERE run_id = ?", (run_id,))
                .fetchone()
            )
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self.where!r}", run_id=run_id)
        *values, checksum = row
        if run_checksum(values) != checksum:
            raise RunCorrupted(
                f"run {run_id!r}: its row fails its checksum (altered on disk); it was not "
                "written to",
                run_id=run_id,
            )
        if claim and values[3] == "pending":
            values[3] = "running"
        if status is not None:
            values[3] = status
        if output is not UNSET:
            values[6] = output
        if error is not UNSET:
            values[7] = error
        if horizon is not None:
            values[14] = horizon
        return run_checksum(values)

    def index_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Index a new run's ``tags`` in the open write transaction (see :meth:`list_runs`)."""
        self._c().executemany(
            "INSERT INTO run_tags (key, value, run_id) VALUES (?, ?, ?)",
            [(k, v, run_id) for k, v in tags.items()],
        )

    def _check_fork_point(self, source: str, at: int) -> None:
        db = self._c()
        last_seq, horizon = db.execute(
            f"SELECT {db.last_seq}, horizon FROM runs WHERE run_id = ?", (source,)
        ).fetchone() or (0, 0)
        if at > last_seq or at < 0:
            raise SeqOutOfRange(
                f"cannot fork run {source!r} at seq {at}: it has seqs 0..{last_seq}",
                run_id=source,
                seq=at,
            )
        if at < horizon:
            raise HorizonError(
                f"cannot fork run {source!r} at seq {at}: it is before the retained horizon "
                f"(seq {horizon})",
                run_id=source,
                seq=at,
                horizon=horizon,
            )

    def _exists(self, run_id: str) -> bool:
        row = self._c().execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row is not None

    def find_run(self, run_id: str) -> Run | None:
        """The run with this id, or ``None``."""
        with self._lock:
            rows = self._read(
                f"SELECT {self._c().run_select} FROM runs WHERE run_id = ?",
                (run_id,),
                where=f"reading run {run_id!r}",
            )
        return _run_from_row(rows[0], self._c().sealed) if rows else None

    def run_ids(self) -> list[str]:
        """Every run's id, oldest first, without reading (or verifying) the rows."""
        with self._lock:
            rows = self._read(
                "SELECT run_id FROM runs ORDER BY created_at, run_id", where="listing run ids"
            )
        return [r[0] for r in rows]

    def get_run(self, run_id: str) -> Run:
        """The run with this id; raises :class:`RunNotFound`."""
        run = self.find_run(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r} in journal {self.where!r}", run_id=run_id)
        return run

    def list_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        name: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        parent_run_id: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
        newest_first: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> list[Run]:
        """Runs matching every given filter, ordered by creation time, paged. ``tags``:
        runs carrying every one of these ``key: value`` tags (through the tag index)."""
        clauses, params = self._run_filter(status, name, created_after, created_before)
        if parent_run_id is not None:
            clauses.append("parent_run_id = ?")
            params.append(parent_run_id)
        wanted = check_tags(tags)
        if wanted and self._c().schema_version < 4:
            return []  # a journal older than tags, opened read-only: no run has any
        tagged, tag_params = tag_clauses(wanted)
        clauses += tagged
        params += tag_params
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            db = self._c()
            sql = (
                f"SELECT {db.run_select} FROM runs {where}"
                f" ORDER BY created_at {order}, run_id {order} LIMIT ? OFFSET ?"
            )
            params += [db.no_limit if limit is None else limit, offset]
            rows = self._read(sql, params, where="listing runs")
        runs = [_run_from_row(r, db.sealed) for r in rows]
        if wanted:
            # The index is not sealed; the row is: a run indexed under a tag it does not
            # carry (an altered index) is left out.
            runs = [r for r in runs if all(r.tags.get(k) == v for k, v in wanted.items())]
        return runs

    @staticmethod
    def _run_filter(
        status: str | Sequence[str] | None,
        name: str | None,
        created_after: float | None,
        created_before: float | None,
    ) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            bad = [s for s in statuses if s not in RUN_STATUSES]
            if bad:
                raise ValueError(f"unknown status {bad[0]!r}; expected one of {RUN_STATUSES}")
            clauses.append(f"status IN ({','.join('?' * len(statuses))})")
            params += statuses
        if name is not None:
            clauses.append("name = ?")
            params.append(name)
        if created_after is not None:
            clauses.append("created_at >= ?")
            params.append(created_after)
        if created_before is not None:
            clauses.append("created_at < ?")
            params.append(created_before)
        return clauses, params

    def update_run(
        self,
        run_id: str,
        *,
        epoch: int | None = None,
        status: str | None = None,
        output: Any = UNSET,
        error: Any = UNSET,
        wake_at: Any = UNSET,
        release: bool = False,
    ) -> Run:
        """Change a run's status/output/error/wake time (no entries); epoch-checked if given.

        ``output`` is a Python value, encoded with the run's codec.
        """
        run = self.get_run(run_id)
        if output is not UNSET:
            output = self.codec_named(run.codec, run_id=run_id).encode(output, path="output")
        self.append(
            run_id,
            (),
            expected_seq=None,
            epoch=epoch,
            status=status,
            output=output,
            error=error,
            wake_at=wake_at,
            release=release,
        )
        return self.get_run(run_id)

    def claim_run(
        self,
        run_id: str,
        owner: str,
        *,
        lease_seconds: float = 30.0,
        steal: bool = False,
    ) -> Run:
        """Take the lease on a run, raising its epoch (the fencing token).

        Raises :class:`LeaseHeld` if another owner's lease has not expired (unless
        ``steal``), and :class:`ConflictError` if the run has finished.
        """
        granted: list[float] = []
        with self._lock:
            db = self._c()
            try:
                self._claim(run_id, owner, lease_seconds, steal, granted)
            except CommitUnknown:
                # Ours if the lease carries our owner and expiry; else not claimed.
                db.settle()
                run = self.get_run(run_id)
                if run.owner == owner and granted and run.lease_expires_at == granted[0]:
                    return run
                raise ConflictError(
                    f"run {run_id!r}: the claim's COMMIT failed and the run is not ours now "
                    f"(owner {run.owner!r})",
                    run_id=run_id,
                ) from None
        return self.get_run(run_id)

    def _claim(
        self, run_id: str, owner: str, lease_seconds: float, steal: bool, granted: list[float]
    ) -> None:
        """Claim in a transaction; the expiry written is appended to ``granted`` before
        the COMMIT (which may fail with its outcome unknown)."""
        db = self._c()
        with db.transaction(f"claiming run {run_id!r}"):
            row = db.execute(
                "SELECT status, owner, lease_expires_at FROM runs WHERE run_id = ?" + db.for_update,
                (run_id,),
            ).fetchone()
            # Read once the row is locked: the lease is judged, and granted, as of now.
            now = db.clock()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in journal {self.where!r}", run_id=run_id)
            status, holder, expires = row
            if status in TERMINAL_STATUSES:
                raise _ended(run_id, status)
            if holder not in (None, owner) and (expires or 0) > now and not steal:
                raise LeaseHeld(
                    f"run {run_id!r} is leased by {holder!r} for {expires - now:.1f}s more",
                    run_id=run_id,
                    owner=holder,
                )
            db.execute(
                "UPDATE runs SET owner = ?, lease_expires_at = ?, epoch = epoch + 1, "
                "status = CASE WHEN status = 'pending' THEN 'running' ELSE status END, "
                "checksum = ?, updated_at = ? WHERE run_id = ?",
                (owner, now + lease_seconds, self._resealed(run_id, claim=True), now, run_id),
            )
            granted.append(now + lease_seconds)

    def clock(self) -> float:
        """Now, in Unix seconds, by the clock every lease in this journal is measured by:
        the PostgreSQL server's (one clock for every host sharing the journal), or this
        host's for a journal file. Compare ``Run.lease_expires_at`` with this."""
        with self._lock:
            return self._clock()

    def _clock(self) -> float:
        db = self._c()
        try:
            return db.clock()
        except db.errors as exc:
            raise db.translate(exc, "reading the journal's clock") from exc

    def claimable(self, *, now: float | None = None, limit: int = 100) -> list[Run]:
        """Unfinished runs nobody holds: pending, running with an expired lease, or
        waiting with a due wake time. Oldest first."""
        with self._lock:
            t = self._clock() if now is None else now
            rows = self._read(
                f"SELECT {self._c().run_select} FROM runs WHERE {_CLAIMABLE}"
                " ORDER BY created_at LIMIT ?",
                (t, t, t, limit),
                where="finding claimable runs",
            )
        return [_run_from_row(r, self._c().sealed) for r in rows]

    def claim_next(
        self,
        owner: str,
        *,
        lease_seconds: float = 30.0,
        limit: int = 1,
        limits: dict[str, int] | None = None,
        skip_names: Sequence[str] = (),
        skip_run_ids: Sequence[str] = (),
        run_ids: Sequence[str] | None = None,
        now: float | None = None,
        rates: Mapping[str, tuple[int, float]] | None = None,
    ) -> list[Run]:
        """Claim up to ``limit`` runs nobody holds, highest priority then oldest first:
        the durable queue's dequeue, and the one door every run is claimed through
        when it belongs to a queue (``run_ids``: only among these runs).

        Claimable as in :meth:`claimable`, except child runs whose parent is still
        unfinished (the parent resumes them). ``limits`` caps how many runs of each
        named queue may be running (leased) at once across every worker: claimers of
        one limited queue take turns, and while another holds that queue's turn its
        runs are left for the next call (never waited for). ``rates`` maps a queue to
        ``(n, seconds)``: at most ``n`` of its runs are first claimed in any
        ``seconds`` (counted from when each was first claimed). Runs of functions in
        ``skip_names`` and the runs in ``skip_run_ids`` (those the caller is
        executing) are left alone, and so is a run whose row fails its checksum
        (``durable verify`` names it). Concurrent claimers on PostgreSQL skip each
        other's rows (``FOR UPDATE SKIP LOCKED``) rather than wait.
        """
        limits = {q: n for q, n in (limits or {}).items() if n is not None}
        rates = dict(rates or {})
        skip_run_ids = [*skip_run_ids, *self._altered]
        if run_ids is not None and not run_ids:
            return []
        with self._lock:
            db = self._c()
            with db.transaction("claiming runs"):
                # Read inside the transaction, after any wait for the lock: a lease
                # granted must run lease_seconds from the claim, not from before it.
                t = db.clock() if now is None else now
                where = [_CLAIMABLE, _PARENT_DONE]
                params: list[Any] = [t, t, t]
                if skip_names:
                    where.append(f"name NOT IN ({','.join('?' * len(skip_names))})")
                    params += skip_names
                if skip_run_ids:
                    where.append(f"run_id NOT IN ({','.join('?' * len(skip_run_ids))})")
                    params += skip_run_ids

                def candidates(clause: str, extra: Sequence[Any], n: int) -> list[Any]:
                    return db.execute(
                        f"SELECT run_id, priority, created_at FROM runs WHERE"
                        f" {' AND '.join([*where, clause])}"
                        f" ORDER BY priority DESC, created_at, run_id LIMIT ?{db.skip_locked}",
                        (*params, *extra, n),
                    ).fetchall()

                limited = sorted({*limits, *rates})
                marks = ",".join("?" * len(limited))
                unlimited = f"(queue IS NULL OR queue NOT IN ({marks}))" if limited else "1 = 1"
                among: list[Any] = list(limited)
                if run_ids is not None:
                    unlimited += f" AND run_id IN ({','.join('?' * len(run_ids))})"
                    among += run_ids
                rows = candidates(unlimited, among, limit)
                for queue in limited:
                    # Counting then claiming a limited queue must not interleave with
                    # another claimer's; a stalled claimer holds up that queue only.
                    if not db.take_turns(_queue_turn(queue)):
                        continue
                    room = _queue_room(
                        db,
                        queue,
                        now=t,
                        concurrency=limits.get(queue),
                        rate=rates.get(queue),
                        limit=limit,
                    )
                    if room > 0:
                        # The queue's next runs by priority; a run named in run_ids goes
                        # only if it is among them (it does not jump the queue).
                        rows += [
                            r
                            for r in candidates("queue = ?", [queue], room)
                            if run_ids is None or r[0] in run_ids
                        ]
                rows.sort(key=lambda r: (-r[1], r[2], r[0]))
                chosen = []
                for run_id in [r[0] for r in rows[:limit]]:
                    try:
                        checksum = self._resealed(run_id, claim=True)
                    except RunCorrupted:
                        # Altered on disk: left alone (`durable verify` names it), so that
                        # one bad row does not stop a worker from claiming the others.
                        self._altered.add(run_id)
                        continue
                    db.execute(
                        "UPDATE runs SET owner = ?, lease_expires_at = ?, epoch = epoch + 1, "
                        "status = CASE WHEN status = 'pending' THEN 'running' ELSE status END, "
                        "started_at = CASE WHEN status = 'pending' THEN ? ELSE started_at END, "
                        "checksum = ?, updated_at = ? WHERE run_id = ?",
                        (owner, t + lease_seconds, t, checksum, t, run_id),
                    )
                    chosen.append(run_id)
                claimed = [
                    _run_from_row(
                        db.execute(
                            f"SELECT {db.run_select} FROM runs WHERE run_id = ?", (run_id,)
                        ).fetchone(),
                        db.sealed,
                    )
                    for run_id in chosen
                ]
        return claimed

    def notify(self, channel: str, payload: str = "") -> None:
        """Wake listeners of ``channel`` (PostgreSQL ``NOTIFY``; nothing for a file)."""
        with self._lock:
            db = self._c()
            try:
                db.notify(channel, payload)
            except db.errors as exc:
                raise db.translate(exc, f"notifying {channel!r}") from exc

    def listener(self, channel: str) -> Listener:
        """A listener for :meth:`notify` on ``channel``, on a connection of its own
        (PostgreSQL); for a journal file, one whose ``wait`` just sleeps (poll)."""
        return self._c().listener(channel)

    def renew_lease(
        self,
        run_id: str,
        owner: str,
        epoch: int,
        lease_seconds: float,
        *,
        heartbeat: str | None = None,
    ) -> float:
        """Extend a held lease; raises :class:`ConflictError` if the epoch moved on.
        ``heartbeat`` (JSON: the steps' last progress, see :meth:`heartbeat_of`)
        replaces the run's in the same statement."""
        with self._lock:
            db = self._c()
            with db.transaction(f"renewing the lease on {run_id!r}"):
                expires = db.clock() + lease_seconds
                beat = "" if heartbeat is None else ", heartbeat = ?"
                db.execute(
                    f"UPDATE runs SET lease_expires_at = ?{beat} WHERE run_id = ? AND owner = ?"
                    " AND epoch = ? AND status NOT IN ('completed', 'failed', 'cancelled')",
                    (expires, *([] if heartbeat is None else [heartbeat]), run_id, owner, epoch),
                )
                if db.changes() == 0:
                    raise ConflictError(
                        f"run {run_id!r}: lease lost (epoch {epoch} is no longer current)",
                        run_id=run_id,
                        epoch=epoch,
                    )
        return expires

    def heartbeat_of(self, run_id: str) -> dict[str, Any]:
        """The progress the run's steps last reported (``ctx.heartbeat``): step key ->
        ``{"at": unix time, "details": ...}``, as of the last lease renewal; ``{}`` if
        none (or the journal predates heartbeats)."""
        with self._lock:
            if self._c().schema_version < 5:
                return {}
            rows = self._read(
                "SELECT heartbeat FROM runs WHERE run_id = ?",
                (run_id,),
                where=f"reading the heartbeats of run {run_id!r}",
            )
        if not rows or rows[0][0] is None:
            return {}
        try:
            beats = json.loads(rows[0][0])
        except ValueError:
            beats = None
        if not isinstance(beats, dict) or not all(
            isinstance(v, dict)
            and isinstance(v.get("at"), int | float)
            and not isinstance(v.get("at"), bool)
            for v in beats.values()
        ):
            raise CorruptionError(
                f"run {run_id!r}: its heartbeat column is not the JSON object the engine"
                " writes; the file was altered or damaged",
                run_id=run_id,
            )
        return beats

    # -- entries ---------------------------------------------------------------------

    def append(
        self,
        run_id: str,
        entries: Sequence[NewEntry],
        *,
        expected_seq: int | None,
        epoch: int | None = None,
        status: str | None = None,
        output: Any = UNSET,
        error: Any = UNSET,
        wake_at: Any = UNSET,
        release: bool = False,
    ) -> int:
        """Append ``entries`` after ``expected_seq`` in one transaction; return the new last seq.

        ``expected_seq`` is the seq the caller believes is last (``None`` skips
        the check, for run updates without entries). ``epoch``, if given, must
        be the run's current epoch. On any mismatch :class:`ConflictError` is
        raised and nothing is written. The run's status, output (already
        encoded), error and wake time change in the same commit.
        """
        expected = -1 if expected_seq is None else expected_seq
        # The common case (entries after a known seq, nothing else: see _advance)
        # skips building a request, and the transaction is spelled out rather than
        # taken from Backend.transaction (same semantics): at durability "process"
        # a commit is ~15 µs and every µs of Python shows.
        plain = (
            len(entries) > 0
            and expected >= 0
            and status is None
            and output is UNSET
            and error is UNSET
            and wake_at is UNSET
            and not release
        )
        req = (
            None
            if plain
            else AppendRequest(
                run_id, entries, expected, epoch, status, output, error, wake_at, release
            )
        )
        with self._lock:
            db = self._c()
            now = time.time()
            if (
                req is None
                and db.one_statement_append
                and not self._snapshot_due(run_id, expected, entries)
            ):
                return self._append_in_one_statement(run_id, entries, expected, epoch, now)
            try:
                db.begin()
            except db.errors as exc:
                raise db.translate(exc, f"appending to run {run_id!r}") from exc
            try:
                if req is None:
                    seq = self._advance(run_id, entries, expected, epoch, now)
                else:
                    seq = self._apply(req, now)
            except BaseException as exc:
                db.rollback()
                if isinstance(exc, db.errors):
                    raise db.translate(exc, f"appending to run {run_id!r}") from exc
                raise
            try:
                db.commit(f"appending to run {run_id!r}")
            except CommitUnknown as exc:
                # A COMMIT that raised may still have committed: re-read to decide.
                return self._resolve_unknown(
                    req or AppendRequest(run_id, entries, expected, epoch), exc
                )
            return seq

    def _append_in_one_statement(
        self,
        run_id: str,
        entries: Sequence[NewEntry],
        expected: int,
        epoch: int | None,
        now: float,
    ) -> int:
        # A server round trip per statement dominates a PostgreSQL append: guard,
        # run update and inserts go as one statement, its own transaction.
        db = self._c()
        where = f"appending to run {run_id!r}"
        try:
            written = db.append_entries(
                run_id, _entry_rows(run_id, entries, expected, now), expected, epoch, now
            )
        except CommitUnknown as exc:
            return self._resolve_unknown(AppendRequest(run_id, entries, expected, epoch), exc)
        except db.errors as exc:
            raise db.translate(exc, where) from exc
        if not written:
            self._explain_conflict(AppendRequest(run_id, entries, expected, epoch))
        return expected + len(entries)

    def append_batch(self, requests: Sequence[AppendRequest | CreateRequest]) -> list[Any]:
        """Group commit: apply many runs' appends (and run creations) in one transaction.

        Each request succeeds or fails alone: every guard is checked before anything
        is written, and a request whose guard fails writes nothing. The result list
        holds, per request, the new last seq (an append), ``(run, created)`` (a
        creation, as :meth:`create_run` returns), or the :class:`JournalError`.
        Creations are applied first. Nothing is acknowledged before the single
        COMMIT returns.
        """
        for req in requests:
            status = req.status if isinstance(req, AppendRequest) else req.run.status
            if status is not None and status not in RUN_STATUSES:
                raise ValueError(f"unknown status {status!r}")
        results: list[Any] = []
        with self._lock:
            db = self._c()
            now = time.time()
            try:
                with db.transaction(f"appending a batch of {len(requests)}"):
                    results = self._apply_batch(requests, now)
            except CommitUnknown:
                return [
                    r
                    if isinstance(r, JournalError)
                    else self._resolve_unknown(req, None)
                    if isinstance(req, AppendRequest)
                    else self._resolve_unknown_create(req)
                    for r, req in zip(results, requests, strict=True)
                ]
        return results

    def continue_run(
        self,
        run_id: str,
        entries: Sequence[NewEntry],
        *,
        expected_seq: int,
        epoch: int | None,
        continuation: CreateRequest,
    ) -> Run:
        """End ``run_id`` as completed (``entries`` appended) and create its continuation
        in one transaction: both happen, or neither. Raises :class:`ConflictError` (and
        writes nothing) if the run moved on, was fenced off or ended, or if a run with
        the continuation's id exists."""
        new = continuation.run
        req = AppendRequest(run_id, entries, expected_seq, epoch, "completed", release=True)
        with self._lock:
            db = self._c()
            try:
                with db.transaction(f"continuing run {run_id!r} as {new.run_id!r}"):
                    self._apply(req, time.time())
                    run, created = self._create(continuation)
                    if not created:
                        raise ConflictError(
                            f"run {run_id!r}: cannot continue as {new.run_id!r}, a run with "
                            "that id exists; nothing was written",
                            run_id=run_id,
                            continuation=new.run_id,
                        )
            except CommitUnknown:
                run, created = self._resolve_unknown_create(continuation)
                if not created:
                    raise ConflictError(
                        f"run {run_id!r}: the COMMIT of its continuation as {new.run_id!r} "
                        "failed and did not land; nothing was written",
                        run_id=run_id,
                        continuation=new.run_id,
                    ) from None
        return run

    def _resolve_unknown_create(self, req: CreateRequest) -> tuple[Run, bool]:
        # The creation is ours if the row carries our creation time; another creator
        # of the same id (or none) otherwise.
        final = self._c().settle()
        run = self.find_run(req.run.run_id)
        if run is not None:
            return run, run.created_at == req.run.created_at
        if final:
            raise ConnectionLost(
                f"run {req.run.run_id!r}: the connection to {self.where!r} was lost while "
                "creating it and the server rolled back; nothing was written: retry it",
                run_id=req.run.run_id,
                where=self.where,
            )
        raise ConflictError(
            f"run {req.run.run_id!r}: COMMIT failed and the run is not there now; the "
            "outcome stays unknown until the journal is re-read",
            run_id=req.run.run_id,
        )

    def _apply_batch(self, batch: Sequence[AppendRequest | CreateRequest], now: float) -> list[Any]:
        # Creations first (a JournalError from one is raised before it writes), then
        # one guard read for every append (locking the rows in a fixed order on
        # PostgreSQL, so two batches never deadlock), checked in Python as each
        # request moves its run on; then one insert of every entry.
        db = self._c()
        created: dict[int, tuple[Run, bool] | JournalError] = {}
        requests: list[AppendRequest] = []
        clock: list[float] = []  # one read of the journal's clock for the batch's leases
        for i, item in enumerate(batch):
            if isinstance(item, CreateRequest):
                try:
                    created[i] = self._create(item, clock)
                except JournalError as exc:
                    created[i] = exc
            else:
                requests.append(item)
        if not requests:
            return [created[i] for i in range(len(batch))]
        guards: dict[str, list[Any]] = {}
        ids = sorted({req.run_id for req in requests})
        for lo in range(0, len(ids), 500):
            chunk = ids[lo : lo + 500]
            for run_id, last_seq, epoch, status in db.execute(
                f"SELECT runs.run_id, {db.last_seq}, runs.epoch, runs.status FROM runs WHERE"
                f" runs.run_id IN ({','.join('?' * len(chunk))}) ORDER BY runs.run_id"
                f"{db.for_update}",
                chunk,
            ):
                guards[run_id] = [last_seq, epoch, status]
        results: list[int | JournalError] = []
        rows: list[tuple[Any, ...]] = []
        updates: list[tuple[AppendRequest, int]] = []
        snapshots: list[tuple[str, int]] = []
        for req in requests:
            guard = guards.get(req.run_id)
            if guard is None:
                results.append(
                    RunNotFound(
                        f"no run {req.run_id!r} in journal {self.where!r}", run_id=req.run_id
                    )
                )
                continue
            base, epoch, status = guard
            if (
                (req.expected_seq >= 0 and base != req.expected_seq)
                or (req.epoch is not None and epoch != req.epoch)
                or status in TERMINAL_STATUSES
            ):
                results.append(self._conflict(req, base, epoch, status))
                continue
            n = len(req.entries)
            if n:
                rows += _entry_rows(req.run_id, req.entries, base, now)
                if self._snapshot_due(req.run_id, base, req.entries):
                    snapshots.append((req.run_id, base + n))
            guard[0] = base + n
            if req.status is not None:
                guard[2] = req.status  # a later request of this batch sees the run ended
            if not _only_entries(req):
                updates.append((req, base + n))
            results.append(base + n if n else req.expected_seq)
        if rows:
            db.executemany(_INSERT_ENTRY, rows)
        for req, last_seq in updates:
            self._update_run(req, last_seq, now)
            self._forget_finished(req)
        if db.stores_last_seq:
            # A run whose row update already wrote its final last seq needs no second one.
            written = {req.run_id: last_seq for req, last_seq in updates}
            for run_id in {req.run_id for req in requests} & guards.keys():
                if written.get(run_id) == guards[run_id][0]:
                    continue
                db.execute(
                    "UPDATE runs SET last_seq = ?, updated_at = ? WHERE run_id = ?",
                    (guards[run_id][0], now, run_id),
                )
        for run_id, seq in snapshots:
            self._write_snapshot(run_id, seq, now)
        if created:
            appended = iter(results)
            return [created[i] if i in created else next(appended) for i in range(len(batch))]
        return results

    def _resolve_unknown(self, req: AppendRequest, failed: CommitUnknown | None) -> int:
        # COMMIT raised: the transaction may have landed. (run_id, seq) never
        # applies twice, so re-reading last_seq decides the outcome exactly, once the
        # backend has settled it (a server may otherwise apply it after the re-read).
        final = self._c().settle()
        run = self.get_run(req.run_id)
        target = req.expected_seq + len(req.entries)
        if req.entries and run.last_seq >= target:
            last = self.read_one(req.run_id, target)
            if last.kind == req.entries[-1].kind and last.payload == req.entries[-1].payload:
                return target
        if final and req.entries and run.last_seq == req.expected_seq:
            raise ConnectionLost(
                f"run {req.run_id!r}: the connection to {self.where!r} was lost during the "
                "append and the server rolled it back; nothing was written: retry it",
                run_id=req.run_id,
                where=self.where,
            )
        if getattr(failed, "full", False):
            # For want of space, not a conflict: say so, and what to do.
            raise JournalFull(
                f"run {req.run_id!r}: COMMIT failed: the disk holding the journal "
                f"{self.where!r} is full (or the file reached its size limit). Its entries "
                f"are not visible now (last seq is {run.last_seq}); after a failed sync they "
                "can still appear once the file is reopened. Free space, then resume the run: "
                "its lease was given up, so `durable recover` or a worker takes it",
                run_id=req.run_id,
                where=self.where,
            )
        raise ConflictError(
            f"run {req.run_id!r}: COMMIT failed and its entries are not visible now (last "
            f"seq is {run.last_seq}); the outcome stays unknown until the journal is re-read "
            "(after a failed sync they can still appear once the file is reopened)",
            run_id=req.run_id,
        )

    def _apply(self, req: AppendRequest, now: float) -> int:
        """Guard the run row, insert the entries, update the run, snapshot."""
        if req.entries and req.expected_seq >= 0 and _only_entries(req):
            return self._advance(req.run_id, req.entries, req.expected_seq, req.epoch, now)
        run_id, entries = req.run_id, req.entries
        n = len(entries)
        if req.status is not None and req.status not in RUN_STATUSES:
            raise ValueError(f"unknown status {req.status!r}")
        db = self._c()
        # A change to a sealed column reads the row's sealed columns with the guard:
        # one statement, not two, on the path that ends every run.
        seals = req.status is not None or req.output is not UNSET or req.error is not UNSET
        row = db.execute(db.sealed_guard if seals else db.guard, (run_id,)).fetchone()
        if (
            row is None
            or (req.expected_seq >= 0 and row[0] != req.expected_seq)
            or (req.epoch is not None and row[1] != req.epoch)
            or row[_SEALED_STATUS if seals else _GUARD_STATUS] in TERMINAL_STATUSES
        ):
            self._explain_conflict(req)
        base = row[0]
        self._update_run(req, base + n, now, row[2:] if seals else None)
        seq = self._insert(run_id, entries, base, now) if n else req.expected_seq
        self._forget_finished(req)
        return seq

    def _update_run(
        self, req: AppendRequest, last_seq: int, now: float, stored: Sequence[Any] | None = None
    ) -> None:
        """Write the run-row changes ``req`` carries (status, output, lease release...);
        ``stored``: the row's sealed columns and checksum, if the caller read them."""
        sets = ["updated_at = ?", "last_seq = ?"]
        params: list[Any] = [now, last_seq]
        if req.status is not None:
            sets.append("status = ?")
            params.append(req.status)
        for column, value in (
            ("output", req.output),
            ("error", req.error),
            ("wake_at", req.wake_at),
        ):
            if value is not UNSET:
                sets.append(f"{column} = ?")
                params.append(value)
        if req.release:
            sets.append("owner = NULL, lease_expires_at = NULL")
        if req.status is not None or req.output is not UNSET or req.error is not UNSET:
            sets.append("checksum = ?")
            params.append(
                self._resealed(
                    req.run_id, status=req.status, output=req.output, error=req.error, row=stored
                )
            )
        params.append(req.run_id)
        self._c().execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", params)

    def release(self, run_id: str, epoch: int) -> bool:
        """Give up the lease on ``run_id`` if ``epoch`` still holds it, so another worker
        can take the run (after a write failed for want of disk space: an UPDATE in
        place often still fits). False if it could not be written."""
        try:
            self.append(run_id, (), expected_seq=None, epoch=epoch, release=True)
        except JournalError:
            return False
        return True

    def _forget_finished(self, req: AppendRequest) -> None:
        """Drop a run that ``req`` finishes from the snapshot_every cache (after its
        entries are in: they read it). The cache holds runs in flight only: kept for
        every run ever appended to, it grew by ~110 bytes per finished run. (A dropped
        entry is only a cache miss: the column never changes.)"""
        if req.status in TERMINAL_STATUSES:
            self._snapshot_every.pop(req.run_id, None)
            self._tails.pop(req.run_id, None)

    def _advance(
        self,
        run_id: str,
        entries: Sequence[NewEntry],
        expected: int,
        epoch: int | None,
        now: float,
    ) -> int:
        """The hot path: entries after a known seq and no other change, so no runs UPDATE.

        The guard is a read (the caller holds the write lock since BEGIN IMMEDIATE);
        the new last seq is the newest entry's, which readers derive. (A backend
        whose guard locks only the run's row stores it instead.)
        """
        db = self._c()
        row = db.execute(db.guard, (run_id,)).fetchone()
        if (
            row is None
            or row[0] != expected
            or (epoch is not None and row[1] != epoch)
            or row[_GUARD_STATUS] in TERMINAL_STATUSES
        ):
            self._explain_conflict(AppendRequest(run_id, entries, expected, epoch))
        if db.stores_last_seq:  # before the insert: a snapshot it writes reads the run
            db.execute(
                "UPDATE runs SET last_seq = ?, updated_at = ? WHERE run_id = ?",
                (expected + len(entries), now, run_id),
            )
        return self._insert(run_id, entries, expected, now)

    def _insert(self, run_id: str, entries: Sequence[NewEntry], base: int, now: float) -> int:
        """Insert ``entries`` as seqs ``base+1..``; write a snapshot if they cross a boundary."""
        db = self._c()
        seq = base
        if len(entries) == 1:
            e = entries[0]
            seq += 1
            db.execute(
                _INSERT_ENTRY,
                (
                    run_id,
                    seq,
                    e.kind,
                    e.step,
                    e.key,
                    e.payload,
                    e.codec,
                    now,
                    entry_checksum(run_id, seq, e.kind, e.step, e.key, e.payload, e.codec, now),
                ),
            )
        else:
            rows = _entry_rows(run_id, entries, base, now)
            seq += len(rows)
            db.executemany(_INSERT_ENTRY, rows)
        if self._snapshot_due(run_id, base, entries):
            self._write_snapshot(run_id, seq, now)
        return seq

    def _snapshot_due(self, run_id: str, base: int, entries: Sequence[NewEntry]) -> bool:
        """Does appending ``entries`` after ``base`` call for a snapshot (see
        :class:`SnapshotPolicy`)? Counts the entries' bytes into the run's tail once."""
        policy = self.snapshot_policy
        after = base + len(entries)
        if not policy.by_size:
            return policy.crosses(base, after, self._run_snapshot_every(run_id))
        tail = self._tails.get(run_id)
        if tail is None or (tail[0] != base and tail[0] != after):
            tail = self._tails[run_id] = self._measure_tail(run_id, base)
        if tail[0] == base and entries:
            tail[0] = after
            size = ENTRY_FOLD_BYTES * len(entries)
            for e in entries:
                if e.payload is not None:
                    size += len(e.payload)
            tail[1] += size
        if tail[1] < tail[2]:
            return False  # the tail is still lighter than the snapshot it would replace
        every = self._run_snapshot_every(run_id)
        n = policy.every if every is None else every
        return n > 0 and after - tail[3] >= n

    def _measure_tail(self, run_id: str, base: int) -> list[int]:
        """The run's tail as stored: ``[base, bytes after the last snapshot, its bytes,
        its seq]``."""
        db = self._c()
        row = db.execute(
            f"SELECT seq, {db.blob_length}(state) FROM snapshots WHERE run_id = ? AND seq <= ?"
            " ORDER BY seq DESC LIMIT 1",
            (run_id, base),
        ).fetchone()
        snap_seq, snap_bytes = (int(row[0]), int(row[1])) if row else (0, 0)
        count, size = db.execute(
            f"SELECT count(*), coalesce(sum({db.blob_length}(payload)), 0) FROM entries"
            " WHERE run_id = ? AND seq > ? AND seq <= ?",
            (run_id, snap_seq, base),
        ).fetchone()
        return [base, int(count) * ENTRY_FOLD_BYTES + int(size), snap_bytes, snap_seq]

    def _explain_conflict(self, req: AppendRequest) -> NoReturn:
        db = self._c()
        row = db.execute(db.guard, (req.run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {req.run_id!r} in journal {self.where!r}", run_id=req.run_id)
        raise self._conflict(req, row[0], row[1], row[_GUARD_STATUS])

    @staticmethod
    def _conflict(req: AppendRequest, last_seq: int, epoch: int, status: str) -> ConflictError:
        if status in TERMINAL_STATUSES:
            return _ended(req.run_id, status)
        if req.epoch is not None and epoch != req.epoch:
            return ConflictError(
                f"run {req.run_id!r}: fenced off: this writer holds epoch {req.epoch} but the "
                f"run is now at epoch {epoch} (another worker claimed it); nothing was written",
                run_id=req.run_id,
                epoch=req.epoch,
                current_epoch=epoch,
            )
        return ConflictError(
            f"run {req.run_id!r}: expected last seq {req.expected_seq} but it is {last_seq}; "
            "another writer appended first and nothing was written",
            run_id=req.run_id,
            expected_seq=req.expected_seq,
            actual_seq=last_seq,
        )

    def _run_snapshot_every(self, run_id: str) -> int | None:
        if run_id not in self._snapshot_every:
            row = (
                self._c()
                .execute("SELECT snapshot_every FROM runs WHERE run_id = ?", (run_id,))
                .fetchone()
            )
            self._snapshot_every[run_id] = row[0] if row else None
        return self._snapshot_every[run_id]

    def read(self, run_id: str, start: int = 1, end: int | None = None) -> Iterator[Entry]:
        """Entries ``start..end`` (inclusive) in seq order, each checksum-verified.

        Streams in pages, so a long run is never held in memory at once. Raises
        :class:`HorizonError` if ``start`` lies before the retained horizon.
        """
        run = self.get_run(run_id)
        if start <= run.horizon:
            raise HorizonError(
                f"run {run_id!r}: seq {start} was compacted away; the retained horizon is "
                f"seq {run.horizon} (entries from {run.horizon + 1} are kept)",
                run_id=run_id,
                seq=start,
                horizon=run.horizon,
            )
        last = run.last_seq if end is None else min(end, run.last_seq)
        page = 1000
        lo = start
        while lo <= last:
            hi = min(lo + page - 1, last)
            with self._lock:
                rows = self._read(
                    f"SELECT {ENTRY_COLUMNS} FROM entries WHERE run_id = ? AND seq BETWEEN ? AND ?"
                    " ORDER BY seq",
                    (run_id, lo, hi),
                    where=f"reading run {run_id!r} seqs {lo}..{hi}",
                )
            # Counted when read from disk, not when consumed: a caller that stops early
            # (read_one, last_entry) still read the page.
            self.entries_read += len(rows)
            expect = lo
            for row in rows:
                if row[1] != expect:
                    raise CorruptionError(
                        f"run {run_id!r}: entry seq {expect} is missing (found {row[1]})",
                        run_id=run_id,
                        seq=expect,
                    )
                yield self._verified(row)
                expect += 1
            if expect != hi + 1:
                raise CorruptionError(
                    f"run {run_id!r}: entries {expect}..{hi} are missing",
                    run_id=run_id,
                    seq=expect,
                )
            lo = hi + 1

    def _verified(self, row: Sequence[Any]) -> Entry:
        run_id, seq, kind, step, key, payload, codec, ts, checksum = row
        # A damaged record can change a column's stored type (a BLOB read back as TEXT).
        if (
            not isinstance(payload, bytes | None)
            or entry_checksum(run_id, seq, kind, step, key, payload, codec, ts) != checksum
        ):
            raise CorruptionError(
                f"run {run_id!r} seq {seq}: checksum mismatch (the entry was altered on disk)",
                run_id=run_id,
                seq=seq,
            )
        return Entry(run_id, seq, kind, step, key, payload, codec, ts)

    def read_one(self, run_id: str, seq: int) -> Entry:
        """The entry at ``seq`` (verified)."""
        for entry in self.read(run_id, seq, seq):
            return entry
        raise SeqOutOfRange(f"run {run_id!r} has no seq {seq}", run_id=run_id, seq=seq)

    def last_entry(self, run_id: str) -> Entry | None:
        """The run's newest entry, or ``None`` if it has none (or all were compacted)."""
        run = self.get_run(run_id)
        if run.last_seq == 0 or run.last_seq <= run.horizon:
            return None
        return self.read_one(run_id, run.last_seq)

    # -- state and snapshots ---------------------------------------------------------

    def fingerprint(self, codec: str) -> str:
        """Identifies how a snapshot was made; one made another way is skipped, not trusted."""
        return f"fold-v{FOLD_VERSION}/{codec}"

    def state_at(self, run_id: str, seq: int | None = None, *, strict: bool = True) -> FoldedState:
        """The run's folded state after ``seq`` (default: its last entry).

        Reads the newest valid snapshot at or before ``seq`` and folds only the
        entries after it, so the cost is bounded by the snapshot interval. A fork
        starts from its source's state at the fork point (the source's entries are
        shared, never copied): its lineage is walked up to the first run with a
        usable snapshot, then folded back down, iteratively.
        ``strict=False`` reads values as :meth:`decode` does for readers.
        """
        with self._lock:
            run = self.get_run(run_id)
            target = run.last_seq if seq is None else seq
            below: list[tuple[Run, int]] = []  # (fork, seq) to fold after its source's state
            for current in ancestors(self, run):
                if below:  # the fork point, checked as a read of the source at that seq
                    target = below[-1][0].forked_at or 0
                self._check_target(current, target)
                base = self._snapshot_state(current, target, strict=strict)
                if base is not None:
                    break
                if current.horizon > 0:
                    raise HorizonError(
                        f"run {current.run_id!r}: no usable snapshot at or after the horizon "
                        f"(seq {current.horizon}) to rebuild seq {target}",
                        run_id=current.run_id,
                        seq=target,
                        horizon=current.horizon,
                    )
                if current.forked_from is None:
                    base = FoldedState()
                    break
                below.append((current, target))
            assert base is not None  # the walk ends at a usable snapshot or at the root
            decode = self.decode_entry if strict else self._read_entry
            if base.seq < target:
                fold(base, self.read(current.run_id, base.seq + 1, target), decode)
            for fork, upto in reversed(below):
                base.seq = 0
                if upto > 0:
                    fold(base, self.read(fork.run_id, 1, upto), decode)
            return base

    @staticmethod
    def _check_target(run: Run, target: int) -> None:
        if target < 0 or target > run.last_seq:
            raise SeqOutOfRange(
                f"run {run.run_id!r} has seqs 0..{run.last_seq}; seq {target} is out of range",
                run_id=run.run_id,
                seq=target,
            )
        if target < run.horizon:
            raise HorizonError(
                f"run {run.run_id!r}: the state at seq {target} is before the retained horizon "
                f"(seq {run.horizon}); it was compacted away",
                run_id=run.run_id,
                seq=target,
                horizon=run.horizon,
            )

    def _snapshot_state(self, run: Run, seq: int, *, strict: bool = True) -> FoldedState | None:
        # Newest first, and only as far as the first usable one: a long run has
        # many snapshots, and reading them all would make state_at grow with it.
        db = self._c()
        try:
            cursor = db.execute(
                "SELECT seq, state, codec, fingerprint, checksum FROM snapshots "
                "WHERE run_id = ? AND seq <= ? AND seq >= ? ORDER BY seq DESC",
                (run.run_id, seq, run.horizon),
            )
            for snap_seq, state, codec, fingerprint, checksum in cursor:
                if fingerprint == self.fingerprint(codec):
                    loaded = self._load_snapshot(
                        run.run_id, snap_seq, bytes(state), codec, fingerprint, checksum, strict
                    )
                    if loaded is not None:
                        return loaded
        except db.errors as exc:
            raise db.translate(exc, f"reading snapshots of {run.run_id!r}") from exc
        return None

    def _load_snapshot(  # noqa: PLR0917 - the snapshot row's columns, in order
        self,
        run_id: str,
        snap_seq: int,
        state: bytes,
        codec: str,
        fingerprint: str,
        checksum: int,
        strict: bool = True,
    ) -> FoldedState | None:
        if _snapshot_checksum(run_id, snap_seq, state, fingerprint) != checksum:
            raise CorruptionError(
                f"run {run_id!r}: snapshot at seq {snap_seq} fails its checksum",
                run_id=run_id,
                seq=snap_seq,
            )
        payload = self.decode(
            state,
            codec,
            where=f"run {run_id!r} snapshot at seq {snap_seq}",
            strict=strict,
            run_id=run_id,
        )
        if isinstance(payload, Undecoded):
            return None  # a reader may not unpickle it: the entries still tell the state
        # "compacted": what compaction dropped before this snapshot (journal.compaction).
        if not isinstance(payload, dict) or set(payload) - {"compacted"} != {"values", "pending"}:
            raise DecodeError(
                f"run {run_id!r}: snapshot at seq {snap_seq} has an unexpected shape",
                run_id=run_id,
                seq=snap_seq,
            )
        return FoldedState.from_payload(snap_seq, payload)

    def write_snapshot(self, run_id: str, seq: int | None = None) -> SnapshotInfo:
        """Write (or rewrite) the snapshot of the state at ``seq`` (default: last)."""
        with self._lock:
            db = self._c()
            with db.transaction(f"snapshotting run {run_id!r}"):
                run = self.get_run(run_id)
                target = run.last_seq if seq is None else seq
                return self._write_snapshot(run_id, target, time.time())

    def _write_snapshot(self, run_id: str, seq: int, now: float) -> SnapshotInfo:
        db = self._c()
        state = self.state_at(run_id, seq)
        codec_name, horizon = db.execute(
            "SELECT codec, horizon FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        codec = self.codec_named(codec_name, run_id=run_id)
        payload = state.to_payload()
        if seq == horizon and horizon:  # rewriting the horizon: keep what compaction dropped
            payload.update(kept_compaction(self, run_id, seq))
        data = codec.encode(payload, path=f"snapshot of {run_id!r} at seq {seq}")
        fingerprint = self.fingerprint(codec.name)
        db.execute(
            "INSERT INTO snapshots (run_id, seq, state, codec, fingerprint, checksum,"
            " created_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (run_id, seq) DO UPDATE SET"
            " state = excluded.state, codec = excluded.codec, fingerprint = excluded.fingerprint,"
            " checksum = excluded.checksum, created_at = excluded.created_at",
            (
                run_id,
                seq,
                data,
                codec.name,
                fingerprint,
                _snapshot_checksum(run_id, seq, data, fingerprint),
                now,
            ),
        )
        tail = self._tails.get(run_id)
        if tail is not None and tail[0] == seq:
            tail[1:] = [0, len(data), seq]
        else:
            self._tails.pop(run_id, None)
        return SnapshotInfo(run_id, seq, codec.name, fingerprint, len(data), now)

    def snapshots(self, run_id: str) -> list[SnapshotInfo]:
        """The run's snapshots, oldest first."""
        with self._lock:
            rows = self._read(
                f"SELECT run_id, seq, codec, fingerprint, {self._c().blob_length}(state),"
                " created_at FROM snapshots WHERE run_id = ? ORDER BY seq",
                (run_id,),
                where=f"listing snapshots of {run_id!r}",
            )
        return [SnapshotInfo(*r) for r in rows]

    # -- maintenance and read side -----------------------------------------------------

    def compact(
        self, run_id: str | None = None, policy: Any = None, *, now: float | None = None
    ) -> Any:
        """Drop entries older than the retained snapshots; see :mod:`journal.compaction`."""
        return compact(self, run_id, policy, now=now)

    def compaction(self, run_id: str) -> CompactionRecord | None:
        """What compaction dropped from the run and when; ``None`` if nothing was (or it
        was compacted before this was recorded)."""
        return compaction_record(self, run_id)

    def reclaim(self, max_pages: int | None = None) -> int:
        """Return free pages to the OS (incremental VACUUM); returns pages freed."""
        with self._lock:
            db = self._c()
            try:
                return db.reclaim(max_pages)
            except db.errors as exc:
                raise db.translate(exc, f"reclaiming free space in {self.where!r}") from exc

    def verify(
        self, run_id: str | None = None, *, progress: Callable[[int, int], None] | None = None
    ) -> VerifyReport:
        """Check checksums, seq density, snapshots against folds and the file's integrity."""
        return verify(self, run_id, progress=progress)

    @property
    def backend(self) -> Backend:
        """The open database connection and its SQL spellings, for tools within this package."""
        return self._c()

    @property
    def is_postgres(self) -> bool:
        """True for a journal in PostgreSQL, False for a journal file."""
        return self._c().kind == "postgresql"

    def raw_connection(self) -> Any:
        """The underlying apsw connection of a journal file (tests and benchmarks)."""
        db = self._c()
        if db.kind != "sqlite":
            raise JournalError(f"{self.where!r} is not a journal file; it has no apsw connection")
        return db.conn  # type: ignore[attr-defined]

    @property
    def schedules(self) -> Schedules:
        """The schedules stored in this journal (the engine's ``add_schedule`` writes them)."""
        return Schedules(self)

    @property
    def lock(self) -> threading.RLock:
        """The lock serialising use of the connection across threads."""
        return self._lock

    def export_run(self, run_id: str, *, format: str = "json") -> str:
        """A run exported as JSON (row, decoded entries, snapshots) or CSV (entries)."""
        return export_run(self, run_id, format=format)

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """An ad-hoc read-only SQL query over the journal: rows as dicts. It cannot write."""
        with self._lock:
            return self._c().query(sql, params)
