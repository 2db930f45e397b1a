"""Integrity checks over a journal file: what ``durable verify`` reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import JournalError
from .fold import FoldedState, fold
from .lineage import ancestors

if TYPE_CHECKING:
    from .store import Journal

__all__ = ["VerifyReport", "verify"]


@dataclass
class VerifyReport:
    """Problems found (empty when the journal is sound) and how much was checked."""

    runs: int = 0
    entries: int = 0
    snapshots: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def verify(
    journal: Journal,
    run_id: str | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check ``PRAGMA integrity_check``, every run row's checksum and lineage (no fork or
    parent cycle), every entry's checksum and seq density, and that every snapshot
    equals the fold of the entries before it. Values are read as readers read them
    (``strict=False``): no pickle is loaded that the journal does not trust, and no
    class needs to be importable."""
    report = VerifyReport()
    db = journal.backend
    try:
        with journal.lock:
            report.problems += db.integrity_problems()
    except db.errors as exc:
        report.problems.append(f"integrity_check could not run: {exc}")
    try:
        # Ids only: one altered row must not hide the others (each is read on its own).
        ids = [run_id] if run_id else journal.run_ids()
    except JournalError as exc:
        report.problems.append(f"cannot list the runs: {exc}")
        return report
    for i, rid in enumerate(ids):
        report.runs += 1
        try:
            _verify_run(journal, rid, report)
        except JournalError as exc:
            report.problems.append(str(exc))
        if progress:
            progress(i + 1, len(ids))
    return report


def _verify_run(journal: Journal, run_id: str, report: VerifyReport) -> None:
    run = journal.get_run(run_id)
    for link in ("fork", "parent"):
        for _ in ancestors(journal, run, link=link):
            pass
    snaps = {s.seq: s for s in journal.snapshots(run_id)}
    state = journal.state_at(run_id, run.horizon, strict=False)
    for entry in journal.read(run_id, run.horizon + 1):
        fold(state, [entry], lambda e: journal.decode_entry(e, strict=False))
        report.entries += 1
        if entry.seq in snaps:
            _check_snapshot(journal, run_id, entry.seq, state, report)
    if state.seq != run.last_seq:
        report.problems.append(
            f"run {run_id!r}: last_seq is {run.last_seq} but entries end at {state.seq}"
        )


def _check_snapshot(
    journal: Journal, run_id: str, seq: int, folded: FoldedState, report: VerifyReport
) -> None:
    report.snapshots += 1
    with journal.lock:
        stored = journal._snapshot_state(journal.get_run(run_id), seq, strict=False)
    if stored is None or stored.seq != seq:
        return  # written under another fold version: skipped by readers, not trusted
    if stored.values != folded.values or stored.pending != folded.pending:
        report.problems.append(
            f"run {run_id!r}: snapshot at seq {seq} differs from the fold of its entries"
        )
