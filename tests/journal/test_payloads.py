"""Entry payloads: each structured kind is built by one builder of ``journal.payloads``
and read back by its reader, whatever version wrote it.

The builders' output round-trips through the readers; the readers take every older
shape (literal ones below, and every entry of the stored fixtures); the engine writes
``run.failed`` in one shape from both execution models; and no engine module spells a
payload dict by hand for a kind that has a builder.
"""

from __future__ import annotations

import ast
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import Context, RunFailed, StartEvent, StopEvent, Workflow, configure, durable, step
from journal import EntryKind as K
from journal import Journal
from journal import payloads as P

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
RUN_FAILED_KEYS = {"type", "error", "step", "during", "traceback", "diverged"}

READERS: dict[str, Callable[[Any], Any]] = {
    K.RUN_STARTED: P.read_run_started,
    K.RUN_COMPLETED: P.read_continued_as,
    K.RUN_FAILED: P.read_run_failed,
    K.RUN_FORKED: P.read_run_forked,
    K.RUN_RESUMED: P.ResumeRecord.from_payload,
    K.STEP_COMPLETED: P.read_step_completed,
    K.STEP_FAILED: P.read_step_failed,
    K.TIMER_STARTED: P.read_timer_started,
    K.EVENT_EMITTED: P.read_event_delivery,
    K.EVENT_RECEIVED: P.read_event_delivery,
}


# -- builders round-trip through readers ---------------------------------------------------


def test_run_started_round_trips_and_keeps_its_shapes() -> None:
    """Only the keys given are written: a function run's payload has no ``timeout``
    (the reader tells it apart from a workflow's null timeout)."""
    assert P.run_started("me") == {"owner": "me"}
    assert P.read_run_started(P.run_started("me")) == P.RunStarted(owner="me")
    queued = P.run_started(None, queue="q", schedule="s", tick="2026-01-01T00:00:00")
    assert list(queued) == ["owner", "queue", "schedule", "tick"]
    assert P.read_run_started(queued) == P.RunStarted(
        queue="q", schedule="s", tick="2026-01-01T00:00:00"
    )
    wf = P.read_run_started(P.run_started("me", timeout=None))
    assert wf.has_timeout and wf.timeout is None
    assert P.read_run_started(P.run_started("me", timeout=2.5)).timeout == 2.5


def test_run_failed_has_one_shape_from_every_writer() -> None:
    """A body failure, a start failure and a workflow failure: the same keys."""
    exc = ValueError("boom")
    body = P.run_failed(exc, step="charge#2", traceback="x" * 9000, diverged=True)
    start = P.run_failed(exc, during="start")
    wf = P.run_failed(exc, step=None)
    assert set(body) == set(start) == set(wf) == RUN_FAILED_KEYS
    read = P.read_run_failed(body)
    assert read == P.RunFailed(
        type="ValueError", error="boom", step="charge#2", during=None,
        traceback="x" * P.TRACEBACK_LIMIT, diverged=True, names_step=True,
    )  # fmt: skip
    assert read.message == "ValueError: boom"
    assert P.read_run_failed(start).during == "start"
    assert not P.read_run_failed(start).names_step  # a start failure names no step
    assert P.read_run_failed(wf).names_step and P.read_run_failed(wf).step is None


def test_run_completed_run_forked_timer_round_trip() -> None:
    assert P.read_continued_as(P.run_completed_continued("r~1")) == "r~1"
    assert P.read_continued_as(None) is None  # a plain completion has no payload
    forked = P.run_forked("src", 7, 3, {"b": 1, "a": 2})
    assert forked == {"from": "src", "at_seq": 7, "at_step": 3, "edits": ["a", "b"]}
    assert P.read_run_forked(forked) == P.RunForked("src", 7, 3, ("a", "b"))
    assert P.read_timer_started(P.timer_started(10.5, 2)) == P.TimerStarted(10.5, 2.0)


def test_step_payloads_round_trip() -> None:
    done = P.step_completed({"x": 1}, 2, 100.0, 0.5)
    assert P.read_step_completed(done) == P.StepCompleted(
        result={"x": 1}, attempt=2, started=100.0, duration=0.5
    )
    wf = P.workflow_step_completed(1, 100.0, 0.25, "StartEvent", ["A", "B"], True, 3.0)
    assert "returned" not in wf
    read = P.read_step_completed(wf)
    assert (read.consumed, read.emitted, read.stopped, read.returned) == (
        "StartEvent", ("A", "B"), True, ...,
    )  # fmt: skip
    wf = P.workflow_step_completed(1, 100.0, 0.25, "StartEvent", [], True, 3.0, None)
    assert wf["returned"] is None and P.read_step_completed(wf).returned is None
    durable_failed = P.step_failed(3, TimeoutError("slow"), final=True, timeout=True)
    assert list(durable_failed) == ["attempt", "type", "error", "timeout", "final"]
    assert P.read_step_failed(durable_failed) == P.StepFailed(
        attempt=3, type="TimeoutError", error="slow", final=True, timeout=True
    )
    wf_failed = P.step_failed(1, KeyError("k"), final=True, handler="recover")
    assert list(wf_failed) == ["attempt", "type", "error", "final", "handler"]
    assert P.read_step_failed(wf_failed).handler == "recover"
    assert P.read_step_failed(wf_failed).message == "KeyError: 'k'"


