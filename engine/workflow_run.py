"""Executing one workflow run: dispatch pending deliveries, commit each step whole.

The run's state is the journal's fold: the store's values and the *pending*
deliveries (``event.emitted`` entries, one per accepting step, keyed by a
delivery id; ``event.received`` entries for events sent from outside). A step's
commit holds its ``event.consumed``, its store changes, its streamed events, the
deliveries of the events it returned or sent, and its ``step.completed``: so a
crashed run is rebuilt from the latest snapshot plus the tail, and only the
deliveries still pending (the steps that were in flight) are dispatched again.

Two orderings hold on the run's loop. A waiter is registered and offered the pending
events from outside in one stretch without an await, and every event absorbed later is
offered to the registered waiters: an answer that lands while the wait's own record
commits cannot fall between the two. And a streamed event reaches the live stream only
after the commit that journals it returned: the stream never shows what the journal
does not hold.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import datetime as dt
import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from journal import (
    AppendRequest,
    ConflictError,
    DatabaseUnavailable,
    EntryKind,
    FoldedState,
    Journal,
    JournalFull,
    NewEntry,
    Run,
)
from journal import payloads as P

from .errors import (
    EngineError,
    FencedOff,
    JournalUnreachable,
    NoStepForEvent,
    RunCancelled,
    StepFailed,
    StepHeartbeatTimeout,
    StepTimeout,
    WaitTimeout,
    WorkerStopping,
    WorkflowRuntimeError,
    WorkflowTimeout,
    WorkflowTimeoutError,
)
from .events import (
    Event,
    InputRequiredEvent,
    StepFailedEvent,
    StopEvent,
    WorkflowFailedEvent,
    exception_from_record,
    exception_record,
)
from .execution import RECONNECT_PAUSE
from .retry import RetryInfo, retry_seed
from .telemetry import current_live
from .watcher import Flag
from .workflow_context import CURRENT_SCOPE, INTERNAL, StepScope, WorkflowContext

if TYPE_CHECKING:
    from .runtime import Engine
    from .workflow import StepInfo, Workflow

__all__ = [
    "NoStepForEvent",
    "WaitTimeout",
    "WorkflowRun",
    "WorkflowTimeout",
    "WorkflowTimeoutError",
]

K = EntryKind
_log = logging.getLogger(__name__)

CHECKPOINT_CALLBACKS: dict[tuple[int, str], Callable[..., Any]] = {}
"""(id of the engine, run id) -> the ``checkpoint_callback`` given to ``run``/``run_from``:
called after each step's commit in the process executing the run (nothing is written)."""


@dataclass
class _Waiter:
    scope: StepScope
    event_type: type[Event]
    requirements: dict[str, Any]
    future: asyncio.Future[str]

    def matches(self, event: Any) -> bool:
        return isinstance(event, self.event_type) and all(
            getattr(event, k, None) == v for k, v in self.requirements.items()
        )


class LivingClock:
    """A run's living time: seconds it ran in some process, not counting time dead
    (between a crash and its recovery) or parked waiting for an event from outside.

    Starts from what the journal recorded and runs while not paused."""

    def __init__(self, base: float = 0.0) -> None:
        self._base = base
        self._since: float | None = time.monotonic()

    @property
    def running(self) -> bool:
        """True unless paused."""
        return self._since is not None

    def living(self) -> float:
        """Seconds lived so far."""
        if self._since is None:
            return self._base
        return self._base + time.monotonic() - self._since

    def pause(self) -> None:
        """Stop counting."""
        self._base = self.living()
        self._since = None

    def resume(self) -> None:
        """Count again."""
        if self._since is None:
            self._since = time.monotonic()


def journaled_living(journal: Journal, run: Run) -> float:
    """The living time the run's last ``step.completed`` or wait record holds (0 if none).

    Every step commit and every wait records the run's living time so far, so a crashed
    run resumes its clock where its last commit left it: the time dead is not counted.
    A run resumed after its failure (``engine.resume``) counts from 0 again.
    Read backwards from the run's last entry, which is usually that step's completion:
    one entry first, then larger pages."""
    hi = run.last_seq
    page = 1
    wait_prefix = f"{INTERNAL}wait/"
    while hi > run.horizon:
        lo = max(run.horizon + 1, hi - page + 1)
        for entry in reversed(list(journal.read(run.run_id, lo, hi))):
            if entry.kind == K.RUN_RESUMED:
                return 0.0  # a resumed run has its whole timeout again
            if entry.kind == K.STEP_COMPLETED or (
                entry.kind == K.STATE_SET and (entry.key or "").startswith(wait_prefix)
            ):
                payload = journal.decode_entry(entry)
                living = payload.get("living") if isinstance(payload, dict) else None
                if isinstance(living, int | float) and living >= 0:
                    return float(living)
        hi = lo - 1
        page = min(page * 8, 512)
    return 0.0


def new_delivery_key() -> str:
    """A fresh delivery id (unique within a run)."""
    return f"e{uuid.uuid4().hex[:16]}"


