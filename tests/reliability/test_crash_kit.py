"""The crash-testing kit for users (``engine.testing``) and its pytest plugin.

``check_crash_safety`` runs a target uninterrupted, again, then crashed after each of
its commits in turn and recovered by a fresh engine. It must pass our own workloads
(the demo's 8-step order pipeline, the SIGKILL matrix's sync and async workloads, a
fan-out workflow) and catch deliberately unsafe ones: a side effect in the body,
outside any step, that feeds the result; one that does not (caught by the
``side_effects`` probe); and a body that reads the clock instead of ``ctx.now()``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engine.runtime
from engine import Context, Event, StartEvent, StopEvent, Workflow, durable, step
from engine.testing import (
    CrashReport,
    CrashSafetyError,
    SimulatedCrash,
    check_crash_safety,
)
from journal import PickleSerializer, SerializationError

REPO = Path(__file__).resolve().parents[2]
PROCS = REPO / "tests" / "_procs"


@step
def double(i: int) -> int:
    return 2 * i


BODY: dict[str, Any] = {"calls": 0, "sent": []}


def reset_body() -> None:
    BODY["calls"] = 0
    BODY["sent"] = []


@durable(name="reliability:unsafe_counter")
def unsafe_counter(ctx: Context, n: int) -> dict[str, int]:
    """UNSAFE: counts loop turns in a global, outside any step, and returns the count."""
    total = 0
    for i in range(n):
        BODY["calls"] += 1
        total += double(i)
        ctx.state["total"] = total
    return {"total": total, "turns": BODY["calls"]}


@durable(name="reliability:unsafe_mailer")
def unsafe_mailer(ctx: Context, n: int) -> int:
    """UNSAFE: "sends" a mail from the body (not a step); the result does not show it."""
    total = 0
    for i in range(n):
        BODY["sent"].append(i)
        total += double(i)
    return total


@durable(name="reliability:unsafe_clock")
def unsafe_clock(ctx: Context) -> float:
    """UNSAFE: reads the wall clock in the body instead of ctx.now()."""
    double(1)
    return time.time()


@durable(name="reliability:safe_counter")
def safe_counter(ctx: Context, n: int) -> dict[str, int]:
    """The safe twin of unsafe_counter: the count lives in the journaled state."""
    total = 0
    for i in range(n):
        ctx.state["turns"] = ctx.state.get("turns", 0) + 1
        total += double(i)
    return {"total": total, "turns": ctx.state["turns"]}


KEY = b"reliability-test-key"


@durable(name="reliability:signed_sum", codec=PickleSerializer(hmac_key=KEY))
def signed_sum(ctx: Context, n: int) -> int:
    """Journaled with the signed pickle codec."""
    return sum(double(i) for i in range(n))


class Item(Event):
    i: int


class Squared(Event):
    i: int
    v: int


class SquareAll(Workflow):
    """Fan out n items to 2 workers, square them, join: a workflow crash-check target."""

    @step
    async def split(self, ctx: Context, ev: StartEvent) -> Item | None:
        await ctx.store.set("n", ev.n)
        for i in range(ev.n):
            ctx.send_event(Item(i=i))
        return None

    @step(num_workers=2)
    async def square(self, ctx: Context, ev: Item) -> Squared:
        await ctx.store.set(f"sq{ev.i}", ev.i * ev.i)
        return Squared(i=ev.i, v=ev.i * ev.i)

    @step
    async def join(self, ctx: Context, ev: Squared) -> StopEvent | None:
        got = ctx.collect_events(ev, [Squared] * await ctx.store.get("n"))
        if got is None:
            return None
        return StopEvent(result=sorted(e.v for e in got))


@pytest.fixture
def procs_workload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The SIGKILL matrix's workload module (tests/_procs), its side-effect log in tmp."""
    monkeypatch.syspath_prepend(str(PROCS))
    monkeypatch.setenv("ENGINE_CRASH_LOG", str(tmp_path / "exec.log"))
    for name in ("ENGINE_CRASH_AT", "ENGINE_CRASH_ANNOUNCE"):
        monkeypatch.delenv(name, raising=False)
    import engine_crash_workload  # type: ignore[import-not-found]

    yield engine_crash_workload


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def figure(name: str, report: CrashReport) -> None:
    failed = sum(not t.ok for t in report.trials)
    print(
        f"FIGURE crash-kit {name}: {len(report.trials)} crash points, "
        f"{len(report.trials) - failed} recovered identically; ok={report.ok}"
    )


