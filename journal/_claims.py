"""The Journal's leases: claiming a run or the next ones of the queue, renewing a
lease, the journal's clock and notifications."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from ._backend import CommitUnknown, Listener
from ._core import JournalCore
from ._integrity import run_from_row
from ._requests import run_ended
from .errors import (
    ConflictError,
    LeaseHeld,
    RunCorrupted,
    RunNotFound,
)
from .kinds import TERMINAL_STATUSES
from .records import Run

_QUEUE_TURNS = 0x44524232  # claimers of a limited queue take turns on a key made from this


def _queue_turn(queue: str) -> int:
    """The advisory-lock key of a limited queue's claim turn (a signed 64-bit int)."""
    return (_QUEUE_TURNS << 31) ^ zlib.crc32(queue.encode())


class ClaimsMixin(JournalCore):
    """Leases and claims (part of :class:`~journal.Journal`)."""

    def claim_run(
        self,
        run_id: str,
        owner: str,
        *,
        lease_seconds: float = 30.0,
        steal: bool = False,
    ) -> Run:
        """Take the lease on a run, raising its epoch (the fencing token).

        Raises :class:`LeaseHeld` if another owner's lease has not expired (unless
        ``steal``), and :class:`ConflictError` if the run has finished.
        """
        granted: list[float] = []
        with self._lock:
            db = self._c()
            try:
                self._claim(run_id, owner, lease_seconds, steal, granted)
            except CommitUnknown:
                # Ours if the lease carries our owner and expiry; else not claimed.
                db.settle()
                run = self.get_run(run_id)
                if run.owner == owner and granted and run.lease_expires_at == granted[0]:
                    return run
                raise ConflictError(
                    f"run {run_id!r}: the claim's COMMIT failed and the run is not ours now "
                    f"(owner {run.owner!r})",
                    run_id=run_id,
                ) from None
        return self.get_run(run_id)

    def _claim(
        self, run_id: str, owner: str, lease_seconds: float, steal: bool, granted: list[float]
    ) -> None:
        """Claim in a transaction; the expiry written is appended to ``granted`` before
        the COMMIT (which may fail with its outcome unknown)."""
        db = self._c()
        with db.transaction(f"claiming run {run_id!r}"):
            row = db.lease_row(run_id)
            # Read once the row is locked: the lease is judged, and granted, as of now.
            now = db.clock()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in journal {self.where!r}", run_id=run_id)
            status, holder, expires = row
            if status in TERMINAL_STATUSES:
                raise run_ended(run_id, status)
            if holder not in (None, owner) and (expires or 0) > now and not steal:
                raise LeaseHeld(
                    f"run {run_id!r} is leased by {holder!r} for {expires - now:.1f}s more",
                    run_id=run_id,
                    owner=holder,
                )
            checksum = self._resealed(run_id, claim=True)
            db.mark_claimed(run_id, owner, now + lease_seconds, checksum, now)
            granted.append(now + lease_seconds)

    def clock(self) -> float:
        """Now, in Unix seconds, by the clock every lease in this journal is measured by:
        the PostgreSQL server's (one clock for every host sharing the journal), or this
        host's for a journal file. Compare ``Run.lease_expires_at`` with this."""
        with self._lock:
            return self._clock()

    def _clock(self) -> float:
        db = self._c()
        try:
            return db.clock()
        except db.errors as exc:
            raise db.translate(exc, "reading the journal's clock") from exc

    def claimable(self, *, now: float | None = None, limit: int = 100) -> list[Run]:
        """Unfinished runs nobody holds: pending, running with an expired lease, or
        waiting with a due wake time. Oldest first."""
        with self._lock:
            t = self._clock() if now is None else now
            db = self._c()
            rows = self._read("finding claimable runs", db.claimable_rows, t, limit)
        return [run_from_row(r, db.sealed) for r in rows]

    def claim_next(
        self,
        owner: str,
        *,
        lease_seconds: float = 30.0,
        limit: int = 1,
        limits: dict[str, int] | None = None,
        rates: Mapping[str, tuple[int, float]] | None = None,
        skip_names: Sequence[str] = (),
        skip_run_ids: Sequence[str] = (),
        run_ids: Sequence[str] | None = None,
        now: float | None = None,
    ) -> list[Run]:
        """Claim up to ``limit`` runs nobody holds, highest priority then oldest first:
        the durable queue's dequeue, and the one door every run is claimed through
        when it belongs to a queue (``run_ids``: only among these runs).

        Claimable as in :meth:`claimable`, except child runs whose parent is still
        unfinished (the parent resumes them). ``limits`` caps how many runs of each
        named queue may be running (leased) at once across every worker: claimers of
        one limited queue take turns, and while another holds that queue's turn its
        runs are left for the next call (never waited for). ``rates`` maps a queue to
        ``(n, seconds)``: at most ``n`` of its runs are first claimed in any
        ``seconds`` (counted from when each was first claimed). Runs of functions in
        ``skip_names`` and the runs in ``skip_run_ids`` (those the caller is
        executing) are left alone, and so is a run whose row fails its checksum
        (``durable verify`` names it). Concurrent claimers on PostgreSQL skip each
        other's rows (``FOR UPDATE SKIP LOCKED``) rather than wait.
        """
        limits = {q: n for q, n in (limits or {}).items() if n is not None}
        rates = dict(rates or {})
        limited = sorted({*limits, *rates})
        skip_run_ids = [*skip_run_ids, *self._altered]
        if run_ids is not None and not run_ids:
            return []
        with self._lock:
            db = self._c()
            chosen: list[str] = []
            granted: list[float] = []  # the expiry written, known before the COMMIT
            try:
                with db.transaction("claiming runs"):
                    # Read inside the transaction, after any wait for the lock: a lease
                    # granted must run lease_seconds from the claim, not from before it.
                    t = db.clock() if now is None else now
                    granted.append(t + lease_seconds)

                    def candidates(n: int, **which: Any) -> list[Any]:
                        return db.claim_candidates(
                            t, n, skip_names=skip_names, skip_run_ids=skip_run_ids, **which
                        )

                    rows = candidates(limit, not_queues=limited, run_ids=run_ids)
                    for queue in limited:
                        # Counting then claiming a limited queue must not interleave with
                        # another claimer's; a stalled claimer holds up that queue only.
                        if not db.take_turns(_queue_turn(queue)):
                            continue
                        room = limit
                        if queue in limits:
                            room = min(room, limits[queue] - db.running_in_queue(queue, t))
                        if queue in rates:
                            # Counted from the runs themselves (when each was first
                            # claimed): every worker sharing the journal holds one limit.
                            n, seconds = rates[queue]
                            room = min(room, n - db.started_in_queue(queue, t - seconds))
                        if room > 0:
                            # The queue's next runs by priority; a run named in run_ids goes
                            # only if it is among them (it does not jump the queue).
                            rows += [
                                r
                                for r in candidates(room, queue=queue)
                                if run_ids is None or r[0] in run_ids
                            ]
                    rows.sort(key=lambda r: (-r[1], r[2], r[0]))
                    for run_id in [r[0] for r in rows[:limit]]:
                        try:
                            checksum = self._resealed(run_id, claim=True)
                        except RunCorrupted:
                            # Altered on disk: left alone (`durable verify` names it), so that
                            # one bad row does not stop a worker from claiming the others.
                            self._altered.add(run_id)
                            continue
                        db.mark_claimed(run_id, owner, t + lease_seconds, checksum, t)
                        chosen.append(run_id)
                    claimed = [run_from_row(db.select_run(run_id), db.sealed) for run_id in chosen]
            except CommitUnknown:
                # Ours are the chosen runs whose lease carries our owner and expiry.
                db.settle()
                claimed = [
                    run
                    for run in map(self.find_run, chosen)
                    if run is not None and run.owner == owner and run.lease_expires_at == granted[0]
                ]
        return claimed

    def notify(self, channel: str, payload: str = "") -> None:
        """Wake listeners of ``channel`` (PostgreSQL ``NOTIFY``; nothing for a file)."""
        with self._lock:
            db = self._c()
            try:
                db.notify(channel, payload)
            except db.errors as exc:
                raise db.translate(exc, f"notifying {channel!r}") from exc

    def listener(self, channel: str) -> Listener:
        """A listener for :meth:`notify` on ``channel``, on a connection of its own
        (PostgreSQL); for a journal file, one whose ``wait`` just sleeps (poll)."""
        return self._c().listener(channel)

    def renew_leases(
        self,
        owner: str,
        leases: Mapping[str, int],
        lease_seconds: float,
        *,
        heartbeats: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Extend every held lease in ``leases`` (run id → epoch) in one commit; return
        the run ids whose lease was lost (their epoch moved on or they ended).
        ``heartbeats`` (run id → JSON, see :meth:`heartbeat_of`) replace those runs'
        step heartbeats in the same statements."""
        beats = heartbeats or {}
        if not leases:
            return []
        with self._lock:
            db = self._c()
            expires = None
            try:
                with db.transaction(f"renewing {len(leases)} leases"):
                    expires = db.clock() + lease_seconds
                    lost = [
                        run_id
                        for run_id, epoch in leases.items()
                        if not db.renew(run_id, owner, epoch, expires, beats.get(run_id))
                    ]
            except CommitUnknown:
                # Renewed where the lease there is the one we wrote.
                db.settle()
                held = self.get_runs(leases)
                lost = [
                    run_id
                    for run_id, epoch in leases.items()
                    if (run := held.get(run_id)) is None
                    or (run.owner, run.epoch, run.lease_expires_at) != (owner, epoch, expires)
                ]
        return lost

    def renew_lease(
        self,
        run_id: str,
        owner: str,
        epoch: int,
        lease_seconds: float,
        *,
        heartbeat: str | None = None,
    ) -> float:
        """Extend a held lease; raises :class:`ConflictError` if the epoch moved on.
        ``heartbeat`` (JSON: the steps' last progress, see :meth:`heartbeat_of`)
        replaces the run's in the same statement."""
        with self._lock:
            db = self._c()
            expires = None
            try:
                with db.transaction(f"renewing the lease on {run_id!r}"):
                    expires = db.clock() + lease_seconds
                    renewed = db.renew(run_id, owner, epoch, expires, heartbeat)
            except CommitUnknown:
                # Renewed if the lease there is the one we wrote.
                db.settle()
                run = self.find_run(run_id)
                renewed = run is not None and (run.owner, run.epoch, run.lease_expires_at) == (
                    owner,
                    epoch,
                    expires,
                )
            if not renewed or expires is None:
                raise ConflictError(
                    f"run {run_id!r}: lease lost (epoch {epoch} is no longer current)",
                    run_id=run_id,
                    epoch=epoch,
                )
        return expires
