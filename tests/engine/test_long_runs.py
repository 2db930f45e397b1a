"""Long runs stay cheap: recovery streams the recorded calls instead of loading them."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _children import PROCS
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine.recorded
import engine.runtime
from engine import Context, Engine, configure, durable, replay, step
from engine.cli import cli
from engine.hashing import args_hash
from engine.recorded import History
from journal import EntryKind, Journal, SnapshotPolicy
from journal.pg_cluster import wait_for_sessions_to_end

K = EntryKind
RECORDED = 20_000


@pytest.fixture(autouse=True)
def fresh(db_path: Path) -> Iterator[Engine]:
    eng = configure(db_path, lease_seconds=0)
    yield eng
    eng.close()


@step
def add(total: int, i: int) -> int:
    return total + i


@durable(name="tests.long_runs:counter")
def counter(ctx: Context[Any], n: int) -> int:
    total = 0
    for i in range(n):
        total = add(total, i)
        if (i + 1) % 100 == 0:
            ctx.state["done"] = i + 1
    return total


def write_crashed_run(db_path: Path, recorded: int, total_steps: int) -> None:
    """The journal ``counter`` leaves after ``recorded`` steps and a crash, written directly."""
    with Journal(db_path, durability="process") as j:
        j.create_run("long", name=counter.name, kind="function", status="running",
                     input={"args": [total_steps], "kwargs": {}},
                     entries=[j.entry(K.RUN_STARTED, {"owner": "gone"})])  # fmt: skip
        seq, total, batch = 1, 0, []
        for i in range(recorded):
            h = args_hash((total, i), {})
            total += i
            payload = {"result": total, "attempt": 1, "started": 0.0, "duration": 0.0}
            batch.append(j.entry(K.STEP_COMPLETED, payload, step=f"add#{i + 1}", key=h))
            if (i + 1) % 100 == 0:
                batch.append(j.entry(K.STATE_SET, i + 1, key="done"))
        j.append("long", batch, expected_seq=seq)


class TestStreamingRecovery:
    def test_recovery_holds_a_window_of_calls_not_the_run(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Recovering a 20,000-step run reads every entry, but never holds more than a
        handful of recorded calls at once: loading the run would hold all of them."""
        histories: list[History] = []
        load = engine.runtime.load_history

        def spy(journal: Journal, run: Any) -> History:
            histories.append(load(journal, run))
            return histories[-1]

        monkeypatch.setattr(engine.runtime, "load_history", spy)
        n = RECORDED + 5
        write_crashed_run(db_path, RECORDED, n)
        with Engine(db_path) as other:
            report = other.recover(timeout=60)
            assert report.run_ids == ["long"]
            assert other.handle("long").result(timeout=60) == n * (n - 1) // 2
            assert other.journal.state_at("long").values == {"done": RECORDED}
            assert other.journal.get_run("long").status == "completed"
        (history,) = histories
        assert history.entries_read >= RECORDED + RECORDED // 100
        assert history.peak_buffered <= 4, history.peak_buffered

    def test_divergence_deep_in_a_long_run_is_still_found(self, db_path: Path) -> None:
        write_crashed_run(db_path, 2000, 2005)
        with Journal(db_path) as j:  # the code now passes other arguments at step 1500
            j.append("long", [j.entry(K.RUN_COMPLETED)], expected_seq=None, status="completed")
        report = replay("long")
        assert report.ok, report.error

        @durable(name="tests.long_runs:counter")
        def changed(ctx: Context[Any], n: int) -> int:
            total = 0
            for i in range(n):
                total = add(total, i if i != 1500 else -1)
                if (i + 1) % 100 == 0:
                    ctx.state["done"] = i + 1
            return total

        try:
            report = replay("long")
            assert not report.ok
            assert report.divergence is not None and "add#1501" in str(report.divergence["got"])
        finally:
            engine.registry.register(counter.name, counter)


@step
async def work(x: int) -> int:
    await asyncio.sleep(0.001 * (x % 3))  # completions land out of call order
    return x * 10


@durable(name="tests.long_runs:child")
def child_fn(x: int) -> int:
    return x + 1


