"""Copying a journal to another one, across backends: what ``durable migrate`` runs.

:func:`copy_journal` copies run rows, retained entries and snapshots exactly as they
are stored (same seqs, timestamps, encoded payloads and checksums: the checksums are
computed over those fields, so they verify unchanged on the other side), then reads
both journals back and compares them entry by entry.

- Each run is copied in one transaction of the target, parents and fork sources
  before the runs that name them. An interrupted copy therefore leaves whole runs
  only, and running it again resumes: a run the target already holds, identical, is
  skipped (and verified again).
- A run the target holds under the same id but different is a conflict: the copy
  is refused with :class:`~journal.MigrationError` before anything is written.
- Entries and snapshots stream in bounded batches; nothing holds a whole run.
- Nothing is decoded, so no codec or HMAC key is needed; every entry's and
  snapshot's checksum is checked as it is read from the source, and a run with a
  row that does not verify is not copied (the report says which and why).

The source should be quiescent (its workers stopped): a run that changes while it
is copied is copied again, and reported if it keeps changing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._integrity import entry_checksum, snapshot_checksum
from ._schema import ENTRY_COLUMNS, RUN_COLUMNS, RUN_FIELDS, SEALED_INDEX, run_checksum
from .errors import CorruptionError, JournalError, MigrationError, RunCorrupted

if TYPE_CHECKING:
    from .store import Journal

__all__ = ["MigrationReport", "copy_journal"]

BATCH = 1000
"""Entries read and written per statement batch."""
SNAPSHOT_BATCH = 50
"""Snapshots per batch (each holds a whole folded state)."""
ATTEMPTS = 3
"""Copies of a run tried before one that keeps changing in the source is given up."""
_SHOWN = 20
"""Conflicting run ids named in a :class:`MigrationError` message."""

_SNAPSHOT_COLUMNS = "run_id, seq, state, codec, fingerprint, checksum, created_at"
_INSERT_RUN = (
    f"INSERT INTO runs ({RUN_COLUMNS}, checksum) VALUES ({','.join('?' * (len(RUN_FIELDS) + 1))})"
)
_INSERT_ENTRY = f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
_INSERT_ENTRIES_PG = (
    f"INSERT INTO entries ({ENTRY_COLUMNS}) SELECT * FROM unnest(?::text[], ?::bigint[],"
    " ?::text[], ?::text[], ?::text[], ?::bytea[], ?::text[], ?::float8[], ?::bigint[])"
)
"""PostgreSQL takes a batch as one statement of nine arrays: one round trip, one parse."""
_INSERT_SNAPSHOT = f"INSERT INTO snapshots ({_SNAPSHOT_COLUMNS}) VALUES (?,?,?,?,?,?,?)"

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: ``phase`` is ``"copy"`` or ``"verify"``; counts
are entries."""


@dataclass
class MigrationReport:
    """What :func:`copy_journal` copied and what its verification found.

    ``ok`` is true when every run was copied (or already there, identical) and the
    two journals compare equal, row by row and entry by entry.
    """

    source: str
    target: str
    runs: int = 0
    """Runs to copy: all of the source's, or those named and the runs they refer to."""
    runs_copied: int = 0
    runs_skipped: int = 0
    """Runs the target already held, identical (copied by an earlier, interrupted call)."""
    entries_copied: int = 0
    snapshots_copied: int = 0
    runs_verified: int = 0
    entries_verified: int = 0
    snapshots_verified: int = 0
    not_copied: dict[str, str] = field(default_factory=dict)
    """Runs left out, by id, with the reason (a source row that does not verify, a
    parent left out, a run that kept changing)."""
    mismatches: list[str] = field(default_factory=list)
    """Differences the verification found between source and target."""
    changed: list[str] = field(default_factory=list)
    """Runs that changed in the source just after they were copied: the source was
    not quiescent, and the target holds them as they were."""

    @property
    def problems(self) -> list[str]:
        """Every problem, one line each, naming its run."""
        out = [f"run {rid!r} not copied: {why}" for rid, why in self.not_copied.items()]
        out += self.mismatches
        out += [
            f"run {rid!r} changed in the source just after it was copied (is a worker "
            "running?): the target holds it as it was, and a new copy into this target "
            "would refuse it as different; stop the workers and copy into a fresh target"
            for rid in self.changed
        ]
        return out

    @property
    def ok(self) -> bool:
        """True when everything was copied and verified equal."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready values."""
        return {
            "ok": self.ok,
            "source": self.source,
            "target": self.target,
            "runs": self.runs,
            "runs_copied": self.runs_copied,
            "runs_skipped": self.runs_skipped,
            "entries_copied": self.entries_copied,
            "snapshots_copied": self.snapshots_copied,
            "runs_verified": self.runs_verified,
            "entries_verified": self.entries_verified,
            "snapshots_verified": self.snapshots_verified,
            "not_copied": dict(self.not_copied),
            "mismatches": list(self.mismatches),
            "changed": list(self.changed),
            "problems": self.problems,
        }


