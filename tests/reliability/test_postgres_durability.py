"""What each durability level survives on PostgreSQL: the server is SIGKILLed.

Writer processes append ``step.completed`` entries (one commit each) and print every
seq whose append returned. At a random moment every server process is frozen and
SIGKILLed (a server crash, no power loss: the OS keeps what was written to it); the
server is restarted and runs its crash recovery. Every acknowledged seq must be in the
journal, at ``"process"`` as at ``"full"``. (With ``synchronous_commit=off``, which
``"process"`` once meant, such a crash lost the last few hundred milliseconds of
acknowledged commits.)

The tests of this module share one throwaway cluster of their own (each trial writes to
a fresh schema): the session's server is never killed.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from _children import REPO

from journal import Journal
from journal.pg_cluster import ClusterUnavailable, TempCluster

WRITER = REPO / "tests" / "_procs" / "pg_writer.py"
WRITERS = 3

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def cluster() -> Iterator[TempCluster]:
    """A private server these tests may crash (skipped without PostgreSQL, as pg_url).

    Shared by the module's tests: each crash is followed by a restart and its crash
    recovery, so every trial starts on a running server, and an ``initdb`` per test
    was most of a quick test's time."""
    try:
        server = TempCluster()
    except ClusterUnavailable as exc:
        if os.environ.get("DURABLE_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL unavailable: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    with server:
        yield server


def writer(url: str, durability: str, run_id: str) -> subprocess.Popen[str]:
    """Start a writer process (``ready()`` waits for it to be writing)."""
    return subprocess.Popen(
        [sys.executable, str(WRITER), url, durability, run_id],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ready(proc: subprocess.Popen[str]) -> None:
    """Wait until the writer says ``ready``: its run exists and its appends begin."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", f"{line!r} {proc.stderr.read() if proc.stderr else ''}"


def acknowledged(proc: subprocess.Popen[str]) -> list[int]:
    """Stop the writer (SIGKILL) and return every seq it printed as acknowledged."""
    proc.kill()
    out, _ = proc.communicate(timeout=30)
    return [int(line.split()[1]) for line in out.splitlines() if line.startswith("ack ")]


def crash_trial(server: TempCluster, durability: str, trial: str, rng: random.Random) -> int:
    """One server crash under load; assert nothing acknowledged was lost; return acks."""
    url = f"{server.url}?schema=d_{trial}"
    # Made here first: writers racing to create a fresh schema is another matter.
    Journal(url).close()
    # Started together (each is mostly interpreter start-up), then all seen writing.
    procs = {f"w{trial}-{i}": writer(url, durability, f"w{trial}-{i}") for i in range(WRITERS)}
    for proc in procs.values():
        ready(proc)
    time.sleep(rng.uniform(0.1, 0.8))
    server.crash()
    acks = {run_id: acknowledged(proc) for run_id, proc in procs.items()}
    server.restart()
    with Journal(url) as journal:
        for run_id, seqs in acks.items():
            assert seqs, f"trial {trial}: writer {run_id} had nothing acknowledged"
            run = journal.get_run(run_id)
            assert run.last_seq >= max(seqs), (
                f"trial {trial}, durability {durability!r}: {run_id} acknowledged up to seq "
                f"{max(seqs)}, the journal holds {run.last_seq} after the server crash: "
                f"{max(seqs) - run.last_seq} acknowledged commits lost"
            )
            held = {e.seq for e in journal.read(run_id)}
            assert set(seqs) <= held
        assert journal.verify().ok
    return sum(len(s) for s in acks.values())


@pytest.mark.parametrize("durability", [pytest.param("process", marks=pytest.mark.slow), "full"])
def test_server_crash_loses_nothing_acknowledged(cluster: TempCluster, durability: str) -> None:
    """Two server crashes: every acknowledged commit is there after the restart."""
    rng = random.Random(f"{durability}-quick")
    trials = (crash_trial(cluster, durability, f"{durability}_q{t}", rng) for t in range(2))
    assert sum(trials) > 0


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["process", "full"])
def test_server_crash_loses_nothing_acknowledged_many(
    cluster: TempCluster, durability: str
) -> None:
    """Fifteen server crashes at random moments under three writers."""
    rng = random.Random(f"{durability}-many")
    trials = (crash_trial(cluster, durability, f"{durability}_m{t}", rng) for t in range(15))
    assert sum(trials) > 0


@pytest.mark.parametrize(("durability", "setting"), [("process", "local"), ("full", "on")])
def test_session_setting(pg_schema_url: str, durability: str, setting: str) -> None:
    """Each level's session setting flushes the WAL before a commit returns."""
    with Journal(pg_schema_url, durability=durability) as journal:  # type: ignore[arg-type]
        rows = journal.query("SELECT current_setting('synchronous_commit') AS sc")
    assert rows == [{"sc": setting}]
