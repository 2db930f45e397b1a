"""OpenTelemetry traces and metrics (engine/telemetry.py, the ``otel`` extra).

Spans are read back from the SDK's in-memory exporter and metrics from its in-memory
reader: one span per run execution and per step executed live, attempts as exception
events, the trace carried into child runs, across ``enqueue`` to the worker that claims
the run, and across a SIGKILL to the process that recovers it, with no step span for a
step the journal answers on replay. Off (the default), the engine executes runs with the
plain class; without the extra installed it imports and runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import engine.runtime
from engine import (
    Context,
    Engine,
    Event,
    Queue,
    RunFailed,
    StartEvent,
    StopEvent,
    Telemetry,
    Workflow,
    add_schedule,
    configure,
    durable,
    fire_schedules,
    replay,
    step,
)
from engine.execution import RunExecution, current_execution
from engine.telemetry import ENV_VAR, META_KEY, TracedExecution, telemetry_for

QUEUE = Queue("test-otel")
CALLS: dict[str, int] = {}


@dataclass
class Otel:
    """An engine whose telemetry goes to in-memory SDK pipelines."""

    engine: Engine
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    provider: TracerProvider

    def finished(self, prefix: str = "durable.") -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name.startswith(prefix)]

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def run_span(self, name: str) -> ReadableSpan:
        """The one ``durable.run`` span of ``name``: it ends just after the run's waiters
        are answered (the run's thread closes it), so it is waited for."""
        deadline = time.monotonic() + 10
        while not (found := self.named(f"durable.run {MOD}:{name}")):
            assert time.monotonic() < deadline, f"no run span for {name}"
            time.sleep(0.01)
        (span,) = found
        return span

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = [
                        (dict(p.attributes or {}), getattr(p, "value", None) or p.count)  # type: ignore[union-attr]
                        for p in m.data.data_points
                    ]
        return out


@pytest.fixture
def otel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Otel]:
    monkeypatch.setattr(engine.runtime, "_DEFAULT", None)
    CALLS.clear()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    eng = configure(tmp_path / "j.db", telemetry=telemetry, lease_seconds=5)
    yield Otel(eng, spans, reader, provider)
    eng.close()


# -- the workload --------------------------------------------------------------------------


@step(retries=3, backoff=0.001)
def flaky(name: str, failures: int) -> str:
    """Fails ``failures`` times, then returns."""
    CALLS[name] = CALLS.get(name, 0) + 1
    if CALLS[name] <= failures:
        raise ValueError(f"{name} attempt {CALLS[name]} failed")
    return name


@step
def double(x: int) -> int:
    return x * 2


@durable
def two_steps(x: int) -> int:
    flaky("a", 2)
    return double(x)


@durable
def doomed() -> None:
    flaky("never", 99)


@durable
def child(x: int) -> int:
    return double(x)


@durable
def parent(x: int) -> int:
    return child(double(x)) + 1


@durable(queue=QUEUE)
def queued(x: int) -> int:
    return double(x)


@durable
def countdown(ctx: Context, n: int) -> int:
    double(n)
    if n > 0:
        ctx.continue_as_new(n - 1)
    return n


@step
async def adouble(x: int) -> int:
    await asyncio.sleep(0.001 * (3 - x))
    return x * 2


@durable
async def fan_out(n: int) -> list[int]:
    return list(await asyncio.gather(*(adouble(i) for i in range(n))))


SEEN: list[type] = []


@durable
def probe() -> None:
    SEEN.append(type(current_execution()))


class Halfway(Event):
    x: int


class TwoHops(Workflow):
    @step
    async def first(self, ev: StartEvent) -> Halfway:
        return Halfway(x=ev.x + 1)

    @step
    async def second(self, ev: Halfway) -> StopEvent:
        return StopEvent(result=ev.x * 10)


MOD = two_steps.name.split(":")[0]  # as pytest imported this file


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _has(span: ReadableSpan, expected: dict[str, Any]) -> bool:
    return expected.items() <= _attrs(span).items()


