"""Power loss at every I/O operation of a journal workload, simulated through an apsw VFS.

A workload (create a run, then ``APPENDS`` appends, with a passive and a truncating
checkpoint on the way and a close at the end) runs once through
:class:`_vfs_sim.RecordingVFS`, which records every ``xWrite``, ``xTruncate``,
``xSync`` and ``xDelete`` of the database, ``-wal`` and ``-journal`` files, and marks
where each append was acknowledged. Then, for EVERY prefix of that I/O (a crash point
k, from before the first operation to after the last), and for each way the unsynced
writes can fare in a power cut (lost, kept, a random subset, reordered, torn into
512-byte sectors, torn with garbage where the file grew), the disk is rebuilt and
opened with a plain :class:`journal.Journal`:

- ``durability="full"``: every append acknowledged before k is there, in order,
  with its payload; ``PRAGMA integrity_check`` is ok; ``verify()`` is ok; the file
  takes the next append.
- ``durability="process"``: the same, except that appends acknowledged after the last
  ``xSync`` before k may be missing (only a suffix: the survivors are always 0..m-1).

Two control tests prove the harness can fail: the "process" recording judged by the
"full" rule loses acknowledged appends, and a disk that ignores fsync corrupts files.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest
from _vfs_sim import MODES, Op, disk_after_power_loss, recording_vfs, write_copy
from conftest import LONG

from journal import Journal, JournalError, SnapshotPolicy

APPENDS = 60 if LONG else 20
SEEDS = 4 if LONG else 1
RUN = "power-run"


@dataclass(frozen=True)
class Recording:
    """One traced workload: its I/O and marks, and where its files lived."""

    path: str
    durability: str
    ops: list[Op]

    @property
    def io_points(self) -> int:
        """Crash points: before each recorded I/O operation, and after the last."""
        return sum(op.kind != "mark" for op in self.ops) + 1

    def at(self, k: int) -> dict[str, int]:
        """What the workload had done before its k-th I/O operation: ``acked`` appends,
        ``begun`` appends, ``synced`` (appends acked before the last xSync), ``opened``
        (1 once ``Journal()`` returned: the file is a journal) and ``created`` (1 once
        the run's creation returned)."""
        out = {"acked": 0, "begun": 0, "synced": 0, "opened": 0, "created": 0}
        seen = 0
        for op in self.ops:
            if op.kind == "mark":
                what, *arg = op.label
                if what == "ack":
                    out["acked"] = arg[0] + 1
                elif what == "begin":
                    out["begun"] = arg[0] + 1
                else:
                    out[what] = 1
                continue
            if seen == k:
                break
            seen += 1
            if op.kind == "sync":
                out["synced"] = out["acked"]
        return out


def payload(i: int) -> dict[str, Any]:
    """Append i's value: sizes vary so entries straddle pages and sectors."""
    return {"i": i, "pad": "x" * (i * 97 % 1500)}


def record(directory: Path, durability: str) -> Recording:
    """Run the workload once through the recording VFS."""
    path = str(directory / f"traced-{durability}.db")
    with recording_vfs() as vfs:
        j = Journal(
            path,
            durability=durability,
            vfs=vfs.vfs_name,  # type: ignore[arg-type]
            snapshots=SnapshotPolicy(every=4),
        )
        vfs.mark(("opened",))
        j.create_run(RUN, name="power-loss")
        vfs.mark(("created",))
        for i in range(APPENDS):
            vfs.mark(("begin", i))
            j.append(RUN, [j.entry("state.set", payload(i), key=f"k{i % 3}")], expected_seq=i)
            vfs.mark(("ack", i))
            conn = j.raw_connection()
            if i == APPENDS // 3:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if i == 2 * APPENDS // 3:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        j.close()
    return Recording(path, durability, list(vfs.ops))


@dataclass
class Survivor:
    """What a rebuilt file holds, as a plain Journal sees it."""

    present: int
    integrity: list[str]
    problems: list[str]
    error: str | None = None


def survive(rec: Recording, k: int, mode: str, seed: int, target: Path) -> Survivor:
    """Rebuild the disk after a power cut at crash point ``k`` and open it."""
    files = disk_after_power_loss(rec.ops, k, mode, random.Random(f"{seed}:{k}:{mode}"))
    for suffix in ("-shm",):
        if os.path.exists(f"{target}{suffix}"):
            os.remove(f"{target}{suffix}")
    write_copy(files, rec.path, str(target))
    try:
        with Journal(target, durability=rec.durability) as j:  # type: ignore[arg-type]
            try:
                integrity = [r[0] for r in j.raw_connection().execute("PRAGMA integrity_check")]
            except apsw.Error as exc:  # only the control's lying disk gets here
                integrity = [f"integrity_check raised {type(exc).__name__}: {exc}"]
            run = j.find_run(RUN)
            present = 0
            problems: list[str] = []
            if run is not None:
                values = [j.decode_entry(e) for e in j.read(RUN)]
                present = len(values)
                if values != [payload(i) for i in range(present)]:
                    problems.append(f"entries are not appends 0..{present - 1} in order")
                # The survivor takes the next append: the file is usable, not just readable.
                nxt = j.entry("state.set", {"after": k}, key="after")
                if j.append(RUN, [nxt], expected_seq=run.last_seq) != run.last_seq + 1:
                    problems.append("the next append did not get the next seq")
            problems += j.verify().problems
            return Survivor(present, integrity, problems)
    except JournalError as exc:
        return Survivor(0, [], [], f"{type(exc).__name__}: {exc}")


def sweep(rec: Recording, mode: str, target_dir: Path) -> tuple[int, list[str], int]:
    """Every crash point of ``rec`` under ``mode`` (``SEEDS`` seeds each): trials run,
    a description of each trial that broke the durability level's promise, and how
    many files cut before ``Journal()`` returned were refused as not a journal."""
    failures: list[str] = []
    trials = refused_unborn = 0
    target = target_dir / "survivor.db"
    for k in range(rec.io_points):
        done = rec.at(k)
        must = done["acked"] if rec.durability == "full" else done["synced"]
        for seed in range(SEEDS):
            trials += 1
            s = survive(rec, k, mode, seed, target)
            where = f"{rec.durability} k={k} mode={mode} seed={seed} ({done})"
            if s.error is not None:
                # Cut while Journal() was still creating the file: nothing was promised,
                # and a file that is not (yet) a journal must be refused, never adopted.
                if done["opened"] or "NotAJournalError" not in s.error:
                    failures.append(f"{where}: refused to open: {s.error}")
                else:
                    refused_unborn += 1
            elif s.integrity != ["ok"] or s.problems:
                failures.append(f"{where}: integrity {s.integrity}, problems {s.problems}")
            elif not must <= s.present <= done["begun"]:
                failures.append(f"{where}: {s.present} appends survived, needed {must}")
    return trials, failures, refused_unborn


@pytest.fixture(scope="module")
def recordings(fast_root: Path) -> dict[str, Recording]:
    """The traced workload, once per durability level."""
    directory = fast_root / "power-loss-recordings"
    directory.mkdir(exist_ok=True)
    return {d: record(directory, d) for d in ("full", "process")}


def modes(*quick: str) -> list[object]:
    """Every mode of the power cut; those not in ``quick`` are ``slow`` (the quick set
    takes four different ones over the two durabilities)."""
    return [pytest.param(m, marks=[] if m in quick else [pytest.mark.slow]) for m in MODES]


class TestFullDurability:
    """durability="full": every acknowledged append survives a power cut at any I/O."""

    @pytest.mark.parametrize("mode", modes("torn", "reordered"))
    def test_every_io_point(
        self, recordings: dict[str, Recording], fast_dir: Path, mode: str
    ) -> None:
        """All acked appends present, integrity ok, verify ok, file writable."""
        rec = recordings["full"]
        trials, failures, unborn = sweep(rec, mode, fast_dir)
        print(
            f"FIGURE power-loss full {mode}: {trials} trials over {rec.io_points} "
            f"I/O points, {trials - len(failures)} passed ({unborn} cut during creation "
            "and refused)"
        )
        assert trials == rec.io_points * SEEDS
        assert failures == [], f"{len(failures)} of {trials} failed; first: {failures[:3]}"


class TestProcessDurability:
    """durability="process": a power cut never corrupts the file and loses only the
    appends acknowledged since the last sync."""

    @pytest.mark.parametrize("mode", modes("lost", "garbage"))
    def test_every_io_point(
        self, recordings: dict[str, Recording], fast_dir: Path, mode: str
    ) -> None:
        """Integrity ok, verify ok, survivors are a prefix covering every synced append."""
        rec = recordings["process"]
        trials, failures, unborn = sweep(rec, mode, fast_dir)
        print(
            f"FIGURE power-loss process {mode}: {trials} trials over {rec.io_points} "
            f"I/O points, {trials - len(failures)} passed ({unborn} cut during creation "
            "and refused)"
        )
        assert failures == [], f"{len(failures)} of {trials} failed; first: {failures[:3]}"


class TestTheHarnessCanFail:
    """Controls: the simulator really loses data, and the checks really see corruption."""

    def test_process_level_loses_acked_appends_in_a_power_cut(
        self, recordings: dict[str, Recording], fast_dir: Path
    ) -> None:
        """Judged by the "full" rule, the "process" recording loses acknowledged appends."""
        rec = recordings["process"]
        lost = 0
        for k in range(rec.io_points):
            s = survive(rec, k, "lost", 0, fast_dir / "control.db")
            lost += s.present < rec.at(k)["acked"]
        print(
            f"FIGURE power-loss control: process level lost acked appends at {lost} "
            f"of {rec.io_points} points"
        )
        assert lost > 0

    def test_a_disk_that_ignores_fsync_corrupts_the_file(
        self, recordings: dict[str, Recording], fast_dir: Path
    ) -> None:
        """With every xSync dropped, some rebuilt files are corrupt or lose acked appends."""
        rec = recordings["full"]
        liar = Recording(rec.path, rec.durability, [op for op in rec.ops if op.kind != "sync"])
        outcomes: Counter[str] = Counter()
        for k in range(0, liar.io_points, 2):
            for mode in ("subset", "reordered", "torn"):
                s = survive(liar, k, mode, 0, fast_dir / "liar.db")
                if s.error is not None or s.integrity != ["ok"] or s.problems:
                    outcomes["corrupt or refused"] += 1
                elif s.present < liar.at(k)["acked"]:
                    outcomes["lost acked appends"] += 1
                else:
                    outcomes["fine"] += 1
        print(f"FIGURE power-loss control: fsync-ignoring disk {dict(outcomes)}")
        assert outcomes["corrupt or refused"] > 0
        assert outcomes["lost acked appends"] > 0
