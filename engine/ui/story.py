"""Who executed a run: its owners, claims (epochs) and takeovers, as far as the journal
tells them.

A claim writes no entry: the journal keeps the first owner (in ``run.started``), the
number of claims so far (``runs.epoch``) and the owner holding the run now. When an
owner dies, nothing is written until the next owner, once the lease has expired, takes
the run and starts its next unit of work. So a takeover is found where a claim was
counted and the journal went silent: the longest silences before a unit of work began
(a step's recorded start, or the run's end), one per claim after the first, each at
least :data:`MIN_SILENCE` long. A silence spans the dead owner's last entry to the new
owner's first start: the lease wait, plus the replay.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from journal import EntryKind, Journal, JournalError, Run
from journal import payloads as P

from ..timetravel import Checkpoint

K = EntryKind

MIN_SILENCE = 0.5
"""Seconds without an entry before a unit of work that can count as a takeover: a dead
owner's lease must expire first, and leases last seconds."""

_STARTS = frozenset({K.STEP_COMPLETED, K.STEP_FAILED, K.RUN_COMPLETED, K.RUN_FAILED})
"""Checkpoints whose start is known (a step's recorded start; the run's end, which
follows the body's last step at once), so a silence before them is not a wait."""


@dataclass(frozen=True)
class Takeover:
    """A silence in the journal after which another claim carried the run on."""

    run_id: str
    seq: int  # the checkpoint whose work the new owner started
    number: int
    since: float  # the previous owner's last entry
    resumed: float  # the new owner's first start
    epoch: int | None  # the claim it began, when every claim is accounted for

    @property
    def wait(self) -> float:
        """Seconds from the previous owner's last entry to the new owner's first start."""
        return self.resumed - self.since


@dataclass(frozen=True)
class Owners:
    """What the journal says of a run's owners."""

    first: str | None  # the owner that started it (run.started), if recorded
    current: str | None  # the owner holding it now (None once released or finished)
    epoch: int  # claims so far
    lease_expires_at: float | None
    takeovers: tuple[Takeover, ...]

    def lease_expired(self, now: float | None = None) -> bool:
        """A held run whose owner stopped renewing its lease: the next worker takes it."""
        now = time.time() if now is None else now
        return self.current is not None and (self.lease_expires_at or 0) <= now


def first_owner(journal: Journal, run: Run) -> str | None:
    """The owner named in the run's ``run.started`` entry (None if absent or unreadable)."""
    try:
        entry = journal.read_one(run.run_id, 1)
        if entry.kind != K.RUN_STARTED:
            return None
        payload = journal.decode_entry(entry, strict=False)
    except JournalError:
        return None  # compacted away, or never written (a fork starts with run.forked)
    return P.read_run_started(payload).owner


def find_takeovers(run: Run, checkpoints: Sequence[Checkpoint]) -> list[Takeover]:
    """The takeovers of ``run`` among its own checkpoints (see the module's docstring)."""
    claims = max(run.epoch - 1, 0)
    if not claims:
        return []
    candidates: list[tuple[float, float, Checkpoint]] = []
    prev = run.created_at
    for cp in checkpoints:
        if cp.run_id != run.run_id:
            continue  # a fork's source: its own owners are on its own page
        if cp.kind in _STARTS:
            start = cp.started_at if cp.started_at is not None else cp.ended_at
            if start - prev >= MIN_SILENCE:
                candidates.append((prev, start, cp))
        prev = cp.ended_at
    chosen = sorted(candidates, key=lambda c: c[1] - c[0], reverse=True)[:claims]
    chosen.sort(key=lambda c: c[2].seq)
    exact = len(chosen) == claims  # then claim i+2 began after silence i
    return [
        Takeover(run.run_id, cp.seq, cp.number, since, start, i + 2 if exact else None)
        for i, (since, start, cp) in enumerate(chosen)
    ]


def owners(journal: Journal, run: Run, checkpoints: Sequence[Checkpoint]) -> Owners:
    """The run's owners and takeovers."""
    return Owners(
        first=first_owner(journal, run),
        current=run.owner,
        epoch=run.epoch,
        lease_expires_at=run.lease_expires_at,
        takeovers=tuple(find_takeovers(run, checkpoints)),
    )