def _parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


# -- spans ---------------------------------------------------------------------------------


def test_a_run_and_its_steps_are_spans_with_attempts_as_events(otel: Otel) -> None:
    """One run span, one span per step executed, under it; the retried step's failed
    attempts are exception events on its span, with their attempt numbers."""
    assert two_steps.start(4, run_id="r1").result(timeout=30) == 8
    (start,) = otel.named(f"durable.start {MOD}:two_steps")
    run = otel.run_span("two_steps")
    steps = sorted(otel.named("durable.step flaky") + otel.named("durable.step double"),
                   key=lambda s: _attrs(s)["durable.step.index"])  # fmt: skip
    assert [s.name for s in steps] == ["durable.step flaky", "durable.step double"]
    assert len({s.context.trace_id for s in [start, run, *steps]}) == 1
    assert _parent_of(run) == start.context.span_id
    assert all(_parent_of(s) == run.context.span_id for s in steps)
    assert _has(
        run,
        {
            "durable.run.id": "r1",
            "durable.run.name": two_steps.name,
            "durable.run.status": "completed",
            "durable.run.resumed": False,
        },
    )
    retried, doubled = steps
    assert _has(
        retried,
        {
            "durable.run.id": "r1",
            "durable.step.name": "flaky",
            "durable.step.index": 1,
            "durable.step.status": "completed",
            "durable.step.attempts": 3,
        },
    )
    assert [(e.name, dict(e.attributes or {})["durable.step.attempt"]) for e in retried.events] == [
        ("exception", 1),
        ("exception", 2),
    ]
    assert all(dict(e.attributes or {})["durable.step.retry"] for e in retried.events)
    assert retried.status.status_code is not StatusCode.ERROR
    # The seq is the journal's: the step's completion entry is there.
    seq = _attrs(doubled)["durable.step.seq"]
    entry = otel.engine.journal.read_one("r1", seq)
    assert (entry.kind, entry.step) == ("step.completed", "double#2")
    # The run's meta carries the trace its executions join.
    meta = otel.engine.journal.get_run("r1").meta[META_KEY]
    assert f"{start.context.trace_id:032x}-{start.context.span_id:016x}" in meta["traceparent"]


def test_failures_are_recorded_on_the_step_and_run_spans(otel: Otel) -> None:
    """A step that exhausts its retries: every attempt an exception event, the last one
    final; the step span and the run span are errors, the run's with its exception."""
    with pytest.raises(RunFailed, match="StepFailed"):
        doomed.start(run_id="bad").result(timeout=30)
    (stepspan,) = otel.named("durable.step flaky")
    run = otel.run_span("doomed")
    events = [dict(e.attributes or {}) for e in stepspan.events]
    assert [e["durable.step.attempt"] for e in events] == [1, 2, 3, 4]
    assert [e["durable.step.retry"] for e in events] == [True, True, True, False]
    assert events[-1]["exception.type"] == "ValueError"
    assert stepspan.status.status_code is StatusCode.ERROR
    assert _attrs(stepspan)["durable.step.status"] == "failed"
    assert run.status.status_code is StatusCode.ERROR
    assert _attrs(run)["durable.run.status"] == "failed"
    assert [e.name for e in run.events] == ["exception"]
    assert dict(run.events[0].attributes or {})["exception.type"] == "engine.errors.StepFailed"


def test_a_child_run_joins_its_parents_trace(otel: Otel) -> None:
    """parent run -> child's creation -> child run -> child's step, in one trace."""
    assert parent.start(3, run_id="p").result(timeout=30) == 13
    prun = otel.run_span("parent")
    (cstart,) = otel.named(f"durable.start {MOD}:child")
    crun = otel.run_span("child")
    cstep = [s for s in otel.named("durable.step double")
             if _attrs(s)["durable.run.id"] == _attrs(crun)["durable.run.id"]]  # fmt: skip
    assert len(cstep) == 1
    assert _parent_of(cstart) == prun.context.span_id
    assert _parent_of(crun) == cstart.context.span_id
    assert _parent_of(cstep[0]) == crun.context.span_id
    assert _attrs(crun)["durable.run.parent_id"] == "p"
    assert len({s.context.trace_id for s in otel.finished()}) == 1


