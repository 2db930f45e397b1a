"""The recorder: what :class:`~journal.Journal` asks of a database, one operation at a
time (insert a run, append, claim, renew, snapshots, ...), each holding its own SQL.

The statements here are spelled once, with ``?`` placeholders, in the SQL both
databases read; ``_sqlite.py`` and ``_postgres.py`` override the operations their
database does differently (the hot-path append, row locks, the clock) and say how a
few expressions are spelled. The facade never writes SQL: it checks, seals and
decides; a recorder reads and writes rows.

Operations run in the caller's transaction where one is open (the facade holds the
journal's lock around every use) and raise the driver's own errors, which the facade
translates with :meth:`Backend.translate`, naming what it was doing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ._backend import Backend, Cursor
from ._integrity import entry_rows
from ._schema import ENTRY_COLUMNS, RUN_COLUMNS, SCHEDULE_COLUMNS, SEALED_COLUMNS, SEALED_FIELDS
from .kinds import TERMINAL_STATUSES
from .records import NewEntry
from .tags import tag_clauses

CLAIMABLE = (
    "((status IN ('pending', 'running') AND (owner IS NULL OR lease_expires_at < ?))"
    " OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?"
    "     AND (owner IS NULL OR lease_expires_at < ?)))"
)
"""Unfinished runs nobody holds (three parameters: now, now, now)."""
PARENT_DONE = (
    "(parent_run_id IS NULL OR EXISTS (SELECT 1 FROM runs p WHERE p.run_id = runs.parent_run_id"
    " AND p.status IN ('completed', 'failed', 'cancelled')))"
)
"""A child run is claimable on its own only once its parent has finished."""
INSERT_ENTRY = f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
_INSERT_RUN = (
    f"INSERT INTO runs ({RUN_COLUMNS}, checksum) VALUES "
    "(?,?,?,?,?,?,NULL,NULL,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?)"
    " ON CONFLICT (run_id) DO NOTHING"
)
_CLAIM = (
    "UPDATE runs SET owner = ?, lease_expires_at = ?, epoch = epoch + 1, "
    "status = CASE WHEN status = 'pending' THEN 'running' ELSE status END, "
    "started_at = CASE WHEN status = 'pending' THEN ? ELSE started_at END, "
    "checksum = ?, updated_at = ? WHERE run_id = ?"
)
_PUT_SNAPSHOT = (
    "INSERT INTO snapshots (run_id, seq, state, codec, fingerprint, checksum,"
    " created_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (run_id, seq) DO UPDATE SET"
    " state = excluded.state, codec = excluded.codec, fingerprint = excluded.fingerprint,"
    " checksum = excluded.checksum, created_at = excluded.created_at"
)


_SEALED_STATUS = 2 + SEALED_FIELDS.index("status")
"""Where the status is in a row read with ``guard_row(sealed=True)``."""

Reseal = Callable[[Sequence[Any]], int]
"""Given the run's sealed columns and checksum as stored, the checksum once changed."""


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _contains(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere, case-folded, its own ``%``/``_``
    literal (the statements say ``ESCAPE '\\'``)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def run_filter(
    *,
    statuses: Sequence[str] | None = None,
    name: str | None = None,
    created_after: float | None = None,
    created_before: float | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    contains: Sequence[str] = (),
    id_contains: Sequence[str] = (),
    name_contains: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (and its parameters) on ``runs`` for the runs meeting every
    filter: ``tags`` indexed under every one; each of ``contains`` in the id or the name,
    ``id_contains`` in the id, ``name_contains`` in the name (anywhere, any case)."""
    clauses: list[str] = []
    params: list[Any] = []
    if statuses is not None:
        clauses.append(f"status IN ({_marks(len(statuses))})")
        params += statuses
    for clause, value in (
        ("name = ?", name),
        ("created_at >= ?", created_after),
        ("created_at < ?", created_before),
        ("parent_run_id = ?", parent_run_id),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    like = "lower({}) LIKE ? ESCAPE '\\'"
    for word in contains:
        clauses.append(f"({like.format('run_id')} OR {like.format('name')})")
        params += [_contains(word), _contains(word)]
    for column, words in (("run_id", id_contains), ("name", name_contains)):
        for word in words:
            clauses.append(like.format(column))
            params.append(_contains(word))
    tagged, tag_params = tag_clauses(tags or {})
    clauses += tagged
    params += tag_params
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


class Recorder(Backend):
    """A backend's operations on runs, entries and snapshots (see the module docstring)."""

    # -- runs ----------------------------------------------------------------------------

    def select_run(self, run_id: str) -> Any:
        """The run's row (``run_select`` columns), or ``None``."""
        return self.execute(
            f"SELECT {self.run_select} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()

    def select_runs(
        self,
        *,
        newest_first: bool = False,
        limit: int | None = None,
        offset: int = 0,
        **filters: Any,
    ) -> list[Any]:
        """Rows of the runs meeting every given filter (see :func:`run_filter`), ordered
        by creation time, paged."""
        where, params = run_filter(**filters)
        order = "DESC" if newest_first else "ASC"
        return self.execute(
            f"SELECT {self.run_select} FROM runs {where}"
            f" ORDER BY created_at {order}, run_id {order} LIMIT ? OFFSET ?",
            [*params, self.no_limit if limit is None else limit, offset],
        ).fetchall()

    def count_runs(self, by: str, **filters: Any) -> list[tuple[str, int]]:
        """``(value, runs)`` per value of column ``by`` (``status`` or ``queue``; runs
        without one left out) among the runs meeting every filter."""
        if by not in ("status", "queue"):
            raise ValueError(f"runs are counted by status or queue, not {by!r}")
        where, params = run_filter(**filters)
        where = f"{where} AND {by} IS NOT NULL" if where else f"WHERE {by} IS NOT NULL"
        rows = self.execute(
            f"SELECT {by}, count(*) FROM runs {where} GROUP BY {by} ORDER BY {by}", params
        ).fetchall()
        return [(str(value), int(n)) for value, n in rows]

    def runs_by_id(self, run_ids: Sequence[str]) -> list[Any]:
        """Rows of the runs with these ids that exist (any order), 500 ids per read."""
        rows: list[Any] = []
        for lo in range(0, len(run_ids), 500):
            chunk = run_ids[lo : lo + 500]
            rows += self.execute(
                f"SELECT {self.run_select} FROM runs WHERE run_id IN ({_marks(len(chunk))})",
                chunk,
            ).fetchall()
        return rows

    def data_version(self) -> int | None:
        """A number that changes when another connection commits; ``None`` where the
        backend has none (then every caller re-reads)."""
        return None

    def claimable_rows(self, now: float, limit: int) -> list[Any]:
        """Rows of the unfinished runs nobody holds at ``now``, oldest first."""
        return self.execute(
            f"SELECT {self.run_select} FROM runs WHERE {CLAIMABLE} ORDER BY created_at LIMIT ?",
            (now, now, now, limit),
        ).fetchall()

    def run_names(self) -> list[str]:
        """Every run's id, oldest first."""
        rows = self.execute("SELECT run_id FROM runs ORDER BY created_at, run_id").fetchall()
        return [r[0] for r in rows]

    def run_exists(self, run_id: str) -> bool:
        """Whether a run with this id exists."""
        return self.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None

    def fork_point(self, run_id: str) -> tuple[int, int]:
        """``(last seq, horizon)`` of the run (``(0, 0)`` if there is none)."""
        row = self.execute(
            f"SELECT {self.last_seq}, horizon FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def run_snapshot_every(self, run_id: str) -> int | None:
        """The run's own snapshot interval (``None``: the journal's policy, or no run)."""
        row = self.execute("SELECT snapshot_every FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def run_codec_horizon(self, run_id: str) -> tuple[str, int]:
        """The run's codec name and retained horizon."""
        row = self.execute("SELECT codec, horizon FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0], row[1]

    def sealed_row(self, run_id: str) -> Any:
        """The run's sealed columns (SEALED_FIELDS order) and its checksum, or ``None``."""
        return self.execute(
            f"SELECT {SEALED_COLUMNS}, checksum FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()

    def insert_run(self, values: Sequence[Any]) -> bool:
        """Insert a run row unless its id exists (a concurrent creator wins); True if
        inserted. ``values``: RUN_FIELDS but output, error and horizon, then the checksum."""
        self.execute(_INSERT_RUN, values)
        return self.changes() > 0

    def index_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Index a new run's tags."""
        self.executemany(
            "INSERT INTO run_tags (key, value, run_id) VALUES (?, ?, ?)",
            [(k, v, run_id) for k, v in tags.items()],
        )

    def update_run(self, run_id: str, changes: Mapping[str, Any], *, release: bool) -> None:
        """Set the run row's columns in ``changes`` (and give up the lease: ``release``)."""
        sets = [f"{column} = ?" for column in changes]
        if release:
            sets.append("owner = NULL, lease_expires_at = NULL")
        self.execute(
            f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", [*changes.values(), run_id]
        )

    def set_last_seq(self, run_id: str, last_seq: int, now: float) -> None:
        """Store the run's last seq where the database keeps it on the row."""
        if self.stores_last_seq:
            self.execute(
                "UPDATE runs SET last_seq = ?, updated_at = ? WHERE run_id = ?",
                (last_seq, now, run_id),
            )

    # -- guards and claims -----------------------------------------------------------------

    def guard_row(self, run_id: str, *, sealed: bool = False) -> Any:
        """``(last_seq, epoch, status)`` of the run, locked against other writers until
        COMMIT; ``sealed``: ``(last_seq, epoch, *sealed columns, checksum)``."""
        return self.execute(self.sealed_guard if sealed else self.guard, (run_id,)).fetchone()

    def guard_rows(self, run_ids: Iterable[str]) -> Iterable[tuple[str, int, int, str]]:
        """``(run_id, last_seq, epoch, status)`` of each run, locked in id order."""
        ids = sorted(run_ids)
        for lo in range(0, len(ids), 500):
            chunk = ids[lo : lo + 500]
            yield from self.execute(
                f"SELECT runs.run_id, {self.last_seq}, runs.epoch, runs.status FROM runs WHERE"
                f" runs.run_id IN ({_marks(len(chunk))}) ORDER BY runs.run_id{self.for_update}",
                chunk,
            )

    def failure_row(self, run_id: str) -> Any:
        """``(last_seq, status, error)`` of the run, locked until COMMIT, or ``None``."""
        return self.execute(
            f"SELECT {self.last_seq}, runs.status, runs.error FROM runs"
            f" WHERE runs.run_id = ?{self.for_update}",
            (run_id,),
        ).fetchone()

    def lease_row(self, run_id: str) -> Any:
        """``(status, owner, lease_expires_at)`` of the run, locked, or ``None``."""
        return self.execute(
            "SELECT status, owner, lease_expires_at FROM runs WHERE run_id = ?" + self.for_update,
            (run_id,),
        ).fetchone()

    def mark_claimed(
        self, run_id: str, owner: str, expires: float, checksum: int, now: float
    ) -> None:
        """Give ``owner`` the lease until ``expires``, raising the epoch (pending → running)."""
        self.execute(_CLAIM, (owner, expires, now, checksum, now, run_id))

    def claim_candidates(
        self,
        now: float,
        limit: int,
        *,
        skip_names: Sequence[str] = (),
        skip_run_ids: Sequence[str] = (),
        run_ids: Sequence[str] | None = None,
        queue: str | None = None,
        not_queues: Sequence[str] = (),
    ) -> list[Any]:
        """``(run_id, priority, created_at)`` of up to ``limit`` runs claimable at ``now``
        (a child only once its parent has finished), highest priority then oldest first:
        of ``queue`` if given, else of no queue in ``not_queues`` (and among ``run_ids``);
        never named in ``skip_names`` or ``skip_run_ids``. Rows another claimer locked
        are skipped."""
        clauses = [CLAIMABLE, PARENT_DONE]
        params: list[Any] = [now, now, now]
        if skip_names:
            clauses.append(f"name NOT IN ({_marks(len(skip_names))})")
            params += skip_names
        if skip_run_ids:
            clauses.append(f"run_id NOT IN ({_marks(len(skip_run_ids))})")
            params += skip_run_ids
        if queue is not None:
            clauses.append("queue = ?")
            params.append(queue)
        else:
            if not_queues:
                clauses.append(f"(queue IS NULL OR queue NOT IN ({_marks(len(not_queues))}))")
                params += not_queues
            if run_ids is not None:
                clauses.append(f"run_id IN ({_marks(len(run_ids))})")
                params += run_ids
        return self.execute(
            f"SELECT run_id, priority, created_at FROM runs WHERE {' AND '.join(clauses)}"
            f" ORDER BY priority DESC, created_at, run_id LIMIT ?{self.skip_locked}",
            (*params, limit),
        ).fetchall()

    def running_in_queue(self, queue: str, now: float) -> int:
        """How many runs of ``queue`` are running under a live lease."""
        (active,) = self.execute(
            "SELECT count(*) FROM runs WHERE queue = ? AND status = 'running'"
            " AND owner IS NOT NULL AND lease_expires_at >= ?",
            (queue, now),
        ).fetchone()
        return int(active)

    def started_in_queue(self, queue: str, since: float) -> int:
        """How many runs of ``queue`` were first claimed after ``since``."""
        (started,) = self.execute(
            "SELECT count(*) FROM runs WHERE queue = ? AND started_at > ?", (queue, since)
        ).fetchone()
        return int(started)

    def renew(
        self, run_id: str, owner: str, epoch: int, expires: float, heartbeat: str | None = None
    ) -> bool:
        """Extend ``owner``'s lease if ``epoch`` still holds the unfinished run; with
        ``heartbeat``, replace the run's step heartbeats in the same statement."""
        beat = "" if heartbeat is None else ", heartbeat = ?"
        self.execute(
            f"UPDATE runs SET lease_expires_at = ?{beat} WHERE run_id = ? AND owner = ?"
            " AND epoch = ? AND status NOT IN ('completed', 'failed', 'cancelled')",
            (expires, *([] if heartbeat is None else [heartbeat]), run_id, owner, epoch),
        )
        return self.changes() > 0

    def heartbeat_text(self, run_id: str) -> str | None:
        """The run's heartbeat column (JSON), ``None`` if unset or no such run."""
        row = self.execute("SELECT heartbeat FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else row[0]

    # -- the append ------------------------------------------------------------------------

    def append(
        self,
        run_id: str,
        entries: Sequence[NewEntry],
        expected: int,
        epoch: int | None,
        now: float,
        *,
        changes: Mapping[str, Any] | None = None,
        release: bool = False,
        reseal: Reseal | None = None,
        snapshot: Sequence[Any] | None = None,
    ) -> int | None:
        """Append ``entries`` to the run in a transaction of its own, if its last seq is
        ``expected`` (``-1``: any) and its epoch ``epoch`` (``None``: any) and it has
        not ended; with them, set the run's columns in ``changes`` (``reseal`` computes
        its new checksum from the stored sealed columns) and write the ``snapshot`` row
        (see :meth:`put_snapshot`: built beforehand, from state in hand). The new last
        seq, or ``None`` (nothing written) if the guard failed. Raises
        :class:`~journal._backend.CommitUnknown` if the COMMIT's outcome is unknown."""
        if changes is None and not release and snapshot is None and expected >= 0 and entries:
            return self.append_entries(run_id, entries, expected, epoch, now)
        parts = (changes, release, reseal, snapshot)
        return self._own_transaction(run_id, entries, expected, epoch, now, *parts)

    def append_entries(
        self, run_id: str, entries: Sequence[NewEntry], expected: int, epoch: int | None, now: float
    ) -> int | None:
        """The hot path of :meth:`append`: entries after a known seq, nothing else (a
        backend may do it in fewer round trips)."""
        return self._own_transaction(run_id, entries, expected, epoch, now)

    def _own_transaction(self, run_id: str, *args: Any) -> int | None:
        where = f"appending to run {run_id!r}"
        try:
            self.begin()
        except self.errors as exc:
            raise self.translate(exc, where) from exc
        try:
            seq = self.write_append(run_id, *args)
        except BaseException as exc:
            self.rollback()
            if isinstance(exc, self.errors):
                raise self.translate(exc, where) from exc
            raise
        if seq is None:
            self.rollback()
            return None
        self.commit(where)
        return seq

    def write_append(  # noqa: PLR0917 - the parts of one append, as append takes them
        self,
        run_id: str,
        entries: Sequence[NewEntry],
        expected: int,
        epoch: int | None,
        now: float,
        changes: Mapping[str, Any] | None = None,
        release: bool = False,
        reseal: Reseal | None = None,
        snapshot: Sequence[Any] | None = None,
    ) -> int | None:
        """:meth:`append`'s writes, in the caller's open write transaction."""
        row = self.guard_row(run_id, sealed=reseal is not None)
        if (
            row is None
            or (expected >= 0 and row[0] != expected)
            or (epoch is not None and row[1] != epoch)
            or row[2 if reseal is None else _SEALED_STATUS] in TERMINAL_STATUSES
        ):
            return None
        base: int = row[0]
        last = base + len(entries)
        if changes is not None or release:
            sets = {"updated_at": now, "last_seq": last, **(changes or {})}
            if reseal is not None:
                sets["checksum"] = reseal(row[2:])
            self.update_run(run_id, sets, release=release)
        else:
            self.set_last_seq(run_id, last, now)
        if entries:
            self.insert_entries(entry_rows(run_id, entries, base, now))
        if snapshot is not None:
            self.put_snapshot(snapshot)
        return last

    # -- entries -------------------------------------------------------------------------

    def insert_entries(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert entry rows (ENTRY_COLUMNS order)."""
        if len(rows) == 1:
            self.execute(INSERT_ENTRY, rows[0])
        else:
            self.executemany(INSERT_ENTRY, rows)

    def select_entries(self, run_id: str, lo: int, hi: int) -> list[Any]:
        """Entry rows ``lo..hi`` of the run, in seq order."""
        return self.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE run_id = ? AND seq BETWEEN ? AND ?"
            " ORDER BY seq",
            (run_id, lo, hi),
        ).fetchall()

    def keyed_entries(
        self,
        run_ids: Sequence[str],
        kinds: Sequence[str],
        *,
        keys: Sequence[str] | None = None,
        key_prefix: str | None = None,
        after: int = 0,
    ) -> list[Any]:
        """Entry rows of these runs above seq ``after``, of one of ``kinds``, whose key
        is one of ``keys`` and starts with ``key_prefix`` (where given), in (run, seq)
        order."""
        clauses = [f"run_id IN ({_marks(len(run_ids))})", f"kind IN ({_marks(len(kinds))})"]
        params: list[Any] = [*run_ids, *kinds]
        if keys is not None:
            clauses.append(f"key IN ({_marks(len(keys))})")
            params += keys
        if key_prefix is not None:
            # substr, not LIKE: a prefix is compared as it is, with no character special.
            clauses.append(f"substr(key, 1, {len(key_prefix)}) = ?")
            params.append(key_prefix)
        clauses.append("seq > ?")
        params.append(after)
        return self.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE {' AND '.join(clauses)}"
            " ORDER BY run_id, seq",
            params,
        ).fetchall()

    def size_bytes(self) -> int:
        """Bytes the journal takes on disk."""
        raise NotImplementedError

    def tail_size(self, run_id: str, base: int) -> tuple[int, int, int, int]:
        """``(snapshot seq, its bytes, entries after it up to base, their payload bytes)``
        for the newest snapshot at or before ``base``."""
        row = self.execute(
            f"SELECT seq, {self.blob_length}(state) FROM snapshots WHERE run_id = ? AND seq <= ?"
            " ORDER BY seq DESC LIMIT 1",
            (run_id, base),
        ).fetchone()
        snap_seq, snap_bytes = (int(row[0]), int(row[1])) if row else (0, 0)
        count, size = self.execute(
            f"SELECT count(*), coalesce(sum({self.blob_length}(payload)), 0) FROM entries"
            " WHERE run_id = ? AND seq > ? AND seq <= ?",
            (run_id, snap_seq, base),
        ).fetchone()
        return snap_seq, snap_bytes, int(count), int(size)

    # -- snapshots -----------------------------------------------------------------------

    def snapshot_rows(self, run_id: str, upto: int, horizon: int) -> Cursor:
        """``(seq, state, codec, fingerprint, checksum)`` of the snapshots between the
        horizon and ``upto``, newest first (a cursor: read only as far as needed)."""
        return self.execute(
            "SELECT seq, state, codec, fingerprint, checksum FROM snapshots "
            "WHERE run_id = ? AND seq <= ? AND seq >= ? ORDER BY seq DESC",
            (run_id, upto, horizon),
        )

    def put_snapshot(self, row: Sequence[Any]) -> None:
        """Write (or replace) a snapshot: ``(run_id, seq, state, codec, fingerprint,
        checksum, created_at)``."""
        self.execute(_PUT_SNAPSHOT, row)

    def snapshot_infos(self, run_id: str) -> list[Any]:
        """``(run_id, seq, codec, fingerprint, size, created_at)`` of the run's snapshots."""
        return self.execute(
            f"SELECT run_id, seq, codec, fingerprint, {self.blob_length}(state),"
            " created_at FROM snapshots WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ).fetchall()

    # -- schedules -----------------------------------------------------------------------

    def schedule_rows(
        self, *, name: str | None = None, due: float | None = None, limit: int | None = None
    ) -> list[Any]:
        """Schedule rows (SCHEDULE_FIELDS, then the checksum): the one named ``name``,
        those not paused and due at ``due`` (soonest first, at most ``limit``), or all by name."""
        params: list[Any]
        if name is not None:
            where, params = "WHERE name = ?", [name]
        elif due is not None:
            where = "WHERE paused = 0 AND next_at <= ? ORDER BY next_at, name LIMIT ?"
            params = [due, self.no_limit if limit is None else limit]
        else:
            where, params = "ORDER BY name", []
        return self.execute(
            f"SELECT {SCHEDULE_COLUMNS}, checksum FROM schedules {where}", params
        ).fetchall()

    def next_schedule_due(self) -> float | None:
        """The soonest next tick of a schedule not paused."""
        row = self.execute("SELECT min(next_at) FROM schedules WHERE paused = 0").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def locked_schedule_row(self, name: str) -> Any:
        """The schedule's row, locked until COMMIT, or ``None``."""
        return self.execute(
            f"SELECT {SCHEDULE_COLUMNS}, checksum FROM schedules WHERE name = ?{self.for_update}",
            (name,),
        ).fetchone()

    def insert_schedule(self, values: Sequence[Any]) -> bool:
        """Insert a schedule row unless its name exists (a concurrent adder wins)."""
        self.execute(
            f"INSERT INTO schedules ({SCHEDULE_COLUMNS}, checksum)"
            f" VALUES ({_marks(len(values))}) ON CONFLICT (name) DO NOTHING",
            values,
        )
        return self.changes() > 0

    def update_schedule(
        self, name: str, changes: Mapping[str, Any], *, next_at_was: float | None = None
    ) -> bool:
        """Set the schedule's columns in ``changes`` (only if its next tick is still
        ``next_at_was``, when given); False if nothing was written."""
        sets = ", ".join(f"{column} = ?" for column in changes)
        where, params = "name = ?", [*changes.values(), name]
        if next_at_was is not None:
            where += " AND next_at = ?"
            params.append(next_at_was)
        self.execute(f"UPDATE schedules SET {sets} WHERE {where}", params)
        return self.changes() > 0

    def delete_schedule(self, name: str) -> bool:
        """Delete the schedule; False if there was none."""
        self.execute("DELETE FROM schedules WHERE name = ?", (name,))
        return self.changes() > 0

    # -- time travel -----------------------------------------------------------------------

    def count_checkpoints(self, run_id: str, upto: int, kinds: Sequence[str]) -> int:
        """How many of the run's entries up to ``upto`` are of one of ``kinds``."""
        (n,) = self.execute(
            f"SELECT count(*) FROM entries WHERE run_id = ? AND seq <= ?"
            f" AND kind IN ({_marks(len(kinds))})",
            (run_id, upto, *kinds),
        ).fetchone()
        return int(n)

    def locate_checkpoint(
        self, run_id: str, upto: int, kinds: Sequence[str], number: int
    ) -> int | None:
        """The seq of the run's ``number``-th entry (from 1) of one of ``kinds`` up to
        ``upto``, or ``None``."""
        row = self.execute(
            f"SELECT seq FROM entries WHERE run_id = ? AND seq <= ? AND kind IN"
            f" ({_marks(len(kinds))}) ORDER BY seq LIMIT 1 OFFSET ?",
            (run_id, upto, *kinds, number - 1),
        ).fetchone()
        return None if row is None else int(row[0])

    def last_seq_marked(self, run_id: str, kind: str, step: str) -> int:
        """The seq of the run's newest entry of ``kind`` or of ``step`` (0 if none)."""
        (seq,) = self.execute(
            "SELECT max(seq) FROM entries WHERE run_id = ? AND (kind = ? OR step = ?)",
            (run_id, kind, step),
        ).fetchone()
        return int(seq or 0)

    def seq_at_time(self, run_id: str, ts: float) -> int | None:
        """The seq of the run's newest entry written at or before ``ts``, or ``None``."""
        (seq,) = self.execute(
            "SELECT max(seq) FROM entries WHERE run_id = ? AND ts <= ?", (run_id, ts)
        ).fetchone()
        return None if seq is None else int(seq)

    def forks_of(self, run_id: str) -> list[str]:
        """The ids of the runs forked from ``run_id``, oldest first."""
        rows = self.execute(
            "SELECT run_id FROM runs WHERE forked_from = ? ORDER BY created_at, run_id", (run_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def function_names(self) -> list[str]:
        """The distinct names of the runs' functions and workflows, sorted."""
        rows = self.execute("SELECT DISTINCT name FROM runs ORDER BY name").fetchall()
        return [r[0] for r in rows]

    # -- compaction --------------------------------------------------------------------------

    def snapshot_at(self, run_id: str, seq: int) -> Any:
        """``(state, codec, fingerprint)`` of the run's snapshot at ``seq``, or ``None``."""
        return self.execute(
            "SELECT state, codec, fingerprint FROM snapshots WHERE run_id = ? AND seq = ?",
            (run_id, seq),
        ).fetchone()

    def fork_stats(self, run_id: str) -> tuple[int, int | None]:
        """``(forks of the run not finished, the lowest seq any fork was forked at)``."""
        row = self.execute(
            "SELECT count(*) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')),"
            " min(forked_at) FROM runs WHERE forked_from = ?",
            (run_id,),
        ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def first_seq_since(self, run_id: str, ts: float) -> int | None:
        """The run's first seq written at or after ``ts``, or ``None``."""
        row = self.execute(
            "SELECT min(seq) FROM entries WHERE run_id = ? AND ts >= ?", (run_id, ts)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def raise_horizon(self, run_id: str, horizon: int, checksum: int) -> int:
        """Raise the run's horizon (resealed with ``checksum``) and delete the snapshots
        below it; how many were deleted."""
        self.execute(
            "UPDATE runs SET horizon = ?, checksum = ? WHERE run_id = ? AND horizon < ?",
            (horizon, checksum, run_id, horizon),
        )
        self.execute("DELETE FROM snapshots WHERE run_id = ? AND seq < ?", (run_id, horizon))
        return int(self.changes())

    def entries_below_horizon(self, run_id: str) -> Any:
        """``(the run's lowest stored seq, its horizon)``, or ``None`` if there is no run."""
        return self.execute(
            "SELECT (SELECT min(seq) FROM entries WHERE run_id = ?), horizon"
            " FROM runs WHERE run_id = ?",
            (run_id, run_id),
        ).fetchone()

    def delete_entries(self, run_id: str, lo: int, hi: int) -> int:
        """Delete the run's entries ``lo..hi``; how many were deleted."""
        self.execute(
            "DELETE FROM entries WHERE run_id = ? AND seq >= ? AND seq <= ?", (run_id, lo, hi)
        )
        return int(self.changes())

    def count_kinds(self, run_id: str, after: int, upto: int) -> list[tuple[str, int]]:
        """``(kind, count)`` of the run's entries after ``after`` up to ``upto``."""
        rows = self.execute(
            "SELECT kind, count(*) FROM entries WHERE run_id = ? AND seq > ? AND seq <= ?"
            " GROUP BY kind",
            (run_id, after, upto),
        ).fetchall()
        return [(str(k), int(n)) for k, n in rows]

    def rewrite_snapshot(self, run_id: str, seq: int, state: bytes, checksum: int) -> None:
        """Replace the state (and checksum) of the run's snapshot at ``seq``."""
        self.execute(
            "UPDATE snapshots SET state = ?, checksum = ? WHERE run_id = ? AND seq = ?",
            (state, checksum, run_id, seq),
        )
