"""Compaction: drop entries that retained snapshots already cover.

A run's horizon is the seq of its oldest retained snapshot: the state at the
horizon is that snapshot, entries up to it are deleted, entries after it stay.
The horizon is raised first, in its own transaction, then entries are deleted in
bounded batches; an interrupted compaction leaves entries that are already
invisible below the horizon, and the next call finishes deleting them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .policies import RetentionPolicy

if TYPE_CHECKING:
    from .records import Run
    from .store import Journal

__all__ = ["CompactionReport", "compact"]


@dataclass
class CompactionReport:
    """What one compaction pass did."""

    runs_compacted: int = 0
    entries_deleted: int = 0
    snapshots_deleted: int = 0
    horizons: dict[str, int] = field(default_factory=dict)


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
        deleted = _raise_horizon(journal, run, horizon)
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
            exists = db.execute(
                "SELECT 1 FROM snapshots WHERE run_id = ? AND seq = ?", (run.run_id, run.last_seq)
            ).fetchone()
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
        active_forks, fork_point = db.execute(
            "SELECT count(*) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')),"
            " min(forked_at) FROM runs WHERE forked_from = ?",
            (run.run_id,),
        ).fetchone() or (0, None)
    if active_forks:
        return run.horizon  # an unfinished fork re-reads this run's entries up to its fork point
    if fork_point is not None:
        below = [s for s in valid if s <= fork_point]
        horizon = min(horizon, below[-1]) if below else run.horizon
    if policy.keep_seconds is not None:
        with journal.lock:
            row = db.execute(
                "SELECT min(seq) FROM entries WHERE run_id = ? AND ts >= ?",
                (run.run_id, now - policy.keep_seconds),
            ).fetchone()
        first_recent = row[0] if row else None
        if first_recent is not None:
            older = [s for s in valid if s < first_recent]
            horizon = min(horizon, older[-1]) if older else run.horizon
    return max(horizon, run.horizon)


def _raise_horizon(journal: Journal, run: Run, horizon: int) -> int:
    if horizon <= run.horizon:
        return 0
    with journal.lock:
        db = journal.backend
        with db.transaction(f"raising the horizon of {run.run_id!r}"):
            db.execute(
                "UPDATE runs SET horizon = ?, checksum = ? WHERE run_id = ? AND horizon < ?",
                (horizon, journal._resealed(run.run_id, horizon=horizon), run.run_id, horizon),
            )
            db.execute("DELETE FROM snapshots WHERE run_id = ? AND seq < ?", (run.run_id, horizon))
            return int(db.changes())


def _delete_below(journal: Journal, run_id: str, batch: int) -> int:
    total = 0
    db = journal.backend
    while True:
        with journal.lock, db.transaction(f"compacting {run_id!r}"):
            row = db.execute(
                "SELECT (SELECT min(seq) FROM entries WHERE run_id = ?), horizon"
                " FROM runs WHERE run_id = ?",
                (run_id, run_id),
            ).fetchone()
            if row is None:  # the run was deleted meanwhile (retention in another process)
                return total
            lo, horizon = row
            if lo is None or lo > horizon:
                return total
            db.execute(
                "DELETE FROM entries WHERE run_id = ? AND seq >= ? AND seq <= ?",
                (run_id, lo, min(lo + batch - 1, horizon)),
            )
            total += db.changes()