def test_enqueue_carries_the_trace_to_the_worker_that_claims_the_run(
    otel: Otel, tmp_path: Path
) -> None:
    """Enqueued inside an application span, the run is executed by another engine (a
    worker on the same journal): its run span continues the enqueuer's trace."""
    tracer = otel.provider.get_tracer("app")
    with tracer.start_as_current_span("request") as request:
        handle = queued.enqueue(5, run_id="q1")
    assert otel.engine.journal.get_run("q1").status == "pending"
    (enq,) = otel.named(f"durable.enqueue {MOD}:queued")
    assert _parent_of(enq) == request.get_span_context().span_id
    assert _attrs(enq)["durable.run.queue"] == "test-otel"

    worker_spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(worker_spans))
    worker = Engine(tmp_path / "j.db", telemetry=Telemetry(tracer_provider=provider,
                                                            metrics=False))  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=worker.worker, kwargs={"stop": stop, "poll_interval": 0.05})
    thread.start()
    try:
        assert handle.result(timeout=30) == 10
        deadline = time.monotonic() + 10
        while not any(s.name.startswith("durable.run") for s in worker_spans.get_finished_spans()):
            assert time.monotonic() < deadline, "the worker's run span did not end"
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(10)
        worker.close()
    spans = worker_spans.get_finished_spans()
    (run,) = [s for s in spans if s.name.startswith("durable.run")]
    (stepspan,) = [s for s in spans if s.name.startswith("durable.step")]
    assert run.context.trace_id == request.get_span_context().trace_id
    assert _parent_of(run) == enq.context.span_id
    assert _attrs(run)["durable.run.queue"] == "test-otel"
    assert _attrs(stepspan)["durable.run.queue"] == "test-otel"
    assert _parent_of(stepspan) == run.context.span_id
    assert otel.named(f"durable.run {MOD}:queued") == []  # not run here


def test_a_schedule_tick_starts_a_trace_its_run_continues(otel: Otel) -> None:
    """A tick's run is created by the schedule (a span of its own) and executed by
    whichever engine claims it, under that span."""
    since = time.time() - 90
    add_schedule("every-minute", two_steps, "* * * * *", args=[2], since=since)
    (run_id,) = fire_schedules(engine=otel.engine, now=since + 61)
    (tick,) = otel.named(f"durable.schedule {MOD}:two_steps")
    assert _attrs(tick)["durable.run.id"] == run_id
    report = otel.engine.recover(timeout=30)
    assert report.run_ids == [run_id] and report.handles[0].result(timeout=30) == 4
    run = otel.run_span("two_steps")
    assert _parent_of(run) == tick.context.span_id
    assert run.context.trace_id == tick.context.trace_id


def test_a_continuation_joins_the_trace_of_the_run_it_continues(otel: Otel) -> None:
    """continue_as_new: the continuation's run span is a child of the run span that
    continued it, in the same trace; the ended run's status says "continued"."""
    assert countdown.start(2, run_id="c").result(timeout=30) == 0
    deadline = time.monotonic() + 10
    while len(runs := otel.named(f"durable.run {MOD}:countdown")) < 3:
        assert time.monotonic() < deadline, runs
        time.sleep(0.01)
    by_id = {_attrs(s)["durable.run.id"]: s for s in runs}
    assert sorted(by_id) == ["c", "c~1", "c~2"]
    assert _parent_of(by_id["c~1"]) == by_id["c"].context.span_id
    assert _parent_of(by_id["c~2"]) == by_id["c~1"].context.span_id
    assert len({s.context.trace_id for s in runs}) == 1
    assert [_attrs(by_id[r])["durable.run.status"] for r in ("c", "c~1", "c~2")] == [
        "continued",
        "continued",
        "completed",
    ]