@dataclass(frozen=True, slots=True)
class _Planned:
    run_id: str
    refs: tuple[str, ...]
    entries: int


class _Changed(Exception):
    """The source run moved on while it was being copied."""


def copy_journal(
    source: Journal,
    target: Journal,
    *,
    run_ids: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy every run of ``source`` (or the runs named in ``run_ids``, with the runs
    they refer to) into ``target``, then verify the copy entry by entry.

    Raises :class:`MigrationError`, having written nothing, if ``target`` holds a
    different run under the id of one to copy, if a named run is not in ``source``, or
    if both are the same journal. Rows of the source that do not verify, and
    differences found afterwards, are reported in the returned
    :class:`MigrationReport`, not raised.
    """
    _refuse_same(source, target)
    report = MigrationReport(source=source.where, target=target.where)
    plan = _plan(source, run_ids)
    report.runs = len(plan)
    present = _check_target(source, target, plan)
    total = sum(p.entries for p in plan)

    def tick(phase: str) -> Callable[[int], None]:
        return lambda done: progress(phase, done, total) if progress else None

    copied = _copy_all(source, target, plan, present=present, report=report, tick=tick("copy"))
    done = 0
    for p in plan:
        if p.run_id in copied:
            _verify_run(source, target, p.run_id, report)
        done += p.entries
        tick("verify")(done)
    return report


# -- planning --------------------------------------------------------------------------


def _rows(journal: Journal, sql: str, params: Sequence[Any], where: str) -> list[Any]:
    """Rows of one read, with driver errors translated into the journal's tree."""
    with journal.lock:
        db = journal.backend
        try:
            return db.execute(sql, params).fetchall()
        except db.errors as exc:
            raise db.translate(exc, where) from exc


def _identity(journal: Journal) -> tuple[str, ...]:
    db = journal.backend
    if db.kind == "sqlite":
        path = journal.path
        return ("sqlite", os.path.realpath(path))
    row = _rows(
        journal,
        "SELECT current_database(), inet_server_addr()::text, inet_server_port(), current_schema()",
        (),
        where=f"identifying {journal.where!r}",
    )[0]
    return ("postgresql", *(str(v) for v in row))


def _refuse_same(source: Journal, target: Journal) -> None:
    if _identity(source) == _identity(target):
        raise MigrationError(
            f"source {source.where!r} and target {target.where!r} are the same journal; "
            "name another target",
            source=source.where,
            target=target.where,
        )


def _plan(source: Journal, run_ids: Sequence[str] | None) -> list[_Planned]:
    """The runs to copy, each after the runs it refers to (its parent, its fork source)."""
    db = source.backend
    rows = _rows(
        source,
        f"SELECT run_id, parent_run_id, forked_from, {db.last_seq}, horizon FROM runs"
        " ORDER BY created_at, run_id",
        (),
        where=f"listing the runs of {source.where!r}",
    )
    runs = {
        rid: _Planned(rid, tuple(r for r in (parent, fork) if r is not None), last - horizon)
        for rid, parent, fork, last, horizon in rows
    }
    wanted = list(runs) if run_ids is None else list(dict.fromkeys(run_ids))
    unknown = [rid for rid in wanted if rid not in runs]
    if unknown:
        raise MigrationError(
            f"no run {unknown[0]!r} in the source {source.where!r}; nothing was copied",
            run_id=unknown[0],
        )
    order: list[_Planned] = []
    state: dict[str, bool] = {}  # False: being placed, True: placed
    for rid in wanted:
        _place(rid, runs, state, order, source.where)
    return order


def _place(
    rid: str,
    runs: dict[str, _Planned],
    state: dict[str, bool],
    order: list[_Planned],
    where: str,
) -> None:
    # Iterative depth-first order: a long chain of forks must not hit the recursion limit.
    stack: list[tuple[str, Iterator[str]]] = []
    if rid in state:
        return
    state[rid] = False
    stack.append((rid, iter(runs[rid].refs)))
    while stack:
        current, refs = stack[-1]
        ref = next(refs, None)
        if ref is None:
            stack.pop()
            state[current] = True
            order.append(runs[current])
            continue
        if ref not in runs:
            raise MigrationError(
                f"run {current!r} in {where!r} refers to run {ref!r}, which is not in that "
                "journal; nothing was copied",
                run_id=current,
            )
        if ref in state:
            if not state[ref]:
                raise MigrationError(
                    f"runs of {where!r} refer to each other in a cycle through {ref!r}; "
                    "nothing was copied",
                    run_id=ref,
                )
            continue
        state[ref] = False
        stack.append((ref, iter(runs[ref].refs)))


def _check_target(source: Journal, target: Journal, plan: list[_Planned]) -> set[str]:
    """The planned runs the target already holds, identical; refuse any that differ."""
    present: set[str] = set()
    conflicts: dict[str, str] = {}
    ids = [p.run_id for p in plan]
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        rows = _rows(
            target,
            f"SELECT run_id FROM runs WHERE run_id IN ({','.join('?' * len(chunk))})",
            chunk,
            where=f"looking for the runs in {target.where!r}",
        )
        for (rid,) in rows:
            there, here = target.get_run(rid), source.get_run(rid)
            if there == here:
                present.add(rid)
            else:
                conflicts[rid] = f"{rid!r} ({', '.join(_differences(here, there))} differ)"
    if conflicts:
        shown = "; ".join(list(conflicts.values())[:_SHOWN])
        more = f" and {len(conflicts) - _SHOWN} more" if len(conflicts) > _SHOWN else ""
        raise MigrationError(
            f"the target {target.where!r} already holds {len(conflicts)} run(s) with the id "
            f"of a source run but different: {shown}{more}. Nothing was copied; copy into "
            "another journal (or schema), or leave those runs out with --run",
            run_ids=list(conflicts),
        )
    return present


def _differences(a: Any, b: Any) -> list[str]:
    return [f for f in RUN_FIELDS if getattr(a, f) != getattr(b, f)]


# -- copying ---------------------------------------------------------------------------


def _copy_all(
    source: Journal,
    target: Journal,
    plan: list[_Planned],
    *,
    present: set[str],
    report: MigrationReport,
    tick: Callable[[int], None],
) -> set[str]:
    """Copy the planned runs the target lacks; return the ids the target now holds."""
    done = 0
    copied: set[str] = set()
    for p in plan:
        missing = [r for r in p.refs if r not in copied]
        if p.run_id in present:
            report.runs_skipped += 1
            copied.add(p.run_id)
        elif missing:
            report.not_copied[p.run_id] = f"it refers to run {missing[0]!r}, which was not copied"
        else:
            base = done

            def copying(n: int, base: int = base) -> None:
                tick(base + n)

            try:
                _copy_run(source, target, p.run_id, report, copying)
                copied.add(p.run_id)
                report.runs_copied += 1
            except CorruptionError as exc:
                report.not_copied[p.run_id] = str(exc)
            except _Changed:
                report.not_copied[p.run_id] = (
                    f"it kept changing in the source during {ATTEMPTS} attempts "
                    "(stop the workers writing to the source)"
                )
        done += p.entries
        tick(done)
    return copied


def _copy_run(
    source: Journal,
    target: Journal,
    run_id: str,
    report: MigrationReport,
    tick: Callable[[int], None],
) -> None:
    for _ in range(ATTEMPTS):
        try:
            entries, snapshots = _copy_once(source, target, run_id, tick)
        except _Changed:
            continue
        report.entries_copied += entries
        report.snapshots_copied += snapshots
        if _run_row(source, run_id) != _run_row(target, run_id):
            report.changed.append(run_id)
        return
    raise _Changed(run_id)


def _run_row(journal: Journal, run_id: str) -> tuple[Any, ...]:
    """The run's row as stored, without its checksum, once that is verified (a journal
    older than version 3, opened read-only, has none to verify)."""
    rows = _rows(
        journal,
        f"SELECT {journal.backend.run_select} FROM runs WHERE run_id = ?",
        (run_id,),
        where=f"reading run {run_id!r} of {journal.where!r}",
    )
    *values, checksum = _plain(rows[0])
    if journal.backend.sealed and checksum != _sealed(values):
        raise RunCorrupted(
            f"run {run_id!r}: its row in {journal.where!r} fails its checksum (altered on "
            "disk); it was not copied",
            run_id=run_id,
        )
    return tuple(values)


def _tags_of(meta: Any) -> dict[str, str]:
    """The tags a copied run's sealed meta column holds (indexed in the target)."""
    try:
        tags = json.loads(meta).get("tags")
    except (TypeError, ValueError, AttributeError):
        return {}
    return tags if isinstance(tags, dict) else {}


def _sealed(values: Sequence[Any]) -> int:
    return run_checksum([values[i] for i in SEALED_INDEX])


def _copy_once(
    source: Journal, target: Journal, run_id: str, tick: Callable[[int], None]
) -> tuple[int, int]:
    """One transaction of the target: the run's row, entries and snapshots. Raises
    :class:`_Changed` (the transaction rolled back) if the source run moved on."""
    row = _run_row(source, run_id)
    fields = dict(zip(RUN_FIELDS, row, strict=True))
    last, horizon = fields["last_seq"], fields["horizon"]
    entries = snapshots = 0
    with target.lock:
        db = target.backend
        with db.transaction(f"copying run {run_id!r} into {target.where!r}"):
            db.execute(_INSERT_RUN, (*row, _sealed(row)))
            tags = _tags_of(fields["meta"])
            if tags:
                target.index_tags(run_id, tags)
            for batch in _entry_batches(source, run_id, horizon, last):
                if db.kind == "postgresql":
                    db.execute(
                        _INSERT_ENTRIES_PG, [list(column) for column in zip(*batch, strict=True)]
                    )
                else:
                    db.executemany(_INSERT_ENTRY, batch)
                entries += len(batch)
                tick(entries)
            for batch in _snapshot_batches(source, run_id, horizon, last):
                db.executemany(_INSERT_SNAPSHOT, batch)
                snapshots += len(batch)
            if _run_row(source, run_id) != row:
                raise _Changed(run_id)
    return entries, snapshots


def _entry_batches(
    source: Journal, run_id: str, horizon: int, last: int
) -> Iterator[list[tuple[Any, ...]]]:
    """The run's retained entries as stored, in batches, each checksum and seq checked."""
    expect = horizon + 1
    while expect <= last:
        hi = min(expect + BATCH - 1, last)
        rows = _rows(
            source,
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE run_id = ? AND seq BETWEEN ? AND ?"
            " ORDER BY seq",
            (run_id, expect, hi),
            where=f"reading run {run_id!r} seqs {expect}..{hi} of {source.where!r}",
        )
        batch = []
        for row in rows:
            rid, seq, kind, step, key, payload, codec, ts, checksum = row
            payload = bytes(payload) if isinstance(payload, memoryview) else payload
            if seq != expect:
                raise CorruptionError(
                    f"run {run_id!r}: entry seq {expect} is missing in the source",
                    run_id=run_id,
                    seq=expect,
                )
            if entry_checksum(rid, seq, kind, step, key, payload, codec, ts) != checksum:
                raise CorruptionError(
                    f"run {run_id!r} seq {seq}: checksum mismatch in the source (the entry "
                    "was altered); it was not copied",
                    run_id=run_id,
                    seq=seq,
                )
            batch.append((rid, seq, kind, step, key, payload, codec, ts, checksum))
            expect += 1
        if expect != hi + 1:
            raise CorruptionError(
                f"run {run_id!r}: entries {expect}..{hi} are missing in the source",
                run_id=run_id,
                seq=expect,
            )
        yield batch


def _snapshot_batches(
    source: Journal, run_id: str, horizon: int, last: int
) -> Iterator[list[tuple[Any, ...]]]:
    """The run's retained snapshots as stored, in batches, each checksum checked."""
    after = horizon - 1
    while True:
        rows = _rows(
            source,
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE run_id = ? AND seq > ?"
            " AND seq <= ? ORDER BY seq LIMIT ?",
            (run_id, after, last, SNAPSHOT_BATCH),
            where=f"reading the snapshots of run {run_id!r} of {source.where!r}",
        )
        if not rows:
            return
        batch = []
        for rid, seq, state, codec, fingerprint, checksum, created_at in rows:
            data = bytes(state)
            if snapshot_checksum(rid, seq, data, fingerprint) != checksum:
                raise CorruptionError(
                    f"run {run_id!r}: the snapshot at seq {seq} fails its checksum in the "
                    "source; it was not copied",
                    run_id=run_id,
                    seq=seq,
                )
            batch.append((rid, seq, data, codec, fingerprint, checksum, created_at))
            after = seq
        yield batch


# -- verifying -------------------------------------------------------------------------


def _verify_run(source: Journal, target: Journal, run_id: str, report: MigrationReport) -> None:
    """Compare the run's row, entries (read and checksum-verified on both sides) and
    snapshot rows; a difference becomes a mismatch line of the report."""
    report.runs_verified += 1
    try:
        here, there = source.get_run(run_id), target.get_run(run_id)
        if here != there:
            differ = ", ".join(_differences(here, there))
            report.mismatches.append(f"run {run_id!r}: the target's row differs in {differ}")
            return
        theirs = target.read(run_id, here.horizon + 1)
        for mine in source.read(run_id, here.horizon + 1):
            other = next(theirs, None)
            if other is None:
                report.mismatches.append(f"run {run_id!r}: the target ends before seq {mine.seq}")
                return
            if other != mine:
                report.mismatches.append(f"run {run_id!r} seq {mine.seq}: the entries differ")
                return
            report.entries_verified += 1
        extra = next(theirs, None)
        if extra is not None:
            report.mismatches.append(f"run {run_id!r}: the target has seq {extra.seq} too")
            return
        _verify_snapshots(source, target, here.run_id, here.horizon, report)
    except JournalError as exc:
        report.mismatches.append(f"run {run_id!r}: {exc}")


def _verify_snapshots(
    source: Journal, target: Journal, run_id: str, horizon: int, report: MigrationReport
) -> None:
    after = horizon - 1
    while True:
        sql = (
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE run_id = ? AND seq > ?"
            " ORDER BY seq LIMIT ?"
        )
        params = (run_id, after, SNAPSHOT_BATCH)
        mine = _rows(source, sql, params, where=f"reading the snapshots of {run_id!r}")
        theirs = _rows(target, sql, params, where=f"reading the snapshots of {run_id!r}")
        for row_a, row_b in zip(mine, theirs, strict=False):
            a, b = _plain(row_a), _plain(row_b)
            if a != b:
                report.mismatches.append(
                    f"run {run_id!r}: the snapshots at seq {a[1]} (source) and {b[1]} (target) "
                    "differ"
                )
                return
            rid, seq, state, _codec, fingerprint, checksum, _created = b
            if snapshot_checksum(rid, seq, state, fingerprint) != checksum:
                report.mismatches.append(
                    f"run {run_id!r}: the target's snapshot at seq {seq} fails its checksum"
                )
                return
            report.snapshots_verified += 1
        if len(mine) != len(theirs):
            report.mismatches.append(
                f"run {run_id!r}: the source and target hold different numbers of snapshots"
            )
            return
        if len(mine) < SNAPSHOT_BATCH:
            return
        after = mine[-1][1]


def _plain(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
