"""Compaction: drop entries that retained snapshots already cover.

A run's horizon is the seq of its oldest retained snapshot: the state at the
horizon is that snapshot, entries up to it are deleted, entries after it stay.
The horizon is raised first, in its own transaction, then entries are deleted in
bounded batches; an interrupted compaction leaves entries that are already
invisible below the horizon, and the next call finishes deleting them.

What was dropped is remembered in the horizon snapshot's payload, under
``"compacted"`` beside ``"values"`` and ``"pending"``: when the latest pass ran, how
many entries all passes deleted and how many of each kind (so ``durable history``
can say how many steps are gone). :meth:`Journal.compaction` reads it back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._backend import CommitUnknown
from ._integrity import snapshot_checksum
from .encryption import EncryptedCodec, Place
from .errors import DecodeError, JournalError
from .policies import RetentionPolicy

if TYPE_CHECKING:
    from .records import Run
    from .store import Journal

__all__ = [
    "CompactionRecord",
    "CompactionReport",
    "compact",
    "compaction_record",
    "kept_compaction",
]


@dataclass
class CompactionReport:
    """What one compaction pass did."""

    runs_compacted: int = 0
    entries_deleted: int = 0
    snapshots_deleted: int = 0
    horizons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CompactionRecord:
    """What compaction dropped from one run, as its horizon snapshot remembers it."""

    run_id: str
    horizon: int
    at: float
    """When the latest compaction pass raised the horizon (Unix time)."""
    entries: int
    """Entries deleted by every pass, counted when each raised the horizon."""
    kinds: dict[str, int] = field(default_factory=dict)
    """The deleted entries by kind (``step.completed``: completed steps)."""


def compact(
    journal: Journal,
    run_id: str | None = None,
    policy: RetentionPolicy | None = None,
    *,
    now: float | None = None,
) -> CompactionReport:
    """Compact one run, or every run, under ``policy`` (default: keep the newest snapshot)."""
    policy = policy or RetentionPolicy()
    t = time.time() if now is None else now
    report = CompactionReport()
    runs = [journal.get_run(run_id)] if run_id is not None else journal.list_runs(limit=None)
    for run in runs:
        if not run.finished and not policy.include_active:
            continue
        horizon = _choose_horizon(journal, run, policy, t)
        deleted = _raise_horizon(journal, run, horizon, t)
        entries = _delete_below(journal, run.run_id, policy.batch_size)
        if entries or deleted or horizon > run.horizon:
            report.runs_compacted += 1
            report.entries_deleted += entries
            report.snapshots_deleted += deleted
            report.horizons[run.run_id] = max(horizon, run.horizon)
    return report


def _choose_horizon(journal: Journal, run: Run, policy: RetentionPolicy, now: float) -> int:
    db = journal.backend
    if run.finished and run.last_seq > run.horizon:
        # A finished run's final state is its most useful snapshot: make sure it exists.
        with journal.lock:
            exists = db.snapshot_at(run.run_id, run.last_seq) is not None
        if not exists:
            journal.write_snapshot(run.run_id, run.last_seq)
    valid = [
        s.seq
        for s in journal.snapshots(run.run_id)
        if s.fingerprint == journal.fingerprint(s.codec) and s.seq >= run.horizon
    ]
    if not valid:
        return run.horizon
    horizon = valid[-policy.keep_snapshots] if len(valid) >= policy.keep_snapshots else valid[0]
    with journal.lock:
        active_forks, fork_point = db.fork_stats(run.run_id)
    if active_forks:
        return run.horizon  # an unfinished fork re-reads this run's entries up to its fork point
    if fork_point is not None:
        below = [s for s in valid if s <= fork_point]
        horizon = min(horizon, below[-1]) if below else run.horizon
    if policy.keep_seconds is not None:
        with journal.lock:
            first_recent = db.first_seq_since(run.run_id, now - policy.keep_seconds)
        if first_recent is not None:
            older = [s for s in valid if s < first_recent]
            horizon = min(horizon, older[-1]) if older else run.horizon
    return max(horizon, run.horizon)


def _raise_horizon(journal: Journal, run: Run, horizon: int, now: float) -> int:
    if horizon <= run.horizon:
        return 0
    with journal.lock:
        db = journal.backend
        try:
            with db.transaction(f"raising the horizon of {run.run_id!r}"):
                _remember(journal, run, horizon, now)
                checksum = journal._resealed(run.run_id, horizon=horizon)
                deleted = db.raise_horizon(run.run_id, horizon, checksum)
        except CommitUnknown:
            # Landed or not, the row now says which; the deletions below read the
            # horizon it holds, and a later pass raises it again if it did not land.
            db.settle()
            return 0
        return deleted


def _delete_below(journal: Journal, run_id: str, batch: int) -> int:
    total = 0
    db = journal.backend
    while True:
        try:
            with journal.lock, db.transaction(f"compacting {run_id!r}"):
                row = db.entries_below_horizon(run_id)
                if row is None:  # the run was deleted meanwhile (retention in another process)
                    return total
                lo, horizon = row
                if lo is None or lo > horizon:
                    return total
                deleted = db.delete_entries(run_id, lo, min(lo + batch - 1, horizon))
        except CommitUnknown:
            # Entries below the horizon are never read: what this round left, landed
            # or not, the next pass deletes.
            db.settle()
            return total
        total += deleted


def _read_payload(
    journal: Journal, run_id: str, seq: int, *, strict: bool
) -> tuple[Any, str | None]:
    """The decoded payload of the snapshot at ``seq`` and its codec; ``(None, None)`` if
    there is none."""
    row = journal.backend.snapshot_at(run_id, seq)
    if row is None:
        return None, None
    where = f"run {run_id!r} snapshot at seq {seq}"
    place = Place("snapshot", run_id, seq)
    return journal.decode(bytes(row[0]), row[1], where=where, strict=strict, place=place), row[1]


def _remember(journal: Journal, run: Run, horizon: int, now: float) -> None:
    """Write what this pass drops (added to what earlier passes dropped) into the new
    horizon snapshot, inside the transaction that raises the horizon.

    Best effort: a snapshot this process cannot decode and encode again exactly (a
    codec key or a class missing here) keeps its bytes, and history then says less.
    """

    db = journal.backend
    kinds = {str(kind): int(n) for kind, n in db.count_kinds(run.run_id, run.horizon, horizon)}
    try:
        before = compaction_record(journal, run.run_id, run.horizon) if run.horizon else None
        payload, codec_name = _read_payload(journal, run.run_id, horizon, strict=True)
        if not isinstance(payload, dict) or codec_name is None:
            return
        if before is not None:
            for kind, n in before.kinds.items():
                kinds[kind] = kinds.get(kind, 0) + n
        payload["compacted"] = {"at": now, "entries": sum(kinds.values()), "kinds": kinds}
        codec = journal.codec_named(codec_name, run_id=run.run_id)
        data = codec.encode(payload, path=f"snapshot of {run.run_id!r} at seq {horizon}")
        if isinstance(codec, EncryptedCodec):
            data = codec.bind(data, Place("snapshot", run.run_id, horizon))
    except JournalError:
        return
    fingerprint = db.snapshot_at(run.run_id, horizon)[2]
    checksum = snapshot_checksum(run.run_id, horizon, data, fingerprint)
    db.rewrite_snapshot(run.run_id, horizon, data, checksum)


def compaction_record(
    journal: Journal, run_id: str, horizon: int | None = None
) -> CompactionRecord | None:
    """What compaction dropped from ``run_id`` (at its current horizon unless
    ``horizon``); ``None`` if it was never compacted or compacted before this was
    recorded. A malformed record raises :class:`DecodeError`."""
    with journal.lock:
        if horizon is None:
            horizon = journal.get_run(run_id).horizon
        if not horizon:
            return None
        payload, _ = _read_payload(journal, run_id, horizon, strict=False)
    if not isinstance(payload, dict) or "compacted" not in payload:
        return None
    record = payload["compacted"]
    try:
        at, entries, kinds = record["at"], record["entries"], record["kinds"]
        if not (
            isinstance(at, (int, float))
            and type(entries) is int
            and isinstance(kinds, dict)
            and all(isinstance(k, str) and type(n) is int for k, n in kinds.items())
        ):
            raise TypeError
    except (TypeError, KeyError) as exc:
        raise DecodeError(
            f"run {run_id!r}: the compaction record in the snapshot at seq {horizon} is malformed",
            run_id=run_id,
            seq=horizon,
        ) from exc
    return CompactionRecord(run_id, horizon, float(at), entries, dict(kinds))


def kept_compaction(journal: Journal, run_id: str, seq: int) -> dict[str, Any]:
    """``{"compacted": record}`` from the snapshot at ``seq`` (the horizon) about to be
    rewritten, as it is stored; ``{}`` when it holds none or cannot be read here."""
    try:
        payload, _ = _read_payload(journal, run_id, seq, strict=False)
    except JournalError:
        return {}
    if isinstance(payload, dict) and "compacted" in payload:
        return {"compacted": payload["compacted"]}
    return {}
