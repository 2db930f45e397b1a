"""Reopening a failed run: the one transition out of a terminal status.

A terminal status is final: every other write refuses a finished run
(:class:`~journal.RunEnded`). Resuming a *failed* run is the single deliberate
exception, and it is guarded in one transaction: the run must still be failed, with
the failure the caller read (the seq of its ``run.failed`` entry and its error), or
:class:`~journal.NotFailed` is raised and nothing is written. Then a ``run.resumed``
entry is appended after the failure (which stays in the history), with the
``state.deleted`` entries the caller gives (a workflow run's attempt count of the step
that runs again), and the run becomes
``pending`` with no owner, no lease and no error: claimable through the usual doors
(:meth:`~journal.Journal.claim_run`, :meth:`~journal.Journal.claim_next`) like any
pending run, so leases and queue limits hold for it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._backend import CommitUnknown
from ._integrity import entry_rows
from ._requests import AppendRequest
from .errors import ConflictError, NotFailed, RunNotFound
from .kinds import EntryKind

if TYPE_CHECKING:
    from .records import NewEntry, Run
    from .store import Journal

__all__ = ["reopen_failed"]


def reopen_failed(
    journal: Journal,
    run_id: str,
    entry: NewEntry,
    *,
    failed_seq: int,
    error: str | None,
    resets: Sequence[NewEntry] = (),
) -> Run:
    """Append ``entry`` (a ``run.resumed`` entry), then ``resets`` (``state.deleted``
    entries), to the failed run ``run_id`` and make it pending, if it is still failed at
    ``failed_seq`` with ``error``; return the run."""
    if entry.kind != EntryKind.RUN_RESUMED:
        raise ValueError(f"a reopen appends a {EntryKind.RUN_RESUMED} entry, not {entry.kind}")
    for reset in resets:
        if reset.kind != EntryKind.STATE_DELETED:
            raise ValueError(
                f"a reopen resets state with {EntryKind.STATE_DELETED} entries, not {reset.kind}"
            )
    entries = list(journal.bind_entries(run_id, [entry, *resets], failed_seq))
    request = AppendRequest(
        run_id, entries, failed_seq, None, "pending", error=None, wake_at=None, release=True
    )
    with journal.lock:
        db = journal._c()
        try:
            with db.transaction(f"reopening run {run_id!r}"):
                row = db.failure_row(run_id)
                if row is None:
                    raise RunNotFound(
                        f"no run {run_id!r} in journal {journal.where!r}", run_id=run_id
                    )
                last_seq, status, now_error = row
                if status != "failed":
                    raise NotFailed(
                        f"run {run_id!r} is {status}: only a failed run can be resumed; "
                        "nothing was written",
                        run_id=run_id,
                        status=status,
                    )
                if last_seq != failed_seq or now_error != error:
                    raise NotFailed(
                        f"run {run_id!r} is failed, but not with the failure read at seq "
                        f"{failed_seq} (it was resumed and failed again since: last seq is "
                        f"{last_seq}); nothing was written",
                        run_id=run_id,
                        status=status,
                    )
                now = time.time()
                journal._update_run(request, failed_seq + len(entries), now)
                db.insert_entries(entry_rows(run_id, entries, failed_seq, now))
        except CommitUnknown:
            # The COMMIT may have landed: ours if the entry after the failure is ours.
            db.settle()
            run = journal.get_run(run_id)
            if run.last_seq > failed_seq:
                landed = journal.read_one(run_id, failed_seq + 1)
                if landed.kind == entry.kind and landed.payload == entry.payload:
                    return run
            raise ConflictError(
                f"run {run_id!r}: the COMMIT of its reopening failed and did not land; "
                "nothing was written",
                run_id=run_id,
            ) from None
    return journal.get_run(run_id)
