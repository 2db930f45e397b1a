"""OpenTelemetry traces and metrics of runs and steps (the ``otel`` extra).

Off unless asked for: ``Engine(telemetry=True)`` (the global tracer and meter providers,
as the application configured them), ``Engine(telemetry=Telemetry(...))`` (given
providers), or ``DURABLE_OTEL=1`` in the environment. Off, nothing here is imported
beyond this module and the step path is the one it always was: an engine with telemetry
executes its runs with :class:`TracedExecution`, a subclass, so the plain class carries no
check at all.

Traces: a run's creation (``start``, a child call, ``enqueue``) is a short span whose
context is sealed in the run's meta; every execution of the run (the first, and each
recovery in whichever process claims it) is a ``durable.run`` span under it, so one trace
holds them all. Each step executed live is a ``durable.step`` span under its run's; a
step the journal answers during a replay emits nothing. Failed attempts are ``exception``
events on the step's span.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from .errors import CannotResume, FencedOff, RunCancelled, WorkerStopping
from .execution import RunExecution

if TYPE_CHECKING:
    import concurrent.futures

    from journal import NewEntry

    from .runtime import Engine
    from .steps import StepSpec

__all__ = ["ENV_VAR", "Telemetry", "TracedExecution", "telemetry_for"]

ENV_VAR = "DURABLE_OTEL"
"""``DURABLE_OTEL=1``: engines made without ``telemetry=`` turn it on (global providers)."""

META_KEY = "otel"
"""Where a run's meta keeps the W3C trace context of its creation."""

SCOPE = "durable"
log = logging.getLogger("durable.telemetry")

# The step being executed live in this thread or task, if it is traced.
_LIVE: contextvars.ContextVar[_LiveStep | None] = contextvars.ContextVar(
    "durable_otel_step", default=None
)


def _otel_missing(exc: ImportError) -> ImportError:
    from journal.extras import install_hint  # noqa: PLC0415 - only for the message

    return ImportError(
        f"telemetry needs the otel extra (opentelemetry-api and -sdk): "
        f"{install_hint('otel')} ({exc})"
    )


def telemetry_for(option: bool | Telemetry | None) -> Telemetry | None:
    """The :class:`Telemetry` an engine made with ``telemetry=option`` uses, or None.

    None defers to ``$DURABLE_OTEL``; True uses the global providers; False is off."""
    if option is None:
        option = os.environ.get(ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}
    if option is False:
        return None
    if option is True:
        return _global_telemetry()
    if isinstance(option, Telemetry):
        return option
    raise TypeError(f"telemetry must be a bool, a Telemetry or None, got {option!r}")


_GLOBAL: Telemetry | None = None
_GLOBAL_LOCK = threading.Lock()


def _global_telemetry() -> Telemetry:
    """The one Telemetry of the global providers, shared by every engine that asks for
    it: a meter keeps the first instrument of a name, so a second set of gauges would
    never be observed."""
    global _GLOBAL
    with _GLOBAL_LOCK:
        if _GLOBAL is None:
            _GLOBAL = Telemetry()
        return _GLOBAL


class _LiveStep:
    """One step call being traced: its span once it goes live (never, if replayed)."""

    __slots__ = ("attempts", "index", "name", "seq", "span", "started", "token")

    def __init__(self, name: str) -> None:
        self.name = name
        self.span: Any = None
        self.token: object = None
        self.index = 0
        self.attempts = 0
        self.seq: int | None = None
        self.started = 0.0


class _RunSpan:
    __slots__ = ("context", "span", "token")

    def __init__(self, span: Any, context: Any, token: object) -> None:
        self.span = span
        self.context = context
        self.token = token


