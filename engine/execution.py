"""One execution of a run's body: replaying what the journal holds, then going on live.

The hot path of a step reads top to bottom in :meth:`RunExecution.call_step`:
take a call index, return the recorded result if the journal has one, else run
the step, then commit its completion, its state mutations and the body's pending
mutations in one append (one commit), and return.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime as dt
import json
import random
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from journal import (
    AppendRequest,
    ConflictError,
    DatabaseUnavailable,
    EntryKind,
    Journal,
    NewEntry,
    Run,
    appended_items,
)
from journal import payloads as P

from .errors import (
    EngineError,
    FencedOff,
    JournalUnreachable,
    NotInRun,
    RunCancelled,
    RunFailed,
    StepFailed,
    StepHeartbeatTimeout,
    StepTimeout,
    WorkerStopping,
)
from .hashing import args_hash
from .recorded import History, RecordedCall, call_key

if TYPE_CHECKING:
    from .committer import GroupCommitter
    from .runtime import Engine
    from .steps import StepSpec

K = EntryKind

RECONNECT_PAUSE = 0.5
"""Seconds before the one retry of a commit that could not reach the journal's database."""

_CURRENT_RUN: contextvars.ContextVar[RunExecution | None] = contextvars.ContextVar(
    "durable_current_run", default=None
)
_CURRENT_STEP: contextvars.ContextVar[StepScope | None] = contextvars.ContextVar(
    "durable_current_step", default=None
)


_STORABLE_NAMES: set[str] = set()
"""Step names whose keys ``name#index`` the journal took: valid text, checked once."""


class StepScope:
    """The step attempt being executed: where its mutations go, its idempotency key."""

    # ``beat`` (time.monotonic() of the last ctx.heartbeat) is set only by a step that
    # beats: a step that never does pays nothing for it.
    __slots__ = ("beat", "buffer", "execution", "key")
    beat: float

    def __init__(self, execution: RunExecution, key: str) -> None:
        self.execution = execution
        self.key = key
        # A fresh list per attempt: a timed-out attempt still running in its
        # abandoned thread writes here, never into the next attempt's buffer.
        self.buffer: list[NewEntry] = []


def current_execution() -> RunExecution | None:
    """The run executing in this thread or task, if any."""
    return _CURRENT_RUN.get()


def current_step() -> StepScope | None:
    """The step attempt executing in this thread or task, if any."""
    return _CURRENT_STEP.get()


def require_execution(what: str) -> RunExecution:
    """The current run, or :class:`NotInRun` naming ``what`` needed it."""
    ex = _CURRENT_RUN.get()
    if ex is None:
        raise NotInRun(f"{what} can only be used inside a running @durable function")
    return ex