class TestSafeWorkloads:
    """Our own workloads recover identically from a crash after every commit."""

    def test_demo_order_pipeline(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The demo's 8-step pipeline, with its side-effect log as the probe."""
        from engine._demo_workload import ORDER, order_pipeline

        log = tmp_path / "demo.log"
        monkeypatch.setenv("DURABLE_DEMO_LOG", str(log))
        monkeypatch.setenv("DURABLE_DEMO_DELAY", "0")
        report = check_crash_safety(
            order_pipeline, ORDER, db_dir=tmp_path / "kit", side_effects=lambda: lines(log)
        )
        figure("demo order pipeline", report)
        report.assert_ok()
        assert report.baseline.status == "completed"
        assert report.baseline.effects == 8  # one line per step
        assert len(report.trials) >= 9  # the run's creation, 8 step commits, its end
        assert all(t.crashed for t in report.trials)
        assert any(
            t.label.startswith("step.completed") and "charge_card" in t.label for t in report.trials
        )

    def test_sigkill_matrix_sync_workload(self, procs_workload: Any, tmp_path: Path) -> None:
        """tests/_procs' sync crash_job (10 steps with state mutations inside and after)."""
        report = check_crash_safety(
            procs_workload.crash_job,
            10,
            db_dir=tmp_path / "kit",
            side_effects=lambda: lines(tmp_path / "exec.log"),
        )
        figure("sigkill-matrix sync crash_job(10)", report)
        report.assert_ok()
        assert report.baseline.result == {
            "n": 10,
            "total": sum(procs_workload.value(i) for i in range(10)),
        }
        assert sum(report.baseline.steps.values()) == 10

    def test_sigkill_matrix_async_workload_with_gather(
        self, procs_workload: Any, tmp_path: Path
    ) -> None:
        """tests/_procs' async_crash_job (16 steps, 5 of them in one gather)."""
        report = check_crash_safety(procs_workload.async_crash_job, 16, db_dir=tmp_path / "kit")
        figure("sigkill-matrix async_crash_job(16)", report)
        report.assert_ok()
        assert sum(report.baseline.steps.values()) == 16

    def test_fan_out_workflow(self, tmp_path: Path) -> None:
        """A Workflow class with parallel workers and a join."""
        report = check_crash_safety(SquareAll, db_dir=tmp_path / "kit", n=4)
        figure("fan-out workflow", report)
        report.assert_ok()
        assert report.baseline.result == [0, 1, 4, 9]
        assert report.baseline.state == {"n": 4, "sq0": 0, "sq1": 1, "sq2": 4, "sq3": 9}

    def test_safe_twin_of_the_unsafe_counter(self, tmp_path: Path) -> None:
        """Keeping the count in ctx.state instead of a global makes it crash-safe."""
        report = check_crash_safety(safe_counter, 4, db_dir=tmp_path / "kit")
        report.assert_ok()
        assert report.baseline.result == {"total": 12, "turns": 4}


class TestUnsafeWorkloads:
    """Work outside any step is caught, with the first crash point and a diff."""

    def test_global_counter_feeding_the_result(self, tmp_path: Path) -> None:
        """Reset between runs, it is repeatable, and the first step's crash exposes it."""
        report = check_crash_safety(unsafe_counter, 4, db_dir=tmp_path / "kit", reset=reset_body)
        figure("unsafe global counter", report)
        assert report.repeatable
        assert not report.ok
        first = report.first_failure
        assert first is not None
        assert first.crash_after == 2 and first.label == "step.completed double#1"
        assert "result.turns: 4 -> 5" in first.differences
        assert report.trials[0].ok  # killed at its creation, nothing ran twice
        text = report.render()
        assert "FIRST FAILURE: crash after commit 2 (step.completed double#1)" in text
        with pytest.raises(CrashSafetyError, match=r"result\.turns: 4 -> 5"):
            report.assert_ok()

    def test_global_counter_without_reset_is_not_repeatable(self, tmp_path: Path) -> None:
        """Without a reset, a second uninterrupted run already differs: reported first."""
        reset_body()
        report = check_crash_safety(unsafe_counter, 3, db_dir=tmp_path / "kit")
        assert not report.repeatable and not report.ok
        assert report.repeat_differences == ["result.turns: 3 -> 6"]
        assert report.render().splitlines()[1].startswith("NOT REPEATABLE")

    def test_side_effect_that_does_not_show_in_the_result(self, tmp_path: Path) -> None:
        """Results match, but the side_effects probe sees the mails sent twice."""
        report = check_crash_safety(
            unsafe_mailer,
            3,
            db_dir=tmp_path / "kit",
            reset=reset_body,
            side_effects=lambda: len(BODY["sent"]),
        )
        assert not report.ok
        first = report.first_failure
        assert first is not None
        assert first.differences == ["effects: 3 -> 4"]
        assert all(t.outcome.result == report.baseline.result for t in report.trials)
        without_probe = check_crash_safety(
            unsafe_mailer, 3, db_dir=tmp_path / "kit2", reset=reset_body
        )
        assert without_probe.ok  # invisible to result/state comparison: why the probe exists

    def test_wall_clock_in_the_body(self, tmp_path: Path) -> None:
        """A value not taken from ctx differs between runs."""
        report = check_crash_safety(unsafe_clock, db_dir=tmp_path / "kit")
        assert not report.repeatable
        assert report.repeat_differences[0].startswith("result: ")


class TestKitMechanics:
    """How the kit crashes, counts and cleans up."""

    def test_every_commit_is_a_crash_point(self, tmp_path: Path) -> None:
        """One trial per commit of the uninterrupted run, each a real crash."""
        report = check_crash_safety(safe_counter, 3, db_dir=tmp_path / "kit")
        # created, 3 step completions, the end: 5 commits.
        assert [t.crash_after for t in report.trials] == [1, 2, 3, 4, 5]
        assert [t.label for t in report.trials] == [
            "run.started",
            "step.completed double#1",
            "step.completed double#2",
            "step.completed double#3",
            "run.completed",
        ]
        assert all(t.crashed for t in report.trials)

    def test_simulated_crash_is_not_an_exception(self) -> None:
        """A body's ``except Exception`` cannot swallow the crash."""
        assert not issubclass(SimulatedCrash, Exception)

    def test_default_directory_is_removed_and_cwd_untouched(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without db_dir nothing is left behind, in the working directory or elsewhere."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("DURABLE_DB", raising=False)
        monkeypatch.setattr(engine.runtime, "_DEFAULT", None)  # none opened yet, anywhere
        check_crash_safety(safe_counter, 1).assert_ok()
        assert list(tmp_path.iterdir()) == []

    def test_rejects_what_it_cannot_run(self, tmp_path: Path) -> None:
        """A plain function, positional workflow input, an unencodable argument: errors."""
        with pytest.raises(TypeError, match="@durable function or a Workflow"):
            check_crash_safety(lambda: 1)
        with pytest.raises(TypeError, match="keyword arguments"):
            check_crash_safety(SquareAll, 4)
        with pytest.raises(SerializationError, match=r"input\['args'\]\[0\]"):
            check_crash_safety(safe_counter, object(), db_dir=tmp_path / "kit")

    def test_signed_pickle_codec(self, tmp_path: Path) -> None:
        """A function with a signed pickle codec is checked given the journal's key."""
        report = check_crash_safety(signed_sum, 3, db_dir=tmp_path / "kit", hmac_key=KEY)
        report.assert_ok()
        assert report.baseline.result == 6 and len(report.trials) == 5

    def test_async_target_runs_in_its_own_loop(self, tmp_path: Path) -> None:
        """An async durable function is checked from sync test code (the kit runs its loop)."""

        @durable(name="reliability:async_twice")
        async def twice(ctx: Context, x: int) -> int:
            await asyncio.sleep(0)
            return double(x)

        report = check_crash_safety(twice, 21, db_dir=tmp_path / "kit")
        report.assert_ok()
        assert report.baseline.result == 42


PLUGIN_TEST = """
from engine import durable, step

@step
def inc(i):
    return i + 1

STATE = {"n": 0}

@durable(name="plugin:safe")
def safe(n):
    return sum(inc(i) for i in range(n))

@durable(name="plugin:unsafe")
def unsafe(n):
    total = 0
    for i in range(n):
        STATE["n"] += 1
        total += inc(i) + STATE["n"]
    return total

def test_safe(durable_crash_check):
    report = durable_crash_check(safe, 3)
    assert report.ok and len(report.trials) == 5

def test_unsafe(durable_crash_check):
    durable_crash_check(unsafe, 3, reset=lambda: STATE.update(n=0))
"""


class TestPytestPlugin:
    """The ``durable_crash_check`` fixture, loaded as the plugin the entry point names."""

    def test_fixture_passes_safe_and_fails_unsafe(self, tmp_path: Path) -> None:
        """In a separate pytest run: the safe test passes, the unsafe one fails with the report."""
        (tmp_path / "test_user_code.py").write_text(textwrap.dedent(PLUGIN_TEST))
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "engine._pytest_plugin",
                "-p",
                "no:cacheprovider",
                "--rootdir",
                str(tmp_path),
                str(tmp_path),
            ],
            cwd=tmp_path,
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, out
        assert "1 failed, 1 passed" in out, out
        assert "FIRST FAILURE: crash after commit 2 (step.completed" in out, out

    def test_entry_point_is_declared(self) -> None:
        """pyproject.toml registers the plugin under pytest11 as ``durable``."""
        text = (REPO / "pyproject.toml").read_text()
        section = text.split("[project.entry-points.pytest11]", 1)
        assert len(section) == 2, "no [project.entry-points.pytest11] table"
        assert 'durable = "engine._pytest_plugin"' in section[1].split("[", 1)[0]