class Telemetry:
    """Where an engine's traces and metrics go: ``Engine(telemetry=Telemetry(...))``.

    ``tracer_provider`` and ``meter_provider`` default to the global ones (set by the
    application, e.g. ``trace.set_tracer_provider``); ``metrics=False`` sends spans only.
    Needs the ``otel`` extra; one instance may serve several engines.
    """

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        metrics: bool = True,
    ) -> None:
        try:
            from opentelemetry import context as otel_context  # noqa: PLC0415 - optional
            from opentelemetry import metrics as otel_metrics  # noqa: PLC0415 - optional
            from opentelemetry import trace  # noqa: PLC0415 - optional extra
            from opentelemetry.metrics import Observation  # noqa: PLC0415 - optional
            from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
                TraceContextTextMapPropagator,
            )
        except ImportError as exc:
            raise _otel_missing(exc) from exc
        from . import __version__  # noqa: PLC0415 - the package imports this module's users

        self._trace = trace
        # Bound once: the step path calls them on every live step.
        self._attach = otel_context.attach
        self._detach = otel_context.detach
        self._in_context = trace.set_span_in_context
        self._error = trace.StatusCode.ERROR
        self._status = trace.Status
        self._observation = Observation
        self._propagator = TraceContextTextMapPropagator()
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        self._runs: dict[int, _RunSpan] = {}
        self._lock = threading.Lock()
        self._engines: weakref.WeakSet[Engine] = weakref.WeakSet()
        self.metrics = metrics
        if not metrics:
            return
        meter = otel_metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self.steps = meter.create_counter(
            "durable.steps", unit="{step}", description="Steps executed live, by outcome"
        )
        self.failures = meter.create_counter(
            "durable.step.failures", unit="{attempt}", description="Failed step attempts"
        )
        self.latency = meter.create_histogram(
            "durable.step.duration",
            unit="s",
            description="Time of a step executed live, its retries included",
        )
        self.runs_ended = meter.create_counter(
            "durable.run.executions",
            unit="{execution}",
            description="Executions of runs that ended in this process, by outcome",
        )
        meter.create_observable_gauge(
            "durable.queue.depth",
            callbacks=[self._observe_queues],
            unit="{run}",
            description="Runs waiting in each queue (pending)",
        )
        meter.create_observable_gauge(
            "durable.runs",
            callbacks=[self._observe_runs],
            unit="{run}",
            description="Runs in the journal, by status",
        )

    # -- binding -----------------------------------------------------------------------

    def _bind(self, engine: Engine) -> None:
        """Observe ``engine``'s journal for the gauges (queue depth, runs by status)."""
        self._engines.add(engine)

    def _observe(self, by: Literal["status", "queue"], attr: str) -> Iterator[Any]:
        for engine in list(self._engines):
            journal = engine.open_journal()
            if journal is None or journal.closed:
                continue
            try:
                counts = journal.count_runs(by, status="pending" if by == "queue" else None)
            except Exception as exc:  # a gauge must not break the metric reader
                log.debug("telemetry: cannot read %s: %s", journal.path, exc)
                continue
            for value, n in counts.items():
                yield self._observation(n, {attr: value, "durable.journal": str(journal.path)})

    def _observe_queues(self, _options: Any) -> Iterable[Any]:
        return list(self._observe("queue", "durable.queue"))

    def _observe_runs(self, _options: Any) -> Iterable[Any]:
        return list(self._observe("status", "durable.run.status"))

    # -- creation: the trace a run joins ------------------------------------------------

    def _creation_meta(
        self, action: str, name: str, run_id: str | None = None, queue: str | None = None
    ) -> dict[str, Any]:
        """Mark a run's creation with a span (``durable.start`` or ``durable.enqueue``,
        under the caller's current span) and return the run meta that carries its
        context: every execution of the run, here or in another process, joins it."""
        attributes: dict[str, Any] = {"durable.run.name": name}
        if run_id is not None:
            attributes["durable.run.id"] = run_id
        if queue is not None:
            attributes["durable.run.queue"] = queue
        span = self.tracer.start_span(f"durable.{action} {name}", attributes=attributes)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._in_context(span))
        span.end()
        return {META_KEY: carrier} if carrier else {}

    def _current_meta(self) -> dict[str, Any]:
        """The run meta that carries the current trace context (a continuation's)."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return {META_KEY: carrier} if carrier else {}

    # -- runs --------------------------------------------------------------------------

    def _run_begun(self, ex: Any, *, resumed: bool) -> None:
        """Open ``ex``'s run span (under the context its meta carries) and make it current
        in this thread or task until :meth:`_run_ended`."""
        run = ex.run
        carrier = run.meta.get(META_KEY)
        parent = (
            self._propagator.extract(carrier)
            if isinstance(carrier, dict) and all(isinstance(v, str) for v in carrier.values())
            else None
        )
        attributes: dict[str, Any] = {
            "durable.run.id": run.run_id,
            "durable.run.name": run.name,
            "durable.run.kind": run.kind,
            "durable.run.epoch": run.epoch,
            "durable.run.resumed": resumed,
        }
        if run.queue is not None:
            attributes["durable.run.queue"] = run.queue
        if run.parent_run_id is not None:
            attributes["durable.run.parent_id"] = run.parent_run_id
        span = self.tracer.start_span(f"durable.run {run.name}", parent, attributes=attributes)
        context = self._in_context(span, parent)
        token = self._attach(context)
        with self._lock:
            self._runs[id(ex)] = _RunSpan(span, context, token)

    def _run_ended(self, ex: Any, future: concurrent.futures.Future[Any] | None) -> None:
        """Close ``ex``'s run span with the outcome its future holds."""
        with self._lock:
            held = self._runs.pop(id(ex), None)
        if held is None:
            return
        span = held.span
        continued = getattr(ex, "continued_as", None)
        status, error = ("continued", None) if continued else _outcome(future)
        if continued:
            span.set_attribute("durable.run.continued_as", continued)
        span.set_attribute("durable.run.status", status)
        if error is not None and status == "failed":
            span.record_exception(error)
            span.set_status(self._status(self._error, f"{type(error).__qualname__}: {error}"))
        if self.metrics:
            self.runs_ended.add(1, {"durable.run.name": ex.run.name, "durable.run.status": status})
        span.end()
        self._detach(held.token)  # type: ignore[arg-type]

    def _run_context(self, ex: Any) -> Any:
        """The context of ``ex``'s run span (the parent of its workflow steps' spans)."""
        held = self._runs.get(id(ex))
        return None if held is None else held.context

    # -- steps -------------------------------------------------------------------------

    def _step_live(self, live: _LiveStep, ex: Any, index: int, parent: Any = None) -> None:
        """A step goes live (the journal has no result for it): open its span."""
        run = ex.run
        attributes: dict[str, Any] = {
            "durable.run.id": run.run_id,
            "durable.run.name": run.name,
            "durable.step.name": live.name,
            "durable.step.index": index,
        }
        if run.queue is not None:
            attributes["durable.run.queue"] = run.queue
        live.index = index
        live.started = time.perf_counter()
        live.span = self.tracer.start_span(
            f"durable.step {live.name}", parent, attributes=attributes
        )
        live.token = self._attach(self._in_context(live.span, parent))

    def _attempt_failed(
        self, live: _LiveStep | None, exc: BaseException, attempt: int, final: bool
    ) -> None:
        """A failed attempt: an ``exception`` event on the step's span, counted."""
        if live is None or live.span is None:
            return
        live.attempts = attempt
        live.span.record_exception(
            exc, {"durable.step.attempt": attempt, "durable.step.retry": not final}
        )
        if self.metrics:
            self.failures.add(1, {"durable.step.name": live.name, "durable.step.final": final})

    def _step_ended(self, live: _LiveStep, error: BaseException | None) -> None:
        """Close a live step's span (and count it); nothing for a replayed step."""
        span = live.span
        if span is None:
            return
        if error is None:
            status = "completed"
        elif isinstance(error, FencedOff | RunCancelled):
            status = "interrupted"  # the run stopped here: not the step's failure
        else:
            status = "failed"
            span.set_status(self._status(self._error, f"{type(error).__qualname__}: {error}"))
        attributes: dict[str, Any] = {"durable.step.status": status}
        if live.attempts:
            attributes["durable.step.attempts"] = live.attempts
        if live.seq is not None:
            attributes["durable.step.seq"] = live.seq
        span.set_attributes(attributes)
        if self.metrics:
            measured = {"durable.step.name": live.name, "durable.step.status": status}
            self.steps.add(1, measured)
            self.latency.record(time.perf_counter() - live.started, measured)
        span.end()
        self._detach(live.token)  # type: ignore[arg-type]

    async def _workflow_step(
        self, wr: Any, name: str, delivery: str, attempts: Callable[[], Any]
    ) -> None:
        """Run a workflow step's attempts (``attempts()``) inside its span."""
        live = _LiveStep(name)
        token = _LIVE.set(live)
        self._step_live(live, wr, 0, self._run_context(wr))
        live.span.set_attribute("durable.step.delivery", delivery)
        try:
            await attempts()
        except GeneratorExit:
            raise  # closed unfinished, its loop gone: no outcome, and maybe another context
        except BaseException as exc:
            self._step_ended(live, exc)
            raise
        else:
            self._step_ended(live, None)
        finally:
            _reset(token)