@durable(name="tests.long_runs:mixed")
async def mixed(ctx: Context[Any], rounds: int) -> dict[str, Any]:
    out = []
    for r in range(rounds):
        got = await asyncio.gather(*(work(r * 10 + k) for k in range(4)))
        ctx.state[f"r{r}"] = sum(got)
        await ctx.sleep(0)
        ctx.state["last"] = str(ctx.now())
        if r % 2 == 0:
            out.append(child_fn(r))
    return {"out": out, "n": len(out)}


class TestLookahead:
    @pytest.mark.parametrize("lookahead", [0, 1, engine.recorded.LOOKAHEAD])
    def test_replay_is_the_same_whatever_the_lookahead(
        self, monkeypatch: pytest.MonkeyPatch, lookahead: int, fresh: Engine
    ) -> None:
        """Timers fired and body mutations found past the lookahead (by a scan that
        keeps only what it seeks) replay exactly as when everything is buffered."""
        result = fresh.acall(mixed, (6,), {}, run_id="mixed")
        result = asyncio.run(result) if asyncio.iscoroutine(result) else result
        monkeypatch.setattr(engine.recorded, "LOOKAHEAD", lookahead)
        scans = []
        scan = History._scan

        def counted(self: History, after: Any) -> Any:
            scans.append(after)
            return scan(self, after)

        monkeypatch.setattr(History, "_scan", counted)
        report = replay("mixed")
        if lookahead == 0:  # every body mutation and timer was found by a scan of its own
            assert len(scans) > 1 + 2 * 6
        assert report.ok, report.error
        assert report.calls_replayed == 24  # the steps
        assert report.state == fresh.journal.state_at("mixed").values
        assert result == {"out": [1, 3, 5], "n": 3}


# -- continue_as_new -------------------------------------------------------------------

CHILD = PROCS / "continue_child.py"
CHAIN_TOTAL, PER_RUN = 20, 5
CHAIN = ["c", "c~1", "c~2", "c~3"]


@step
def square(i: int) -> int:
    return i * i


@durable(name="tests.long_runs:looper")
def looper(ctx: Context[Any], start: int, acc: int) -> int:
    for i in range(start, min(start + PER_RUN, CHAIN_TOTAL)):
        acc += square(i)
        ctx.state["last"] = i
    if start + PER_RUN < CHAIN_TOTAL:
        ctx.continue_as_new(start + PER_RUN, acc)
    return acc


@durable(name="tests.long_runs:alooper")
async def alooper(ctx: Context[Any], start: int, acc: int) -> int:
    for i in range(start, min(start + PER_RUN, CHAIN_TOTAL)):
        acc += await asquare(i)
        ctx.state["last"] = i
    if start + PER_RUN < CHAIN_TOTAL:
        ctx.continue_as_new(start + PER_RUN, acc)
    return acc


@step
async def asquare(i: int) -> int:
    return i * i


def check_chain(location: str) -> None:
    """``c`` continued as ``c~1``, ``c~2``, ``c~3``: each completed, linked both ways,
    with its own short journal, and only the last holds the result."""
    with Journal(location) as j:
        runs = [j.get_run(r) for r in CHAIN]
        assert [r.status for r in runs] == ["completed"] * 4
        assert sorted(r.run_id for r in j.list_runs(limit=None)) == CHAIN
        for i, run in enumerate(runs):
            last = j.last_entry(run.run_id)
            assert last is not None and last.kind == K.RUN_COMPLETED
            if i < 3:
                assert run.output is None
                assert j.decode_entry(last) == {"continued_as": CHAIN[i + 1]}
            if i > 0:
                assert run.meta["continued_from"] == CHAIN[i - 1]
                assert run.meta["generation"] == i
                assert run.meta["continued_root"] == "c"
            assert run.last_seq <= 2 * PER_RUN + 3  # its own steps only, never the chain's
            assert j.state_at(run.run_id).values == {"last": min(5 * i + 4, CHAIN_TOTAL - 1)}


