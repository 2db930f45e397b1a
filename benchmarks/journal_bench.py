"""Journal scenarios.

``append.full`` / ``append.process``
    One entry per commit: ``Journal.append`` against the floor, a raw apsw loop
    inserting one row per ``BEGIN IMMEDIATE … COMMIT`` into a table shaped like
    ``entries``, with the journal's pragmas. The ratio is the share of the
    floor's commits/s the journal keeps (target ≥ 0.70).

``state_at``
    ``Journal.state_at`` at random seqs of a long run against a short one. With
    snapshots the cost is bounded by the snapshot interval, so it should not grow
    with the run's length: the cost ratio long/short should stay within 2x.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import apsw

from journal import Journal
from journal._sqlite import _SYNCHRONOUS  # the journal's own durability→synchronous map

from .harness import Contender, Sample, Scenario

RUN = "bench-run"
WARMUP = 20  # commits before the clock starts: first-page allocation, WAL creation

# Same shape as journal/_schema.py's entries table, minus the foreign key to runs:
# the floor has no runs table, and the FK check is part of what the journal pays.
FLOOR_DDL = """
CREATE TABLE entries (
    run_id   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    step     TEXT,
    key      TEXT,
    payload  BLOB,
    codec    TEXT NOT NULL,
    ts       REAL NOT NULL,
    checksum INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID
"""
FLOOR_INSERT = (
    "INSERT INTO entries (run_id, seq, kind, step, key, payload, codec, ts, checksum) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)


def append_floor(workdir: Path, *, durability: str, commits: int) -> Sample:
    """The fastest one-row-per-transaction loop apsw allows with the journal's settings."""
    conn = apsw.Connection(str(workdir / "floor.db"))
    # The pragmas journal/_sqlite.py sets on a new journal, in the same order.
    for pragma in (
        "journal_mode=WAL",
        f"synchronous={_SYNCHRONOUS[durability]}",
        "foreign_keys=ON",
        "auto_vacuum=INCREMENTAL",
    ):
        conn.execute(f"PRAGMA {pragma}").fetchall()
    conn.execute(FLOOR_DDL)

    def commit(seq: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        # Payload of the same size as the journal's encoded {"i": seq}.
        row = (RUN, seq, "state.set", None, "k", b'{"i":%d}' % seq, "json", time.time(), 0)
        conn.execute(FLOOR_INSERT, row)
        conn.execute("COMMIT")

    for seq in range(1, WARMUP + 1):
        commit(seq)
    start = time.perf_counter()
    for seq in range(WARMUP + 1, WARMUP + commits + 1):
        commit(seq)
    elapsed = time.perf_counter() - start
    conn.close()
    return Sample(elapsed, commits)


def append_journal(workdir: Path, *, durability: str, commits: int) -> Sample:
    """One ``Journal.append`` per entry, encoding inside the loop as the engine does."""
    j = Journal(workdir / "journal.db", durability=durability)  # type: ignore[arg-type]
    j.create_run(RUN, name="bench")
    seq = 0

    def commit(seq: int) -> int:
        return j.append(RUN, [j.entry("state.set", {"i": seq}, key="k")], expected_seq=seq)

    for _ in range(WARMUP):
        seq = commit(seq)
    start = time.perf_counter()
    for _ in range(commits):
        seq = commit(seq)
    elapsed = time.perf_counter() - start
    snapshots = len(j.snapshots(RUN))
    j.close()
    return Sample(elapsed, commits, {"snapshots": snapshots})


def state_at_calls(workdir: Path, *, entries: int, calls: int, keys: int, seed: int) -> Sample:
    """Build a run of ``entries`` state.set over ``keys`` rotating keys; time random state_at."""
    j = Journal(workdir / "journal.db", durability="process")
    j.create_run(RUN, name="bench")
    # An append writes at most one snapshot, at its last seq; batches of exactly
    # the snapshot interval put snapshots where one-entry commits would.
    batch = j.snapshot_policy.every or 1000
    seq = 0
    while seq < entries:
        n = min(batch, entries - seq)
        seqs = range(seq + 1, seq + n + 1)
        new = [j.entry("state.set", {"i": s}, key=f"k{s % keys}") for s in seqs]
        seq = j.append(RUN, new, expected_seq=seq)
    rng = random.Random(seed)
    targets = [rng.randint(1, entries) for _ in range(calls)]
    j.state_at(RUN, targets[0])  # warm the statement cache before the clock starts
    start = time.perf_counter()
    for target in targets:
        j.state_at(RUN, target)
    elapsed = time.perf_counter() - start
    snapshots = len(j.snapshots(RUN))
    j.close()
    return Sample(elapsed, calls, {"snapshots": snapshots, "entries": entries})


def scenarios(quick: bool) -> list[Scenario]:
    # "full" pays an fsync per commit (~ms), "process" does not (~10 µs): size each
    # so the timed loop lasts long enough to measure but "full" stays bearable.
    commits = {"full": 200, "process": 2000} if quick else {"full": 2000, "process": 20_000}
    append = [
        Scenario(
            name=f"append.{d}",
            description=f"one entry per commit, durability={d!r}: journal vs raw apsw",
            unit="commits",
            contenders=tuple(
                Contender(
                    name, f"{__name__}:append_{name}", {"durability": d, "commits": commits[d]}
                )
                for name in ("floor", "journal")
            ),
            reference="floor",
            ratio="rate",
            target=(">=", 0.70),
        )
        for d in ("full", "process")
    ]
    long_run = 10_000 if quick else 100_000
    params = {"calls": 200 if quick else 1000, "keys": 50, "seed": 1234}
    short, long = {"entries": 1_000, **params}, {"entries": long_run, **params}
    state_at = Scenario(
        name="state_at",
        description=f"state_at at random seqs: {long_run:,}-entry run vs 1,000-entry run",
        unit="calls",
        contenders=(
            Contender("1k", f"{__name__}:state_at_calls", short),
            Contender(f"{long_run // 1000}k", f"{__name__}:state_at_calls", long),
        ),
        reference="1k",
        ratio="cost",
        target=("<=", 2.0),
    )
    return [*append, state_at]