def _reset(token: contextvars.Token[_LiveStep | None]) -> None:
    # A coroutine closed by the garbage collector runs its finally blocks in whatever
    # context is current then: its token does not belong there, and an error raised here
    # would replace the GeneratorExit that is closing it.
    with contextlib.suppress(ValueError):
        _LIVE.reset(token)


def current_live() -> _LiveStep | None:
    """The traced step executing in this thread or task, if any."""
    return _LIVE.get()


_ENDINGS: tuple[tuple[type[BaseException], str], ...] = (
    (RunCancelled, "cancelled"),
    (WorkerStopping, "paused"),
    (FencedOff, "interrupted"),
    (CannotResume, "interrupted"),
    (Exception, "failed"),
)


def _outcome(future: concurrent.futures.Future[Any] | None) -> tuple[str, BaseException | None]:
    """How an execution ended, from its future: a status and the error, if any."""
    if future is None or not future.done():
        return "interrupted", None
    if future.cancelled():
        return "cancelled", None
    error = future.exception()
    if error is None:
        return "completed", None
    status = next((s for cls, s in _ENDINGS if isinstance(error, cls)), "interrupted")
    return status, error


class TracedExecution(RunExecution):
    """A :class:`RunExecution` that traces the steps it executes live.

    Engines with telemetry use it instead of the plain class; the hooks are the
    class's own seams: ``_go_live`` (a step the journal cannot answer), ``_failed``
    (an attempt failed) and ``_completed`` (the step's completion entry)."""

    def __init__(self, engine: Engine, *args: Any, **kwargs: Any) -> None:
        super().__init__(engine, *args, **kwargs)
        telemetry = engine.telemetry
        assert telemetry is not None
        self.telemetry: Telemetry = telemetry
        self.continued_as: str | None = None

    def call_step(
        self,
        spec: StepSpec,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """:meth:`RunExecution.call_step` inside a span if the step runs live."""
        live = _LiveStep(spec.name)
        token = _LIVE.set(live)
        try:
            result = super().call_step(spec, fn, args, kwargs)
        except BaseException as exc:
            self.telemetry._step_ended(live, exc)
            raise
        else:
            self.telemetry._step_ended(live, None)
        finally:
            _LIVE.reset(token)
        return result

    async def call_step_async(
        self,
        spec: StepSpec,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        index: int,
    ) -> Any:
        """:meth:`RunExecution.call_step_async` inside a span if the step runs live."""
        live = _LiveStep(spec.name)
        token = _LIVE.set(live)
        try:
            result = await super().call_step_async(spec, fn, args, kwargs, index)
        except GeneratorExit:
            raise  # closed unfinished, its loop gone: no outcome, and maybe another context
        except BaseException as exc:
            self.telemetry._step_ended(live, exc)
            raise
        else:
            self.telemetry._step_ended(live, None)
        finally:
            _reset(token)
        return result

    def continue_entries(self, continuation_id: str) -> list[NewEntry]:
        """:meth:`RunExecution.continue_entries`, noting the continuation for the span."""
        self.continued_as = continuation_id
        return super().continue_entries(continuation_id)

    def _go_live(self, index: int) -> None:
        super()._go_live(index)  # raises in a read-only replay: no span then
        live = _LIVE.get()
        if live is not None and live.span is None:
            self.telemetry._step_live(live, self, index)

    def _failed(
        self, key: str, h: str, attempt: int, exc: BaseException, final: bool
    ) -> list[NewEntry]:
        entries = super()._failed(key, h, attempt, exc, final)
        self.telemetry._attempt_failed(_LIVE.get(), exc, attempt, final)
        return entries

    def _completed(  # noqa: PLR0917 - as RunExecution._completed
        self, name: str, scope: Any, h: str, attempt: int, result: Any, started: float
    ) -> list[NewEntry]:
        entries = super()._completed(name, scope, h, attempt, result, started)
        live = _LIVE.get()
        if live is not None:
            live.attempts = attempt
            # The commit that follows reserves the seqs from self.seq on, before any await.
            live.seq = self.seq + len(entries)
        return entries
