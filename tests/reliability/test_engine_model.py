"""Stateful property test: random sequences of engine operations against a plain model.

A hypothesis ``RuleBasedStateMachine`` drives one journal file through: starting runs
(some crash after a step, or inside one after its side effect, by raising a
``BaseException`` as a dying process would, writing nothing), recovering them with a
new Engine on the same file, restarting a crashed run by its id, writing snapshots at
any seq, compacting finished runs, forking at any step checkpoint with a state edit,
and reading the state at every checkpoint (``state_at``) and the result of every run.

The model is a few dicts: for each run, the list of its checkpoints with the state
after each, its result once finished, and how many times each step body must have run.

Invariants: a finished run's result equals the model; ``state_at`` at every
checkpoint equals the model (or raises ``HorizonError`` where compaction removed it);
each step body ran exactly once, or twice when the crash came inside it after its
side effect (at-least-once at the crash boundary, never more).
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import LONG, fast_tempdir
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine import Context, Engine, RunFailed, current_context, durable, fork, state_at, step
from journal import HorizonError, RetentionPolicy, SnapshotPolicy

EXECUTIONS: Counter[tuple[str, int]] = Counter()
CRASH: dict[str, tuple[str, int]] = {}
RULES: Counter[str] = Counter()
"""How often each rule ran (over all examples): every rule must have had its turn."""


class Crash(BaseException):
    """The process dies here: not an Exception, so the engine records nothing."""


def value(seed: int, i: int) -> int:
    return seed * 100 + i


@step
def add(i: int, seed: int) -> int:
    """Add step i's value to the state (journaled with the step's completion)."""
    ctx = current_context()
    EXECUTIONS[(ctx.run_id, i)] += 1
    v = value(seed, i)
    ctx.state["total"] = ctx.state.get("total", 0) + v
    ctx.state[f"v{i}"] = v
    if CRASH.get(ctx.run_id) == ("inside", i):
        del CRASH[ctx.run_id]
        raise Crash(f"inside step {i}")
    return v


@durable(name="reliability:model_job")
def model_job(ctx: Context, n: int, seed: int) -> int:
    """``n`` steps; the result is the state's total."""
    for i in range(n):
        add(i, seed)
        if CRASH.get(ctx.run_id) == ("after", i):
            del CRASH[ctx.run_id]
            raise Crash(f"after step {i}")
    return int(ctx.state.get("total", 0))


@dataclass
class ModelRun:
    """What the model says about one run."""

    run_id: str
    n: int
    seed: int
    checkpoints: list[tuple[str, dict[str, Any]]]
    """(kind, state after it) per checkpoint, numbered from 1; complete once finished."""
    lineage: list[str]
    segments: list[str] = field(default_factory=list)
    """The run whose entries hold each checkpoint (a fork shares its source's)."""
    chain: list[str] = field(default_factory=list)
    """The runs whose entries it reads, root first (a fork reads its source's up to the
    fork point); empty for a run that is not a fork."""
    finished: bool = False
    result: int | None = None
    pending_steps: list[int] = field(default_factory=list)
    """Steps a crashed run has still to run live."""

    def segment(self, number: int) -> str:
        """The run whose entries hold checkpoint ``number`` (1-based)."""
        return self.segments[number - 1] if number <= len(self.segments) else self.run_id


