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
from typing import Any, Final, NoReturn, TypeVar

from ._backend import CommitUnknown, Listener, open_backend
from ._integrity import entry_checksum, entry_rows, run_from_row, snapshot_checksum
from ._recorder import Recorder, Reseal
from ._schema import (
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
from .tags import check_tags
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

_T = TypeVar("_T")

DEFAULT_PATH: Final = "durable.db"
ENV_VAR: Final = "DURABLE_DB"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final[Any] = _Unset()
"""Marks an optional field of an update as "leave as it is" (``None`` means NULL)."""

_QUEUE_TURNS = 0x44524232  # claimers of a limited queue take turns on a key made from this


def _queue_turn(queue: str) -> int:
    """The advisory-lock key of a limited queue's claim turn (a signed 64-bit int)."""
    return (_QUEUE_TURNS << 31) ^ zlib.crc32(queue.encode())


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


def _as_entries(run_id: str, base: int, entries: Sequence[NewEntry], now: float) -> Iterator[Entry]:
    """``entries`` as they are stored from seq ``base + 1`` (for folding)."""
    for seq, e in enumerate(entries, base + 1):
        yield Entry(run_id, seq, e.kind, e.step, e.key, e.payload, e.codec, now)


def _only_entries(req: AppendRequest) -> bool:
    """True if ``req`` changes nothing of the run's row but its entries."""
    return (
        req.status is None
        and req.output is UNSET
        and req.error is UNSET
        and req.wake_at is UNSET
        and not req.release
    )


_KEPT_BINDINGS = 1024
"""Runs the engine left whose own codec stays bound (see :meth:`Journal.use_codec`)."""


def _ended(run_id: str, status: str) -> RunEnded:
    return RunEnded(
        f"run {run_id!r} is {status}: a finished run takes no more entries or changes; "
        "nothing was written",
        run_id=run_id,
        status=status,
    )


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
        # Per run this journal writes and snapshots: [the state at its last snapshot,
        # the appends since (base, entries, time), the seq they reach], so the next
        # snapshot folds what the writer already holds instead of re-reading entries.
        self._held: dict[str, list[Any]] = {}
        self._altered: set[str] = set()
        """Runs whose row failed its checksum when a claim read it: never claimed again."""
        self._lock = threading.RLock()
        self.entries_read = 0
        """Entries read from disk since open: lets tests prove recovery reads only a tail."""
        self._db: Recorder | None = open_backend(
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

    def _c(self) -> Recorder:
        if self._db is None:
            raise JournalClosed(f"journal {self.where!r} is closed", path=self.where)
        return self._db

    def _read(self, where: str, operation: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``operation(*args, **kwargs)`` of the recorder, its errors translated."""
        db = self._c()
        try:
            return operation(*args, **kwargs)
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
            return run_from_row(db.select_run(run.run_id), db.sealed), False
        self._snapshot_every[run.run_id] = run.snapshot_every
        if run.meta.get("tags"):
            self.index_tags(run.run_id, run.tags)
        self._tails[run.run_id] = [0, 0, 0, 0]  # nothing to measure in a new run
        if req.entries:
            # A run created in this transaction has no entries: no guard needed.
            db.insert_entries(entry_rows(run.run_id, req.entries, 0, run.created_at))
            if self._snapshot_due(run.run_id, 0, req.entries):
                state = FoldedState()
                if run.forked_from is not None:  # a fork starts from its source's state
                    state = self.state_at(run.forked_from, run.forked_at or 0)
                    state.seq = 0
                fold(
                    state,
                    _as_entries(run.run_id, 0, req.entries, run.created_at),
                    self.decode_entry,
                )
                db.put_snapshot(self._snapshot_row(run.run_id, state, run.created_at))
                self._tails.pop(run.run_id, None)
        return run, True

    def _insert_run(self, run: Run, meta: str) -> bool:
        """Insert ``run``'s row unless its id exists; True if inserted."""
        db = self._c()
        checksum = run_checksum(
            (run.run_id, run.kind, run.name, run.status, run.codec, run.input, None, None,
             run.created_at, run.parent_run_id, run.forked_from, run.forked_at,
             run.code_version, run.snapshot_every, 0, meta, run.queue, run.priority)
        )  # fmt: skip
        # A concurrent creator of the same id (PostgreSQL, where writers of different
        # runs do not exclude each other) wins; the caller returns its run.
        return db.insert_run(
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
            )
        )

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
            row = self._c().sealed_row(run_id)
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
        self._c().index_tags(run_id, tags)

    def _check_fork_point(self, source: str, at: int) -> None:
        last_seq, horizon = self._c().fork_point(source)
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
        return self._c().run_exists(run_id)

    def find_run(self, run_id: str) -> Run | None:
        """The run with this id, or ``None``."""
        with self._lock:
            db = self._c()
            row = self._read(f"reading run {run_id!r}", db.select_run, run_id)
        return run_from_row(row, db.sealed) if row is not None else None

    def run_ids(self) -> list[str]:
        """Every run's id, oldest first, without reading (or verifying) the rows."""
        with self._lock:
            return self._read("listing run ids", self._c().run_names)

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
        statuses = None if status is None else [status] if isinstance(status, str) else [*status]
        bad = [s for s in statuses or () if s not in RUN_STATUSES]
        if bad:
            raise ValueError(f"unknown status {bad[0]!r}; expected one of {RUN_STATUSES}")
        wanted = check_tags(tags)
        if wanted and self._c().schema_version < 4:
            return []  # a journal older than tags, opened read-only: no run has any
        with self._lock:
            db = self._c()
            rows = self._read(
                "listing runs",
                db.select_runs,
                statuses=statuses,
                name=name,
                created_after=created_after,
                created_before=created_before,
                parent_run_id=parent_run_id,
                tags=wanted,
                newest_first=newest_first,
                limit=limit,
                offset=offset,
            )
        runs = [run_from_row(r, db.sealed) for r in rows]
        if wanted:
            # The index is not sealed; the row is: a run indexed under a tag it does not
            # carry (an altered index) is left out.
            runs = [r for r in runs if all(r.tags.get(k) == v for k, v in wanted.items())]
        return runs

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
            row = db.lease_row(run_id)
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
            checksum = self._resealed(run_id, claim=True)
            db.mark_claimed(run_id, owner, now + lease_seconds, checksum, now)
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
            db = self._c()
            rows = self._read("finding claimable runs", db.claimable_rows, t, limit)
        return [run_from_row(r, db.sealed) for r in rows]

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
    ) -> list[Run]:
        """Claim up to ``limit`` runs nobody holds, highest priority then oldest first:
        the durable queue's dequeue, and the one door every run is claimed through
        when it belongs to a queue (``run_ids``: only among these runs).

        Claimable as in :meth:`claimable`, except child runs whose parent is still
        unfinished (the parent resumes them). ``limits`` caps how many runs of each
        named queue may be running (leased) at once across every worker: claimers of
        one limited queue take turns, and while another holds that queue's turn its
        runs are left for the next call (never waited for). Runs of functions in
        ``skip_names`` and the runs in ``skip_run_ids`` (those the caller is
        executing) are left alone, and so is a run whose row fails its checksum
        (``durable verify`` names it). Concurrent claimers on PostgreSQL skip each
        other's rows (``FOR UPDATE SKIP LOCKED``) rather than wait.
        """
        limits = {q: n for q, n in (limits or {}).items() if n is not None}
        skip_run_ids = [*skip_run_ids, *self._altered]
        if run_ids is not None and not run_ids:
            return []
        with self._lock:
            db = self._c()
            chosen: list[str] = []
            granted: list[float] = []  # the expiry written, known before the COMMIT
            try:
                with db.transaction("claiming runs"):
                    # Read inside the transaction, after any wait for the lock: a lease
                    # granted must run lease_seconds from the claim, not from before it.
                    t = db.clock() if now is None else now
                    granted.append(t + lease_seconds)

                    def candidates(n: int, **which: Any) -> list[Any]:
                        return db.claim_candidates(
                            t, n, skip_names=skip_names, skip_run_ids=skip_run_ids, **which
                        )

                    rows = candidates(limit, not_queues=list(limits), run_ids=run_ids)
                    for queue in sorted(limits):
                        # Counting then claiming a limited queue must not interleave with
                        # another claimer's; a stalled claimer holds up that queue only.
                        if not db.take_turns(_queue_turn(queue)):
                            continue
                        active = db.running_in_queue(queue, t)
                        room = min(limits[queue] - active, limit)
                        if room > 0:
                            # The queue's next runs by priority; a run named in run_ids goes
                            # only if it is among them (it does not jump the queue).
                            rows += [
                                r
                                for r in candidates(room, queue=queue)
                                if run_ids is None or r[0] in run_ids
                            ]
                    rows.sort(key=lambda r: (-r[1], r[2], r[0]))
                    for run_id in [r[0] for r in rows[:limit]]:
                        try:
                            checksum = self._resealed(run_id, claim=True)
                        except RunCorrupted:
                            # Altered on disk: left alone (`durable verify` names it), so that
                            # one bad row does not stop a worker from claiming the others.
                            self._altered.add(run_id)
                            continue
                        db.mark_claimed(run_id, owner, t + lease_seconds, checksum, t)
                        chosen.append(run_id)
                    claimed = [run_from_row(db.select_run(run_id), db.sealed) for run_id in chosen]
            except CommitUnknown:
                # Ours are the chosen runs whose lease carries our owner and expiry.
                db.settle()
                claimed = [
                    run
                    for run in map(self.find_run, chosen)
                    if run is not None and run.owner == owner and run.lease_expires_at == granted[0]
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

    def renew_lease(self, run_id: str, owner: str, epoch: int, lease_seconds: float) -> float:
        """Extend a held lease; raises :class:`ConflictError` if the epoch moved on."""
        with self._lock:
            db = self._c()
            expires = None
            try:
                with db.transaction(f"renewing the lease on {run_id!r}"):
                    expires = db.clock() + lease_seconds
                    renewed = db.renew(run_id, owner, epoch, expires)
            except CommitUnknown:
                # Renewed if the lease there is the one we wrote.
                db.settle()
                run = self.find_run(run_id)
                renewed = run is not None and (run.owner, run.epoch, run.lease_expires_at) == (
                    owner,
                    epoch,
                    expires,
                )
            if not renewed or expires is None:
                raise ConflictError(
                    f"run {run_id!r}: lease lost (epoch {epoch} is no longer current)",
                    run_id=run_id,
                    epoch=epoch,
                )
        return expires

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
        plain = (
            status is None
            and output is UNSET
            and error is UNSET
            and wake_at is UNSET
            and not release
        )
        req = AppendRequest(
            run_id, entries, expected, epoch, status, output, error, wake_at, release
        )
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        changes, reseal = (None, None) if plain else self._changes(req)
        with self._lock:
            db = self._c()
            now = time.time()
            snapshot = self._snapshot(run_id, expected, entries, now)
            try:
                seq = db.append(
                    run_id,
                    entries,
                    expected,
                    epoch,
                    now,
                    changes=changes,
                    release=release,
                    reseal=reseal,
                    snapshot=snapshot,
                )
            except CommitUnknown as exc:
                # A COMMIT that raised may still have committed: re-read to decide.
                self._held.pop(run_id, None)
                return self._resolve_unknown(req, exc)
            except BaseException:
                self._held.pop(run_id, None)
                raise
            if seq is None:
                self._held.pop(run_id, None)
                self._explain_conflict(req)
            self._appended(req, now, snapshot)
            return seq if entries else expected

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
            snapshots = self._batch_snapshots(requests, now)
            try:
                with db.transaction(f"appending a batch of {len(requests)}"):
                    results = self._apply_batch(requests, now, snapshots)
            except CommitUnknown:
                self._forget_held(requests)
                return [
                    r
                    if isinstance(r, JournalError)
                    else self._resolve_unknown(req, None)
                    if isinstance(req, AppendRequest)
                    else self._resolve_unknown_create(req)
                    for r, req in zip(results, requests, strict=True)
                ]
            except BaseException:
                self._forget_held(requests)
                raise
            self._forget_held(
                [
                    r
                    for r, res in zip(requests, results, strict=True)
                    if isinstance(res, JournalError)
                ]
            )
        return results

    def _batch_snapshots(
        self, requests: Sequence[AppendRequest | CreateRequest], now: float
    ) -> dict[int, Sequence[Any]]:
        """The snapshot rows the batch's appends call for, by request index, built before
        its transaction; each append is taken as landed (forgotten if it does not)."""
        snapshots: dict[int, Sequence[Any]] = {}
        for i, req in enumerate(requests):
            if isinstance(req, AppendRequest) and req.entries:
                row = self._snapshot(req.run_id, req.expected_seq, req.entries, now)
                if row is not None:
                    snapshots[i] = row
                self._appended(req, now, row)
        return snapshots

    def _forget_held(self, requests: Sequence[AppendRequest | CreateRequest]) -> None:
        for req in requests:
            if isinstance(req, AppendRequest):
                self._held.pop(req.run_id, None)

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
            now = time.time()
            snapshot = self._snapshot(run_id, expected_seq, entries, now)
            self._held.pop(run_id, None)  # the run ends here
            try:
                with db.transaction(f"continuing run {run_id!r} as {new.run_id!r}"):
                    self._apply(req, now, snapshot)
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

    def _apply_batch(
        self,
        batch: Sequence[AppendRequest | CreateRequest],
        now: float,
        snapshots: Mapping[int, Sequence[Any]],
    ) -> list[Any]:
        # Creations first (a JournalError from one is raised before it writes), then
        # one guard read for every append (locking the rows in a fixed order on
        # PostgreSQL, so two batches never deadlock), checked in Python as each
        # request moves its run on; then one insert of every entry.
        db = self._c()
        created: dict[int, tuple[Run, bool] | JournalError] = {}
        requests: list[AppendRequest] = []
        snapshot_of: dict[int, Sequence[Any]] = {}  # by id() of the request
        clock: list[float] = []  # one read of the journal's clock for the batch's leases
        for i, item in enumerate(batch):
            if isinstance(item, CreateRequest):
                try:
                    created[i] = self._create(item, clock)
                except JournalError as exc:
                    created[i] = exc
            else:
                requests.append(item)
                if i in snapshots:
                    snapshot_of[id(item)] = snapshots[i]
        if not requests:
            return [created[i] for i in range(len(batch))]
        guards: dict[str, list[Any]] = {}
        for run_id, last_seq, epoch, status in db.guard_rows({req.run_id for req in requests}):
            guards[run_id] = [last_seq, epoch, status]
        results: list[int | JournalError] = []
        rows: list[tuple[Any, ...]] = []
        updates: list[tuple[AppendRequest, int]] = []
        written_snapshots: list[Sequence[Any]] = []
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
                rows += entry_rows(req.run_id, req.entries, base, now)
                if id(req) in snapshot_of:
                    written_snapshots.append(snapshot_of[id(req)])
            guard[0] = base + n
            if req.status is not None:
                guard[2] = req.status  # a later request of this batch sees the run ended
            if not _only_entries(req):
                updates.append((req, base + n))
            results.append(base + n if n else req.expected_seq)
        if rows:
            db.insert_entries(rows)
        for req, last_seq in updates:
            self._update_run(req, last_seq, now)
            self._forget_finished(req)
        # A run whose row update already wrote its final last seq needs no second one.
        written = {req.run_id: last_seq for req, last_seq in updates}
        for run_id in {req.run_id for req in requests} & guards.keys():
            if written.get(run_id) != guards[run_id][0]:
                db.set_last_seq(run_id, guards[run_id][0], now)
        for snapshot in written_snapshots:
            db.put_snapshot(snapshot)
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

    def _apply(self, req: AppendRequest, now: float, snapshot: Sequence[Any] | None) -> int:
        """Carry out ``req`` in the open write transaction (see :meth:`append`)."""
        changes, reseal = (None, None) if _only_entries(req) else self._changes(req)
        seq = self._c().write_append(
            req.run_id,
            req.entries,
            req.expected_seq,
            req.epoch,
            now,
            changes,
            req.release,
            reseal,
            snapshot,
        )
        if seq is None:
            self._explain_conflict(req)
        return seq if req.entries else req.expected_seq

    def _changes(self, req: AppendRequest) -> tuple[dict[str, Any], Reseal | None]:
        """The run-row changes ``req`` carries, and how to reseal the row if they touch a
        sealed column (from its sealed columns and checksum as stored)."""
        changes: dict[str, Any] = {}
        if req.status is not None:
            changes["status"] = req.status
        for column, value in (
            ("output", req.output),
            ("error", req.error),
            ("wake_at", req.wake_at),
        ):
            if value is not UNSET:
                changes[column] = value
        if req.status is None and req.output is UNSET and req.error is UNSET:
            return changes, None

        def reseal(stored: Sequence[Any]) -> int:
            return self._resealed(
                req.run_id, status=req.status, output=req.output, error=req.error, row=stored
            )

        return changes, reseal

    def _update_run(self, req: AppendRequest, last_seq: int, now: float) -> None:
        """Write the run-row changes ``req`` carries (status, output, lease release...)."""
        changes, reseal = self._changes(req)
        if reseal is not None:
            changes["checksum"] = reseal(self._c().sealed_row(req.run_id))
        self._c().update_run(
            req.run_id, {"updated_at": now, "last_seq": last_seq, **changes}, release=req.release
        )

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
            self._held.pop(req.run_id, None)

    def _snapshot(
        self, run_id: str, expected: int, entries: Sequence[NewEntry], now: float
    ) -> Sequence[Any] | None:
        """The snapshot row appending ``entries`` after ``expected`` calls for, if any,
        built now, before the write transaction, from the state this journal holds for
        the run (its last snapshot's, folded with the entries it appended since and
        these), or read once if it holds none. It is held as the run's from here on:
        :meth:`_appended` forgets it if the append does not land."""
        if expected < 0 or not entries or not self._snapshot_due(run_id, expected, entries):
            return None
        state = self._held_state(run_id, expected)
        if state is None:
            return None
        fold(state, _as_entries(run_id, expected, entries, now), self.decode_entry)
        row = self._snapshot_row(run_id, state, now)
        self._held[run_id] = [state, [], state.seq]
        tail = self._tails.get(run_id)
        if tail is not None and tail[0] == state.seq:
            tail[1:] = [0, len(row[2]), state.seq]
        else:
            self._tails.pop(run_id, None)
        return row

    def _held_state(self, run_id: str, seq: int) -> FoldedState | None:
        """The run's state at ``seq`` from what this journal holds, else read (outside
        any write transaction); ``None`` if the run has no such seq now (the append's
        guard then says why)."""
        held = self._held.pop(run_id, None)
        if held is not None and held[2] == seq:
            state: FoldedState = held[0]
            for base, entries, ts in held[1]:
                fold(state, _as_entries(run_id, base, entries, ts), self.decode_entry)
            return state
        try:
            return self.state_at(run_id, seq)
        except (RunNotFound, SeqOutOfRange, HorizonError):
            return None

    def _appended(self, req: AppendRequest, now: float, snapshot: Sequence[Any] | None) -> None:
        """Keep the held state of ``req``'s run in step with an append that landed (or,
        in a batch, is taken to land)."""
        self._forget_finished(req)
        if snapshot is not None or not req.entries:
            return
        held = self._held.get(req.run_id)
        if held is None:
            return
        if req.expected_seq < 0 or held[2] != req.expected_seq:
            del self._held[req.run_id]
            return
        held[1].append((req.expected_seq, req.entries, now))
        held[2] += len(req.entries)

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
        snap_seq, snap_bytes, count, size = self._c().tail_size(run_id, base)
        return [base, count * ENTRY_FOLD_BYTES + size, snap_bytes, snap_seq]

    def _explain_conflict(self, req: AppendRequest) -> NoReturn:
        row = self._c().guard_row(req.run_id)
        if row is None:
            raise RunNotFound(f"no run {req.run_id!r} in journal {self.where!r}", run_id=req.run_id)
        raise self._conflict(req, row[0], row[1], row[2])

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
            self._snapshot_every[run_id] = self._c().run_snapshot_every(run_id)
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
                    f"reading run {run_id!r} seqs {lo}..{hi}",
                    self._c().select_entries,
                    run_id,
                    lo,
                    hi,
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
            cursor = db.snapshot_rows(run.run_id, seq, run.horizon)
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
        if snapshot_checksum(run_id, snap_seq, state, fingerprint) != checksum:
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
            run = self.get_run(run_id)
            target = run.last_seq if seq is None else seq
            # Folded before the write transaction: entries up to a seq never change.
            row = self._snapshot_row(run_id, self.state_at(run_id, target), time.time())
            info = SnapshotInfo(run_id, target, row[3], row[4], len(row[2]), row[6])
            try:
                with db.transaction(f"snapshotting run {run_id!r}"):
                    db.put_snapshot(row)
            except CommitUnknown:
                # Ours if the snapshot there is the one we wrote (same creation time).
                final = db.settle()
                if info in self.snapshots(run_id):
                    return info
                raise (ConnectionLost if final else ConflictError)(
                    f"run {run_id!r}: the COMMIT of its snapshot at seq {target} failed and "
                    "the snapshot is not there now; write it again",
                    run_id=run_id,
                    seq=target,
                ) from None
            self._held.pop(run_id, None)
            self._tails.pop(run_id, None)
            return info

    def _snapshot_row(self, run_id: str, state: FoldedState, now: float) -> tuple[Any, ...]:
        """The stored row of a snapshot of ``state`` (see :meth:`Recorder.put_snapshot`)."""
        db = self._c()
        seq = state.seq
        codec_name, horizon = db.run_codec_horizon(run_id)
        codec = self.codec_named(codec_name, run_id=run_id)
        payload = state.to_payload()
        if seq == horizon and horizon:  # rewriting the horizon: keep what compaction dropped
            payload.update(kept_compaction(self, run_id, seq))
        data = codec.encode(payload, path=f"snapshot of {run_id!r} at seq {seq}")
        fingerprint = self.fingerprint(codec.name)
        checksum = snapshot_checksum(run_id, seq, data, fingerprint)
        return (run_id, seq, data, codec.name, fingerprint, checksum, now)

    def snapshots(self, run_id: str) -> list[SnapshotInfo]:
        """The run's snapshots, oldest first."""
        with self._lock:
            rows = self._read(f"listing snapshots of {run_id!r}", self._c().snapshot_infos, run_id)
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
    def backend(self) -> Recorder:
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
