"""Retention: delete finished runs past their age, compact the others to their end.

Deleting a run is a compaction to its final snapshot (the horizon raised in its own
transaction, then entries deleted in bounded batches) followed by one transaction that
removes what is left: its last entry, its snapshots and its row. A process killed
anywhere in between leaves a compacted run, readable and verified, which the next pass
deletes; any number of processes may apply the same policy at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .compaction import compact
from .errors import JournalError, RunNotFound
from .policies import RetentionPolicy

if TYPE_CHECKING:
    from .store import Journal

__all__ = ["Retention", "RetentionReport", "apply_retention"]

_DAY = 86400.0
_PARENT_ENDED = (
    " AND NOT EXISTS (SELECT 1 FROM runs AS p WHERE p.run_id = runs.parent_run_id"
    " AND p.status NOT IN ('completed', 'failed', 'cancelled'))"
)


@dataclass(frozen=True)
class Retention:
    """How long finished runs stay: ``completed_days`` after a run completed, then it is
    deleted; ``failed_days`` for failed and cancelled runs; ``compact_days`` after a run
    ended, only its final state is kept (its history is compacted). ``None`` keeps
    forever. ``every`` is how often a worker applies it, in seconds."""

    completed_days: float | None = None
    failed_days: float | None = None
    compact_days: float | None = None
    batch_size: int = 5000
    every: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("completed_days", "failed_days", "compact_days"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Retention.{name} must be a number of days >= 0, got {value!r}")
        if self.batch_size < 1:
            raise ValueError(f"Retention.batch_size must be >= 1, got {self.batch_size!r}")
        if not (math.isfinite(self.every) and self.every > 0):
            raise ValueError(f"Retention.every must be seconds > 0, got {self.every!r}")


@dataclass
class RetentionReport:
    """What one pass did: runs deleted and compacted, and the runs kept past their age
    with the reason (a fork or child run still refers to them, or an error)."""

    deleted: list[str] = field(default_factory=list)
    compacted: list[str] = field(default_factory=list)
    entries_deleted: int = 0
    kept: dict[str, str] = field(default_factory=dict)


def apply_retention(
    journal: Journal, policy: Retention, *, now: float | None = None, limit: int = 1000
) -> RetentionReport:
    """Apply ``policy`` to at most ``limit`` runs of each kind; safe to interrupt and to
    run in several processes at once."""
    t = time.time() if now is None else now
    report = RetentionReport()
    groups = (("completed",), policy.completed_days), (("failed", "cancelled"), policy.failed_days)
    for statuses, days in groups:
        if days is not None:
            for run_id in _ended_before(journal, statuses, t - days * _DAY, limit):
                _delete(journal, run_id, statuses, policy.batch_size, report)
    if policy.compact_days is not None:
        ended = ("completed", "failed", "cancelled")
        cutoff = t - policy.compact_days * _DAY
        for run_id in _ended_before(journal, ended, cutoff, limit, uncompacted=True):
            _compact(journal, run_id, policy.batch_size, report)
    return report


def _ended_before(
    journal: Journal,
    statuses: tuple[str, ...],
    cutoff: float,
    limit: int,
    *,
    uncompacted: bool = False,
) -> list[str]:
    marks = ", ".join("?" * len(statuses))
    # Runs already compacted to their end are left out, or they would take every pass's
    # places; so are children of unfinished parents, which read their outcome.
    extra = " AND horizon < last_seq" if uncompacted else _PARENT_ENDED
    # Newest first: children and forks are created after the runs they refer to, so they
    # go before them and no longer hold them back.
    with journal.lock:
        rows = journal.backend.execute(
            f"SELECT run_id FROM runs WHERE status IN ({marks}) AND updated_at < ?{extra}"
            " ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (*statuses, cutoff, limit),
        ).fetchall()
    return [row[0] for row in rows]


def _referrer(journal: Journal, run_id: str) -> str | None:
    with journal.lock:
        row = journal.backend.execute(
            "SELECT run_id FROM runs WHERE parent_run_id = ? OR forked_from = ? LIMIT 1",
            (run_id, run_id),
        ).fetchone()
    return None if row is None else str(row[0])


def _compact(journal: Journal, run_id: str, batch: int, report: RetentionReport) -> None:
    try:
        done = compact(journal, run_id, RetentionPolicy(keep_snapshots=1, batch_size=batch))
    except JournalError as exc:
        report.kept[run_id] = f"not compacted: {exc}"
        return
    if done.runs_compacted:
        report.compacted.append(run_id)
        report.entries_deleted += done.entries_deleted


def _delete(
    journal: Journal, run_id: str, statuses: tuple[str, ...], batch: int, report: RetentionReport
) -> None:
    referrer = _referrer(journal, run_id)
    if referrer is not None:
        report.kept[run_id] = f"run {referrer!r} refers to it (a child run or a fork)"
        return
    run = journal.find_run(run_id)
    if run is None:
        return  # deleted meanwhile by another process applying the policy
    if (run.status == "completed" and run.output is None) or "continued_from" in run.meta:
        # A link of a ctx.continue_as_new chain: the chain's result is found through
        # every link, so none is deleted alone (chains are kept; compacted they may be).
        report.kept[run_id] = "it is part of a continue_as_new chain, kept whole"
        return
    try:
        # Compacted first, in batches: a kill from here on leaves a readable compacted run.
        done = compact(journal, run_id, RetentionPolicy(keep_snapshots=1, batch_size=batch))
        report.entries_deleted += done.entries_deleted
    except RunNotFound:
        return  # deleted meanwhile by another process applying the policy
    except JournalError:
        pass  # no usable final snapshot (say, a codec not held here): deleted in one go
    try:
        marks = ", ".join("?" * len(statuses))
        db = journal.backend
        with journal.lock, db.transaction(f"deleting run {run_id!r}"):
            # Checked again inside the transaction: a fork or child made meanwhile keeps it.
            still = db.execute(
                f"SELECT 1 FROM runs WHERE run_id = ? AND status IN ({marks})"
                " AND NOT EXISTS (SELECT 1 FROM runs AS r"
                f" WHERE r.parent_run_id = ? OR r.forked_from = ?){_PARENT_ENDED}",
                (run_id, *statuses, run_id, run_id),
            ).fetchone()
            if still is None:
                return
            db.execute("DELETE FROM entries WHERE run_id = ?", (run_id,))
            report.entries_deleted += db.changes()
            db.execute("DELETE FROM snapshots WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM run_tags WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            if db.changes():
                report.deleted.append(run_id)
    except JournalError as exc:
        report.kept[run_id] = f"not deleted: {exc}"
