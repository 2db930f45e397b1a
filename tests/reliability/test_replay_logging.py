"""``ctx.log`` and ``ReplayFilter``: a message is said once per run, not once per recovery.

The run's process is SIGKILLed inside its third step; a new process recovers it. Its body
replays the first two steps, and what it said there is not said again; what follows the
last recorded step runs live again (it was never journaled), and says its part again,
as the step in flight at the kill runs again. Every record names its run and step.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine import Context, Engine, ReplayFilter, durable, step
from engine.logs import RUN_LOGGER

WORKLOAD = textwrap.dedent(
    """
    import logging, os, signal, sys
    from engine import ReplayFilter, configure, default_engine, durable, step

    handler = logging.FileHandler(os.environ["LOG_FILE"])
    handler.setFormatter(logging.Formatter("%(process)d|%(run_id)s|%(step)s|%(message)s"))
    handler.addFilter(ReplayFilter())
    for name in ("durable.run", "app"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    app = logging.getLogger("app")

    @step
    def work(i: int) -> int:
        app.info("step %d ran", i)
        if i == 2 and not os.path.exists(os.environ["MARK"]):
            open(os.environ["MARK"], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return i * 10

    @durable
    def job(ctx, n: int) -> int:
        total = 0
        for i in range(n):
            ctx.log.info("before %d", i)
            app.info("body before %d", i)
            total += work(i)
        ctx.log.info("done %d", total)
        return total

    if __name__ == "__main__":
        configure(sys.argv[2], lease_seconds=1.0)
        if sys.argv[1] == "start":
            print(job.start(4, run_id="r").result(timeout=60))
        else:
            report = default_engine().recover(wait_leased=True, timeout=30)
            assert report.run_ids == ["r"], report
            print(report.handles[0].result(timeout=60))
    """
)


def _run(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOG_FILE": str(tmp_path / "log.txt"), "MARK": str(tmp_path / "mark")}
    return subprocess.run(
        [sys.executable, "logging_workload.py", mode, str(tmp_path / "j.db")],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_each_message_is_said_once_across_a_crash_and_recovery(tmp_path: Path) -> None:
    (tmp_path / "logging_workload.py").write_text(WORKLOAD)
    first = _run(tmp_path, "start")
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = _run(tmp_path, "recover")
    assert second.returncode == 0, second.stderr

    records = [line.split("|") for line in (tmp_path / "log.txt").read_text().splitlines()]
    messages = [r[3] for r in records]
    assert sorted(messages) == sorted(
        [f"before {i}" for i in range(4)]
        + [f"body before {i}" for i in range(4)]
        + ["before 2", "body before 2"]
        + ["step 0 ran", "step 1 ran", "step 2 ran", "step 2 ran", "step 3 ran", "done 60"]
    ), messages
    pids = {r[0] for r in records}
    assert len(pids) == 2, "both processes logged"
    assert {r[1] for r in records} == {"r"}
    by_message = {r[3]: r for r in records}
    assert by_message["step 3 ran"][2] == "work#4", "a step's records name the step"
    assert by_message["before 3"][2] == "None", "a body's records name no step"
    # What the first process said before the kill, the second did not say again.
    first_pid = records[0][0]
    said_first = [r[3] for r in records if r[0] == first_pid]
    said_second = [r[3] for r in records if r[0] != first_pid]
    # Only what ran after the last recorded step is said again: it was not journaled, so
    # it runs live again, like step 2 that was in flight at the kill.
    assert set(said_first) & set(said_second) == {"before 2", "body before 2", "step 2 ran"}


def test_records_outside_a_run_pass_the_filter_untouched() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    assert ReplayFilter().filter(record)
    assert not hasattr(record, "run_id")


@step
def one() -> int:
    return 1


@durable
def said(ctx: Context, x: int) -> int:
    ctx.log.info("got %d", x)
    return x + one()


def test_ctx_log_writes_to_the_run_logger(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=RUN_LOGGER), Engine(tmp_path / "j.db") as eng:
        assert eng.start(said, (1,), {}, run_id="a").result(timeout=30) == 2
    [record] = [r for r in caplog.records if r.name == RUN_LOGGER]
    assert record.getMessage() == "got 1"
    assert (record.run_id, record.step) == ("a", None)  # type: ignore[attr-defined]