def test_event_delivery_round_trips() -> None:
    assert P.event_delivery("s", "ev") == {"to": "s", "event": "ev"}
    assert P.event_delivery(None, "ev", {}) == {"to": None, "event": "ev"}
    spent = P.event_delivery("h", "ev", {"h": 1})
    assert P.read_event_delivery(spent) == P.EventDelivery("h", "ev", {"h": 1})


# -- older shapes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "expected"),
    [
        # @durable body failure before the step was named (the fixtures hold it)
        (
            {"type": "E", "error": "e", "traceback": "tb", "diverged": False},
            P.RunFailed(type="E", error="e", traceback="tb"),
        ),
        # @durable body failure naming its step
        (
            {"type": "E", "error": "e", "traceback": "tb", "diverged": True, "step": "s#1"},
            P.RunFailed(
                type="E", error="e", traceback="tb", diverged=True, step="s#1", names_step=True
            ),
        ),
        # a start failure
        (
            {"type": "E", "error": "e", "during": "start"},
            P.RunFailed(type="E", error="e", during="start"),
        ),
        # a workflow failure
        ({"type": "E", "error": "e", "step": None}, P.RunFailed("E", "e", names_step=True)),
        # not a record at all: nothing known, nothing raised
        (None, P.RunFailed()),
        ({"type": 3, "traceback": ["x"]}, P.RunFailed()),
    ],
)
def test_run_failed_reader_takes_every_older_shape(old: Any, expected: P.RunFailed) -> None:
    assert P.read_run_failed(old) == expected


def test_other_readers_take_missing_keys() -> None:
    assert P.read_step_failed({"attempt": 1, "type": "E", "error": "e", "final": True}) == (
        P.StepFailed(1, "E", "e", final=True)
    )
    assert P.read_run_started({}) == P.RunStarted()
    assert P.read_step_completed("not a dict") == P.StepCompleted()
    assert P.read_timer_started({"deadline": 1}) == P.TimerStarted(1.0, None)


@pytest.mark.parametrize("name", ["journal_v2.db", "journal_v3.db", "journal_v4.db"])
def test_every_fixture_entry_reads_through_its_kinds_reader(name: str, tmp_path: Path) -> None:
    """Every entry of every run of a stored journal, read through its kind's reader,
    gives back what its payload says (kinds and fields checked, not just no error)."""
    path = tmp_path / name
    shutil.copy(FIXTURES / name, path)
    read: dict[str, int] = {}
    with Journal(path) as j:
        for run in j.list_runs(limit=1000):
            for entry in j.read(run.run_id, run.horizon + 1):
                reader = READERS.get(entry.kind)
                if reader is None:
                    continue
                raw = j.decode_entry(entry, strict=False)
                got = reader(raw)
                read[entry.kind] = read.get(entry.kind, 0) + 1
                if entry.kind == K.RUN_FAILED:
                    assert (got.type, got.error) == (raw["type"], raw["error"])
                    assert got.traceback == raw["traceback"] and got.traceback
                    assert not got.names_step  # written before run.failed named its step
                elif entry.kind == K.RUN_STARTED:
                    assert got.owner == raw["owner"] and got.has_timeout == ("timeout" in raw)
                elif entry.kind == K.RUN_FORKED:
                    assert (got.source, got.at_seq, list(got.edits)) == (
                        raw["from"], raw["at_seq"], raw["edits"],
                    )  # fmt: skip
                elif entry.kind == K.STEP_COMPLETED and "result" in raw:
                    assert (got.result, got.attempt) == (raw["result"], raw["attempt"])
                elif entry.kind == K.STEP_COMPLETED:
                    assert got.emitted == tuple(raw["emitted"])
                elif entry.kind == K.TIMER_STARTED:
                    assert got.deadline == raw["deadline"]
                elif entry.kind == K.EVENT_EMITTED:
                    assert got.to == raw["to"]
    for kind in (K.RUN_STARTED, K.RUN_FAILED, K.RUN_FORKED, K.STEP_COMPLETED, K.EVENT_EMITTED):
        assert read.get(kind), (name, kind, read)


# -- what the engine writes ----------------------------------------------------------------


@step
def _declines(n: int) -> int:
    raise ValueError(f"card {n} declined")


@step
def _plus_one(n: int) -> int:
    return n + 1


@durable
def _charge(n: int) -> int:
    return _declines(n)


@durable
def _adds(n: int) -> int:
    return _plus_one(n)


class _Breaks(Workflow):
    @step
    async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
        raise KeyError("missing")


class _Fine(Workflow):
    @step
    async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=1)


def _no_database() -> Any:
    raise RuntimeError("no database today")


