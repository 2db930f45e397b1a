"""The engine: opens the journal, claims runs, executes and recovers them."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic

from typing_extensions import TypeVar

from journal import (
    Codec,
    ConflictError,
    CreateRequest,
    DatabaseUnavailable,
    Durability,
    EntryKind,
    Journal,
    JournalBusy,
    JournalClosed,
    JournalError,
    JournalFull,
    JsonSerializer,
    LeaseHeld,
    NewEntry,
    Retention,
    Run,
    RunEnded,
    SnapshotPolicy,
    fork_lineage,
)
from journal import payloads as P

from .committer import GroupCommitter
from .context import Context
from .continuation import Continued, hand_over, last_of_chain
from .errors import (
    CannotResume,
    EngineError,
    FencedOff,
    FunctionNotFound,
    NonDeterminismError,
    ResultTimeout,
    RunCancelled,
    RunFailed,
    WorkerStopping,
    WrongFunction,
)
from .execution import _CURRENT_RUN, ContinueAsNew, RunExecution, child_outcome
from .queues import WAKE_CHANNEL, queue_limits, queue_rates
from .recorded import FORK_STEP, History, load_history
from .registry import resolve
from .resume import resume_run
from .runids import check_same_start
from .telemetry import Telemetry, TracedExecution, telemetry_for
from .watcher import RunWatcher

if TYPE_CHECKING:
    from .durable import DurableFunction

__all__ = [
    "Engine",
    "RecoveryReport",
    "RunHandle",
    "StopReport",
    "configure",
    "default_engine",
]

K = EntryKind
log = logging.getLogger("durable.engine")

R = TypeVar("R", default=Any)
_JSON = JsonSerializer()
_NOT_A_FAILURE = (EngineError, ConflictError, DatabaseUnavailable, JournalBusy, JournalClosed)
"""Errors at a run's start that are not the run's fault: it is left to recovery."""


def _own_codec(run: Run) -> Codec | None:
    """The codec given to ``run``'s function (``@durable(codec=...)``) or workflow class
    (``class F(Workflow, codec=...)``), if it can be found in this process."""
    try:
        target = resolve(run.name, run_id=run.run_id)
    except FunctionNotFound:
        return None
    own = getattr(target, "_class_codec" if isinstance(target, type) else "_codec", None)
    return own if isinstance(own, Codec) else None


class RunHandle(Generic[R]):
    """A started run: its id, its status, its result once it ends, and ``cancel()``.
    ``RunHandle[int]``: ``result()`` returns an ``int``."""

    def __init__(
        self, engine: Engine, run_id: str, future: concurrent.futures.Future[Any] | None = None
    ) -> None:
        self.engine = engine
        self.run_id = run_id
        self._future = future
        self._codec: Codec | None = None

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"

    @property
    def status(self) -> str:
        """The run's status as the journal has it now."""
        return self.engine.journal.get_run(self.run_id).status

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run ends (completed, failed or cancelled); return its row."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._future is not None:
            try:
                self._future.result(timeout)
            except CannotResume:
                raise  # waiting on would only see it stay unfinished
            except concurrent.futures.TimeoutError:
                # Also TimeoutError itself (3.11+): a run that failed with a timeout of
                # its own is done, and its outcome is read from the journal below.
                if not self._future.done():
                    raise ResultTimeout(
                        f"run {self.run_id!r} did not finish within {timeout}s",
                        run_id=self.run_id,
                    ) from None
            except BaseException:
                pass
        delay = 0.01
        while True:
            run = self.engine.journal.get_run(self.run_id)
            if run.finished:
                return run
            future = self.engine.resume_if_abandoned(run)
            if future is not None:
                self._future = future
                return self.wait(
                    None if deadline is None else max(0.0, deadline - time.monotonic())
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(
                    f"run {self.run_id!r} is still {run.status} after {timeout}s",
                    run_id=self.run_id,
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def result(self, timeout: float | None = None) -> R:
        """The run's return value; raises :class:`RunFailed` or :class:`RunCancelled`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        run = self.wait(timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        result: R = self.engine.outcome(last_of_chain(self.engine, run, left), codec=self._codec)
        return result

    def cancel(self) -> None:
        """Cancel the run: it is marked cancelled now and its body stops at the next step."""
        self.engine.cancel(self.run_id)


@dataclass
class StopReport:
    """What stopping a worker did to the runs it was executing (see :meth:`Engine.drain`)."""

    finished: list[str] = field(default_factory=list)
    """Runs that ended (completed, failed, cancelled) while the worker stopped."""
    paused: list[str] = field(default_factory=list)
    """Runs stopped at a step boundary, their lease released: another worker goes on."""
    abandoned: list[str] = field(default_factory=list)
    """Runs still inside a step when the grace ran out: their lease released, that step
    runs again on the next worker (at-least-once)."""

    def summary(self) -> str:
        """One line: how many runs ended, paused and were abandoned."""
        return (
            f"{len(self.finished)} finished, {len(self.paused)} paused at a step boundary, "
            f"{len(self.abandoned)} abandoned mid-step; leases released"
        )


@dataclass
class RecoveryReport:
    """What :meth:`Engine.recover` did: the runs it resumed and the ones it could not."""

    handles: list[RunHandle] = field(default_factory=list)
    errors: dict[str, EngineError | JournalError] = field(default_factory=dict)
    """Runs left alone: their function cannot be imported, their lineage is damaged, or
    an encrypted value of theirs was moved from another place (MisplacedPayload)."""
    leased: dict[str, float] = field(default_factory=dict)
    """Unfinished runs another worker holds: seconds until their lease expires."""
    owners: dict[str, str] = field(default_factory=dict)
    """The owner holding each run in ``leased``."""
    queued: list[str] = field(default_factory=list)
    """Runs waiting for a place in their queue (its limit was reached): recovery takes
    them as places free up (when it waits), highest priority first."""

    @property
    def run_ids(self) -> list[str]:
        """Ids of the runs resumed."""
        return [h.run_id for h in self.handles]


class Engine:
    """Executes durable functions against one journal.

    ``Engine()`` uses ``$DURABLE_DB`` or ``./durable.db``. A worker owns each run
    it executes through a lease of ``lease_seconds``, renewed by a heartbeat;
    a run whose lease expired is recovered by whichever engine claims it first.

    Pickled payloads decode with ``codec`` (or a function's own codec) when it is a
    pickle codec, with ``hmac_key``, or with ``trust_pickle=True``; the codec column
    of a row alone never unpickles (see :class:`journal.Journal`).

    ``telemetry`` sends OpenTelemetry traces and metrics of runs and steps: True uses
    the global providers, a :class:`Telemetry` given ones; None (the default) defers to
    ``$DURABLE_OTEL`` (see docs/howto/observability.md). Needs the ``otel`` extra.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Journal | None = None,
        *,
        durability: Durability = "full",
        codec: Codec | None = None,
        hmac_key: bytes | str | None = None,
        trust_pickle: bool = False,
        snapshots: SnapshotPolicy | None = None,
        lease_seconds: float = 30.0,
        owner: str | None = None,
        max_threads: int = 32,
        telemetry: bool | Telemetry | None = None,
    ) -> None:
        self._journal_args: dict[str, Any] = {
            "durability": durability,
            "codec": codec,
            "hmac_key": hmac_key,
            "trust_pickle": trust_pickle,
            "snapshots": snapshots,
        }
        self._journal: Journal | None = db if isinstance(db, Journal) else None
        self._db = None if isinstance(db, Journal) else db
        self.lease_seconds = lease_seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._lock = threading.RLock()
        self._running: dict[str, concurrent.futures.Future[Any]] = {}
        self._executions: dict[str, Any] = {}  # RunExecution or WorkflowRun
        # Every run this engine holds a lease on, executing or queued for a thread,
        # with the epoch it claimed: the heartbeat renews them all.
        self._leases: dict[str, int] = {}
        # ctx.heartbeat() of steps executing here: run -> step key -> (details as JSON,
        # wall time); the lease heartbeat writes a run's beats with its next renewal.
        self._beats: dict[str, dict[str, tuple[str, float]]] = {}
        self._beats_due: set[str] = set()
        self._committers: dict[asyncio.AbstractEventLoop, GroupCommitter] = {}
        self._watchers: dict[asyncio.AbstractEventLoop, RunWatcher] = {}
        # The run.started entry is the same for every run of one codec (it names
        # this engine as owner): encoded once, shared (entries are immutable).
        self._started: dict[str, tuple[Codec, NewEntry]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_threads, thread_name_prefix="durable-run"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeat: threading.Thread | None = None
        self._closed = threading.Event()
        # Set by drain(): runs stop at their next step boundary and start no new step.
        self._stopping = threading.Event()
        # Runs this engine failed to resume (see _cannot_resume): not claimed again here.
        self._blocked: dict[str, CannotResume] = {}
        self.on_cannot_resume: list[Callable[[str, CannotResume], None]] = []
        # OpenTelemetry (engine/telemetry.py): None when off, and then nothing is traced.
        self.telemetry: Telemetry | None = telemetry_for(telemetry)
        if self.telemetry is not None:
            self.telemetry._bind(self)

    # -- plumbing ----------------------------------------------------------------------

    @property
    def journal(self) -> Journal:
        """The journal this engine writes (opened on first use)."""
        if self._journal is None:
            with self._lock:
                if self._journal is None:
                    self._journal = Journal(self._db, **self._journal_args)
        return self._journal

    def close(self) -> None:
        """Give up the leases of runs still executing here (so another worker can resume
        them at once, not after the lease expires), stop background threads, close the
        journal."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._journal is not None and not self._journal.closed:
            for run_id, epoch in list(self._leases.items()):
                with contextlib.suppress(Exception):
                    self._journal.append(run_id, [], expected_seq=None, epoch=epoch, release=True)
                    self._journal.notify(WAKE_CHANNEL, run_id)  # another worker: take it now
        for committer in list(self._committers.values()):
            committer.close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._pool.shutdown(wait=False)
        if self._journal is not None:
            self._journal.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def committer(self) -> GroupCommitter:
        """The group committer of the running event loop."""
        loop = asyncio.get_running_loop()
        committer = self._committers.get(loop)
        if committer is None:
            committer = self._committers[loop] = GroupCommitter(self.journal, loop)
        return committer

    def run_watcher(self) -> RunWatcher:
        """The watcher of the workflow runs held on the running event loop."""
        loop = asyncio.get_running_loop()
        watcher = self._watchers.get(loop)
        if watcher is None:
            watcher = self._watchers[loop] = RunWatcher(self.journal, loop)
        return watcher

    def background_loop(self) -> asyncio.AbstractEventLoop:
        """For the engine's modules: the event loop this engine runs background runs on
        (started on first use)."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, daemon=True, name="durable-loop").start()
                self._loop = loop
            return self._loop

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is not None:
            return  # started already: every run's start asks, twice
        with self._lock:
            if self._heartbeat is None:
                self._heartbeat = threading.Thread(
                    target=self._renew_leases, daemon=True, name="durable-heartbeat"
                )
                self._heartbeat.start()

    def _renew_leases(self) -> None:
        journal = self._heartbeat_journal()
        try:
            while not self._closed.wait(max(self.lease_seconds / 3, 0.05)):
                # Every held lease in one commit: a process holding 10,000 parked runs
                # writes one transaction per beat, not 10,000. Steps' heartbeats since
                # the last renewal go in the same statements.
                with self._lock:
                    leases = dict(self._leases)
                    beats = {
                        run_id: beat
                        for run_id in leases
                        if (beat := self._beats_of(run_id)) is not None
                    }
                try:
                    lost = journal.renew_leases(
                        self.owner, leases, self.lease_seconds, heartbeats=beats
                    )
                except Exception:
                    with self._lock:  # not written: with the next renewal, if still held
                        self._beats_due.update(b for b in beats if b in self._leases)
                    continue
                for run_id in lost:
                    ex = self._executions.get(run_id)
                    if ex is not None:
                        ex.cancel_requested.set()  # fenced off: stop at the next step
        finally:
            if journal is not self.journal:
                journal.close()

    def beat(self, run_id: str, key: str, details: str) -> None:
        """For the engine's modules: a step of ``run_id`` beat (``ctx.heartbeat``): kept for
        the next renewal."""
        with self._lock:  # steps beat from their threads; the run may have just ended
            if run_id not in self._leases:
                return  # a late beat of an abandoned attempt must not outlive the run
            self._beats.setdefault(run_id, {})[key] = (details, time.time())
            self._beats_due.add(run_id)

    def _beats_of(self, run_id: str) -> str | None:
        """The run's step heartbeats as the JSON its row keeps, if any came since the
        last renewal; None otherwise (the row keeps what it has)."""
        if run_id not in self._beats_due:
            return None
        self._beats_due.discard(run_id)
        beats = dict(self._beats.get(run_id, {}))
        return json.dumps(
            {key: {"at": at, "details": json.loads(d)} for key, (d, at) in sorted(beats.items())}
        )

    def _heartbeat_journal(self) -> Journal:
        """On PostgreSQL, a connection of the heartbeat's own: on the shared one, renewals
        would queue behind whatever else holds it (a long batch, a claim) and leases of
        live runs could run out. A journal file has one writer at a time anyway."""
        journal = self.journal
        if not journal.is_postgres:
            return journal
        try:
            return Journal(journal.path, durability=journal.durability)
        except Exception:
            return journal

    # -- starting and attaching --------------------------------------------------------

    def _claim(
        self,
        fn: DurableFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_id: str | None,
        parent: str | None,
        *,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[Run, concurrent.futures.Future[Any] | None, bool, bool]:
        """Create or find the run; return it, the future to wait on, whether we execute
        it, and whether we just created it (then its history is known to be empty)."""
        request = self._run_request(fn, args, kwargs, run_id, parent, tags=tags)
        with self._lock:
            run, created = self.journal.create(request)
            if not created and parent is None:
                check_same_start(self.journal, run, request.run, fn.fn, skip_ctx=fn.takes_ctx)
            return self._claimed(fn, run, created)

    async def _aclaim(
        self,
        fn: DurableFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_id: str | None,
        parent: str | None,
    ) -> tuple[Run, concurrent.futures.Future[Any] | None, bool, bool]:
        """:meth:`_claim` for async runs: the creation shares the group commit."""
        request = self._run_request(fn, args, kwargs, run_id, parent)
        run, created = await self.committer().submit(request)
        if not created and parent is None:
            check_same_start(self.journal, run, request.run, fn.fn, skip_ctx=fn.takes_ctx)
        with self._lock:
            return self._claimed(fn, run, created)

    def _run_request(
        self,
        fn: DurableFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_id: str | None,
        parent: str | None,
        *,
        tags: Mapping[str, str] | None = None,
    ) -> CreateRequest:
        """The new run of ``fn``, owned by this engine from its first commit; its tags are
        ``fn``'s (``@durable(tags=...)``) updated by ``tags``."""
        journal = self.journal
        # The function's own codec, else this engine's (fn.codec would open the default
        # engine's journal, ./durable.db, when the function runs on another engine).
        codec = fn._codec or journal.codec
        meta = None
        if self.telemetry is not None:  # OpenTelemetry: the trace the run joins
            meta = self.telemetry._creation_meta("start", fn.name, run_id)
        return journal.new_run(
            run_id,
            name=fn.name,
            kind="function",
            input={"args": list(args), "kwargs": kwargs},
            codec=codec,
            status="running",
            entries=[self._started_entry(codec)],
            owner=self.owner,
            lease_seconds=self.lease_seconds,
            parent_run_id=parent,
            snapshot_every=fn.snapshot_every,
            tags={**fn.tags, **tags} if tags else fn.tags or None,
            meta=meta,
        )

    def _claimed(
        self, fn: DurableFunction[Any, Any], run: Run, created: bool
    ) -> tuple[Run, concurrent.futures.Future[Any] | None, bool, bool]:
        """After create-or-find: hold a new run; claim an existing unfinished one if
        nobody holds it. Call under ``_lock``."""
        if not created:
            if run.name != fn.name:
                raise WrongFunction(
                    f"run {run.run_id!r} belongs to {run.name!r}, not {fn.name!r}",
                    run_id=run.run_id,
                    expected=fn.name,
                    found=run.name,
                )
            if run.finished:
                return run, None, False, False
            if run.run_id in self._running:
                return run, self._running[run.run_id], False, False
            taken = self._take(run)
            if taken is None:
                return run, None, False, False
            run = taken
        return run, self.hold(run), True, created

    def _take(self, run: Run) -> Run | None:
        """Claim an existing unfinished run: a run of a queue through the queue's door
        (:meth:`journal.Journal.claim_next`: its limit across every worker, its
        priorities), any other directly. None if another owner holds it, it ended, or
        its queue has no room for it now. Call under ``_lock``."""
        if run.queue is not None:
            claimed = self.journal.claim_next(
                self.owner,
                lease_seconds=self.lease_seconds,
                limits=queue_limits(),
                rates=queue_rates(),
                run_ids=[run.run_id],
            )
            return claimed[0] if claimed else None
        try:
            return self.journal.claim_run(run.run_id, self.owner, lease_seconds=self.lease_seconds)
        except (LeaseHeld, RunEnded):
            return None

    def _started_entry(self, codec: Codec) -> NewEntry:
        cached = self._started.get(codec.name)
        if cached is not None and cached[0] is codec:
            return cached[1]
        entry = self.journal.entry(K.RUN_STARTED, P.run_started(self.owner), codec=codec)
        self._started[codec.name] = (codec, entry)
        return entry

    def hold(self, run: Run) -> concurrent.futures.Future[Any]:
        """For the engine's modules: record that this engine holds ``run`` (claimed at
        ``run.epoch``): the future its waiters wait on, and a lease for the heartbeat to
        renew."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._running[run.run_id] = future
            self._leases[run.run_id] = run.epoch
        self._ensure_heartbeat()
        return future

    def hold_claimed(self, run: Run) -> tuple[Run, concurrent.futures.Future[Any]] | None:
        """For the engine's modules: claim the existing unfinished ``run`` through its door
        and hold it; None if another owner holds it, it ended, its queue has no room, or the
        claim conflicted."""
        with self._lock:
            try:
                claimed = self._take(run)
            except ConflictError:
                return None
            if claimed is None:
                return None
            return claimed, self.hold(claimed)

    def hold_new(self, commit: Callable[[], Run]) -> tuple[Run, concurrent.futures.Future[Any]]:
        """For the engine's modules: hold the run ``commit`` writes, owned by this engine,
        as one step to this engine's other threads (nothing here sees it written and not
        held)."""
        with self._lock:
            run = commit()
            return run, self.hold(run)

    def create_or_claim(
        self, request: CreateRequest, vet: Callable[[Run], None]
    ) -> tuple[Run, concurrent.futures.Future[Any] | None, bool]:
        """For the engine's modules: create the run of ``request`` and hold it, or find it
        (``vet`` raises if it is not the run asked for) and claim it if unfinished and held
        nowhere: the run, the future to wait on, and whether this engine now executes it."""
        with self._lock:
            run, created = self.journal.create(request)
            if created:
                return run, self.hold(run), True
            vet(run)
            future = self._running.get(run.run_id)
            if run.finished or future is not None:
                return run, future, False
            claimed = self.claim_existing(run)
            if claimed is None:
                return run, None, False
            return claimed[0], claimed[1], True

    def holding(self, run_id: str) -> concurrent.futures.Future[Any] | None:
        """For the engine's modules: the future of ``run_id`` if this engine holds it, else None."""
        return self._running.get(run_id)

    def held_run_ids(self) -> list[str]:
        """For the engine's modules: the runs this engine holds now (executing or about to)."""
        with self._lock:
            return list(self._running)

    def blocked_run_ids(self) -> list[str]:
        """For the engine's modules: the runs this engine failed to resume and does not
        claim again."""
        with self._lock:
            return list(self._blocked)

    def execution_of(self, run_id: str) -> Any:
        """For the engine's modules: the live execution (RunExecution or WorkflowRun) of
        ``run_id`` here, or None."""
        return self._executions.get(run_id)

    def attach(self, run: Run, execution: Any) -> None:
        """For the engine's modules: register ``execution`` as the live execution of the
        held ``run``."""
        self._executions[run.run_id] = execution
        self._ensure_heartbeat()
        self._resumed(run)

    def is_stopping(self) -> bool:
        """For the engine's modules: whether :meth:`drain` began: runs start no new step."""
        return self._stopping.is_set()

    def open_journal(self) -> Journal | None:
        """For the engine's modules: the journal if it was opened and is not closed yet
        (never opens it)."""
        journal = self._journal
        return None if journal is None or journal.closed else journal

    def claim_existing(self, run: Run) -> tuple[Run, concurrent.futures.Future[Any]] | None:
        """For the engine's modules: :meth:`hold_claimed`, unless this engine holds ``run``
        already (then None)."""
        with self._lock:
            if run.run_id in self._running:
                return None
            return self.hold_claimed(run)

    def call(
        self,
        fn: DurableFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str | None = None,
    ) -> Any:
        """Run a sync durable function to its end in this thread and return its result."""
        run, future, execute, fresh = self._claim(fn, args, kwargs, run_id, None)
        if execute:
            assert future is not None
            result = self._execute_sync(fn, run, future, fresh=fresh)
            return result if not isinstance(result, Continued) else result.future.result()
        return RunHandle(self, run.run_id, future).result()

    async def acall(
        self,
        fn: DurableFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str | None = None,
    ) -> Any:
        """Run an async durable function to its end on the running loop."""
        run, future, execute, fresh = await self._aclaim(fn, args, kwargs, run_id, None)
        if execute:
            assert future is not None
            result = await self._execute_async(fn, run, future, fresh=fresh)
            if isinstance(result, Continued):
                return await asyncio.wrap_future(result.future)
            return result
        handle = RunHandle(self, run.run_id, future)
        return await asyncio.get_running_loop().run_in_executor(None, handle.result)

    def start(
        self,
        fn: DurableFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunHandle:
        """Start (or attach to) a run in the background; return its handle at once."""
        run, future, execute, fresh = self._claim(fn, args, kwargs, run_id, None, tags=tags)
        if execute:
            assert future is not None
            self.launch(fn, run, future, fresh=fresh)
        return RunHandle(self, run.run_id, future)

    def launch(
        self,
        fn: DurableFunction[Any, Any],
        run: Run,
        future: concurrent.futures.Future[Any],
        *,
        fresh: bool = False,
    ) -> None:
        """For the engine's modules: execute the held ``run`` of ``fn`` in the background
        (its loop or the thread pool)."""
        if fn.is_async:
            asyncio.run_coroutine_threadsafe(
                self._execute_async(fn, run, future, fresh=fresh), self.background_loop()
            )
        else:
            self._pool.submit(self._execute_sync, fn, run, future, fresh=fresh)

    def start_fork(
        self, source: Run, seq: int, at_step: int, edits: dict[str, Any], new_run_id: str | None
    ) -> RunHandle:
        """Create a fork of ``source`` at ``seq`` with ``edits`` and execute it (see ``fork``)."""
        journal = self.journal
        target = resolve(source.name, run_id=source.run_id, doing="forking")
        # The source's codec, with its options if its function or workflow gave it one
        # (the fork's execution binds it to the fork and its sources).
        codec = self.codec_of(source)
        entries = [
            journal.entry(
                K.RUN_FORKED,
                P.run_forked(source.run_id, seq, at_step, edits),
                codec=codec,
            ),
            *(
                journal.entry(K.STATE_SET, v, key=k, step=FORK_STEP, codec=codec)
                for k, v in edits.items()
            ),
        ]
        # A fork of a queued run joins its queue, and is claimed through the queue's
        # door like any of its runs: it runs here now only if the queue has room.
        queued = source.queue is not None
        with self._lock:
            run, created = journal.create_run(
                new_run_id,
                name=source.name,
                kind=source.kind,
                input=journal.decode_run_value(source, "input", codec=codec),
                codec=codec,
                status="pending" if queued else "running",
                entries=entries,
                owner=None if queued else self.owner,
                lease_seconds=None if queued else self.lease_seconds,
                forked_from=source.run_id,
                forked_at=seq,
                queue=source.queue,
                priority=source.priority,
            )
            if not created:
                raise WrongFunction(
                    f"cannot fork into {run.run_id!r}: a run with that id exists", run_id=run.run_id
                )
            if queued:
                taken = self._take(run)
                if taken is None:  # left for a worker, when the queue has room
                    journal.notify(WAKE_CHANNEL, run.run_id)
                    return RunHandle(self, run.run_id)
                run = taken
            future = self.hold(run)
        target.launch(self, run, future)
        return RunHandle(self, run.run_id, future)

    def resume_if_abandoned(self, run: Run) -> concurrent.futures.Future[Any] | None:
        """If nobody holds ``run`` (no owner, or an expired lease), claim and resume it here;
        return the future of its execution in this process, if any."""
        if run.finished:
            return None
        if run.run_id in self._running:
            return self._running[run.run_id]
        held = run.owner is not None and (run.lease_expires_at or 0) > self.journal.clock()
        if held or run.queue is not None or run.run_id in self._blocked or self._stopping.is_set():
            # Held elsewhere, or queued (a worker takes it, within its limit), or it
            # failed to resume here already, or this engine is stopping.
            return None
        try:
            target = resolve(run.name, run_id=run.run_id)
        except FunctionNotFound:
            return None
        claimed = self.claim_existing(run)
        if claimed is None:
            return None
        claimed_run, future = claimed
        target.launch(self, claimed_run, future)
        return future

    def resume(self, run_id: str, *, by: str | None = None) -> RunHandle:
        """Resume the failed run ``run_id`` from its failing step with today's code, as the
        same run; return its handle at once.

        Completed steps return their recorded results without running; the step whose
        failure ended the run runs again (with its whole retry policy); the run may
        complete or fail again. The failure stays in the history, followed by a
        ``run.resumed`` entry naming ``by`` (default: this engine's owner) and when.
        Raises :class:`NotResumable` (and writes nothing) for a run that is not failed,
        including one a concurrent resume reopened first. See :mod:`engine.resume`.
        """
        return resume_run(self, run_id, by)

    def handle(self, run_id: str) -> RunHandle:
        """A handle on an existing run (raises ``journal.RunNotFound`` if there is none)."""
        self.journal.get_run(run_id)
        return RunHandle(self, run_id, self._running.get(run_id))

    # -- executing ---------------------------------------------------------------------

    def prepare(
        self,
        fn: DurableFunction[Any, Any],
        run: Run,
        *,
        replay_only: bool = False,
        fresh: bool = False,
    ) -> tuple[RunExecution, tuple[Any, ...], dict[str, Any]]:
        """For the engine's modules: the execution of ``run`` with its history loaded;
        ``fresh``: the run was just created by this engine, its journal holds only
        run.started, so nothing to load."""
        journal = self.journal
        self.bind_codec(run, fn._codec)
        history = History() if fresh else load_history(journal, run)
        data = journal.decode_run_value(run, "input") or {}
        ex = (RunExecution if self.telemetry is None else TracedExecution)(
            self,
            run,
            history,
            is_async=fn.is_async,
            resources=fn.make_resources(),
            replay_only=replay_only,
        )
        ex.context = Context(ex, fn.state_model)
        args = tuple(data.get("args", ()))
        if fn.takes_ctx:
            args = (ex.context, *args)
        return ex, args, dict(data.get("kwargs", {}))

    def _begin(
        self,
        fn: DurableFunction[Any, Any],
        run: Run,
        future: concurrent.futures.Future[Any],
        fresh: bool,
    ) -> tuple[RunExecution, tuple[Any, ...], dict[str, Any]]:
        """What every execution does before the body: load, register, heartbeat."""
        try:
            ex, args, kwargs = self.prepare(fn, run, fresh=fresh)
        except BaseException as exc:
            self.setup_failed(run, exc, future, resumed=not fresh)
            raise
        self.attach(run, ex)
        if self.telemetry is not None:  # OpenTelemetry: the run's span, ended in forget
            self.telemetry._run_begun(ex, resumed=not fresh)
        return ex, args, kwargs

    def _execute_sync(
        self,
        fn: DurableFunction[Any, Any],
        run: Run,
        future: concurrent.futures.Future[Any],
        *,
        fresh: bool = False,
    ) -> Any:
        ex, args, kwargs = self._begin(fn, run, future, fresh)
        token = _CURRENT_RUN.set(ex)
        try:
            try:
                result = fn.fn(*args, **kwargs)
            except ContinueAsNew as cont:
                return hand_over(self, fn, ex, cont, future)
            entries, output = ex.complete_entries(result)
            ex.commit(entries, status="completed", output=output, release=True)
        except BaseException as exc:
            self._record_failure(ex, exc)
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            _CURRENT_RUN.reset(token)
            self.forget(run.run_id)

    async def _execute_async(
        self,
        fn: DurableFunction[Any, Any],
        run: Run,
        future: concurrent.futures.Future[Any],
        *,
        fresh: bool = False,
    ) -> Any:
        ex, args, kwargs = self._begin(fn, run, future, fresh)
        token = _CURRENT_RUN.set(ex)
        try:
            try:
                result = await fn.fn(*args, **kwargs)
            except ContinueAsNew as cont:
                return hand_over(self, fn, ex, cont, future)
            entries, output = ex.complete_entries(result)
            await ex.commit_async(entries, status="completed", output=output, release=True)
        except BaseException as exc:
            self._record_failure(ex, exc)
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            _CURRENT_RUN.reset(token)
            self.forget(run.run_id)

    def setup_failed(
        self,
        run: Run,
        exc: BaseException,
        future: concurrent.futures.Future[Any],
        *,
        resumed: bool = False,
    ) -> None:
        """For the engine's modules: ``run`` failed before its body started: fail it (or
        mark it, if resumed) and tell waiters."""
        # Loading the history or the input, the codec, or a resource factory raised before
        # the body could start: the run fails with the reason (an Exception; not a
        # journal out of reach, which recovery outlives) and waiters are told. A run
        # being resumed is not failed for it: this process may lack what it needs.
        ours = isinstance(exc, Exception) and not isinstance(exc, _NOT_A_FAILURE)
        if ours and resumed:
            self._cannot_resume(run, exc, future)
            return
        if ours:
            journal = self.journal
            info = P.run_failed(exc, during="start")
            try:
                entry = journal.entry(K.RUN_FAILED, info, codec=self.codec_of(run))
            except JournalError:  # the run's codec is what failed: plain JSON says why
                entry = journal.entry(K.RUN_FAILED, info, codec=_JSON)
            with contextlib.suppress(Exception):
                journal.append(run.run_id, [entry], expected_seq=None, epoch=run.epoch,
                               status="failed", error=f"{type(exc).__qualname__}: {exc}",
                               release=True)  # fmt: skip
        if not future.done():
            future.set_exception(exc)
        self.forget(run.run_id)

    def _record_failure(self, ex: RunExecution, exc: BaseException) -> None:
        if isinstance(exc, WorkerStopping):
            self.let_go(ex.run_id, ex.epoch)
            return
        if isinstance(exc, RunCancelled | FencedOff) or not isinstance(exc, Exception):
            return  # cancelled: the canceller wrote it; fenced or dying: write nothing
        if isinstance(exc, JournalFull):
            # Not the run's fault: leave it unfinished for another worker once there is space.
            ex.journal.release(ex.run_id, ex.epoch)
            return
        diverged = isinstance(exc, NonDeterminismError)
        message = f"{'diverged: ' if diverged else ''}{type(exc).__qualname__}: {exc}"
        with contextlib.suppress(EngineError, ConflictError):
            ex.commit(
                ex.failure_entries(exc, diverged=diverged),
                status="failed",
                error=message,
                release=True,
            )

    def forget(self, run_id: str) -> None:
        """For the engine's modules: ``run_id`` left this engine: drop its future, lease,
        beats, execution and codec binding."""
        with self._lock:
            ex = self._executions.pop(run_id, None)
            future = self._running.pop(run_id, None)
            self._leases.pop(run_id, None)
            self._beats.pop(run_id, None)
            self._beats_due.discard(run_id)
            if self._journal is not None:
                self._journal.use_codec(run_id, None)
        if self.telemetry is not None and ex is not None:  # OpenTelemetry: see _begin
            self.telemetry._run_ended(ex, future)

    # -- codecs ------------------------------------------------------------------------

    def codec_of(self, run: Run) -> Codec:
        """For the engine's modules: the codec of ``run``'s payloads: the one its function
        or workflow was given (with its options: an HMAC key, compression) if the run was
        written with it, else the journal's codec of that name."""
        own = _own_codec(run)
        if own is not None and own.name == run.codec:
            return own
        return self.journal.codec_named(run.codec, run_id=run.run_id)

    def bind_codec(self, run: Run, own: Codec | None) -> Codec:
        """For the engine's modules: the codec ``run`` executes with: ``own`` (its
        function's or workflow's) if the run was written with it, else the journal's of that
        name. The journal reads and writes the run (and the runs it was forked from) with it
        until the run leaves."""
        journal = self.journal
        if own is None or own.name != run.codec:
            return journal.codec_named(run.codec, run_id=run.run_id)
        source: Run | None = run
        while source is not None and source.codec == own.name:
            journal.use_codec(source.run_id, own)
            source = journal.find_run(source.forked_from) if source.forked_from else None
        return own

    def let_go(self, run_id: str, epoch: int) -> None:
        """For the engine's modules: release the lease on a run this engine stops executing
        unfinished, so another worker resumes it at once rather than when the lease would
        have expired."""
        journal = self._journal
        if journal is None or journal.closed:
            return
        with contextlib.suppress(Exception):
            journal.append(run_id, [], expected_seq=None, epoch=epoch, release=True)
            journal.notify(WAKE_CHANNEL, run_id)

    def _cannot_resume(
        self, run: Run, exc: BaseException, future: concurrent.futures.Future[Any]
    ) -> None:
        """This process failed to resume ``run`` before its body ran (its recorded data
        does not decode here, a resource factory raised): the run stays unfinished with
        the reason as its error and its lease released (a queued run that never started
        goes back to ``pending``); this engine does not claim it again, and waiters get
        :class:`CannotResume` instead of waiting for a run nobody here can execute."""
        reason = f"cannot resume: {type(exc).__qualname__}: {exc}"
        error = CannotResume(f"run {run.run_id!r} {reason}", run_id=run.run_id, reason=reason)
        error.__cause__ = exc
        self._blocked[run.run_id] = error
        update: dict[str, Any] = {}
        if run.queue is not None and run.last_seq <= 1:  # only its run.started entry
            update["status"] = "pending"
        journal = self.journal
        with contextlib.suppress(Exception):
            journal.append(run.run_id, [], expected_seq=None, epoch=run.epoch, error=reason,
                           release=True, **update)  # fmt: skip
        if not future.done():
            future.set_exception(error)
        for callback in list(self.on_cannot_resume):
            with contextlib.suppress(Exception):
                callback(run.run_id, error)

    def _resumed(self, run: Run) -> None:
        """A run resumed here after another process could not: clear the reason it showed."""
        if run.error and run.error.startswith("cannot resume:") and not run.finished:
            with contextlib.suppress(Exception):
                self.journal.append(run.run_id, [], expected_seq=None, epoch=run.epoch, error=None)

    def drain(
        self,
        grace: float = 30.0,
        *,
        abandon: threading.Event | None = None,
        on_begin: Callable[[list[str]], None] | None = None,
    ) -> StopReport:
        """Stop the runs executing here at their next step boundary and release their leases.

        Each run finishes the step it is in (and commits it), starts no other, and stops
        without writing: another worker resumes it at once. Runs still inside a step after
        ``grace`` seconds (or once ``abandon`` is set) are abandoned: their leases are
        released anyway and that step runs again on the next worker (at-least-once).
        Stop claiming first (the worker's stop event) so nothing new starts here.
        ``on_begin`` is called with the runs in flight once none can start a new step.
        """
        report = StopReport()
        self._stopping.set()
        with self._lock:
            runs = dict(self._leases)
            executions = list(self._executions.values())
        if on_begin is not None:
            on_begin(list(runs))
        for ex in executions:
            stop = getattr(ex, "stop", None)
            if stop is not None:
                stop()
        deadline = time.monotonic() + max(grace, 0.0)
        while self._running and time.monotonic() < deadline:
            if abandon is not None and abandon.is_set():
                break
            time.sleep(0.02)
        with self._lock:
            left = dict(self._leases)
        for run_id, epoch in left.items():
            self.let_go(run_id, epoch)
            report.abandoned.append(run_id)
        with self._lock:
            for run_id in left:
                self._leases.pop(run_id, None)  # the heartbeat stops renewing it
        for run_id in runs:
            if run_id in left:
                continue
            found = self._journal.find_run(run_id) if self._journal is not None else None
            (report.finished if found is None or found.finished else report.paused).append(run_id)
        return report

    # -- child runs --------------------------------------------------------------------

    def child_sync(
        self,
        parent: RunExecution,
        fn: DurableFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Call a durable function from inside a run: a linked child run, recovered once."""
        child_id, index, recorded = parent.begin_child(fn.name)
        if recorded is not None and recorded[0] == "recorded":
            return child_outcome(child_id, recorded[1])
        if recorded is None:
            parent.commit(parent.child_started_entries(fn.name, index, child_id))
        outcome = self._child_outcome_sync(fn, args, kwargs, child_id, parent.run_id)
        return parent.child_finished(fn.name, index, child_id, outcome)

    async def child_async(
        self,
        parent: RunExecution,
        fn: DurableFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The async twin of :meth:`child_sync`."""
        child_id, index, recorded = parent.begin_child(fn.name)
        if recorded is not None and recorded[0] == "recorded":
            return child_outcome(child_id, recorded[1])
        if recorded is None:
            await parent.commit_async(parent.child_started_entries(fn.name, index, child_id))
        run, future, execute, fresh = await self._aclaim(fn, args, kwargs, child_id, parent.run_id)
        if execute:
            assert future is not None
            try:
                await self._execute_async(fn, run, future, fresh=fresh)
            except (RunCancelled, FencedOff):
                raise
            except Exception:
                pass
        else:
            handle = RunHandle(self, run.run_id, future)
            await asyncio.get_running_loop().run_in_executor(None, handle.wait)
        return parent.child_finished(fn.name, index, child_id, self._outcome_record(child_id))

    def _child_outcome_sync(
        self,
        fn: DurableFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        child_id: str,
        parent_id: str,
    ) -> dict[str, Any]:
        run, future, execute, fresh = self._claim(fn, args, kwargs, child_id, parent_id)
        if execute:
            assert future is not None
            try:
                self._execute_sync(fn, run, future, fresh=fresh)
            except (RunCancelled, FencedOff):
                raise
            except Exception:
                pass
        else:
            RunHandle(self, run.run_id, future).wait()
        return self._outcome_record(child_id)

    def _output(self, run: Run, codec: Codec | None = None) -> Any:
        if run.output is None:
            return None
        use = codec if codec is not None and codec.name == run.codec else self.codec_of(run)
        return self.journal.decode_run_value(run, "output", codec=use)

    def _outcome_record(self, run_id: str) -> dict[str, Any]:
        run = last_of_chain(self, self.journal.get_run(run_id))
        if run.status == "completed":
            return {"ok": True, "result": self._output(run)}
        return {"ok": False, "status": run.status, "error": run.error}

    def outcome(self, run: Run, *, codec: Codec | None = None) -> Any:
        """The result of a finished run, or the error it ended with (``codec``: the one
        its workflow instance was given, if any)."""
        if run.status == "completed":
            return self._output(run, codec)
        if run.status == "cancelled":
            raise RunCancelled(f"run {run.run_id!r} was cancelled", run_id=run.run_id)
        raise RunFailed(
            f"run {run.run_id!r} failed: {run.error}", run_id=run.run_id, error=run.error
        )

    # -- cancellation and recovery ------------------------------------------------------

    def cancel(self, run_id: str) -> str:
        """Mark a run cancelled (journaled); its body stops at its next step boundary.

        Returns the run's final status: a run that finished first (even while this
        call was on its way) keeps the status it has, and nothing is written."""
        journal = self.journal
        run = journal.get_run(run_id)
        if run.finished:
            return run.status
        # No payload: only the codec's name is stored, so no key is needed to write it.
        entry = NewEntry(kind=K.RUN_CANCELLED, payload=None, codec=run.codec)
        try:
            journal.append(run_id, [entry], expected_seq=None, status="cancelled", release=True)
        except RunEnded as exc:
            return exc.status
        ex = self._executions.get(run_id)
        if ex is not None:
            ex.cancel_requested.set()
        return "cancelled"

    def recover(
        self,
        *,
        wait: bool = True,
        limit: int = 1000,
        timeout: float | None = None,
        wait_leased: bool = False,
    ) -> RecoveryReport:
        """Claim every unfinished run whose lease expired and resume it.

        Completed steps return their recorded results without running; each run
        goes on live from its first unrecorded step. Runs of a queue are claimed as
        a worker claims them: never more at once than the queue's limit, highest
        priority first; those held back are in ``queued``, and with ``wait`` recovery
        takes them as places free up. A run whose function cannot
        be imported, or that cannot resume here, is reported in ``errors``. Runs
        another owner still holds (a lease not yet expired: its worker may be alive,
        or died less than a lease ago) are reported in ``leased`` and ``owners``;
        with ``wait_leased`` recovery waits for their leases to lapse (or the runs to
        finish) and resumes them too, for at most ``timeout`` seconds.
        """
        report = RecoveryReport()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._recover_pass(report, limit)
        while wait_leased and report.leased:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            pause = min(max(min(report.leased.values()) + 0.05, 0.05), 1.0)
            time.sleep(pause if left is None else min(pause, left))
            self._recover_pass(report, limit)
        if report.leased:
            log.info(
                "recover: %d unfinished runs are held by another owner's lease: %s",
                len(report.leased),
                ", ".join(
                    f"{rid} ({report.owners.get(rid)}, {left:.1f}s left)"
                    for rid, left in sorted(report.leased.items())
                ),
            )
        while wait and report.queued:
            # A queue's limit held some runs back: take them as places free up (ours
            # ending, or another worker's), within the timeout.
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            ours = [h._future for h in report.handles if h._future and not h._future.done()]
            pause = 0.5 if left is None else min(0.5, left)
            if ours:
                concurrent.futures.wait(ours, pause, concurrent.futures.FIRST_COMPLETED)
            else:
                time.sleep(pause)
            self._recover_pass(report, limit)
        if wait:
            for handle in list(report.handles):
                try:
                    handle.wait(timeout)
                except CannotResume as exc:
                    report.handles.remove(handle)
                    report.errors[handle.run_id] = exc
        return report

    def _recover_pass(self, report: RecoveryReport, limit: int) -> None:
        journal = self.journal
        now = journal.clock()  # leases are measured by the journal's clock, not this host's
        report.leased.clear()
        report.owners.clear()
        for run in journal.list_runs(status=["pending", "running", "waiting"], limit=limit):
            if run.owner not in (None, self.owner) and (run.lease_expires_at or 0) > now:
                report.leased[run.run_id] = run.lease_expires_at - now  # type: ignore[operator]
                report.owners[run.run_id] = str(run.owner)
        # Looked at before claiming, so that a run that cannot resume here is reported
        # and left alone rather than claimed.
        skip = {*self._blocked, *report.errors, *self._running}
        vetted: dict[str, Run] = {}
        for run in journal.claimable(limit=limit):
            if run.run_id in skip:
                continue
            if run.parent_run_id is not None:
                parent = journal.find_run(run.parent_run_id)
                if parent is not None and not parent.finished:
                    continue  # the parent resumes it when it reaches the call
            problem = self._cannot_recover(run)
            if problem is not None:
                report.errors[run.run_id] = problem
                skip.add(run.run_id)
                continue
            vetted[run.run_id] = run
        if not vetted:
            report.queued.clear()
            return
        # Claimed through the queue's door, as a worker claims: a queue's limit holds
        # across recovery and workers, and its runs go highest priority first.
        claimed = journal.claim_next(
            self.owner,
            lease_seconds=self.lease_seconds,
            limit=len(vetted),
            limits=queue_limits(),
            rates=queue_rates(),
            skip_run_ids=sorted(skip),
            run_ids=sorted(vetted),
        )
        for run in claimed:
            fn = resolve(run.name, run_id=run.run_id)
            with self._lock:
                future = self.hold(run)
            fn.launch(self, run, future)
            report.handles.append(RunHandle(self, run.run_id, future))
        taken = {run.run_id for run in claimed}
        limited = {*queue_limits(), *queue_rates()}
        held = [r for r in vetted.values() if r.run_id not in taken and r.queue in limited]
        held.sort(key=lambda r: (-r.priority, r.created_at, r.run_id))
        report.queued[:] = [r.run_id for r in held]

    def _cannot_recover(self, run: Run) -> EngineError | JournalError | None:
        """Why ``run`` cannot resume here (its function cannot be imported, its fork
        lineage is damaged, an encrypted value of it was moved), or None."""
        try:
            resolve(run.name, run_id=run.run_id)
        except FunctionNotFound as exc:
            return exc
        if run.forked_from is not None:
            try:
                # A crafted journal's fork links may loop: left alone and reported.
                fork_lineage(self.journal, run)
            except JournalError as exc:
                return exc
        if run.codec.startswith("aesgcm:"):
            try:
                # An encrypted value moved in from another place: left alone, not replayed.
                self.journal.check_places(run.run_id)
            except JournalError as exc:
                return exc
        return None

    def worker(
        self,
        *,
        poll_interval: float = 1.0,
        stop: threading.Event | None = None,
        on_recover: Callable[[RecoveryReport], None] | None = None,
        concurrency: int = 8,
        grace: float | None = None,
        retention: Retention | None = None,
    ) -> StopReport | None:
        """Claim and execute runs nobody holds until ``stop`` is set: ``durable worker``.

        Takes enqueued runs (highest priority, then oldest, within each queue's
        limit), runs whose owner died (lease expired) and parked runs that are due,
        at most ``concurrency`` at once. Wakes on notification (PostgreSQL) or
        every ``poll_interval`` seconds. The runs in flight go on when it returns,
        unless ``grace`` is given: then they stop at their next step boundary (see
        :meth:`drain`) and the report of that is returned. With ``retention`` it also
        deletes and compacts finished runs past their age, in the background.
        """
        from .worker import Worker  # noqa: PLC0415 - worker imports this module

        Worker(self, concurrency=concurrency, poll_interval=poll_interval, retention=retention).run(
            stop or threading.Event(), on_recover
        )
        return None if grace is None else self.drain(grace)


_DEFAULT: Engine | None = None
_DEFAULT_LOCK = threading.Lock()


def default_engine() -> Engine:
    """The process-wide engine used by ``@durable`` functions that name none."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Engine()
        return _DEFAULT


@atexit.register
def _close_default() -> None:
    # A process that ends normally hands its runs back at once; a killed one cannot,
    # and its runs wait for their leases to expire.
    if _DEFAULT is not None:
        _DEFAULT.close()


def configure(db: str | os.PathLike[str] | Journal | None = None, **options: Any) -> Engine:
    """Replace the default engine (journal path, durability, codec, lease...)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is not None:
            _DEFAULT.close()
        _DEFAULT = Engine(db, **options)
        return _DEFAULT