class TestContinueAsNew:
    def test_a_chain_returns_the_last_runs_result(self, fresh: Engine, db_path: Path) -> None:
        expected = sum(i * i for i in range(CHAIN_TOTAL))
        assert looper.run(0, 0, run_id="c") == expected
        check_chain(str(db_path))
        assert fresh.handle("c").result() == expected  # followed through the chain
        assert fresh.handle("c~2").result() == expected
        report = replay("c~1")
        assert report.ok, report.error
        assert report.stopped == "end of run (continued as new)"

    def test_a_chain_keeps_its_tags(self, fresh: Engine) -> None:
        fresh.start(looper, (0, 0), {}, run_id="t", tags={"customer": "acme"}).result()
        chain = [r.run_id for r in fresh.journal.list_runs(tags={"customer": "acme"})]
        assert chain[0] == "t" and len(chain) > 1
        assert chain[1:] == [f"t~{n}" for n in range(1, len(chain))]

    def test_lineage_shows_in_show_and_history(self, db_path: Path) -> None:
        looper.run(0, 0, run_id="c")
        runner = CliRunner()
        shown = runner.invoke(cli, ["--db", str(db_path), "show", "c~1"])
        assert shown.exit_code == 0, shown.output
        assert "continues     c (continue_as_new)" in shown.output
        assert "continued as  c~2" in shown.output
        doc = json.loads(runner.invoke(cli, ["--db", str(db_path), "show", "c~3", "--json"]).output)
        assert (doc["continued_from"], doc["continued_as"], doc["output"]) == ("c~2", None, 2470)
        history = runner.invoke(cli, ["--db", str(db_path), "history", "c~1"])
        assert history.exit_code == 0, history.output
        assert "(continues c, which ended with continue_as_new)" in history.output
        assert "continued as c~2 (continue_as_new)" in history.output

    def test_an_async_chain(self, fresh: Engine, db_path: Path) -> None:
        expected = sum(i * i for i in range(CHAIN_TOTAL))
        assert asyncio.run(alooper.run(0, 0, run_id="c")) == expected
        check_chain(str(db_path))

    def test_start_and_wait_follow_the_chain(self, fresh: Engine) -> None:
        handle = looper.start(0, 0, run_id="c")
        assert handle.result(timeout=30) == sum(i * i for i in range(CHAIN_TOTAL))

    def test_inside_a_step_it_is_refused(self, fresh: Engine) -> None:
        @step
        def bad(ctx: Context[Any]) -> None:
            ctx.continue_as_new(1)

        @durable(name="tests.long_runs:bad")
        def body(ctx: Context[Any]) -> None:
            bad(ctx)

        with pytest.raises(Exception, match="continue_as_new"):
            body.run(run_id="bad")
        assert fresh.journal.get_run("bad").status == "failed"

    @pytest.mark.parametrize(
        "kill_at",
        [
            pytest.param(k, marks=[] if k == "inside" else [pytest.mark.slow])
            for k in ("before", "inside", "after")
        ],
    )
    def test_sigkill_at_the_handover_recovers_the_chain(
        self, journal_location: str, tmp_path: Path, kill_at: str
    ) -> None:
        """Killed right before, during or right after the commit that hands ``c~1`` over
        to ``c~2``: either both happened or neither, and recovery finishes the chain with
        every step run once."""
        log = tmp_path / "steps.log"
        app = f"continue-{uuid.uuid4().hex[:12]}"
        env = {**os.environ, "CONTINUE_LOG": str(log), "PGAPPNAME": app}
        run = subprocess.run(
            [sys.executable, str(CHILD), "run", journal_location, kill_at, "2"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert run.returncode == -signal.SIGKILL, (run.returncode, run.stdout, run.stderr)
        if journal_location.startswith("postgresql://"):
            wait_for_sessions_to_end(journal_location, app)
        with Journal(journal_location) as j:
            first = j.get_run("c~1")
            handed_over = j.find_run("c~2") is not None
            assert first.status == ("completed" if handed_over else "running")
            assert handed_over == (kill_at == "after")
        rec = subprocess.run(
            [sys.executable, str(CHILD), "recover", journal_location],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert rec.returncode == 0, rec.stderr
        out = json.loads(rec.stdout.strip().splitlines()[-1])
        assert out["result"] == sum(i * i for i in range(CHAIN_TOTAL))
        lines = log.read_text().split()
        ran = [int(i) for i in lines[1::2]]
        assert sorted(ran) == list(range(CHAIN_TOTAL)), "a step ran twice or never"
        by_run = dict(zip(lines[1::2], lines[0::2], strict=True))
        assert {by_run[str(i)] for i in range(10, 15)} == {"c~2"}
        check_chain(journal_location)


# -- snapshots chosen by size ----------------------------------------------------------

BIG = random.Random(7).randbytes(100_000).hex()  # 200 KB that compression cannot shrink away


def _snapshot_sizes(location: str, policy: SnapshotPolicy, mutations: int) -> tuple[list[int], Any]:
    with Journal(location, durability="process", snapshots=policy) as j:
        run_id = f"big-{uuid.uuid4().hex[:8]}"
        j.create_run(run_id, name="f", status="running")
        seq = j.append(run_id, [j.entry(K.STATE_SET, BIG, key="big")], expected_seq=0)
        for i in range(mutations):
            seq = j.append(run_id, [j.entry(K.STATE_SET, i, key="i")], expected_seq=seq)
        before = j.entries_read
        state = j.state_at(run_id)
        assert j.entries_read - before <= max(policy.every, 3000)
        return [s.size for s in j.snapshots(run_id)], state.values


class TestSnapshotsBySize:
    def test_a_large_state_is_not_rewritten_every_n_entries(self, journal_location: str) -> None:
        """200 KB of state, 3,000 one-entry mutations, ``every=50``: counting entries
        rewrites the state 60 times; weighing the tail against it, about once."""
        counted, by_count = _snapshot_sizes(
            journal_location, SnapshotPolicy(every=50, by_size=False), 3000
        )
        weighed, by_size = _snapshot_sizes(journal_location, SnapshotPolicy(every=50), 3000)
        assert by_count == by_size == {"big": BIG, "i": 2999}
        one = weighed[0]
        assert one > 50_000  # the large state, as stored
        assert len(counted) == 60 and sum(counted) >= 59 * one
        assert len(weighed) <= 3, weighed
        assert sum(weighed) * 10 < sum(counted)

    def test_a_small_state_is_still_snapshotted_every_n(self, db_path: Path) -> None:
        with Journal(db_path, durability="process", snapshots=SnapshotPolicy(every=10)) as j:
            j.create_run("small", name="f", status="running")
            seq = 0
            for i in range(100):
                seq = j.append("small", [j.entry(K.STATE_SET, i, key="k")], expected_seq=seq)
            assert [s.seq for s in j.snapshots("small")] == list(range(10, 101, 10))

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        ops=st.lists(
            st.tuples(
                st.sampled_from(["set", "del", "append"]),
                st.sampled_from(["a", "b", "c"]),
                st.integers(0, 3000),
            ),
            min_size=1,
            max_size=60,
        ),
        batches=st.lists(st.integers(1, 4), min_size=1, max_size=60),
        every=st.integers(1, 6),
        reopen_at=st.integers(0, 60),
    )
    def test_rebuilt_state_equals_the_uninterrupted_fold(
        self,
        journal_location: str,
        ops: list[tuple[str, str, int]],
        batches: list[int],
        every: int,
        reopen_at: int,
    ) -> None:
        """Whatever snapshots the sizes chose (and a restart mid-way, which measures the
        tail again from the journal), the state at every seq is the plain fold."""
        run_id = f"p-{uuid.uuid4().hex[:8]}"
        expected: list[dict[str, Any]] = [{}]
        values: dict[str, Any] = {}
        entries = []
        for n, (op, key, size) in enumerate(ops):
            if op == "set":
                values[key] = f"{n}:" + "v" * size
                entries.append((K.STATE_SET, key, values[key]))
            elif op == "append" and isinstance(values.get(key), list):
                values[key] = [*values[key], size]
                entries.append((K.STATE_APPENDED, key, [size]))
            elif op == "append":
                values[key] = [size]
                entries.append((K.STATE_SET, key, [size]))
            elif key in values:
                del values[key]
                entries.append((K.STATE_DELETED, key, None))
            else:
                continue
            expected.append(dict(values))
        policy = SnapshotPolicy(every=every)
        j = Journal(journal_location, durability="process", snapshots=policy)
        try:
            j.create_run(run_id, name="f", status="running")
            seq, b = 0, 0
            while seq < len(entries):
                if seq >= reopen_at >= 0:
                    j.close()
                    j = Journal(journal_location, durability="process", snapshots=policy)
                    reopen_at = -1
                size = batches[b % len(batches)]
                b += 1
                chunk = [
                    j.entry(kind, *(() if kind == K.STATE_DELETED else (v,)), key=key)
                    for kind, key, v in entries[seq : seq + size]
                ]
                seq = j.append(run_id, chunk, expected_seq=seq)
            for at in range(len(entries) + 1):
                assert j.state_at(run_id, at).values == expected[at], at
        finally:
            j.close()