def states_for(seed: int, steps: range, start: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The step checkpoints of steps ``steps`` starting from state ``start``."""
    out = []
    state = dict(start)
    for i in steps:
        v = value(seed, i)
        state = {**state, "total": state.get("total", 0) + v, f"v{i}": v}
        out.append(("step", state))
    return out


class EngineMachine(RuleBasedStateMachine):
    """One journal file, many runs, crashes, recoveries, snapshots, compaction, forks."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = fast_tempdir("durable-model-")
        self.db = self.dir / "model.db"
        self.engine = Engine(self.db, lease_seconds=0, snapshots=SnapshotPolicy(every=5))
        self.runs: dict[str, ModelRun] = {}
        self.compacted: set[str] = set()
        self.expected_exec: Counter[tuple[str, int]] = Counter()
        self.counter = 0
        EXECUTIONS.clear()
        CRASH.clear()

    def teardown(self) -> None:
        try:
            for run in self.runs.values():  # the last word: every checkpoint of every run
                if run.finished:
                    self._check_states(run)
        finally:
            self.engine.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _pick(self, index: int, *, finished: bool | None = None) -> ModelRun | None:
        runs = [r for r in self.runs.values() if finished is None or r.finished == finished]
        return runs[index % len(runs)] if runs else None

    def _finish(self, run: ModelRun) -> None:
        """The run ran to its end: its model checkpoints are complete."""
        last = run.checkpoints[-1][1] if run.checkpoints else {}
        run.checkpoints.append(("completed", last))
        run.finished = True
        run.result = int(last.get("total", 0))

    def _journal_result(self, run_id: str) -> Any:
        j = self.engine.journal
        r = j.get_run(run_id)
        assert r.status == "completed", f"{run_id} is {r.status}: {r.error}"
        return j.decode(r.output, r.codec, where=run_id)

    # -- rules -----------------------------------------------------------------------

    @rule(
        n=st.integers(0, 6),
        seed=st.integers(1, 9),
        crash=st.one_of(
            st.none(),
            st.tuples(st.sampled_from(["after", "inside"]), st.integers(0, 5)),
        ),
    )
    def start(self, n: int, seed: int, crash: tuple[str, int] | None) -> None:
        """Start a run; maybe it dies after, or inside, one of its steps."""
        RULES["start"] += 1
        rid = self._new_id("r")
        if crash is not None and crash[1] >= n:
            crash = None
        run = ModelRun(rid, n, seed, [], [rid])
        self.runs[rid] = run
        for i in range(n):
            self.expected_exec[(rid, i)] += 1
        if crash is not None:
            CRASH[rid] = crash
            kind, k = crash
            if kind == "inside":
                self.expected_exec[(rid, k)] += 1  # ran, then died before its commit
            with pytest.raises(Crash):
                self.engine.call(model_job, (n, seed), {}, run_id=rid)
            done = k + 1 if kind == "after" else k
            run.checkpoints = states_for(seed, range(done), {})
            run.pending_steps = list(range(done, n))
            return
        assert self.engine.call(model_job, (n, seed), {}, run_id=rid) == sum(
            value(seed, i) for i in range(n)
        )
        run.checkpoints = states_for(seed, range(n), {})
        self._finish(run)

    def _complete_live(self, run: ModelRun) -> None:
        start = run.checkpoints[-1][1] if run.checkpoints else {}
        run.checkpoints += states_for(run.seed, range(*_span(run.pending_steps)), start)
        run.pending_steps = []
        self._finish(run)

    @precondition(lambda self: any(not r.finished for r in self.runs.values()))
    @rule()
    def recover(self) -> None:
        """A new Engine on the same file resumes every crashed run."""
        RULES["recover"] += 1
        unfinished = sorted(r.run_id for r in self.runs.values() if not r.finished)
        with Engine(self.db, lease_seconds=0) as other:
            report = other.recover(timeout=30)
        assert sorted(report.run_ids) == unfinished
        assert report.errors == {}
        for rid in unfinished:
            self._complete_live(self.runs[rid])

    @precondition(lambda self: any(not r.finished for r in self.runs.values()))
    @rule(index=st.integers(0, 100))
    def restart_by_id(self, index: int) -> None:
        """Starting a crashed run's id again resumes it here and returns its result."""
        RULES["restart_by_id"] += 1
        run = self._pick(index, finished=False)
        assert run is not None
        got = self.engine.call(model_job, (run.n, run.seed), {}, run_id=run.run_id)
        self._complete_live(run)
        assert got == run.result

    @precondition(lambda self: self.runs)
    @rule(index=st.integers(0, 100), where=st.floats(0, 1))
    def snapshot(self, index: int, where: float) -> None:
        """A snapshot at any seq changes nothing anyone can observe."""
        RULES["snapshot"] += 1
        run = self._pick(index)
        assert run is not None
        j = self.engine.journal
        r = j.get_run(run.run_id)
        if r.last_seq <= r.horizon:
            return
        seq = r.horizon + 1 + int(where * (r.last_seq - r.horizon - 1))
        j.write_snapshot(run.run_id, seq)

    @precondition(lambda self: any(r.finished for r in self.runs.values()))
    @rule(index=st.integers(0, 100), keep=st.integers(1, 3))
    def compact(self, index: int, keep: int) -> None:
        """Compacting a finished run keeps its result and final state."""
        RULES["compact"] += 1
        run = self._pick(index, finished=True)
        assert run is not None
        self.engine.journal.compact(run.run_id, RetentionPolicy(keep_snapshots=keep))
        if self.engine.journal.get_run(run.run_id).horizon:
            self.compacted.add(run.run_id)

    @precondition(lambda self: any(r.finished for r in self.runs.values()))
    @rule(index=st.integers(0, 100), at=st.integers(0, 100), total=st.integers(-50, 50))
    def fork_run(self, index: int, at: int, total: int) -> None:
        """Fork at a step checkpoint with ``total`` edited: a new run, sealed from its source."""
        RULES["fork_run"] += 1
        source = self._pick(index, finished=True)
        assert source is not None
        steps_at = [i for i, (kind, _) in enumerate(source.checkpoints, 1) if kind == "step"]
        if not steps_at:
            return
        number = steps_at[at % len(steps_at)]
        rid = self._new_id("f")
        if self._unnumbered(source, number):
            with pytest.raises(HorizonError):
                fork(
                    source.run_id,
                    at=number,
                    state={"total": total},
                    new_run_id=rid,
                    engine=self.engine,
                )
            assert self.engine.journal.find_run(rid) is None
            return
        source_before = self._recorded(source.run_id)
        handle = fork(
            source.run_id, at=number, state={"total": total}, new_run_id=rid, engine=self.engine
        )
        base = source.checkpoints[: number - 1]
        # The fork's run.forked checkpoint stands at its fork point's number, holding the
        # source's state there with the fork's edits: step N+1 of the fork is step N+1 of
        # its source.
        at_state = source.checkpoints[number - 1][1]
        # A source's own run.forked checkpoint stands for the step at its number.
        done = sum(kind in ("step", "forked") for kind, _ in source.checkpoints[:number])
        edited = {**at_state, "total": total}
        run = ModelRun(
            rid, source.n, source.seed, [*base, ("forked", edited)], [*source.lineage, rid]
        )
        run.segments = [*(source.segment(k) for k in range(1, number)), rid]
        held = (source.segment(k) for k in range(1, number + 1))
        run.chain = [*dict.fromkeys(held), rid]
        live = states_for(source.seed, range(done, source.n), edited)
        for i in range(done, source.n):
            self.expected_exec[(rid, i)] += 1
        run.checkpoints += live
        self.runs[rid] = run
        result = handle.result(timeout=30)
        last = live[-1][1] if live else edited
        run.checkpoints.append(("completed", last))
        run.finished, run.result = True, int(last["total"])
        assert result == run.result
        assert self._recorded(source.run_id) == source_before, "the fork wrote to its source"

    def _recorded(self, run_id: str) -> list[tuple[int, str, bytes | None]]:
        r = self.engine.journal.get_run(run_id)
        return [(e.seq, e.kind, e.payload) for e in self.engine.journal.read(run_id, r.horizon + 1)]

    @precondition(lambda self: any(r.finished for r in self.runs.values()))
    @rule(index=st.integers(0, 100))
    def time_travel(self, index: int) -> None:
        """state_at every checkpoint of a run equals the model's state there."""
        RULES["time_travel"] += 1
        run = self._pick(index, finished=True)
        assert run is not None
        self._check_states(run)

    def _unnumbered(self, run: ModelRun, number: int) -> bool:
        """True if checkpoint ``number`` of ``run`` can no longer be located by its step
        number: a run whose entries are counted to reach it was compacted (the engine
        refuses with HorizonError rather than answer with another step; see
        TestKnownBugs)."""
        chain = run.chain or [run.run_id]
        walked = chain[: chain.index(run.segment(number)) + 1]
        return any(segment in self.compacted for segment in walked)

    def _check_states(self, run: ModelRun) -> None:
        final = dict(state_at(run.run_id, engine=self.engine).values)
        assert final == run.checkpoints[-1][1], f"{run.run_id}: final state"
        try:
            assert dict(state_at(run.run_id, step=0, engine=self.engine).values) == {}
        except HorizonError:
            assert run.lineage[0] in self.compacted, f"{run.run_id} step 0: HorizonError"
        for number, (kind, expected) in enumerate(run.checkpoints, 1):
            if self._unnumbered(run, number):
                try:
                    state_at(run.run_id, step=number, engine=self.engine)
                except HorizonError:
                    continue
                horizons = {r: self.engine.journal.get_run(r).horizon for r in run.lineage}
                raise AssertionError(
                    f"{run.run_id} step {number}: no HorizonError though a segment up to "
                    f"{run.segment(number)} was compacted ({horizons}, {run.segments})"
                )
            got = dict(state_at(run.run_id, step=number, engine=self.engine).values)
            assert got == expected, f"{run.run_id} checkpoint {number} ({kind})"

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def results_match_the_model(self) -> None:
        """Every finished run's recorded result is the model's."""
        for run in self.runs.values():
            if run.finished:
                assert self._journal_result(run.run_id) == run.result, run.run_id
            else:
                assert self.engine.journal.get_run(run.run_id).status == "running"

    @invariant()
    def no_step_ran_more_than_the_model_allows(self) -> None:
        """Each step body ran exactly as often as the model says (once; twice if the
        crash came inside it): a completed step never runs again."""
        finished = {r.run_id for r in self.runs.values() if r.finished}
        for key, count in EXECUTIONS.items():
            assert count <= self.expected_exec[key], f"step {key} ran {count}x"
            if key[0] in finished:
                assert count == self.expected_exec[key], f"step {key} ran {count}x"


def _span(steps: list[int]) -> tuple[int, int]:
    return (steps[0], steps[-1] + 1) if steps else (0, 0)


EngineMachine.TestCase.settings = settings(
    max_examples=500 if LONG else 75,
    stateful_step_count=40 if LONG else 20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.slow  # 75 state-machine examples
class TestEngineModel(EngineMachine.TestCase):  # type: ignore[misc,valid-type]
    """Random operation sequences keep results, states and step counts equal to the model."""

    def runTest(self) -> None:
        """Run the machine, then check every rule had its turn."""
        RULES.clear()
        super().runTest()
        print(f"FIGURE engine-model: rules run {dict(sorted(RULES.items()))}")
        missing = {
            "start",
            "recover",
            "restart_by_id",
            "snapshot",
            "compact",
            "fork_run",
            "time_travel",
        } - set(RULES)
        assert not missing, f"rules never run: {missing}"


def _broken_factory() -> Any:
    raise ConnectionError("the resource is down")


@durable(name="reliability:needs_resource", resources={"db": _broken_factory})
def needs_resource(ctx: Context) -> int:
    return 1


class TestKnownBugs:
    """Regression tests for bugs this suite found (fixed)."""

    def test_state_at_an_early_step_after_partial_compaction(self, tmp_path: Path) -> None:
        """A step number below the horizon is refused, never answered with another step."""
        with Engine(tmp_path / "c.db", lease_seconds=0, snapshots=SnapshotPolicy(every=3)) as eng:
            eng.call(model_job, (6, 1), {}, run_id="src")
            expected = {k: dict(state_at("src", step=k, engine=eng).values) for k in range(1, 8)}
            # A fork keeps the source's entries up to its fork point: a partial compaction.
            fork("src", at=5, state={"total": 0}, new_run_id="fk", engine=eng).result(timeout=30)
            eng.journal.compact("src")
            horizon = eng.journal.get_run("src").horizon
            assert 0 < horizon < eng.journal.get_run("src").last_seq
            for k in range(1, 8):
                try:
                    got = dict(state_at("src", step=k, engine=eng).values)
                except HorizonError:
                    continue
                assert got == expected[k], f"state_at(step={k}) answered with another step"

    def test_a_failing_resource_factory_fails_the_run(self, tmp_path: Path) -> None:
        """start() of a run whose resource factory raises ends (failed), it does not hang."""
        with Engine(tmp_path / "r.db", lease_seconds=0.5) as eng:
            handle = eng.start(needs_resource, (), {}, run_id="res")
            with pytest.raises(RunFailed, match="ConnectionError: the resource is down"):
                handle.result(timeout=3)
            assert eng.journal.get_run("res").status == "failed"