def test_concurrent_async_steps_each_get_a_span_under_the_run(otel: Otel) -> None:
    """gather()ed steps: one span each, all children of the run span, none nested in
    another step's span."""
    assert asyncio.run(fan_out(3)) == [0, 2, 4]
    run = otel.run_span("fan_out")
    steps = otel.named("durable.step adouble")
    assert sorted(_attrs(s)["durable.step.index"] for s in steps) == [1, 2, 3]
    assert all(_parent_of(s) == run.context.span_id for s in steps)
    assert len({_attrs(s)["durable.step.seq"] for s in steps}) == 3


def test_a_workflow_run_and_its_steps_are_spans(otel: Otel) -> None:
    """Workflows: one span per run and per step execution, the steps under the run."""

    async def main() -> Any:
        return await TwoHops().run(x=1, run_id="w")

    assert asyncio.run(main()) == 20
    run = otel.run_span("TwoHops")
    steps = otel.named("durable.step first") + otel.named("durable.step second")
    assert len(steps) == 2
    assert all(_parent_of(s) == run.context.span_id for s in steps)
    assert _has(run, {"durable.run.kind": "workflow", "durable.run.status": "completed"})
    assert all(_attrs(s)["durable.step.status"] == "completed" for s in steps)


def test_a_replay_emits_no_span(otel: Otel) -> None:
    """Replaying a finished run from its journal executes no step: nothing is traced."""
    two_steps.start(1, run_id="r").result(timeout=30)
    otel.run_span("two_steps")
    before = len(otel.spans.get_finished_spans())
    report = replay("r", engine=otel.engine)
    assert report.ok and report.calls_replayed == 2
    assert len(otel.spans.get_finished_spans()) == before


# -- metrics -------------------------------------------------------------------------------


def test_metrics_steps_failures_latency_queue_depth_and_runs(otel: Otel) -> None:
    """Counters of steps and failed attempts, a latency histogram, the depth of each
    queue and the runs of each status, read through the SDK's metric reader."""
    two_steps.start(1, run_id="m1").result(timeout=30)
    otel.run_span("two_steps")  # ended, and counted, just after the result
    for i in range(3):
        queued.enqueue(i, run_id=f"wait{i}")
    got = otel.metrics()
    steps = {(a["durable.step.name"], a["durable.step.status"]): v for a, v in got["durable.steps"]}
    assert steps == {("flaky", "completed"): 1, ("double", "completed"): 1}
    failures = {(a["durable.step.name"], a["durable.step.final"]): v
                for a, v in got["durable.step.failures"]}  # fmt: skip
    assert failures == {("flaky", False): 2}
    latency = {a["durable.step.name"]: n for a, n in got["durable.step.duration"]}
    assert latency == {"flaky": 1, "double": 1}
    depth = {a["durable.queue"]: v for a, v in got["durable.queue.depth"]}
    assert depth == {"test-otel": 3}
    runs = {a["durable.run.status"]: v for a, v in got["durable.runs"]}
    assert runs == {"completed": 1, "pending": 3}
    ended = {(a["durable.run.name"], a["durable.run.status"]): v
             for a, v in got["durable.run.executions"]}  # fmt: skip
    assert ended == {(two_steps.name, "completed"): 1}


@pytest.mark.postgres
def test_the_gauges_read_a_postgresql_journal(pg_schema_url: str) -> None:
    """The queue depth and runs-by-status gauges query PostgreSQL journals too."""
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        tracer_provider=TracerProvider(), meter_provider=MeterProvider(metric_readers=[reader])
    )
    eng = Engine(pg_schema_url, telemetry=telemetry)
    try:
        for i in range(2):
            queued._engine = eng
            queued.enqueue(i, run_id=f"pg{i}")
        data = reader.get_metrics_data()
        assert data is not None
        got = {
            m.name: {
                tuple(sorted((p.attributes or {}).items())): p.value for p in m.data.data_points
            }  # type: ignore[union-attr]
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }
        (depth,) = got["durable.queue.depth"].items()
        assert dict(depth[0])["durable.queue"] == "test-otel" and depth[1] == 2
        (runs,) = got["durable.runs"].items()
        assert dict(runs[0])["durable.run.status"] == "pending" and runs[1] == 2
    finally:
        queued._engine = None
        eng.close()