class WorkflowRun:
    """The in-process state of one workflow run being executed."""

    def __init__(
        self,
        engine: Engine,
        workflow: Workflow,
        run: Run,
        state: FoldedState,
        *,
        resources: dict[str, Any],
    ) -> None:
        self.engine = engine
        self.workflow = workflow
        self.journal = engine.journal
        self.run = run
        self.run_id = run.run_id
        self.epoch = run.epoch
        self.seq = run.last_seq
        self.scanned = run.last_seq
        self.codec = self.journal.codec_named(run.codec, run_id=run.run_id)
        self.values: dict[str, Any] = state.values
        self.pending: dict[str, dict[str, Any]] = state.pending
        self.resources = resources
        self.status = run.status
        self.cancel_requested = Flag()  # set from any thread: looked at at once
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.waiters: list[_Waiter] = []
        self.claimed: set[str] = set()
        self.stream_queues: list[asyncio.Queue[Any]] = []
        self.streamed_history: list[Event] = []
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._absorb_lock: asyncio.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Future[Any] | None = None
        self.finished = False
        self.clock = LivingClock(journaled_living(self.journal, run))
        self._clock_moved: asyncio.Event | None = None
        self.stopping = False
        """Set when the worker stops: no new step starts; the run ends, without writing,
        once the steps in flight have committed (or wait for an outside event)."""
        self.ended = False
        """Set once the run's terminal commit (completed or failed) was submitted: any
        other commit after it is refused, so nothing is journaled after the run's end."""

    def listen(self, queue: asyncio.Queue[Any]) -> None:
        """Register a stream listener (on the run's loop): it gets what was streamed so
        far, then each new event, then the end marker, even if the run already ended."""
        for event in self.streamed_history:
            queue.put_nowait(event)
        if self.finished:
            queue.put_nowait(_END)
        else:
            self.stream_queues.append(queue)

    # -- the run loop ----------------------------------------------------------------

    async def main(self) -> Any:
        """Dispatch every pending delivery and wait for the run's end."""
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        self._absorb_lock = asyncio.Lock()
        self._clock_moved = asyncio.Event()
        watcher = self.engine.run_watcher()
        watcher.add(self)
        self.cancel_requested.on_set = self._flagged
        if self.cancel_requested.is_set():
            self.watched(None)
        timeout = self.workflow.timeout
        timer: asyncio.Task[None] | None = None
        try:
            # Past its timeout (living time, from the journal): fail, run no step.
            if timeout is None or self.clock.living() < timeout:
                await self._route_external()
                if self.engine.is_stopping():  # claimed as its worker began to stop
                    self._stop_now()
                self._dispatch()
                if (
                    not self.tasks
                    and not self.done.done()
                    and not self.waiting_for_input()
                    and self.status != "waiting"
                ):
                    raise EngineError(
                        f"workflow run {self.run_id!r} has nothing to do: no pending event and "
                        "no step in flight (was its StopEvent lost?)",
                        run_id=self.run_id,
                    )
            if timeout is not None:
                timer = self.loop.create_task(self._expire(timeout))
                await asyncio.wait([self.done, timer], return_when=asyncio.FIRST_COMPLETED)
            if timer is None or self.done.done():
                return await asyncio.shield(self.done)
            error = WorkflowTimeoutError(
                f"workflow run {self.run_id!r} did not finish within {timeout}s of living "
                f"time ({self.clock.living():.1f}s run, not counting time dead or waiting "
                "for an event)",
                run_id=self.run_id,
            )
            await self._fail(None, error)
            raise error from None
        finally:
            watcher.discard(self)
            if timer is not None:
                timer.cancel()
            for task in list(self.tasks.values()):
                task.cancel()
            self.finished = True
            CHECKPOINT_CALLBACKS.pop((id(self.engine), self.run_id), None)
            for queue in self.stream_queues:
                queue.put_nowait(_END)

    async def _expire(self, timeout: float) -> None:
        """Return once the run's living time reaches ``timeout``; the clock stands still
        while every step in flight waits for an event from outside."""
        assert self._clock_moved is not None
        while True:
            self._clock_moved.clear()
            left = timeout - self.clock.living()
            if self.clock.running and left <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(
                    self._clock_moved.wait(), left if self.clock.running else None
                )

    def _tick(self) -> None:
        """Stop the living clock while the run is parked (every step in flight waits for
        an event from outside), start it again when one is not."""
        parked = bool(self.waiters) and len(self.waiters) >= len(self.tasks)
        if parked == self.clock.running:
            if parked:
                self.clock.pause()
            else:
                self.clock.resume()
            # A run dropped with its loop (a parked run at interpreter exit) has no one
            # left to wake: waking the timer would schedule on a closed loop.
            if self._clock_moved is not None and not (self.loop and self.loop.is_closed()):
                self._clock_moved.set()

    def stop(self) -> None:
        """The worker is stopping (callable from any thread): see :attr:`stopping`."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        self.stopping = True
        self._check_stopped()

    def _check_stopped(self) -> None:
        if not self.stopping:
            return
        parked = {w.scope.delivery for w in self.waiters}
        if all(key in parked for key in self.tasks):
            self._finish_with(
                WorkerStopping(
                    f"run {self.run_id!r}: the worker is stopping; the run paused at a step "
                    "boundary and its lease was released",
                    run_id=self.run_id,
                )
            )

    def waiting_for_input(self) -> bool:
        """True when the run is parked on ``wait_for_event`` with no work in flight."""
        return any(k.startswith(f"{INTERNAL}wait/") for k in self.values)

    def _dispatch(self) -> None:
        if self.engine.is_stopping():
            self.stopping = True  # before stop() reaches this loop: start nothing more
        if self.stopping or (self.done is not None and self.done.done()):
            return  # the run's outcome is decided (stopped, failed, dying): start nothing
        for key, item in list(self.pending.items()):
            step = item.get("to")
            if step is None or key in self.tasks:
                continue
            info = self.workflow.steps().get(step)
            if info is None:
                self._finish_with(
                    EngineError(
                        f"run {self.run_id!r}: a pending event is addressed to step {step!r}, "
                        "which this workflow no longer has",
                        run_id=self.run_id,
                    )
                )
                return
            assert self.loop is not None
            self.tasks[key] = self.loop.create_task(self._run_step(info, key, item["event"]))
        self._tick()

    def _finish_with(self, outcome: BaseException | None, result: Any = None) -> None:
        if self.done is None or self.done.done():
            return
        if outcome is None:
            self.done.set_result(result)
        else:
            self.done.set_exception(outcome)

    # -- one step ----------------------------------------------------------------------

    def _semaphore(self, info: StepInfo) -> asyncio.Semaphore:
        sem = self._semaphores.get(info.name)
        if sem is None:
            sem = self._semaphores[info.name] = asyncio.Semaphore(info.num_workers)
        return sem

    async def _run_step(self, info: StepInfo, delivery: str, event: Event) -> None:
        try:
            async with self._semaphore(info):
                if self.engine.telemetry is None:
                    await self._attempts(info, delivery, event)
                else:  # OpenTelemetry: the step's span (engine/telemetry.py)
                    await self.engine.telemetry._workflow_step(
                        self, info.name, delivery, lambda: self._attempts(info, delivery, event)
                    )
        except _RunEnded:
            pass  # the run ended while this step ran: its effects are not journaled
        except (RunCancelled, FencedOff) as exc:
            self._finish_with(exc)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except JournalFull as exc:
            # Not the run's fault: leave it unfinished for another worker once there is space.
            self.journal.release(self.run_id, self.epoch)
            self._finish_with(exc)
        except Exception as exc:
            await self._fail(info.name, exc)
        except BaseException as exc:
            # KeyboardInterrupt, SystemExit: the process is going away. Record nothing,
            # exactly as if it had been killed; a worker resumes the run later.
            self._finish_with(exc)
        finally:
            self.tasks.pop(delivery, None)
            self._tick()
            self._check_stopped()

    async def _attempts(self, info: StepInfo, delivery: str, event: Event) -> None:
        attempts_key = f"{INTERNAL}attempts/{delivery}"
        record = self.values.get(attempts_key, 0)
        if not isinstance(record, dict):  # journals before retry info: the count alone
            record = {"attempt": int(record)}
        attempt = int(record.get("attempt", 0))
        first_started = float(record.get("first") or time.time())
        last_error: Exception | None = None
        recoveries: dict[str, int] = dict(self.pending.get(delivery, {}).get("recoveries") or {})
        while True:
            attempt += 1
            scope = StepScope(self, info.name, delivery, event)
            scope.recoveries = recoveries
            if attempt > 1:
                failed_at = record.get("failed_at")
                if last_error is None and record.get("error") is not None:
                    last_error = exception_from_record(record["error"])
                scope.retry = RetryInfo(
                    retry_number=attempt - 1,
                    elapsed_seconds=max(0.0, time.time() - first_started),
                    last_exception=last_error,
                    last_failed_at=None
                    if failed_at is None
                    else dt.datetime.fromtimestamp(failed_at, tz=dt.timezone.utc),
                )
            ctx = WorkflowContext(scope, self.workflow.state_model())
            started = time.time()
            try:
                result = await self._call(info, ctx, event)
            except (RunCancelled, FencedOff, asyncio.CancelledError, _RunEnded):
                raise
            except Exception as exc:
                self._release_claims(scope)
                failed_at = time.time()
                wait = self._retry_wait(info, exc, attempt, first_started)
                if self.engine.telemetry is not None:  # OpenTelemetry: the attempt's event
                    self.engine.telemetry._attempt_failed(
                        current_live(), exc, attempt, wait is None
                    )
                if wait is None:
                    await self._gave_up(info, delivery, event, exc, attempt=attempt,
                                        first_started=first_started, recoveries=recoveries,
                                        attempts_key=attempts_key)  # fmt: skip
                    return
                record = {"attempt": attempt, "first": first_started, "failed_at": failed_at,
                          "error": exception_record(exc)}  # fmt: skip
                await self.commit([
                    self.journal.entry(
                        K.STEP_FAILED,
                        P.step_failed(attempt, exc, final=False),
                        step=info.name, key=delivery, codec=self.codec,
                    ),
                    self.journal.entry(K.STATE_SET, record, key=attempts_key, step=info.name,
                                       codec=self.codec),
                ])  # fmt: skip
                self.values[attempts_key] = record
                last_error = exc
                await asyncio.sleep(wait)
                continue
            # What the step returned is a programming error, not a transient one, if it
            # cannot be journaled: no retry, the run fails with that error.
            entries, stop = self._completion(scope, result, attempt, started)
            if attempts_key in self.values:
                scope.deletes.add(attempts_key)
                entries.insert(0, self.journal.entry(K.STATE_DELETED, key=attempts_key,
                                                     step=info.name, codec=self.codec))  # fmt: skip
            update: dict[str, Any] = {}
            if stop is not None:
                update = {
                    "status": "completed",
                    "output": self.codec.encode(stop_result(stop), path="result"),
                    "release": True,
                }
                entries.append(self.journal.entry(K.RUN_COMPLETED, codec=self.codec))
            elif (
                isinstance(result, InputRequiredEvent)
                and len(self.tasks) <= 1
                and not any(e.kind == K.EVENT_EMITTED for e in entries)
                and all(k in (scope.delivery, *scope.consumed) for k in self.pending)
            ):
                # Nothing left but the human's answer: park, as a wait_for_event does.
                update = {"status": "waiting", "wake_at": None}
            elif self.status == "waiting" and not self.waiters:
                update = {"status": "running", "wake_at": None}
            await self.commit(entries, final=stop is not None, **update)
            self._apply(scope, entries)
            callback = CHECKPOINT_CALLBACKS.get((id(self.engine), self.run_id))
            if callback is not None:
                await self._checkpoint_callback(callback, info.name, event, result)
            # The StopEvent ends every stream, as in LlamaIndex: the journal holds it as
            # the run's output, so the live stream shows nothing the journal lacks.
            self._publish([*scope.streamed, *([stop] if stop is not None else [])])
            if update.get("status"):
                self.status = update["status"]
            if stop is not None:
                self._finish_with(None, stop_result(stop))
            else:
                self._dispatch()
            return

    async def _checkpoint_callback(
        self, callback: Callable[..., Any], step: str, event: Event, result: Any
    ) -> None:
        # As in LlamaIndex: once per step that returned an event (not a request for
        # input). The step has committed; a failing callback is logged, not the run's end.
        if result is None or isinstance(result, InputRequiredEvent):
            return
        ctx = WorkflowContext(self.workflow)
        ctx._bind(self.workflow, self.engine, self.run_id)
        try:
            done = callback(run_id=self.run_id, last_completed_step=step, input_ev=event,
                            output_ev=result, ctx=ctx)  # fmt: skip
            if inspect.isawaitable(done):
                await done
        except Exception:
            _log.exception(
                "run %r: the checkpoint callback failed after step %r", self.run_id, step
            )

    async def _call(self, info: StepInfo, ctx: WorkflowContext, event: Event) -> Any:
        # Set in this step's task (and copied into a sync step's thread), so that a
        # workflow started inside the step knows its parent.
        CURRENT_SCOPE.set(ctx._scope)

        args = (self.workflow,) if info.bound else ()
        kwargs: dict[str, Any] = {info.event_param: event}
        if info.ctx_param is not None:
            kwargs[info.ctx_param] = ctx
        if info.resources:
            manager = self.workflow._resource_manager
            with manager.resolution_scope():
                for param, descriptor, base in info.resources:
                    descriptor.set_type_annotation(base)
                    kwargs[param] = await manager.get(descriptor)
        for param, cls, default in info.services:
            kwargs[param] = self.workflow._service(param, cls, default)

        def invoke() -> Any:
            return info.fn(*args, **kwargs)

        if info.spec.heartbeat_timeout is not None:
            return await self._watched(info, ctx._scope, invoke)
        if info.is_async:
            coro = invoke()
            if info.spec.timeout is None:
                return await coro
            try:
                return await asyncio.wait_for(coro, info.spec.timeout)
            except (asyncio.TimeoutError, TimeoutError):
                raise StepTimeout(
                    f"step {info.name!r} timed out after {info.spec.timeout}s", step=info.name
                ) from None
        # A sync step runs in a thread, never on the loop: it may block (I/O, a lock)
        # and every run of this loop would stall with it.
        if info.spec.timeout is None:
            return await asyncio.to_thread(invoke)
        try:
            return await asyncio.wait_for(asyncio.to_thread(invoke), info.spec.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise StepTimeout(
                f"step {info.name!r} timed out after {info.spec.timeout}s", step=info.name
            ) from None

    async def _watched(self, info: StepInfo, scope: StepScope, invoke: Callable[[], Any]) -> Any:
        """Run a step with a ``heartbeat_timeout``: its attempt is failed with
        StepHeartbeatTimeout once that long passes without ``ctx.heartbeat()`` (or with
        StepTimeout past its ``timeout``), and left to the retry policy."""
        spec = info.spec
        began = time.monotonic()
        if info.is_async:
            task: asyncio.Future[Any] = asyncio.ensure_future(invoke())
        else:
            # A thread of its own, not the loop's executor: a hung attempt is abandoned
            # (a thread cannot be killed) and must not keep a slot other steps need.
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            context = contextvars.copy_context()

            def target() -> None:
                if not future.set_running_or_notify_cancel():
                    return
                try:
                    future.set_result(context.run(invoke))
                except BaseException as exc:
                    future.set_exception(exc)

            threading.Thread(target=target, daemon=True, name=f"step-{info.name}").start()
            task = asyncio.wrap_future(future)
        try:
            while True:
                last = scope.beat if scope.beat is not None else began
                now = time.monotonic()
                left = last + spec.heartbeat_timeout - now  # type: ignore[operator]
                if spec.timeout is not None:
                    left = min(left, began + spec.timeout - now)
                done, _ = await asyncio.wait({task}, timeout=max(left, 0.0))
                if done:
                    return task.result()
                now = time.monotonic()
                if spec.timeout is not None and now >= began + spec.timeout:
                    raise StepTimeout(
                        f"step {info.name!r} timed out after {spec.timeout}s", step=info.name
                    )
                last = scope.beat if scope.beat is not None else began
                if now - last >= spec.heartbeat_timeout:  # type: ignore[operator]
                    raise StepHeartbeatTimeout(
                        f"step {info.name!r} sent no heartbeat for {now - last:.1f}s"
                        f" (heartbeat_timeout {spec.heartbeat_timeout}s): treated as dead",
                        step=info.name,
                    )
        finally:
            if not task.done():
                scope.abandoned = True  # its late heartbeats and writes go nowhere
                task.cancel()

    def heartbeat(self, scope: StepScope, details: Any) -> None:
        """``ctx.heartbeat(details)`` in a step (any thread): the attempt is alive; the
        details are written to the run's row with the next lease renewal, no commit."""
        try:
            encoded = json.dumps(details, sort_keys=True, default=_unencodable)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"step {scope.step}: heartbeat details must be JSON: {exc}") from None
        if scope.abandoned:
            return
        scope.beat = time.monotonic()
        self.engine.beat(self.run_id, f"{scope.step}/{scope.delivery}", encoded)

    def _retry_wait(
        self, info: StepInfo, exc: Exception, attempt: int, first_started: float
    ) -> float | None:
        """Seconds before the next attempt after failed attempt ``attempt``; None to fail.
        ``attempt`` counts from the journal, so a recovered run goes on with its count."""
        policy = info.spec.retry_policy
        if policy is None:
            return info.spec.retry.delay(attempt) if info.spec.retry.retries(exc, attempt) else None
        elapsed = time.time() - first_started
        try:
            wait = policy.next(
                elapsed, attempt, exc, seed=retry_seed(self.run_id, info.name, attempt)
            )
        except TypeError:  # a policy whose next() takes no seed
            wait = policy.next(elapsed, attempt, exc)
        return None if wait is None else max(0.0, float(wait))

    def _completion(
        self, scope: StepScope, result: Any, attempt: int, started: float
    ) -> tuple[list[NewEntry], StopEvent | None]:
        if result is not None and not isinstance(result, Event):
            raise WorkflowRuntimeError(
                f"Step function {scope.step} returned {type(result).__name__} instead of an "
                "Event instance.",
                step=scope.step,
            )
        if isinstance(result, InputRequiredEvent):
            scope.streamed.append(result)  # asks a human: shown on the stream
        j, codec = self.journal, self.codec
        entries = scope.entries()
        entries += [
            j.entry(K.EVENT_STREAMED, ev, step=scope.step, codec=codec) for ev in scope.streamed
        ]
        consumed = [scope.delivery, *scope.consumed]
        entries += [
            j.entry(K.EVENT_CONSUMED, key=k, step=scope.step, codec=codec) for k in consumed
        ]
        outputs = [*scope.sent, *([(result, None)] if result is not None else [])]
        stop: StopEvent | None = None
        emitted = []
        for event, target in outputs:
            if isinstance(event, StopEvent):
                stop = event
                continue
            targets = [target] if target else self.workflow.accepting(type(event))
            if not targets and isinstance(event, InputRequiredEvent):
                continue  # answered from outside with a HumanResponseEvent
            if not targets:
                raise NoStepForEvent(
                    f"step {scope.step!r} emitted {type(event).__name__}, which no step of "
                    f"{type(self.workflow).__name__} accepts",
                    step=scope.step,
                    event=type(event).__name__,
                )
            for to in targets:
                emitted.append(type(event).__name__)
                # recoveries: a chain of events after a @catch_error recovery
                payload = P.event_delivery(to, event, scope.recoveries)
                entries.append(
                    j.entry(K.EVENT_EMITTED, payload, key=new_delivery_key(),
                            step=scope.step, codec=codec, path=f"event {type(event).__name__}")
                )  # fmt: skip
        returned: str | None = P.UNSET
        if scope.sent or (stop is not None and type(stop) is not StopEvent):
            # Which event the step returned, when its last emitted one does not say
            # (checkpoints are of returned events, as in LlamaIndex): rare, so written only then.
            returned = type(result).__name__ if result is not None else None
        done = P.workflow_step_completed(
            attempt, started, time.time() - started, type(scope.event).__name__, emitted,
            stop is not None, self.clock.living(), returned,
        )  # fmt: skip
        entries.append(
            j.entry(K.STEP_COMPLETED, done, step=scope.step, key=scope.delivery, codec=codec)
        )
        return entries, stop

    def _apply(self, scope: StepScope, entries: list[NewEntry]) -> None:
        for key, value in scope.writes.items():
            self.values[key] = value
        for key in scope.deletes:
            self.values.pop(key, None)
        for key in (scope.delivery, *scope.consumed):
            self.pending.pop(key, None)
            self.claimed.discard(key)
        for entry in entries:
            if entry.kind == K.EVENT_EMITTED and entry.key is not None:
                self.pending[entry.key] = self.journal.decode(
                    entry.payload, entry.codec, where=f"run {self.run_id!r} new event",
                    run_id=self.run_id,
                )  # fmt: skip

    async def _gave_up(
        self,
        info: StepInfo,
        delivery: str,
        event: Event,
        exc: Exception,
        *,
        attempt: int,
        first_started: float,
        recoveries: dict[str, int],
        attempts_key: str,
    ) -> None:
        """The step's last attempt failed: hand a StepFailedEvent to the ``@catch_error``
        handler covering it, if its budget along this chain of events allows; else fail
        the run (raising the step's failure), streaming a WorkflowFailedEvent."""
        failure = _step_failure(info.name, exc, attempt)
        elapsed = max(0.0, time.time() - first_started)
        handler = type(self.workflow)._catch_handler(info.name)
        count = recoveries.get(handler.name, 0) + 1 if handler is not None else 0
        if handler is None or count > handler.max_recoveries:
            failure.stream_event = WorkflowFailedEvent(  # type: ignore[attr-defined]
                step_name=info.name, exception=exc, attempts=attempt, elapsed_seconds=elapsed
            )
            raise failure from exc
        failed = StepFailedEvent(
            step_name=info.name, input_event=event, exception=exc, attempts=attempt,
            elapsed_seconds=elapsed, failed_at=dt.datetime.now(dt.timezone.utc),
        )  # fmt: skip
        key = new_delivery_key()
        payload = P.event_delivery(handler.name, failed, {**recoveries, handler.name: count})
        j, codec = self.journal, self.codec
        entries = [
            j.entry(K.STEP_FAILED,
                    P.step_failed(attempt, exc, final=True, handler=handler.name),
                    step=info.name, key=delivery, codec=codec),
            j.entry(K.EVENT_CONSUMED, key=delivery, step=info.name, codec=codec),
            j.entry(K.EVENT_EMITTED, payload, key=key, step=info.name, codec=codec,
                    path="event StepFailedEvent"),
        ]  # fmt: skip
        if attempts_key in self.values:
            entries.append(j.entry(K.STATE_DELETED, key=attempts_key, step=info.name, codec=codec))
        await self.commit(entries)
        self.values.pop(attempts_key, None)
        self.pending.pop(delivery, None)
        self.claimed.discard(delivery)
        self.pending[key] = payload
        self._dispatch()

    def _release_claims(self, scope: StepScope) -> None:
        for key in scope.consumed:
            self.claimed.discard(key)

    async def _fail(self, step: str | None, exc: BaseException) -> None:
        if self.done is None or self.done.done():
            return
        info = P.run_failed(exc, step=step)
        message = f"{type(exc).__qualname__}: {exc}"
        entries = [self.journal.entry(K.RUN_FAILED, info, codec=self.codec)]
        shown: Event | None = getattr(exc, "stream_event", None)
        if shown is not None:
            # The stream's last event, as in LlamaIndex; journaled with the failure so
            # that the stream shows nothing the journal lacks.
            entries.insert(
                0, self.journal.entry(K.EVENT_STREAMED, shown, step=step, codec=self.codec)
            )
        with contextlib.suppress(EngineError, ConflictError):
            await self.commit(
                entries, final=True, status="failed", error=message, release=True,
            )  # fmt: skip
            if shown is not None:
                self._publish([shown])
        cause = exc.__cause__
        if (
            isinstance(exc, StepFailed)
            and not isinstance(exc, StepTimeout)
            and isinstance(cause, Exception)
        ):
            # await handler raises what the step raised (as LlamaIndex does); the journal
            # keeps the StepFailed record, and the note says how many attempts it had.
            add_note = getattr(cause, "add_note", None)  # Python 3.11+
            if add_note is not None:
                add_note(str(exc))
            self._finish_with(cause)
            return
        self._finish_with(exc)

    # -- commits and what others append ---------------------------------------------------

    async def commit(
        self,
        entries: list[NewEntry],
        *,
        final: bool = False,
        update_for: Callable[[], dict[str, Any]] | None = None,
        **update: Any,
    ) -> dict[str, Any]:
        """Append through the group committer; absorb external events and retry on conflict.

        ``final`` marks the run's terminal commit: once it is submitted, other commits
        (a step still in flight, a late wait) raise instead of landing after it.
        ``update_for``, if given, computes the run update again before each try (what
        a conflict absorbed may change it); the update that landed is returned."""
        if final:
            self.ended = True
        unreachable = 0
        while True:
            if self.ended and not final:
                raise _RunEnded(f"run {self.run_id!r} has ended", run_id=self.run_id)
            if self.cancel_requested.is_set():
                await self._absorb()
            if update_for is not None:
                update = update_for()
            expected = self.seq
            self.seq += len(entries)
            try:
                await self.engine.committer().submit(
                    AppendRequest(self.run_id, entries, expected, self.epoch, **update)
                )
                return update
            except ConflictError:
                await self._absorb()
            except DatabaseUnavailable as exc:
                # Nothing was written. Once more after a pause; then stop without
                # writing (failing the run would need the database too): recovery
                # resumes it.
                self.seq = expected
                unreachable += 1
                if unreachable == 2:
                    raise JournalUnreachable(
                        f"run {self.run_id!r}: the journal could not be reached to commit "
                        f"({exc}); this worker stopped the run without writing, recovery "
                        "resumes it",
                        run_id=self.run_id,
                    ) from exc
                await asyncio.sleep(RECONNECT_PAUSE)

    async def _absorb(self) -> None:
        """Read what others appended (sent events, a cancel, a takeover) and take it in."""
        assert self._absorb_lock is not None
        async with self._absorb_lock:
            run = self.journal.get_run(self.run_id)
            if run.status == "cancelled":
                raise RunCancelled(f"run {self.run_id!r} was cancelled", run_id=self.run_id)
            if run.epoch != self.epoch:
                raise FencedOff(
                    f"run {self.run_id!r} was claimed by {run.owner!r}; this worker stopped "
                    "without writing",
                    run_id=self.run_id,
                )
            if run.last_seq > self.scanned:
                for entry in self.journal.read(self.run_id, self.scanned + 1, run.last_seq):
                    if entry.kind == K.EVENT_RECEIVED and entry.key not in self.pending:
                        self.pending[entry.key or ""] = self.journal.decode_entry(entry)
                self.scanned = run.last_seq
            self.seq = run.last_seq
        await self._route_external()

    async def _route_external(self) -> None:
        """Hand events sent from outside to a waiting step, or to the steps that accept them."""
        for key, item in list(self.pending.items()):
            if item.get("to") is not None or key in self.claimed:
                continue
            event = item["event"]
            waiter = next(
                (w for w in self.waiters if not w.future.done() and w.matches(event)), None
            )
            if waiter is not None:
                self._hand(waiter, key)
                continue
            targets = self.workflow.accepting(type(event))
            if not targets:
                continue  # kept for a wait_for_event that has not started yet
            self.claimed.add(key)
            entries = [self.journal.entry(K.EVENT_CONSUMED, key=key, codec=self.codec)]
            deliveries = {new_delivery_key(): to for to in targets}
            entries += [
                self.journal.entry(K.EVENT_EMITTED, P.event_delivery(to, event), key=d,
                                   codec=self.codec)
                for d, to in deliveries.items()
            ]  # fmt: skip
            await self.commit(entries)
            self.pending.pop(key, None)
            for d, to in deliveries.items():
                self.pending[d] = {"to": to, "event": event}
        self._dispatch()

    def _flagged(self) -> None:
        """``cancel_requested`` was set (any thread): look at the run on its loop."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: nothing to stop
                loop.call_soon_threadsafe(self.watched, None)

    def watched(self, run: Run | None) -> None:
        """Look at the run: ``run`` is its row, read by the watcher (engine/watcher.py)
        because the journal changed; ``None`` when a local flag was raised."""
        if self.done is None or self.done.done():
            return
        if run is None and self.cancel_requested.is_set():
            try:  # cancelled in this process, or a lease found lost: read what happened
                run = self.journal.get_run(self.run_id)
            except Exception:
                return
        if run is None:
            return
        if run.status in ("completed", "failed") and run.epoch == self.epoch:
            # This run's own terminal commit landed and its step task is about to report
            # it; a heartbeat that found the lease released meanwhile must not turn that
            # into a cancellation.
            return
        if self.cancel_requested.is_set() or run.status == "cancelled":
            self._finish_with(
                RunCancelled(f"run {self.run_id!r} was cancelled", run_id=self.run_id)
            )
            return
        if run.last_seq > self.seq or run.epoch != self.epoch:
            assert self.loop is not None
            self.loop.create_task(self._absorb_quietly())

    def poke(self) -> None:
        """Called (thread-safely) after an in-process send_event: absorb it now."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._absorb_quietly()))  # type: ignore[union-attr]

    async def _absorb_quietly(self) -> None:
        try:
            await self._absorb()
        except _RunEnded:
            pass
        except (RunCancelled, FencedOff) as exc:
            self._finish_with(exc)

    # -- what steps call through their context -------------------------------------------

    def _publish(self, events: list[Event]) -> None:
        """Hand streamed events to every in-process listener: called on the run's loop,
        only once the commit that journals them has returned, so the live stream never
        shows an event the journal does not hold (a failed attempt's, say)."""
        for event in events:
            self.streamed_history.append(event)
            for queue in self.stream_queues:
                queue.put_nowait(event)

    def collect(
        self, scope: StepScope, event: Event, expected: list[type[Event]]
    ) -> list[Event] | None:
        """``ctx.collect_events``: buffer in the store, release when one of each type is in."""
        info = self.workflow.steps()[scope.step]
        if info.num_workers != 1:
            raise EngineError(
                f"step {scope.step!r} calls collect_events, so it must run with num_workers=1 "
                "(its buffer is shared)",
                step=scope.step,
            )
        key = f"{INTERNAL}collect/{scope.step}"
        buffer = [*scope.get(key, []), event]
        picked: list[Event] = []
        rest = list(buffer)
        for kind in expected:
            found = next((e for e in rest if type(e) is kind), None)
            if found is None:
                scope.set(key, buffer)
                return None
            picked.append(found)
            rest.remove(found)
        if rest:
            scope.set(key, rest)
        else:
            scope.delete(key)
        return picked

    async def wait_for(
        self,
        scope: StepScope,
        event_type: type[Event],
        requirements: dict[str, Any],
        timeout: float | None,
        waiter_event: Event | None,
    ) -> Event:
        """``ctx.wait_for_event``: see :class:`WorkflowContext`."""
        scope.waits += 1
        record_key = f"{INTERNAL}wait/{scope.delivery}/{scope.waits}"
        assert self.loop is not None
        waiter = _Waiter(scope, event_type, requirements, self.loop.create_future())
        # Registered, and offered what is already pending, in one stretch of the loop
        # with no await: an event absorbed later (while the wait's record commits, by a
        # conflict's re-read, a poke or the watcher) is routed to it by _route_external;
        # one absorbed earlier is found here. There is no moment in between to lose it.
        self.waiters.append(waiter)
        self._offer(waiter)
        self._tick()
        taken = False
        try:
            record = self.values.get(record_key)
            if record is None:
                record = await self._park(
                    scope, waiter, key=record_key, timeout=timeout, waiter_event=waiter_event
                )
            elif waiter_event is not None and not waiter.future.done():
                self._publish([waiter_event])  # re-announce in this process; journaled before
            self._check_stopped()  # the wait is journaled: a stopping worker may end here
            deadline = record["deadline"]
            remaining = None if deadline is None else max(0.0, deadline - time.time())
            try:
                key = await asyncio.wait_for(asyncio.shield(waiter.future), remaining)
            except (asyncio.TimeoutError, TimeoutError):
                if not waiter.future.done():
                    raise WaitTimeout(
                        f"step {scope.step!r} waited for {event_type.__name__} past its timeout",
                        step=scope.step,
                    ) from None
                key = waiter.future.result()
            taken = True
        finally:
            self._drop(waiter, taken)
        scope.consumed.append(key)
        scope.delete(record_key)
        event: Event = self.pending[key]["event"]
        return event

    async def _park(
        self,
        scope: StepScope,
        waiter: _Waiter,
        *,
        key: str,
        timeout: float | None,
        waiter_event: Event | None,
    ) -> dict[str, Any]:
        """Journal a new wait (and what the step streamed so far, so that whoever answers
        has seen it); mark the run waiting unless the answer is already in."""
        deadline = None if timeout is None else time.time() + timeout
        record = {
            "deadline": deadline,
            "type": waiter.event_type.__name__,
            "living": self.clock.living(),
        }
        shown = [*scope.streamed, *([waiter_event] if waiter_event is not None else [])]
        entries = [
            self.journal.entry(K.STATE_SET, record, key=key, step=scope.step, codec=self.codec)
        ]
        entries += [
            self.journal.entry(K.EVENT_STREAMED, ev, step=scope.step, codec=self.codec)
            for ev in shown
        ]

        def parking() -> dict[str, Any]:
            # Decided again on each try: the re-read after a conflict may have handed
            # this waiter its answer, and a run parked with its answer in would sleep
            # until its deadline if this process died.
            return {} if waiter.future.done() else {"status": "waiting", "wake_at": deadline}

        landed = await self.commit(entries, update_for=parking)
        self.values[key] = record
        scope.streamed.clear()
        if landed:
            self.status = "waiting"
        self._publish(shown)
        return record

    def _offer(self, waiter: _Waiter) -> None:
        """Hand ``waiter`` the first pending event from outside that it matches."""
        for key, item in self.pending.items():
            if item.get("to") is None and key not in self.claimed and waiter.matches(item["event"]):
                self._hand(waiter, key)
                return

    def _hand(self, waiter: _Waiter, key: str) -> None:
        self.claimed.add(key)
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        waiter.future.set_result(key)
        self._tick()

    def _drop(self, waiter: _Waiter, taken: bool) -> None:
        """The wait is over: unregister it; an event handed to it but not taken (the
        step failed meanwhile) is released for the next wait."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)
            self._tick()
        if not taken and waiter.future.done() and not waiter.future.cancelled():
            self.claimed.discard(waiter.future.result())


class _RunEnded(EngineError):
    """A commit was attempted after the run's terminal commit: it is dropped."""


class _EndOfStream:
    pass


_END = _EndOfStream()


def _unencodable(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _step_failure(name: str, exc: BaseException, attempt: int) -> StepFailed:
    cls: type[StepFailed] = (
        StepTimeout if isinstance(exc, StepTimeout | TimeoutError) else StepFailed
    )
    if isinstance(exc, StepHeartbeatTimeout):
        cls = StepHeartbeatTimeout
    return cls(
        f"step {name!r} failed after {attempt} attempt(s): {type(exc).__qualname__}: {exc}",
        step=name,
        error_type=type(exc).__qualname__,
        error=str(exc),
        attempts=attempt,
    )


def stop_result(stop: StopEvent) -> Any:
    """The run's result: ``result`` of a StopEvent, the event itself for a subclass."""
    return stop.result if type(stop) is StopEvent else stop


def is_stream_end(item: Any) -> bool:
    """True for the marker that closes a stream."""
    return item is _END