def test_the_engine_writes_run_failed_in_one_shape(db_path: Path) -> None:
    """A @durable body failure, a workflow failure and a start failure (a resource
    factory raised): the superset shape, all three (before: three shapes)."""
    eng = configure(db_path, lease_seconds=0)
    try:
        with pytest.raises(RunFailed, match="declined"):
            _charge.start(5, run_id="fn").result(timeout=30)
        with pytest.raises(RunFailed, match="missing"):
            _Breaks().run(run_id="wf").result(timeout=30)
        flow = _Fine(timeout=None, engine=eng, resources={"db": _no_database})
        with pytest.raises(RunFailed, match="no database today"):
            flow.run(run_id="start").result(timeout=30)
    finally:
        eng.close()
    with Journal(db_path) as j:
        read = {}
        for run_id in ("fn", "wf", "start"):
            failed = [e for e in j.read(run_id) if e.kind == K.RUN_FAILED]
            assert len(failed) == 1, run_id
            raw = j.decode_entry(failed[0])
            assert set(raw) == RUN_FAILED_KEYS, (run_id, raw)
            read[run_id] = P.read_run_failed(raw)
    assert read["fn"].names_step and read["fn"].step is not None and read["fn"].traceback
    assert read["fn"].type == "StepFailed" and read["fn"].during is None
    assert read["wf"].names_step and read["wf"].step == "only" and read["wf"].type == "StepFailed"
    assert read["start"].during == "start" and not read["start"].names_step
    assert read["start"].message == "RuntimeError: no database today"


def test_the_hot_path_writes_the_step_completed_builders_shape(db_path: Path) -> None:
    """The @durable step completion spells its dict inline (no call per step): it
    stays the shape ``step_completed`` builds."""
    eng = configure(db_path, lease_seconds=0)
    try:
        before = time.time()
        assert _adds.start(1, run_id="ok").result(timeout=30) == 2
    finally:
        eng.close()
    with Journal(db_path) as j:
        done = [j.decode_entry(e) for e in j.read("ok") if e.kind == K.STEP_COMPLETED]
    assert len(done) == 1
    assert list(done[0]) == list(P.step_completed(2, 1, 0.0, 0.0))
    read = P.read_step_completed(done[0])
    assert read.result == 2 and read.attempt == 1 and (read.started or 0) >= before - 1


# -- no payload spelled by hand ------------------------------------------------------------

BUILT = {
    "RUN_STARTED", "RUN_FAILED", "RUN_COMPLETED", "RUN_FORKED", "RUN_RESUMED",
    "STEP_COMPLETED", "STEP_FAILED", "TIMER_STARTED", "EVENT_EMITTED", "EVENT_RECEIVED",
}  # fmt: skip


def _hand_built(tree: ast.AST) -> list[tuple[int, str]]:
    """``.entry(K.X, {...})`` calls for a kind with a builder, the dict given literally
    or through a name bound to a dict literal in the same function."""
    found: set[tuple[int, str]] = set()  # a call inside a function is walked twice
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
            continue
        literals = {
            t.id
            for node in ast.walk(fn)
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict)
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(fn):
            if not (
                (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("entry", "NewEntry")
                )
                or (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "NewEntry"
                )
            ):
                continue
            if len(node.args) < 2:
                continue
            first, value = node.args[0], node.args[1]
            # a kind chosen by a conditional expression: either of its kinds
            kinds = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            for kind in (k.attr for k in kinds if isinstance(k, ast.Attribute)):
                if kind in BUILT and (
                    isinstance(value, ast.Dict)
                    or (isinstance(value, ast.Name) and value.id in literals)
                ):
                    found.add((node.lineno, kind))
    return sorted(found)


def test_the_scan_finds_a_hand_built_payload() -> None:
    """The scan is not vacuous: it flags both spellings."""
    src = (
        "def f(j, exc):\n"
        "    j.entry(K.RUN_FAILED, {'type': 'E'}, codec=c)\n"
        "    info = {'to': 's', 'event': e}\n"
        "    j.entry(K.EVENT_EMITTED, info)\n"
        "    j.entry(K.STATE_SET, {'any': 'value'})\n"
        "    j.entry(K.STATE_SET if x else K.EVENT_RECEIVED, {'to': None})\n"
    )
    assert _hand_built(ast.parse(src)) == [
        (2, "RUN_FAILED"), (4, "EVENT_EMITTED"), (6, "EVENT_RECEIVED"),
    ]  # fmt: skip


def test_no_engine_module_builds_a_payload_by_hand() -> None:
    """Every payload of a kind with a builder is built by it, except the @durable step
    completion on the hot path (``engine/execution.py``, ``_completed``: held to the
    builder's shape by the test above)."""
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if (
                isinstance(fn, ast.FunctionDef)
                and fn.name == "_completed"
                and (path.name == "execution.py")
            ):
                fn.body = []  # the allowed one
        offenders += [(str(path.relative_to(ROOT)), *hit) for hit in _hand_built(tree)]
    assert offenders == []