# -- off, and without the extra ------------------------------------------------------------


def test_off_by_default_the_plain_execution_class_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``telemetry=`` and no $DURABLE_OTEL: no telemetry, runs execute with the plain
    RunExecution (whose step path has no telemetry check). DURABLE_OTEL=1 turns it on."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    SEEN.clear()
    monkeypatch.setattr(engine.runtime, "_DEFAULT", None)
    eng = configure(tmp_path / "off.db")
    try:
        assert eng.telemetry is None
        probe.start(run_id="off").result(timeout=30)
        assert SEEN[:] == [RunExecution]
        assert "otel" not in eng.journal.get_run("off").meta
    finally:
        eng.close()
    assert telemetry_for(False) is None
    # The global providers' Telemetry is one, shared: a meter keeps the first gauges.
    assert telemetry_for(True) is telemetry_for(True)
    monkeypatch.setenv(ENV_VAR, "1")
    assert isinstance(telemetry_for(None), Telemetry)
    assert telemetry_for(False) is None
    monkeypatch.setenv(ENV_VAR, "0")
    assert telemetry_for(None) is None
    with pytest.raises(TypeError):
        telemetry_for("yes")  # type: ignore[arg-type]


def test_on_traced_runs_use_the_traced_class(otel: Otel) -> None:
    """With telemetry, runs execute with TracedExecution."""
    SEEN.clear()
    probe.start(run_id="on").result(timeout=30)
    assert len(SEEN) == 1 and issubclass(SEEN[0], TracedExecution)


WITHOUT_OTEL = textwrap.dedent(
    """
    import sys
    for name in ("opentelemetry", "opentelemetry.trace", "opentelemetry.metrics",
                 "opentelemetry.context", "opentelemetry.sdk"):
        sys.modules[name] = None  # as if the otel extra were not installed
    import engine
    from engine import Engine, configure, durable, step

    @step
    def one() -> int:
        return 1

    @durable
    def job() -> int:
        return one() + one()

    eng = configure(sys.argv[1])
    assert eng.telemetry is None
    assert job() == 2
    assert not any(m.startswith("opentelemetry") and sys.modules[m] is not None
                   for m in sys.modules)
    try:
        Engine(sys.argv[1], telemetry=True)
    except ImportError as exc:
        print("IMPORT-ERROR", exc)
    """
)


