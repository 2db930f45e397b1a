"""Retention: finished runs deleted or compacted past their age, crash-safe, resumable,
run by several processes at once, applied by workers; forks and children keep their
sources."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _children import PROCS, REPO

from engine import Engine, fork
from journal import HorizonError, Journal, Retention, RunNotFound, apply_retention

sys.path.insert(0, str(PROCS))

import retention_workload as wl

DAY = 86400.0
RUNS = 24  # r000..r023: every third failed


def _child(*args: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PROCS)])}
    return subprocess.Popen(
        [sys.executable, str(PROCS / "retention_workload.py"), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A journal file of RUNS finished runs, copied by each test that changes it."""
    db = tmp_path_factory.mktemp("filled") / "j.db"
    wl.fill(str(db), RUNS)
    return db


def _copy(src: Path, dst: Path) -> str:
    with Journal(src) as j:
        j.reclaim()  # one file: the WAL checkpointed into it
    dst.write_bytes(src.read_bytes())
    return str(dst)


def _states(db: str) -> dict[str, tuple[str, object]]:
    with Journal(db) as j:
        return {
            r.run_id: (r.status, j.state_at(r.run_id).values.get("total"))
            for r in j.list_runs(limit=None)
        }


def _check_end_state(db: str, before: dict[str, tuple[str, object]]) -> None:
    """Completed runs gone, failed ones kept whole (compacted), the journal sound."""
    after = _states(db)
    assert set(after) == {rid for rid, (status, _) in before.items() if status == "failed"}
    assert after == {rid: v for rid, v in before.items() if rid in after}
    with Journal(db) as j:
        report = j.verify()
        assert report.ok, report.problems
        for table in ("entries", "snapshots", "run_tags"):
            leftover = j.query(f"SELECT count(*) AS n FROM {table} WHERE run_id NOT IN "
                               "(SELECT run_id FROM runs)")  # fmt: skip
            assert leftover[0]["n"] == 0, f"{table} rows of deleted runs remain"
        for run_id in after:  # the runs kept are still found by their tags
            assert [r.run_id for r in j.list_runs(tags={"n": str(int(run_id[1:]))})] == [run_id]


def test_a_policy_deletes_and_compacts_by_age_and_status(journal_location: str) -> None:
    wl.fill(journal_location, 9)
    before = _states(journal_location)
    with Journal(journal_location) as j:
        young = apply_retention(j, Retention(completed_days=30), now=time.time() + 29 * DAY)
        assert young.deleted == [] and _states(journal_location) == before, "deleted too early"
        report = apply_retention(
            j, Retention(completed_days=30, compact_days=10), now=time.time() + 31 * DAY
        )
        assert sorted(report.deleted) == sorted(r for r, v in before.items() if v[0] == "completed")
        assert sorted(report.compacted) == ["r000", "r003", "r006"]
        for rid in report.deleted:
            with pytest.raises(RunNotFound):
                j.get_run(rid)
        failed = j.get_run("r003")
        assert failed.horizon == failed.last_seq, "a failed run past compact_days keeps its end"
        with pytest.raises(HorizonError):
            j.state_at("r003", 2)
        again = apply_retention(j, Retention(completed_days=30, compact_days=10),
                                now=time.time() + 31 * DAY)  # fmt: skip
        assert again.deleted == [] and again.compacted == [] and again.entries_deleted == 0
    _check_end_state(journal_location, before)


