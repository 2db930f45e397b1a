"""Small value objects that configure the journal: durability, snapshots, retention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Durability", "RetentionPolicy", "SnapshotPolicy"]

Durability = Literal["full", "process"]
"""``"full"``: an acknowledged commit survives power loss (SQLite ``synchronous=FULL``;
PostgreSQL ``synchronous_commit=on``). ``"process"``: survives a crash of the process;
on SQLite a power cut may lose the last commits but never corrupts the file
(``synchronous=NORMAL`` in WAL mode); on PostgreSQL it also survives the server's crash
(``synchronous_commit=local``: the WAL is flushed, synchronous standbys are not
awaited). See docs/explanation/guarantees.md."""


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When to write the folded state beside an entry, in the commit that appends it.

    ``by_size=True`` (the default): a snapshot is written once at least ``every``
    entries were appended since the last one *and* the bytes of those entries (what
    rebuilding the state must read and fold, plus a small cost per entry) reach the
    size of the last snapshot (what writing a new one costs). A small state is
    snapshotted every ``every`` entries, a large one only once its tail weighs as
    much as itself: rebuilding reads at most about twice the state's size, and a
    10 MB state is not rewritten every ``every`` small mutations.
    ``by_size=False``: every ``every`` entries, whatever the sizes (rebuilding reads
    at most ``every`` entries after the nearest snapshot). ``every=0`` disables
    snapshots.
    """

    every: int = 200
    by_size: bool = True

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"SnapshotPolicy.every must be >= 0, got {self.every}")

    def crosses(self, before: int, after: int, every: int | None = None) -> bool:
        """True if appending seqs ``before+1 .. after`` crosses a snapshot boundary."""
        n = self.every if every is None else every
        return n > 0 and before // n != after // n


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What compaction keeps: the newest ``keep_snapshots`` snapshots and everything
    newer than ``keep_seconds``. Entries older than the oldest kept snapshot are dropped.

    ``include_active=False`` leaves unfinished runs alone: a ``@durable`` function
    recovers by re-executing its body from its first entry, so its entries are
    needed until it ends.
    """

    keep_snapshots: int = 1
    keep_seconds: float | None = None
    include_active: bool = False
    batch_size: int = 5000

    def __post_init__(self) -> None:
        if self.keep_snapshots < 1:
            raise ValueError("RetentionPolicy.keep_snapshots must be >= 1")
        if self.batch_size < 1:
            raise ValueError("RetentionPolicy.batch_size must be >= 1")
