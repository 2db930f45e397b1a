"""The Journal's run rows: creating runs (sealed with a checksum), finding, listing and
resealing them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from ._backend import CommitUnknown
from ._core import JournalCore
from ._integrity import entry_rows, run_from_row
from ._requests import UNSET, CreateRequest
from ._schema import run_checksum
from ._snapshots import as_entries
from .codecs import Codec
from .encryption import PREFIX, Place
from .errors import (
    CorruptionError,
    HorizonError,
    RunCorrupted,
    RunNotFound,
    SeqOutOfRange,
)
from .fold import FoldedState, fold
from .ids import new_run_id
from .kinds import RUN_KINDS, RUN_STATUSES
from .records import NewEntry, Run
from .tags import check_tags


class RunsMixin(JournalCore):
    """Run rows (part of :class:`~journal.Journal`)."""

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
            where = f"creating run {request.run.run_id!r}"
            # Backend.transaction spelled out: every run's start comes here.
            try:
                db.begin()
            except db.errors as exc:
                raise db.translate(exc, where) from exc
            try:
                result = self._create(request)
            except BaseException as exc:
                db.rollback()
                if isinstance(exc, db.errors):
                    raise db.translate(exc, where) from exc
                raise
            try:
                db.commit(where)
            except CommitUnknown:
                return self._resolve_unknown_create(request)
            return result

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
        # Its encrypted values bound to their places (its input, its first entries).
        if run.codec.startswith(PREFIX):
            run = replace(run, input=self.bind(run.input, run.codec, Place("input", run.run_id)))
        entries = self.bind_entries(run.run_id, req.entries, 0)
        if entries is not req.entries:
            req = replace(req, entries=entries)
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
                    as_entries(run.run_id, 0, req.entries, run.created_at),
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

    def get_runs(self, run_ids: Iterable[str]) -> dict[str, Run]:
        """The runs with these ids that exist, by id: one read per 500 ids (a process
        watching thousands of parked runs reads their rows together)."""
        ids = list(dict.fromkeys(run_ids))
        with self._lock:
            db = self._c()
            rows = self._read(f"reading {len(ids)} runs", db.runs_by_id, ids)
        runs = (run_from_row(row, db.sealed) for row in rows)
        return {run.run_id: run for run in runs}

    def data_version(self) -> int | None:
        """A number that changes when another connection commits to a journal file
        (SQLite's ``PRAGMA data_version``): unchanged means nothing to re-read. ``None``
        where there is no such number (PostgreSQL): re-read."""
        with self._lock:
            return self._read("reading data_version", self._c().data_version)

    def heartbeat_of(self, run_id: str) -> dict[str, Any]:
        """The progress the run's steps last reported (``ctx.heartbeat``): step key ->
        ``{"at": unix time, "details": ...}``, as of the last lease renewal; ``{}`` if
        none (or the journal predates heartbeats)."""
        with self._lock:
            if self._c().schema_version < 5:
                return {}
            text = self._read(
                f"reading the heartbeats of run {run_id!r}", self._c().heartbeat_text, run_id
            )
        if text is None:
            return {}
        try:
            beats = json.loads(text)
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
        contains: str | Sequence[str] = (),
        id_contains: str | Sequence[str] = (),
        name_contains: str | Sequence[str] = (),
    ) -> list[Run]:
        """Runs matching every given filter, ordered by creation time, paged. ``tags``:
        runs carrying every one of these ``key: value`` tags (through the tag index).
        ``contains``: runs whose id or name holds each of these texts (any case, anywhere);
        ``id_contains``/``name_contains``: the same in the id only, the name only."""
        filters = self._run_filters(
            status, name, created_after, created_before, parent_run_id, tags,
            contains, id_contains, name_contains,
        )  # fmt: skip
        if filters is None:
            return []  # a journal older than tags, opened read-only: no run has any
        with self._lock:
            db = self._c()
            rows = self._read(
                "listing runs",
                db.select_runs,
                newest_first=newest_first,
                limit=limit,
                offset=offset,
                **filters,
            )
        runs = [run_from_row(r, db.sealed) for r in rows]
        wanted = filters["tags"]
        if wanted:
            # The index is not sealed; the row is: a run indexed under a tag it does not
            # carry (an altered index) is left out.
            runs = [r for r in runs if all(r.tags.get(k) == v for k, v in wanted.items())]
        return runs

    def count_runs(
        self,
        by: Literal["status", "queue"] = "status",
        *,
        status: str | Sequence[str] | None = None,
        name: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        contains: str | Sequence[str] = (),
        id_contains: str | Sequence[str] = (),
        name_contains: str | Sequence[str] = (),
    ) -> dict[str, int]:
        """How many runs match the filters (those of :meth:`list_runs`), by status or by
        queue (runs in no queue left out); values no run has are absent. Counts the tag
        index as it is: a run indexed under a tag it does not carry is counted."""
        if by not in ("status", "queue"):
            raise ValueError(f"runs are counted by 'status' or 'queue', not {by!r}")
        filters = self._run_filters(
            status, name, created_after, created_before, parent_run_id, tags,
            contains, id_contains, name_contains,
        )  # fmt: skip
        if filters is None:
            return {}
        with self._lock:
            db = self._c()
            rows = self._read(f"counting runs by {by}", db.count_runs, by, **filters)
        return dict(rows)

    def _run_filters(  # noqa: PLR0917 - list_runs' filters, in order
        self,
        status: str | Sequence[str] | None,
        name: str | None,
        created_after: float | None,
        created_before: float | None,
        parent_run_id: str | None,
        tags: Mapping[str, str] | None,
        contains: str | Sequence[str],
        id_contains: str | Sequence[str],
        name_contains: str | Sequence[str],
    ) -> dict[str, Any] | None:
        """The recorder's filters, checked; ``None`` when no run can match (tags asked
        of a journal older than tags)."""
        statuses = None if status is None else [status] if isinstance(status, str) else [*status]
        bad = [s for s in statuses or () if s not in RUN_STATUSES]
        if bad:
            raise ValueError(f"unknown status {bad[0]!r}; expected one of {RUN_STATUSES}")
        wanted = check_tags(tags)
        if wanted and self._c().schema_version < 4:
            return None

        def texts(value: str | Sequence[str]) -> list[str]:
            return [value] if isinstance(value, str) else [*value]

        return {
            "statuses": statuses,
            "name": name,
            "created_after": created_after,
            "created_before": created_before,
            "parent_run_id": parent_run_id,
            "tags": wanted,
            "contains": texts(contains),
            "id_contains": texts(id_contains),
            "name_contains": texts(name_contains),
        }

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