class RunExecution:
    """The live state of one run in this process: its seq, epoch, values and buffers."""

    def __init__(
        self,
        engine: Engine,
        run: Run,
        history: History,
        *,
        is_async: bool,
        resources: dict[str, Any],
        replay_only: bool = False,
    ) -> None:
        self.engine = engine
        self.journal: Journal = engine.journal
        self.run = run
        self.run_id = run.run_id
        self.epoch = run.epoch
        self.seq = run.last_seq
        self.codec = self.journal.codec_named(run.codec, run_id=run.run_id)
        self.history = history
        self.is_async = is_async
        self.replay_only = replay_only
        self.values: dict[str, Any] = {}
        self.resources = resources
        self.body_buffer: list[NewEntry] = []
        self.next_index = 0
        self.cancel_requested = threading.Event()
        self.step_calls = 0
        self.context: Any = None  # set by the runtime: Context imports this module
        self.steps_replayed = 0
        self.replay_until: int | None = None
        self._committer: GroupCommitter | None = None  # the loop's, found on first use
        self._apply_recorded(history.edits_due(0))

    # -- state mutations -------------------------------------------------------------

    def set_value(self, key: str, value: Any) -> None:
        """Journal ``state[key] = value`` (encoding now, so a bad value fails here).

        A list extended at its end is journaled as the items appended only."""
        added = appended_items(self.values.get(key), value)
        if added is None:
            self._mutate(K.STATE_SET, key, value)
        else:
            self._mutate(K.STATE_APPENDED, key, added)
        self.values[key] = value

    def delete_value(self, key: str) -> None:
        """Journal ``del state[key]``."""
        if key not in self.values:
            raise KeyError(key)
        self._mutate(K.STATE_DELETED, key)
        del self.values[key]

    def _mutate(self, kind: str, key: str, *value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"state keys are strings, got {type(key).__name__} {key!r}")
        scope = _CURRENT_STEP.get()
        if scope is not None and scope.execution is self:
            scope.buffer.append(self._entry(kind, *value, step=scope.key, key=key))
        elif not self.history.check_body_mutation(kind, key):
            self.body_buffer.append(self._entry(kind, *value, key=key))

    def _entry(
        self, kind: str, *value: Any, step: str | None = None, key: str | None = None
    ) -> NewEntry:
        path = f"state[{key!r}]" if kind != K.STATE_DELETED else f"{kind} {step or key}"
        return self.journal.entry(kind, *value, step=step, key=key, codec=self.codec, path=path)

    def _apply_recorded(self, entries: list[Any]) -> None:
        for e in entries:
            if e.kind == K.STATE_SET:
                self.values[e.key] = self.journal.decode_entry(e)
            elif e.kind == K.STATE_APPENDED:
                self.values[e.key] = [*self.values.get(e.key, []), *self.journal.decode_entry(e)]
            else:
                self.values.pop(e.key, None)

    # -- commits ---------------------------------------------------------------------

    def _drain_body(self) -> list[NewEntry]:
        entries, self.body_buffer = self.body_buffer, []
        return entries

    def commit(self, entries: list[NewEntry], **update: Any) -> None:
        """Append in one transaction (blocking); a conflict means cancelled or fenced off.

        ``update`` is what else changes in the run row (``status``, ``output``,
        ``error``, ``wake_at``, ``release``), as :meth:`journal.Journal.append` takes it."""
        if self.replay_only:
            return
        expected = self.seq
        self.seq += len(entries)
        for attempt in (1, 2):
            try:
                self.journal.append(
                    self.run_id, entries, expected_seq=expected, epoch=self.epoch, **update
                )
                return
            except ConflictError as exc:
                raise self.conflict(exc) from exc
            except DatabaseUnavailable as exc:
                if attempt == 2:
                    self.seq = expected
                    raise self._unreachable(exc) from exc
                time.sleep(RECONNECT_PAUSE)  # nothing was written: the retry reconnects
            except Exception:
                self.seq = expected  # nothing was appended: the reservation is void
                raise

    async def commit_async(self, entries: list[NewEntry], **update: Any) -> None:
        """Append through the engine's group committer: many runs share one commit."""
        if self.replay_only:
            return
        # The seq is reserved now, before any await, so concurrent steps of one
        # run chain their appends in the order they were submitted.
        expected = self.seq
        self.seq += len(entries)
        committer = self._committer
        if committer is None:
            committer = self._committer = self.engine.committer()
        for attempt in (1, 2):
            try:
                await committer.submit(
                    AppendRequest(self.run_id, entries, expected, self.epoch, **update)
                )
                return
            except ConflictError as exc:
                raise self.conflict(exc) from exc
            except DatabaseUnavailable as exc:
                if attempt == 2:
                    self.seq = expected
                    raise self._unreachable(exc) from exc
                await asyncio.sleep(RECONNECT_PAUSE)
            except Exception:
                self.seq = expected  # nothing was appended: the reservation is void
                raise

    def _unreachable(self, exc: DatabaseUnavailable) -> JournalUnreachable:
        # Failing the run would need the database too, and a connection drop is no
        # reason to fail it: stop here, write nothing, and leave it to recovery.
        return JournalUnreachable(
            f"run {self.run_id!r}: the journal could not be reached to commit ({exc}); "
            "this worker stopped the run without writing, recovery resumes it",
            run_id=self.run_id,
        )

    def conflict(self, exc: ConflictError) -> Exception:
        """The error a commit's ``ConflictError`` means: the run was cancelled, or
        another worker took it (fenced off)."""
        run = self.journal.find_run(self.run_id)
        if run is not None and run.status == "cancelled":
            return RunCancelled(f"run {self.run_id!r} was cancelled", run_id=self.run_id)
        return FencedOff(
            f"run {self.run_id!r}: this worker no longer owns the run ({exc}); it stopped "
            "without writing",
            run_id=self.run_id,
        )

    # -- steps -----------------------------------------------------------------------

    def stop(self) -> None:
        """The worker is stopping: raise at the next step boundary (see Engine.drain)."""
        self.cancel_requested.set()

    def _interrupted(self) -> EngineError:
        if self.engine.is_stopping():
            return WorkerStopping(
                f"run {self.run_id!r}: the worker is stopping; the run paused at a step "
                "boundary and its lease was released",
                run_id=self.run_id,
            )
        return RunCancelled(f"run {self.run_id!r} was cancelled", run_id=self.run_id)

    def _begin_call(self) -> int:
        if self.cancel_requested.is_set() or self.engine.is_stopping():
            raise self._interrupted()
        self.next_index += 1
        return self.next_index

    def _go_live(self, index: int) -> None:
        # A fork whose edits wait on a call never recorded applies them before going live.
        due = self.history.edits_due(index)
        if due:
            self._apply_recorded(due)
        if self.replay_only:
            raise ReplayStop(f"reached the end of the recorded journal at call {index}", index)

    def _replayed(self, rec: RecordedCall) -> Any:
        self._apply_recorded(rec.mutations)
        self._apply_recorded(self.history.edits_due(rec.index))
        payload = self.journal.decode_entry(rec.entry)
        self.steps_replayed += 1
        if self.replay_until is not None and self.steps_replayed >= self.replay_until:
            raise ReplayStop(f"stopped after {self.steps_replayed} replayed calls", rec.index)
        if rec.kind == K.STEP_FAILED:
            raise _recorded_failure(rec.name, payload, rec.entry.step)
        return payload["result"]

    def _completed(  # noqa: PLR0917 - one step's outcome, as call_step has it
        self, name: str, scope: StepScope, h: str, attempt: int, result: Any, started: float
    ) -> list[NewEntry]:
        # P.step_completed's shape, spelled inline: the per-step hot path spares the call.
        payload = {
            "result": result,
            "attempt": attempt,
            "started": started,
            "duration": time.time() - started,
        }
        key = scope.key
        if name in _STORABLE_NAMES:
            # The per-step hot path: Journal.entry's work (encode now, so a bad result
            # fails here) without its checks of the step's key, which were made once.
            codec = self.codec
            done = NewEntry(K.STEP_COMPLETED, codec.encode(payload, path=f"step {key}"),
                            codec.name, key, h)  # fmt: skip
        else:
            done = self.journal.entry(
                K.STEP_COMPLETED, payload, step=key, key=h, codec=self.codec, path=f"step {key}"
            )
            _STORABLE_NAMES.add(name)  # its key stored: the name is valid text
        if not self.body_buffer and not scope.buffer:
            return [done]  # the common case: the step's completion alone
        return [*self._drain_body(), *scope.buffer, done]

    def _failed(
        self, key: str, h: str, attempt: int, exc: BaseException, final: bool
    ) -> list[NewEntry]:
        entry = self.journal.entry(
            K.STEP_FAILED,
            P.step_failed(
                attempt, exc, final=final, timeout=isinstance(exc, StepTimeout | TimeoutError)
            ),
            step=key,
            key=f"{'final' if final else 'retry'}:{h}",
            codec=self.codec,
        )
        return [*self._drain_body(), entry] if final else [entry]

    def call_step(
        self, spec: StepSpec, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run (or replay) one synchronous step call; the per-step hot path."""
        index = self._begin_call()
        h = args_hash(args, kwargs)
        rec = self.history.take(index, K.STEP_COMPLETED, spec.name, h)
        if rec is not None:
            return self._replayed(rec)
        self._go_live(index)
        key = call_key(spec.name, index)
        attempt = self.history.failed_attempts.get(key, 0)
        while True:
            attempt += 1
            scope = StepScope(self, key)
            started = time.time()
            token = _CURRENT_STEP.set(scope)
            try:
                result = _run_sync(spec, fn, args, kwargs)
            except Exception as exc:
                final = not spec.retry.retries(exc, attempt)
                self.commit(self._failed(key, h, attempt, exc, final))
                if final:
                    raise _live_failure(spec.name, key, exc, attempt) from exc
                self._wait(spec.retry.delay(attempt))
                continue
            finally:
                _CURRENT_STEP.reset(token)
            self.step_calls += 1
            self.commit(self._completed(spec.name, scope, h, attempt, result, started))
            return result

    async def call_step_async(
        self,
        spec: StepSpec,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        index: int,
    ) -> Any:
        """The async twin of :meth:`call_step`; ``index`` was taken when the call was made."""
        h = args_hash(args, kwargs)
        rec = self.history.take(index, K.STEP_COMPLETED, spec.name, h)
        if rec is not None:
            return self._replayed(rec)
        self._go_live(index)
        key = call_key(spec.name, index)
        attempt = self.history.failed_attempts.get(key, 0)
        while True:
            attempt += 1
            scope = StepScope(self, key)
            started = time.time()
            token = _CURRENT_STEP.set(scope)
            try:
                result = await _run_async(spec, fn, args, kwargs)
            except Exception as exc:
                final = not spec.retry.retries(exc, attempt)
                await self.commit_async(self._failed(key, h, attempt, exc, final))
                if final:
                    raise _live_failure(spec.name, key, exc, attempt) from exc
                await asyncio.sleep(spec.retry.delay(attempt))
                continue
            finally:
                _CURRENT_STEP.reset(token)
            self.step_calls += 1
            await self.commit_async(self._completed(spec.name, scope, h, attempt, result, started))
            return result

    def heartbeat(self, details: Any = None) -> None:
        """Record that the current step attempt is alive, with ``details`` of its
        progress: kept in memory, written to the run's row by the lease heartbeat at its
        next renewal (no commit of its own), and read by ``durable show``."""
        scope = _CURRENT_STEP.get()
        if scope is None or scope.execution is not self:
            raise NotInRun("ctx.heartbeat() must be called inside a @step")
        try:
            encoded = json.dumps(details, sort_keys=True, default=_unencodable)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"step {scope.key}: heartbeat details must be JSON: {exc}") from None
        scope.beat = time.monotonic()
        self.engine.beat(self.run_id, scope.key, encoded)

    def take_index(self) -> int:
        """Hand out the next call index (async steps take theirs when called)."""
        return self._begin_call()

    # -- deterministic values, timers, patches ----------------------------------------

    def record_value(self, name: str, make: Callable[[], Any]) -> Any:
        """Return the journaled value of this call, or make, journal and return a new one."""
        if _CURRENT_STEP.get() is not None:
            return make()  # inside a step: the step's result is what gets recorded
        index = self._begin_call()
        rec = self.history.take(index, K.VALUE_RECORDED, name)
        if rec is not None:
            self._apply_recorded(self.history.edits_due(index))
            return self.journal.decode_entry(rec.entry)
        self._go_live(index)
        value = make()
        self.body_buffer.append(
            self.journal.entry(
                K.VALUE_RECORDED, value, step=call_key(name, index), codec=self.codec
            )
        )
        return value

    def now(self) -> dt.datetime:
        """The journaled wall-clock time (UTC)."""
        return self.record_value("now", lambda: dt.datetime.now(dt.timezone.utc))  # type: ignore[no-any-return]

    def uuid4(self) -> uuid.UUID:
        """A journaled random UUID."""
        return self.record_value("uuid", uuid.uuid4)  # type: ignore[no-any-return]

    def random(self) -> float:
        """A journaled random float in [0, 1)."""
        return self.record_value("random", random.random)  # type: ignore[no-any-return]

    def _timer(self, seconds: float) -> tuple[str, float, bool, list[NewEntry] | None]:
        index = self._begin_call()
        key = call_key("sleep", index)
        rec = self.history.take(index, K.TIMER_STARTED, "sleep")
        if rec is not None:
            self._apply_recorded(self.history.edits_due(index))
            deadline = float(self.journal.decode_entry(rec.entry)["deadline"])
            return key, deadline, rec.completion is not None, None
        self._go_live(index)
        deadline = time.time() + seconds
        started = self.journal.entry(
            K.TIMER_STARTED, P.timer_started(deadline, seconds), step=key, codec=self.codec
        )
        return key, deadline, False, [*self._drain_body(), started]

    def sleep(self, seconds: float) -> None:
        """A durable sleep: the deadline is journaled, so a restart wakes at the same instant."""
        if _CURRENT_STEP.get() is not None:
            time.sleep(seconds)
            return
        key, deadline, fired, to_commit = self._timer(seconds)
        if to_commit is not None:
            self.commit(to_commit, wake_at=deadline)
        if not fired:
            self._wait(deadline - time.time())
            self.body_buffer.append(self.journal.entry(K.TIMER_FIRED, step=key, codec=self.codec))

    async def sleep_async(self, seconds: float) -> None:
        """The async twin of :meth:`sleep`."""
        if _CURRENT_STEP.get() is not None:
            await asyncio.sleep(seconds)
            return
        key, deadline, fired, to_commit = self._timer(seconds)
        if to_commit is not None:
            await self.commit_async(to_commit, wake_at=deadline)
        if not fired:
            remaining = deadline - time.time()
            if remaining > 0 and not self.replay_only:
                await asyncio.sleep(remaining)
            if self.cancel_requested.is_set():
                raise self._interrupted()
            self.body_buffer.append(self.journal.entry(K.TIMER_FIRED, step=key, codec=self.codec))

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and not self.replay_only and self.cancel_requested.wait(seconds):
            raise self._interrupted()

    def patched(self, change_id: str) -> bool:
        """True on new code paths: runs recorded before the change replay the old path."""
        index = self.next_index + 1
        rec = self.history.peek(index)
        if rec is not None and rec.kind == K.PATCH_MARKED and rec.name == change_id:
            self.history.take(index, K.PATCH_MARKED, change_id)
            self._apply_recorded(self.history.edits_due(index))
            self.next_index = index
            return True
        if self.history.has_calls():
            return False
        self.next_index = index
        self.body_buffer.append(
            self.journal.entry(K.PATCH_MARKED, step=call_key(change_id, index), codec=self.codec)
        )
        return True

    # -- child runs ------------------------------------------------------------------

    def begin_child(self, name: str) -> tuple[str, int, Any]:
        """Take the call index of a child run; return its id, index and recorded outcome."""
        index = self._begin_call()
        rec = self.history.take(index, K.CHILD_STARTED, name)
        key = call_key(name, index)
        if rec is not None:
            self._apply_recorded(self.history.edits_due(index))
        if rec is None or (rec.completion is None and self.replay_only):
            self._go_live(index)
        if rec is None:
            child_id = f"{self.run_id}/{key}"
            return child_id, index, None
        assert rec.entry.key is not None
        outcome = None if rec.completion is None else self.journal.decode_entry(rec.completion)
        return (
            rec.entry.key,
            index,
            ("recorded", outcome) if outcome is not None else ("started", None),
        )

    def child_started_entries(self, name: str, index: int, child_id: str) -> list[NewEntry]:
        """What to commit before a new child run starts."""
        started = self.journal.entry(
            K.CHILD_STARTED, step=call_key(name, index), key=child_id, codec=self.codec
        )
        return [*self._drain_body(), started]

    def child_finished(self, name: str, index: int, child_id: str, outcome: dict[str, Any]) -> Any:
        """Buffer the child's outcome (committed with the next entry) and return or raise it."""
        self.body_buffer.append(
            self.journal.entry(
                K.CHILD_COMPLETED,
                outcome,
                step=call_key(name, index),
                key=child_id,
                codec=self.codec,
            )
        )
        return child_outcome(child_id, outcome)

    # -- the end of a run --------------------------------------------------------------

    def complete_entries(self, result: Any) -> tuple[list[NewEntry], bytes]:
        """Entries and encoded output that finish the run successfully."""
        self.history.check_exhausted()
        output = self.codec.encode(result, path="result")
        return [*self._drain_body(), self.journal.entry(K.RUN_COMPLETED, codec=self.codec)], output

    def continue_as_new(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ContinueAsNew:
        """What ends the body for a continuation; raised by the caller."""
        if _CURRENT_STEP.get() is not None:
            raise NotInRun("continue_as_new() ends a run: call it in the @durable body, not a step")
        return ContinueAsNew(args, kwargs)

    def continue_entries(self, continuation_id: str) -> list[NewEntry]:
        """Entries that end the run as completed, continued as ``continuation_id``."""
        self.history.check_exhausted()
        done = self.journal.entry(
            K.RUN_COMPLETED, P.run_completed_continued(continuation_id), codec=self.codec
        )
        return [*self._drain_body(), done]

    def failure_entries(self, exc: BaseException, *, diverged: bool = False) -> list[NewEntry]:
        """Entries that record the run's failure (body mutations made so far included)."""
        info = P.run_failed(
            exc,
            step=_failed_step(exc),
            traceback="".join(traceback.format_exception(exc)),
            diverged=diverged,
        )
        return [*self._drain_body(), self.journal.entry(K.RUN_FAILED, info, codec=self.codec)]


class ContinueAsNew(BaseException):
    """Ends a run's body so that the engine starts its continuation (see
    :meth:`engine.Context.continue_as_new`). A BaseException so that a body's
    ``except Exception`` cannot swallow it."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("continue_as_new")
        self.args_ = args
        self.kwargs = kwargs


class ReplayStop(BaseException):
    """Ends a read-only replay: it reached ``until`` or the end of the recorded journal.

    A BaseException so that a body's ``except Exception`` cannot swallow it.
    """

    def __init__(self, reason: str, index: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.index = index


def child_outcome(child_id: str, outcome: dict[str, Any]) -> Any:
    """The result of a child run, or :class:`RunFailed` raised with its recorded error."""
    if outcome.get("ok"):
        return outcome.get("result")
    raise RunFailed(
        f"child run {child_id!r} {outcome.get('status', 'failed')}: {outcome.get('error')}",
        run_id=child_id,
        error=outcome.get("error"),
    )


def _unencodable(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _recorded_failure(name: str, payload: dict[str, Any], key: str | None) -> StepFailed:
    cls: type[StepFailed] = StepTimeout if payload.get("timeout") else StepFailed
    if payload.get("type") == StepHeartbeatTimeout.__qualname__:
        cls = StepHeartbeatTimeout
    return cls(
        f"step {name!r} failed after {payload['attempt']} attempt(s): "
        f"{payload['type']}: {payload['error']}",
        step=name,
        key=key,
        error_type=payload["type"],
        error=payload["error"],
        attempts=payload["attempt"],
    )


def _failed_step(exc: BaseException) -> str | None:
    """The key of the step whose final failure ended the run (``exc`` itself, or
    what it was raised from), if any: what a resume of the run executes again."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        key = getattr(cause, "key", None) if isinstance(cause, StepFailed) else None
        if isinstance(key, str):
            return key
        cause = cause.__cause__ or cause.__context__
    return None


def _live_failure(name: str, key: str, exc: BaseException, attempt: int) -> StepFailed:
    cls: type[StepFailed] = (
        StepTimeout if isinstance(exc, StepTimeout | TimeoutError) else StepFailed
    )
    if isinstance(exc, StepHeartbeatTimeout):
        cls = StepHeartbeatTimeout
    return cls(
        f"step {name!r} ({key}) failed after {attempt} attempt(s): {type(exc).__qualname__}: {exc}",
        step=name,
        key=key,
        error_type=type(exc).__qualname__,
        error=str(exc),
        attempts=attempt,
    )


def _run_sync(
    spec: StepSpec, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if spec.timeout is None and spec.heartbeat_timeout is None:
        return fn(*args, **kwargs)
    # A thread cannot be killed: a timed-out attempt is abandoned, its result and
    # its mutations discarded, while the next attempt (or the failure) goes on.
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            future.set_result(context.run(fn, *args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    began = time.monotonic()
    threading.Thread(target=target, daemon=True, name=f"step-{spec.name}").start()
    if spec.heartbeat_timeout is None:
        try:
            return future.result(spec.timeout)
        except concurrent.futures.TimeoutError:
            raise _timed_out(spec) from None
    scope = _CURRENT_STEP.get()
    while True:
        wait = _until_dead(spec, scope, began)
        try:
            return future.result(max(wait, 0.0))
        except concurrent.futures.TimeoutError:
            _check_alive(spec, scope, began)


async def _run_async(
    spec: StepSpec, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if spec.timeout is None and spec.heartbeat_timeout is None:
        return await fn(*args, **kwargs)
    if spec.heartbeat_timeout is None:
        try:
            return await asyncio.wait_for(fn(*args, **kwargs), spec.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise _timed_out(spec) from None
    began = time.monotonic()
    scope = _CURRENT_STEP.get()
    task = asyncio.ensure_future(fn(*args, **kwargs))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=max(_until_dead(spec, scope, began), 0.0))
            if done:
                return task.result()
            _check_alive(spec, scope, began)
    finally:
        if not task.done():
            task.cancel()


def _timed_out(spec: StepSpec) -> StepTimeout:
    return StepTimeout(f"step {spec.name!r} timed out after {spec.timeout}s", step=spec.name)


def _until_dead(spec: StepSpec, scope: StepScope | None, began: float) -> float:
    """Seconds until the attempt is dead unless it beats (or ends) first."""
    assert spec.heartbeat_timeout is not None
    last = getattr(scope, "beat", began)
    left = last + spec.heartbeat_timeout - time.monotonic()
    if spec.timeout is not None:
        left = min(left, began + spec.timeout - time.monotonic())
    return left


def _check_alive(spec: StepSpec, scope: StepScope | None, began: float) -> None:
    """Raise if the attempt ran past its timeout or its heartbeats stopped."""
    assert spec.heartbeat_timeout is not None
    now = time.monotonic()
    if spec.timeout is not None and now >= began + spec.timeout:
        raise _timed_out(spec)
    last = getattr(scope, "beat", began)
    if now - last >= spec.heartbeat_timeout:
        raise StepHeartbeatTimeout(
            f"step {spec.name!r} sent no heartbeat for {now - last:.1f}s"
            f" (heartbeat_timeout {spec.heartbeat_timeout}s): treated as dead",
            step=spec.name,
        )
