"""A worker: claims runs nobody holds and executes them, up to ``concurrency`` at once.

Any number of workers, in any number of processes and hosts, share one journal:
each claim takes a lease (a PostgreSQL journal lets concurrent claimers skip each
other's rows), the heartbeat renews it, and a worker that lost it is fenced off at
its next append. Workers wake when notified (PostgreSQL ``LISTEN``: a run was
enqueued, sent an event, or released) and otherwise poll.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from journal import JournalError, Listener, Retention, apply_retention

from .errors import FunctionNotFound
from .queues import WAKE_CHANNEL, queue_limits, queue_rates
from .registry import resolve
from .schedules import fire_in_worker, store_declared

if TYPE_CHECKING:
    from .runtime import Engine, RecoveryReport, StopReport

__all__ = ["Worker"]

log = logging.getLogger("durable.worker")

_SLICE = 0.05  # longest sleep between checks of the stop event and of free slots


class Worker:
    """Claims and executes runs for one engine; see :meth:`Engine.worker`."""

    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        retention: Retention | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.engine = engine
        self.retention = retention
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self._unresolvable: set[str] = set()
        self._next_tick: float | None = None
        self._stop = threading.Event()

    def in_flight(self) -> int:
        """Runs this engine is executing now."""
        return len(self.engine.held_run_ids())

    def claim_once(self) -> RecoveryReport:
        """Claim as many runs as there are free slots and launch them."""
        from .runtime import RecoveryReport, RunHandle  # noqa: PLC0415 - runtime imports us

        report = RecoveryReport()
        free = self.concurrency - self.in_flight()
        if free <= 0:
            return report
        eng = self.engine
        journal = eng.journal
        runs = journal.claim_next(
            eng.owner,
            lease_seconds=eng.lease_seconds,
            limit=free,
            limits=queue_limits(),
            rates=queue_rates(),
            skip_names=sorted(self._unresolvable),
            # A run executing here whose lease ran out (a stall) is not claimed again:
            # the heartbeat renews it, or another worker takes it and fences this one.
            # Nor is one this engine failed to resume: it would fail the same way.
            skip_run_ids=[*eng.held_run_ids(), *eng.blocked_run_ids()],
        )
        for run in runs:
            try:
                fn = resolve(run.name, run_id=run.run_id)
            except FunctionNotFound as exc:
                # Left for a worker that can import it: released at once and pending
                # again (not "running" with nobody running it), and this worker stops
                # claiming that function's runs.
                report.errors[run.run_id] = exc
                self._unresolvable.add(run.name)
                # A queued run that never started goes back to pending, not "running"
                # with no owner.
                back = {"status": "pending"} if run.queue is not None and run.last_seq <= 1 else {}
                with contextlib.suppress(JournalError):
                    journal.append(run.run_id, [], expected_seq=None, epoch=run.epoch,
                                   release=True, **back)  # fmt: skip
                continue
            future = eng.hold(run)
            fn.launch(eng, run, future)
            report.handles.append(RunHandle(eng, run.run_id, future))
        return report

    def run(
        self,
        stop: threading.Event | None = None,
        on_claim: Callable[[RecoveryReport], None] | None = None,
    ) -> None:
        """Claim and execute until ``stop`` is set (or :meth:`stop` is called). The runs
        in flight go on when this returns: :meth:`stop` or :meth:`Engine.drain` stops
        them at a step boundary."""
        if stop is not None:
            self._stop = stop
        stop = self._stop
        listener = self.engine.journal.listener(WAKE_CHANNEL)
        keeper = None
        done = threading.Event()  # the keeper's own: set however run() ends
        if self.retention is not None:
            keeper = threading.Thread(
                target=self._keep,
                args=(self.retention, stop, done),
                name="durable-retention",
                daemon=True,
            )
            keeper.start()
        try:
            store_declared(self.engine)
        except JournalError as exc:
            log.warning("worker %s: storing schedules failed (%s)", self.engine.owner, exc)
        try:
            while not stop.is_set():
                # Ticks due now become pending runs, claimed below like any other.
                self._next_tick = fire_in_worker(self.engine)
                try:
                    report = self.claim_once()
                except JournalError as exc:
                    # The database went away or stayed locked: the runs in flight go
                    # on (their commits retry), and claiming resumes after a pause.
                    log.warning("worker %s: claiming failed (%s); retrying", self.engine.owner, exc)
                    stop.wait(self.poll_interval)
                    continue
                if on_claim is not None and (report.handles or report.errors):
                    on_claim(report)
                # More may be waiting (behind the slots or a queue's limit, or woken by
                # an enqueue while every slot was taken): claim again as soon as one of
                # our runs ends, not at the next poll.
                busy = self.in_flight() or None
                self._idle(listener, stop, busy)
        finally:
            listener.close()
            done.set()
            if keeper is not None:
                # A pass in progress ends at its next run; the thread is a daemon, and
                # a pass cut short is finished by the next one.
                keeper.join(timeout=5)

    def stop(self, grace: float = 30.0, *, abandon: threading.Event | None = None) -> StopReport:
        """Stop like a service: claim nothing more, let each run in flight reach its next
        step boundary (at most ``grace`` seconds), commit, and release the leases so
        another worker resumes them at once. Runs still inside a step after ``grace``
        (or once ``abandon`` is set) are abandoned, their leases released anyway: that
        step runs again elsewhere (at-least-once). Call from another thread than
        :meth:`run`'s, or after it returned."""
        self._stop.set()
        return self.engine.drain(grace, abandon=abandon)

    def _keep(self, retention: Retention, stop: threading.Event, done: threading.Event) -> None:
        # Retention in the background, once at start then every ``retention.every``
        # seconds; a pass interrupted by a crash is finished by the next one.
        while not (stop.is_set() or done.is_set()):
            try:
                report = apply_retention(self.engine.journal, retention)
            except Exception:  # one bad pass must not end retention for the worker's life
                log.exception("worker %s: retention failed; retrying", self.engine.owner)
            else:
                if report.deleted or report.compacted:
                    log.info(
                        "retention: %d runs deleted, %d compacted, %d entries removed",
                        len(report.deleted), len(report.compacted), report.entries_deleted,
                    )  # fmt: skip
            done.wait(retention.every)  # set as soon as run() ends, stop or not

    def _idle(self, listener: Listener, stop: threading.Event, busy: int | None) -> None:
        # Until the poll interval passes, a schedule's next tick comes, a notification
        # arrives, or fewer than ``busy`` runs are in flight here.
        wait = self.poll_interval
        if self._next_tick is not None:
            # At least a slice: a tick that stays due (a schedule that cannot fire) must
            # not turn this loop into a busy one.
            wait = max(_SLICE, min(wait, self._next_tick - time.time()))
        deadline = time.monotonic() + wait
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                woken = listener.wait(min(_SLICE, left))
            except JournalError:  # cannot listen now: poll until it can again
                stop.wait(min(_SLICE, left))
                continue
            if woken:
                self._poke(woken)
                return
            if busy is not None and self.in_flight() < busy:
                return

    def _poke(self, run_ids: list[str]) -> None:
        # A run executing here that was sent an event from another host absorbs it
        # now rather than at its next look at the journal.
        for run_id in run_ids:
            ex = self.engine.execution_of(run_id)
            poke = getattr(ex, "poke", None)
            if poke is not None:
                poke()