def test_the_engine_imports_and_runs_without_the_extra(tmp_path: Path) -> None:
    """With opentelemetry hidden: the engine imports, runs are executed; asking for
    telemetry raises ImportError naming the otel extra and how to install it."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    res = subprocess.run(
        [sys.executable, "-c", WITHOUT_OTEL, str(tmp_path / "j.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    (line,) = [ln for ln in res.stdout.splitlines() if ln.startswith("IMPORT-ERROR")]
    assert "otel extra" in line and "pip install" in line and "[otel]" in line


# -- across a SIGKILL ----------------------------------------------------------------------

CRASH_WORKLOAD = textwrap.dedent(
    """
    import json, os, signal, sys
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor, SpanExporter, SpanExportResult)
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from engine import Telemetry, configure, default_engine, durable, step

    def record(span):
        return {
            "name": span.name,
            "trace": span.context.trace_id,
            "span": span.context.span_id,
            "parent": span.parent.span_id if span.parent else None,
            "attrs": dict(span.attributes),
        }

    class LineExporter(SpanExporter):
        # Each span written and flushed as it ends: a SIGKILL loses none that ended.
        def __init__(self, path):
            self.path = path
        def export(self, spans):
            with open(self.path, "a") as f:
                for s in spans:
                    f.write(json.dumps(record(s)) + "\\n")
                f.flush()
            return SpanExportResult.SUCCESS

    @step
    def work(i: int) -> int:
        if i == 2 and sys.argv[1] == "start":
            os.kill(os.getpid(), signal.SIGKILL)
        return i * 10

    @durable
    def job(n: int) -> int:
        return sum(work(i) for i in range(n))

    if __name__ == "__main__":
        provider = TracerProvider()
        memory = InMemorySpanExporter()
        if sys.argv[1] == "start":
            provider.add_span_processor(SimpleSpanProcessor(LineExporter(sys.argv[3])))
        else:
            provider.add_span_processor(SimpleSpanProcessor(memory))
        reader = InMemoryMetricReader()
        telemetry = Telemetry(tracer_provider=provider,
                              meter_provider=MeterProvider(metric_readers=[reader]))
        configure(sys.argv[2], lease_seconds=0.5, telemetry=telemetry)
        if sys.argv[1] == "start":
            job.start(4, run_id="r").result(timeout=60)
        else:
            report = default_engine().recover(wait_leased=True, timeout=30)
            assert report.run_ids == ["r"], report
            result = report.handles[0].result(timeout=60)
            steps = [
                (dict(p.attributes)["durable.step.name"], p.value)
                for rm in reader.get_metrics_data().resource_metrics
                for sm in rm.scope_metrics for m in sm.metrics if m.name == "durable.steps"
                for p in m.data.data_points
            ]
            with open(sys.argv[3], "w") as f:
                json.dump({"result": result, "steps": steps,
                           "spans": [record(s) for s in memory.get_finished_spans()]}, f)
    """
)


@pytest.mark.slow
def test_recovery_after_sigkill_joins_the_trace_and_replays_without_spans(
    tmp_path: Path,
) -> None:
    """A run SIGKILLed inside its third step is recovered by a new process: its run span
    joins the trace sealed in the run at its start, under the same creation span; the
    two steps the journal answers emit no span there, the two executed live one each."""
    (tmp_path / "otel_crash.py").write_text(CRASH_WORKLOAD)
    db = str(tmp_path / "j.db")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    env.pop(ENV_VAR, None)

    def child(mode: str, out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "otel_crash.py", mode, db, str(out)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    first = child("start", tmp_path / "first.jsonl")
    assert first.returncode == -9, first.stderr
    killed = [json.loads(line) for line in (tmp_path / "first.jsonl").read_text().splitlines()]
    second = child("recover", tmp_path / "second.json")
    assert second.returncode == 0, second.stderr
    after = json.loads((tmp_path / "second.json").read_text())
    assert after["result"] == 60

    (start,) = [s for s in killed if s["name"] == "durable.start otel_crash:job"]
    before_steps = [s["attrs"]["durable.step.index"] for s in killed
                    if s["name"] == "durable.step work"]  # fmt: skip
    assert before_steps == [1, 2]  # the third was in flight: its span never ended
    assert not [s for s in killed if s["name"].startswith("durable.run")]

    spans = after["spans"]
    (run,) = [s for s in spans if s["name"] == "durable.run otel_crash:job"]
    assert run["trace"] == start["trace"] and run["parent"] == start["span"]
    assert run["attrs"]["durable.run.resumed"] is True
    assert run["attrs"]["durable.run.status"] == "completed"
    live = sorted(s["attrs"]["durable.step.index"] for s in spans
                  if s["name"] == "durable.step work")  # fmt: skip
    assert live == [3, 4]  # steps 1 and 2 replayed from the journal: no span
    assert all(s["trace"] == start["trace"] for s in spans)
    assert all(s["parent"] == run["span"] for s in spans if s["name"] == "durable.step work")
    assert after["steps"] == [["work", 2]]
