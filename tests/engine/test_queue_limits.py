"""Queue rate limits and deduplication keys, on both backends.

A rate limit is counted inside the claim from the runs themselves (when each was first
claimed), so it holds across every worker and process; a deduplication key makes one
unfinished run per key and queue, however many processes enqueue it at once. The
process tests run real worker and enqueuer processes (``tests/_procs/limits_child.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _trials import backends

import engine
from engine import DedupKeyConflict, Engine, Queue, durable, step
from engine.queues import DEDUP_TAG, queue_rates
from journal import Journal
from journal._schema import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[2]
PROCS = REPO / "tests" / "_procs"

rated = Queue("test-rated", rate_limit=(3, 0.6))
DONE: list[int] = []


@step
def note(i: int) -> int:
    DONE.append(i)
    return i


@durable(queue=rated)
def paced(i: int) -> int:
    return note(i)


@durable(queue="test-dedup")
def deduped(i: int) -> int:
    return note(i)


@durable(queue="test-dedup")
def other_deduped(i: int) -> int:
    return i


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "limits.db")
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def eng(location: str) -> Iterator[Engine]:
    DONE.clear()
    e = Engine(location, lease_seconds=5)
    fns = (paced, deduped, other_deduped)
    for fn in fns:
        fn._engine = e
    yield e
    for fn in fns:
        fn._engine = None
    e.close()


def _starts(journal: Journal, queue: str) -> list[float]:
    rows = journal.query(
        "SELECT started_at FROM runs WHERE queue = ? AND started_at IS NOT NULL"
        " ORDER BY started_at",
        [queue],
    )
    return [r["started_at"] for r in rows]


def _worst_window(starts: list[float], seconds: float) -> int:
    """The most starts inside any window ``(t - seconds, t]``."""
    return max(
        (sum(1 for s in starts if t - seconds < s <= t) for t in starts),
        default=0,
    )


class TestRateLimit:
    def test_declaration_is_checked(self) -> None:
        """A rate limit is (runs >= 1, seconds > 0); a queue declared twice must agree."""
        for bad in [(0, 1.0), (1, 0), (1, -1.0), (1.5, 1.0), (True, 1.0), (1,), "3/s", (1, "s")]:
            with pytest.raises(ValueError, match="rate_limit"):
                Queue("test-bad-rate", rate_limit=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="declared twice"):
            Queue("test-rated", rate_limit=(4, 0.6))
        assert Queue("test-rated", rate_limit=(3, 0.6)) == rated
        assert queue_rates()["test-rated"] == (3, 0.6)

    def test_claim_takes_at_most_n_per_window(self, location: str) -> None:
        """claim_next hands out n first claims per window, then none until it slides."""
        with Journal(location) as j:
            for i in range(7):
                j.create_run(f"r{i}", name="m:f", queue="q", status="pending")
            rates = {"q": (3, 10.0)}
            got = [r.run_id for r in j.claim_next("a", limit=5, rates=rates, now=100.0)]
            assert got == ["r0", "r1", "r2"]
            assert j.claim_next("b", limit=5, rates=rates, now=105.0) == []
            assert j.claim_next("b", limit=5, rates=rates, now=109.99) == []
            # The window is half-open, (now - seconds, now]: at 110 the first three left it.
            got = [r.run_id for r in j.claim_next("b", limit=2, rates=rates, now=110.0)]
            assert got == ["r3", "r4"]
            got = [r.run_id for r in j.claim_next("c", limit=5, rates=rates, now=110.5)]
            assert got == ["r5"]
            assert j.claim_next("c", limit=5, rates=rates, now=111.0) == []
            # A run taken over after its lease ran out is not a new start.
            again = j.claim_next("d", limit=3, rates=rates, now=1000.0)
            assert [r.run_id for r in again] == ["r0", "r1", "r2"]
            assert _starts(j, "q") == [100.0] * 3 + [110.0] * 2 + [110.5]

    def test_rate_and_concurrency_together(self, location: str) -> None:
        """Both limits hold: the smaller room wins."""
        with Journal(location) as j:
            for i in range(5):
                j.create_run(f"r{i}", name="m:f", queue="q", status="pending")
            got = j.claim_next("a", limit=5, limits={"q": 1}, rates={"q": (3, 10.0)}, now=1.0)
            assert [r.run_id for r in got] == ["r0"]

    def test_workers_start_at_most_n_per_window(self, eng: Engine, location: str) -> None:
        """Two engines' workers together start at most 3 runs in any 0.6 s."""
        handles = [paced.enqueue(i) for i in range(9)]
        second = Engine(location, lease_seconds=5)
        stops = [threading.Event(), threading.Event()]
        threads = [
            threading.Thread(
                target=e.worker,
                kwargs={"stop": s, "concurrency": 8, "poll_interval": 0.05},
            )
            for e, s in zip((eng, second), stops, strict=True)
        ]
        began = time.monotonic()
        for t in threads:
            t.start()
        try:
            for h in handles:
                h.wait(timeout=30)
        finally:
            for s in stops:
                s.set()
            for t in threads:
                t.join(10)
            second.close()
        took = time.monotonic() - began
        assert sorted(h.result() for h in handles) == list(range(9))
        starts = _starts(eng.journal, "test-rated")
        assert len(starts) == 9
        assert _worst_window(starts, 0.6) == 3
        assert took >= 1.2  # 9 runs at 3 per 0.6 s: the third batch waits two windows


