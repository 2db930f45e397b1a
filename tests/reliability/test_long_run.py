"""A very long run: memory stays flat while it grows, and rebuilding its state (what
recovery and time travel do) stays bounded by the snapshot interval, before and after
compaction. 100,000 entries (slow), 1,000,000 with ``DURABLE_LONG=1``."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
from conftest import LONG

from journal import EntryKind, Journal, RetentionPolicy, SnapshotPolicy

ENTRIES = 1_000_000 if LONG else 100_000
BATCH = 1000
EVERY = 200
KEYS = 50


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class TestLongRun:
    """Append a very long run in batches, snapshot it, compact it."""

    @pytest.mark.slow  # 100,000 entries
    def test_memory_flat_and_rebuild_bounded(self, tmp_path: Path) -> None:
        """Peak memory stops growing, and state_at reads at most one interval of entries."""
        with Journal(tmp_path / "long.db", durability="process",
                     snapshots=SnapshotPolicy(every=EVERY)) as j:  # fmt: skip
            j.create_run("long", name="f", status="running")
            seq = 0
            peaks = []
            while seq < ENTRIES:
                entries = [
                    j.entry(EntryKind.STATE_SET, seq + i, key=f"k{(seq + i) % KEYS}")
                    for i in range(BATCH)
                ]
                seq = j.append("long", entries, expected_seq=seq)
                if seq % (ENTRIES // 10) == 0:
                    peaks.append(rss_kib())
            # After the first tenth, what the process holds no longer grows with the run.
            assert peaks[-1] - peaks[1] < 16 * 1024, peaks
            expected = {f"k{k}": ENTRIES - KEYS + k for k in range(KEYS)}
            for target in (ENTRIES, ENTRIES // 2 + 123, 777):
                before = j.entries_read
                state = j.state_at("long", target)
                assert j.entries_read - before <= BATCH, target  # one batch past a snapshot
                assert state.values[f"k{(target - 1) % KEYS}"] == target - 1
            assert j.state_at("long").values == expected
            report = j.compact("long", RetentionPolicy(keep_snapshots=2, include_active=True))
            assert report.entries_deleted >= ENTRIES - 2 * BATCH
            before = j.entries_read
            assert j.state_at("long").values == expected
            assert j.entries_read - before <= BATCH
            assert j.verify("long").ok
