"""Long runs stay cheap: recovery streams the recorded calls instead of loading them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engine.recorded
import engine.runtime
from engine import Context, Engine, configure, durable, replay, step
from engine.hashing import args_hash
from engine.recorded import History
from journal import EntryKind, Journal

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