class TestDedup:
    def test_same_key_returns_the_unfinished_run(self, eng: Engine) -> None:
        """A second enqueue with the key returns the first run, even with other arguments."""
        first = deduped.enqueue(1, dedup_key="order-7")
        second = deduped.enqueue(2, dedup_key="order-7")
        assert second.run_id == first.run_id
        runs = eng.journal.list_runs(tags={DEDUP_TAG: "order-7"})
        assert [r.run_id for r in runs] == [first.run_id]
        assert deduped.enqueue(1, dedup_key="order-8").run_id != first.run_id

    def test_key_is_free_again_once_the_run_finished(self, eng: Engine) -> None:
        """After the holder finished, the key queues a new run (and that one dedups)."""
        first = deduped.enqueue(1, dedup_key="k")
        eng.recover()
        assert first.result(timeout=10) == 1
        second = deduped.enqueue(2, dedup_key="k")
        assert second.run_id != first.run_id
        assert deduped.enqueue(3, dedup_key="k").run_id == second.run_id
        eng.recover()
        assert second.result(timeout=10) == 2
        assert DONE == [1, 2]

    def test_key_is_per_queue(self, eng: Engine) -> None:
        """The same key in another queue is another run."""
        a = deduped.enqueue(1, dedup_key="k")
        b = deduped.enqueue(1, dedup_key="k", queue="test-dedup-other")
        assert a.run_id != b.run_id

    def test_key_held_by_another_function_is_refused(self, eng: Engine) -> None:
        """Another function's unfinished run with the key: typed error, nothing queued."""
        holder = deduped.enqueue(1, dedup_key="shared")
        with pytest.raises(DedupKeyConflict) as err:
            other_deduped.enqueue(1, dedup_key="shared")
        assert err.value.run_id == holder.run_id  # type: ignore[attr-defined]
        assert err.value.key == "shared"  # type: ignore[attr-defined]
        assert "shared" in str(err.value) and "test-dedup" in str(err.value)
        assert len(eng.journal.list_runs()) == 1

    def test_bad_keys(self, eng: Engine) -> None:
        """An empty or non-str key, or a key with a run id, is refused before writing."""
        for bad in ["", 5, "x" * 1001]:
            with pytest.raises(ValueError, match="dedup_key"):
                deduped.enqueue(1, dedup_key=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="run_id or a dedup_key"):
            deduped.enqueue(1, run_id="r", dedup_key="k")
        assert eng.journal.list_runs() == []

    def test_public_names(self) -> None:
        """The new names are exported."""
        assert {"DedupKeyConflict", "StepHeartbeatTimeout", "heartbeat"} <= set(engine.__all__)


def _child(
    location: str, *args: str, env: dict[str, str] | None = None, stderr: Any = subprocess.PIPE
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(PROCS / "limits_child.py"), location, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **(env or {}), "PYTHONPATH": f"{PROCS}{os.pathsep}{REPO}"},
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