def test_forks_and_children_keep_their_sources(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    wl.fill(db, 2)  # r000 failed, r001 completed
    with Engine(db, durability="process") as eng:
        fork("r001", at=2, new_run_id="f1", engine=eng).result(timeout=30)
    with Journal(db) as j:
        # Only the source is past its age: the young fork keeps it.
        with j.lock, j.backend.transaction("ageing r001"):
            j.backend.execute("UPDATE runs SET updated_at = updated_at - ? WHERE run_id = 'r001'",
                              (100 * DAY,))  # fmt: skip
        report = apply_retention(j, Retention(completed_days=30))
        assert report.deleted == [] and "f1" in report.kept["r001"]
        # Both past their age: the fork goes first, then its source, in one pass.
        later = apply_retention(j, Retention(completed_days=30), now=time.time() + 31 * DAY)
        assert later.deleted == ["f1", "r001"]


def test_chains_and_children_of_unfinished_parents_are_kept(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    with Engine(db, durability="process") as eng:
        assert eng.start(wl.chain, (2, 0), {}, run_id="c").result(timeout=30) == 3
        eng.journal.create_run("parent", name="p", status="running")
        eng.journal.create_run("child", name="c", status="completed", parent_run_id="parent")
        report = apply_retention(eng.journal, Retention(completed_days=0, compact_days=0),
                                 now=time.time() + DAY)  # fmt: skip
        assert report.deleted == [], "a chain is kept whole"
        assert all("chain" in report.kept[r] for r in ("c", "c~1", "c~2"))
        assert set(report.compacted) == {"c", "c~1", "c~2"}
        assert eng.handle("c").result() == 3, "the chain's result is still found"
        assert eng.journal.find_run("child") is not None, "its parent is still running"
        assert "child" not in report.kept  # not even a candidate


@pytest.mark.parametrize("seed", range(6))
def test_a_pass_killed_anywhere_is_finished_by_the_next(
    filled: Path, tmp_path: Path, seed: int
) -> None:
    db = _copy(filled, tmp_path / "j.db")
    before = _states(db)
    proc = _child("prune", db, 1)  # one entry per transaction: many places to die
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    rng = random.Random(seed)
    for _ in range(rng.randrange(1, 12)):  # inside the deletion of the n-th run
        assert proc.stdout.readline().startswith("deleting ")
    time.sleep(rng.uniform(0, 0.01))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    with Journal(db) as j:
        assert j.verify().ok, "the journal a killed pass left does not verify"
        left = {r.run_id: r.status for r in j.list_runs(limit=None)}
        for rid, status in left.items():  # every run left reads its state as before
            assert (status, j.state_at(rid).values.get("total")) == before[rid]
        apply_retention(j, Retention(completed_days=30, compact_days=10, batch_size=1),
                        now=time.time() + 40 * DAY)  # fmt: skip
    _check_end_state(db, before)


def test_processes_applying_it_at_once_agree(filled: Path, tmp_path: Path) -> None:
    db = _copy(filled, tmp_path / "j.db")
    before = _states(db)
    procs = [_child("prune", db, 2) for _ in range(3)]
    deleted: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        report = json.loads(out.splitlines()[-1].removeprefix("report "))
        assert report["kept"] == {}, report["kept"]
        deleted += report["deleted"]
    assert sorted(deleted) == sorted(r for r, v in before.items() if v[0] == "completed")
    _check_end_state(db, before)


def test_a_worker_applies_it_in_the_background(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    wl.fill(db, 3)
    with Engine(db) as eng:
        stop = threading.Event()
        thread = threading.Thread(
            target=eng.worker,
            kwargs={"stop": stop, "poll_interval": 0.05, "retention": Retention(completed_days=0)},
        )
        thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(eng.journal.list_runs()) > 1:
            time.sleep(0.05)
        stop.set()
        thread.join(timeout=20)
        assert [r.run_id for r in eng.journal.list_runs()] == ["r000"]  # the failed one


def test_the_cli_prunes_and_says_what_it_kept(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    wl.fill(db, 3)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args, "--db", db],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip

    bare = cli("prune")
    assert bare.returncode == 2 and "say what to prune" in bare.stderr
    bad = cli("prune", "--delete-completed-after", "-1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(_states(db)) == 3, "a refused command wrote"
    done = cli("prune", "--delete-completed-after", "0", "--delete-failed-after", "0", "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["deleted"]) == ["r000", "r001", "r002"]
    assert _states(db) == {}


@pytest.mark.parametrize(
    "kwargs",
    [{"completed_days": -1}, {"failed_days": float("nan")}, {"compact_days": float("inf")},
     {"batch_size": 0}, {"every": 0}],
)  # fmt: skip
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Retention"):
        Retention(**kwargs)  # type: ignore[arg-type]
