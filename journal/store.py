"""The journal: runs, their append-only entries and snapshots, in one SQLite file or a
PostgreSQL database (see ``_backend.py``)."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final, NoReturn

from ._backend import CommitUnknown, open_backend
from ._claims import ClaimsMixin
from ._codec_use import CodecsMixin
from ._integrity import entry_checksum, entry_rows
from ._recorder import Recorder, Reseal
from ._requests import UNSET, AppendRequest, CreateRequest, only_entries, run_ended
from ._runs import RunsMixin
from ._snapshots import SnapshotsMixin
from .codecs import Codec, JsonSerializer
from .compaction import CompactionRecord, compact, compaction_record
from .encryption import PREFIX, Place, _Sealed
from .errors import (
    ConflictError,
    ConnectionLost,
    CorruptionError,
    HorizonError,
    JournalError,
    JournalFull,
    RunNotFound,
    SeqOutOfRange,
)
from .export import export_run
from .kinds import RUN_STATUSES, TERMINAL_STATUSES
from .policies import Durability, SnapshotPolicy
from .records import Entry, NewEntry, Run
from .reopen import reopen_failed
from .schedules import Schedules
from .verify import VerifyReport, check_places, verify

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


def resolve_path(path: str | os.PathLike[str] | None) -> str:
    """The journal's location (a file path or a ``postgresql://`` URL): the argument,
    else ``$DURABLE_DB``, else ``./durable.db``."""
    if path is not None:
        return os.fspath(path)
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


class Journal(CodecsMixin, RunsMixin, ClaimsMixin, SnapshotsMixin):
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
        self._codecs: dict[str, Codec] = {self.codec.name: self.codec}
        self._run_codecs: dict[str, Codec] = {}
        self._left_codecs: OrderedDict[str, Codec] = OrderedDict()
        self._snapshot_every: dict[str, int | None] = {}
        self._tails: dict[str, list[int]] = {}
        self._held: dict[str, list[Any]] = {}
        self._altered: set[str] = set()
        self._lock = threading.RLock()
        self.entries_read = 0
        # (The caches and what they hold: see JournalCore.)
        self._db: Recorder | None = open_backend(
            self.path,
            durability=durability,
            busy_timeout_ms=busy_timeout_ms,
            readonly=readonly,
            vfs=vfs,
        )
        self.where = self._db.location

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

    # -- codecs ----------------------------------------------------------------------

    # -- runs ------------------------------------------------------------------------

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
        for e in entries:  # the step path: one check per entry when none is encrypted
            if e.codec.startswith(PREFIX):
                entries, expected = self._bound(run_id, entries, expected)
                break
        if (
            expected >= 0
            and entries
            and status is None
            and output is UNSET
            and error is UNSET
            and wake_at is UNSET
            and not release
        ):
            return self._append_entries(run_id, entries, expected, epoch)
        if output is not UNSET and isinstance(output, _Sealed):
            output = output.codec.bind(output, Place("output", run_id))
        plain = (
            status is None
            and output is UNSET
            and error is UNSET
            and wake_at is UNSET
            and not release
        )
        # The common case (entries only) builds no request: at durability "process" a
        # commit is ~15 µs and every µs of Python shows.
        req = None
        changes = reseal = None
        if not plain:
            if status is not None and status not in RUN_STATUSES:
                raise ValueError(f"unknown status {status!r}")
            req = AppendRequest(
                run_id, entries, expected, epoch, status, output, error, wake_at, release
            )
            changes, reseal = self._changes(req)
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
                return self._resolve_unknown(
                    req or AppendRequest(run_id, entries, expected, epoch), exc
                )
            except BaseException:
                self._held.pop(run_id, None)
                raise
            if seq is None:
                self._held.pop(run_id, None)
                self._explain_conflict(req or AppendRequest(run_id, entries, expected, epoch))
            self._appended(run_id, expected, entries, status, now, snapshot)
            return seq if entries else expected

    def _append_entries(
        self, run_id: str, entries: Sequence[NewEntry], expected: int, epoch: int | None
    ) -> int:
        """:meth:`append` of entries alone after a known seq: a step's commit, the hot
        path (at durability "process" a commit is ~15 µs and every µs of Python shows)."""
        with self._lock:
            db = self._c()
            now = time.time()
            try:  # reads outside the write transaction: their errors are the journal's too
                snapshot = self._build_snapshot(run_id, expected, entries, now)
            except db.errors as exc:
                raise db.translate(exc, f"preparing a snapshot of run {run_id!r}") from exc
            try:
                if snapshot is None:
                    seq = db.append_entries(run_id, entries, expected, epoch, now)
                else:
                    seq = db.append(run_id, entries, expected, epoch, now, snapshot=snapshot)
            except CommitUnknown as exc:
                # A COMMIT that raised may still have committed: re-read to decide.
                self._held.pop(run_id, None)
                return self._resolve_unknown(AppendRequest(run_id, entries, expected, epoch), exc)
            except BaseException:
                self._held.pop(run_id, None)
                raise
            if seq is None:
                self._held.pop(run_id, None)
                self._explain_conflict(AppendRequest(run_id, entries, expected, epoch))
            if snapshot is None and run_id in self._held:
                self._appended(run_id, expected, entries, None, now, None)
            return seq

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
        # Binding encrypted values can fail for one request (a value it cannot read):
        # that request gets its error, the others commit.
        placed: list[AppendRequest | CreateRequest] = []
        unplaced: dict[int, JournalError] = {}
        for i, req in enumerate(requests):
            try:
                placed.append(self._placed(req) if isinstance(req, AppendRequest) else req)
            except JournalError as exc:
                unplaced[i] = exc
        if not unplaced:
            return self._append_placed(placed)
        landed = iter(self._append_placed(placed) if placed else ())
        return [unplaced[i] if i in unplaced else next(landed) for i in range(len(requests))]

    def _append_placed(self, requests: Sequence[AppendRequest | CreateRequest]) -> list[Any]:
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
                self._appended(req.run_id, req.expected_seq, req.entries, req.status, now, row)
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
        entries, expected_seq = self._bound(run_id, entries, expected_seq)
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

    def _bound(
        self, run_id: str, entries: Sequence[NewEntry], expected: int
    ) -> tuple[Sequence[NewEntry], int]:
        """``entries`` with their encrypted values bound to the seqs they will take, and
        the seq they go after: to bind them, an append that names none (``-1``) is
        guarded by the run's last seq as read now."""
        if expected < 0 and any(
            e.payload is not None and e.codec.startswith(PREFIX) for e in entries
        ):
            expected = self.get_run(run_id).last_seq
        if expected < 0:
            return entries, expected
        return self.bind_entries(run_id, entries, expected), expected

    def _placed(self, req: AppendRequest) -> AppendRequest:
        """``req`` with its encrypted values bound to their places (see :meth:`bind`)."""
        entries, expected = self._bound(req.run_id, req.entries, req.expected_seq)
        output = req.output
        if isinstance(output, _Sealed):
            output = output.codec.bind(output, Place("output", req.run_id))
        if entries is req.entries and output is req.output:
            return req
        return replace(req, entries=entries, expected_seq=expected, output=output)

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
            if not only_entries(req):
                updates.append((req, base + n))
            results.append(base + n if n else req.expected_seq)
        if rows:
            db.insert_entries(rows)
        for req, last_seq in updates:
            self._update_run(req, last_seq, now)
            if req.status in TERMINAL_STATUSES:
                self._forget_finished(req.run_id)
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
        changes, reseal = (None, None) if only_entries(req) else self._changes(req)
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

    def reopen_failed(
        self,
        run_id: str,
        entry: NewEntry,
        *,
        failed_seq: int,
        error: str | None,
        resets: Sequence[NewEntry] = (),
    ) -> Run:
        """Reopen a failed run (``resume``): see :mod:`journal.reopen`."""
        return reopen_failed(self, run_id, entry, failed_seq=failed_seq, error=error, resets=resets)

    def release(self, run_id: str, epoch: int) -> bool:
        """Give up the lease on ``run_id`` if ``epoch`` still holds it, so another worker
        can take the run (after a write failed for want of disk space: an UPDATE in
        place often still fits). False if it could not be written."""
        try:
            self.append(run_id, (), expected_seq=None, epoch=epoch, release=True)
        except JournalError:
            return False
        return True

    def _explain_conflict(self, req: AppendRequest) -> NoReturn:
        row = self._c().guard_row(req.run_id)
        if row is None:
            raise RunNotFound(f"no run {req.run_id!r} in journal {self.where!r}", run_id=req.run_id)
        raise self._conflict(req, row[0], row[1], row[2])

    @staticmethod
    def _conflict(req: AppendRequest, last_seq: int, epoch: int, status: str) -> ConflictError:
        if status in TERMINAL_STATUSES:
            return run_ended(req.run_id, status)
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

    def find_entries(
        self,
        run_ids: str | Sequence[str],
        kinds: Sequence[str],
        *,
        keys: Sequence[str] | None = None,
        key_prefix: str | None = None,
        after: int = 0,
    ) -> list[Entry]:
        """The retained entries (verified) of these runs above seq ``after``, of one of
        ``kinds``, whose key is one of ``keys`` and starts with ``key_prefix`` (where
        given), in order of run id, then seq."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        if not ids or not kinds or (keys is not None and not keys):
            return []
        with self._lock:
            rows = self._read(
                f"finding entries of {ids[0]!r}" + (f" and {len(ids) - 1} more" if ids[1:] else ""),
                self._c().keyed_entries,
                ids,
                list(kinds),
                keys=None if keys is None else list(keys),
                key_prefix=key_prefix,
                after=after,
            )
        self.entries_read += len(rows)
        return [self._verified(row) for row in rows]

    def last_entry(self, run_id: str) -> Entry | None:
        """The run's newest entry, or ``None`` if it has none (or all were compacted)."""
        run = self.get_run(run_id)
        if run.last_seq == 0 or run.last_seq <= run.horizon:
            return None
        return self.read_one(run_id, run.last_seq)

    # -- state and snapshots ---------------------------------------------------------

    # -- time-travel queries -------------------------------------------------------------

    def count_checkpoints(self, run_id: str, upto: int, kinds: Sequence[str]) -> int:
        """How many of the run's entries up to seq ``upto`` are of one of ``kinds``."""
        with self._lock:
            db = self._c()
            return self._read(
                f"counting entries of {run_id!r}", db.count_checkpoints, run_id, upto, kinds
            )

    def locate_checkpoint(
        self, run_id: str, upto: int, kinds: Sequence[str], number: int
    ) -> int | None:
        """The seq of the run's ``number``-th entry (from 1) of one of ``kinds`` up to seq
        ``upto``, or ``None`` if it has fewer."""
        with self._lock:
            db = self._c()
            return self._read(
                f"locating an entry of {run_id!r}",
                db.locate_checkpoint,
                run_id,
                upto,
                kinds,
                number,
            )

    def last_seq_marked(self, run_id: str, kind: str, step: str) -> int:
        """The seq of the run's newest entry of ``kind`` or of ``step`` (0 if none)."""
        with self._lock:
            db = self._c()
            return self._read(f"reading run {run_id!r}", db.last_seq_marked, run_id, kind, step)

    def seq_at_time(self, run_id: str, ts: float) -> int | None:
        """The seq of the run's newest entry written at or before ``ts`` (Unix time), or
        ``None`` if it has none."""
        with self._lock:
            db = self._c()
            return self._read(f"reading run {run_id!r}", db.seq_at_time, run_id, ts)

    def forks_of(self, run_id: str) -> list[str]:
        """The ids of the runs forked from ``run_id``, oldest first."""
        with self._lock:
            db = self._c()
            return self._read(f"listing the forks of {run_id!r}", db.forks_of, run_id)

    def function_names(self) -> list[str]:
        """The distinct function and workflow names of the runs, sorted."""
        with self._lock:
            db = self._c()
            return self._read("listing run names", db.function_names)

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

    def check_places(self, run_id: str) -> None:
        """Raise :class:`MisplacedPayload` if an encrypted value of the run was sealed for
        another place (see :func:`journal.verify.check_places`: no key needed)."""
        check_places(self, run_id)

    def verify(
        self, run_id: str | None = None, *, progress: Callable[[int, int], None] | None = None
    ) -> VerifyReport:
        """Check checksums, seq density, snapshots against folds and the file's integrity."""
        return verify(self, run_id, progress=progress)

    def size(self) -> int:
        """Bytes the journal takes: its file's pages, or its tables in PostgreSQL."""
        with self._lock:
            return self._read(f"measuring {self.where!r}", self._c().size_bytes)

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