@pytest.mark.parametrize("location", backends(), indirect=True)
class TestProcesses:
    """Real processes sharing one journal (on PostgreSQL in the full suite only)."""

    @pytest.mark.timeout(120)
    def test_three_worker_processes_hold_the_rate(self, location: str, tmp_path: Path) -> None:
        """Three worker processes drain 12 runs of a (3 per 0.5 s) queue: no window of
        0.5 s holds more than 3 first claims, and every run executed once."""
        log = tmp_path / "exec.log"
        _finish(_child(location, "enqueue", "12"))
        env = {"LIMITS_LOG": str(log)}
        # A worker's log goes to a file: a pipe nobody reads could fill and stall it.
        errs = [(tmp_path / f"worker{i}.err").open("w") for i in range(3)]
        workers = [_child(location, "worker", env=env, stderr=e) for e in errs]
        try:
            for w in workers:
                assert w.stdout is not None
                assert w.stdout.readline().startswith("ready")
            with Journal(location) as j:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if len(j.list_runs(status="completed", limit=None)) == 12:
                        break
                    time.sleep(0.1)
                starts = _starts(j, "limits-rated")
                completed = len(j.list_runs(status="completed", limit=None))
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.communicate(timeout=30)
            for e in errs:
                e.close()
        logs = "".join(p.read_text() for p in sorted(tmp_path.glob("worker*.err")))
        assert completed == 12, logs
        assert len(starts) == 12
        assert _worst_window(starts, 0.5) <= 3
        assert starts[-1] - starts[0] > 1.5  # 4 windows' worth
        lines = log.read_text().split()
        assert sorted(lines) == sorted(set(lines)) and len(lines) == 12

    @pytest.mark.timeout(120)
    def test_processes_enqueue_one_key_at_once(self, location: str) -> None:
        """Four processes enqueue the same key at once (each ready, then told to go
        together): one run, and every process got its handle."""
        first = _race(location)
        with Journal(location) as j:
            assert [r.run_id for r in j.list_runs(limit=None)] == [first]
            # The holder ends: the racers of the next round make exactly one new run.
            j.update_run(first, status="completed")
        second = _race(location)
        assert second != first
        with Journal(location) as j:
            runs = j.list_runs(limit=None)
        assert sorted(r.run_id for r in runs) == sorted([first, second])


def _race(location: str) -> str:
    procs = [_child(location, "dedup", "race-key") for _ in range(4)]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    ids = {_finish(p).strip() for p in procs}
    assert len(ids) == 1
    return ids.pop()


class TestSchemaVersion5:
    """Version 5 adds runs.started_at (rate limits) and runs.heartbeat (ctx.heartbeat)."""

    def test_v4_file_reads_as_is_and_upgrades_on_write(self, tmp_path: Path) -> None:
        """tests/fixtures/journal_v4.db: read-only it stays version 4 (no heartbeats to
        show); opened to write it is version 5, its runs intact and verified."""
        path = tmp_path / "v4.db"
        shutil.copy(REPO / "tests" / "fixtures" / "journal_v4.db", path)
        with Journal(path, readonly=True) as old:
            assert old.backend.schema_version == 4
            assert old.heartbeat_of("fn-done") == {}
            before = [(r.run_id, r.status, r.last_seq) for r in old.list_runs(limit=None)]
        with Journal(path) as j:
            assert j.backend.schema_version == SCHEMA_VERSION == 5
            assert j.verify().ok
            assert [(r.run_id, r.status, r.last_seq) for r in j.list_runs(limit=None)] == before
            assert j.heartbeat_of("fn-done") == {}
            j.create_run("q1", name="m:f", queue="q", status="pending")
            got = j.claim_next("w", limit=5, rates={"q": (1, 60.0)}, run_ids=["q1"])
            assert [r.run_id for r in got] == ["q1"]
            assert len(_starts(j, "q")) == 1

    @pytest.mark.postgres
    def test_postgres_v4_schema_upgrades(self, pg_schema_url: str) -> None:
        """A PostgreSQL journal at version 4 (the new columns dropped) is upgraded on open."""
        with Journal(pg_schema_url) as j:
            j.create_run("old", name="m:f", queue="q", status="pending")
            db = j.backend
            with j.lock, db.transaction("downgrading"):
                db.execute("DROP INDEX runs_by_start")
                db.execute("ALTER TABLE runs DROP COLUMN started_at")
                db.execute("ALTER TABLE runs DROP COLUMN heartbeat")
                db.execute("UPDATE journal_meta SET value = '4' WHERE key = 'schema_version'")
        with Journal(pg_schema_url, readonly=True) as old:
            assert old.backend.schema_version == 4
            assert old.heartbeat_of("old") == {}
        with Journal(pg_schema_url) as j:
            assert j.query("SELECT value FROM journal_meta WHERE key = 'schema_version'") == [
                {"value": "5"}
            ]
            assert [r.run_id for r in j.claim_next("w", rates={"q": (1, 60.0)})] == ["old"]
            assert len(_starts(j, "q")) == 1
