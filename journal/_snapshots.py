"""The Journal's state and snapshots: the state at a seq (newest usable snapshot and
the entries after it, through a fork's lineage), and snapshots written as appends
cross a boundary, folded from the state the journal already holds."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from ._backend import CommitUnknown
from ._core import JournalCore
from ._integrity import snapshot_checksum
from .codecs import Undecoded
from .compaction import kept_compaction
from .encryption import EncryptedCodec, Place
from .errors import (
    ConflictError,
    ConnectionLost,
    CorruptionError,
    DecodeError,
    HorizonError,
    RunNotFound,
    SeqOutOfRange,
)
from .fold import FOLD_VERSION, FoldedState, fold
from .kinds import TERMINAL_STATUSES
from .lineage import ancestors
from .records import Entry, NewEntry, Run, SnapshotInfo

if TYPE_CHECKING:
    from .store import Journal

ENTRY_FOLD_BYTES = 64
"""What folding one entry costs beyond its payload, in payload bytes (a row read, a
checksum, a decode call): a tail of many tiny entries is not free to fold."""


def as_entries(run_id: str, base: int, entries: Sequence[NewEntry], now: float) -> Iterator[Entry]:
    """``entries`` as they are stored from seq ``base + 1`` (for folding)."""
    for seq, e in enumerate(entries, base + 1):
        yield Entry(run_id, seq, e.kind, e.step, e.key, e.payload, e.codec, now)


class SnapshotsMixin(JournalCore):
    """State at a seq and snapshots (part of :class:`~journal.Journal`)."""

    def fingerprint(self, codec: str) -> str:
        """Identifies how a snapshot was made; one made another way is skipped, not trusted."""
        return f"fold-v{FOLD_VERSION}/{codec}"

    def state_at(self, run_id: str, seq: int | None = None, *, strict: bool = True) -> FoldedState:
        """The run's folded state after ``seq`` (default: its last entry).

        Reads the newest valid snapshot at or before ``seq`` and folds only the
        entries after it, so the cost is bounded by the snapshot interval. A fork
        starts from its source's state at the fork point (the source's entries are
        shared, never copied): its lineage is walked up to the first run with a
        usable snapshot, then folded back down, iteratively.
        ``strict=False`` reads values as :meth:`decode` does for readers.
        """
        with self._lock:
            run = self.get_run(run_id)
            target = run.last_seq if seq is None else seq
            below: list[tuple[Run, int]] = []  # (fork, seq) to fold after its source's state
            for current in ancestors(cast("Journal", self), run):
                if below:  # the fork point, checked as a read of the source at that seq
                    target = below[-1][0].forked_at or 0
                self._check_target(current, target)
                base = self._snapshot_state(current, target, strict=strict)
                if base is not None:
                    break
                if current.horizon > 0:
                    raise HorizonError(
                        f"run {current.run_id!r}: no usable snapshot at or after the horizon "
                        f"(seq {current.horizon}) to rebuild seq {target}",
                        run_id=current.run_id,
                        seq=target,
                        horizon=current.horizon,
                    )
                if current.forked_from is None:
                    base = FoldedState()
                    break
                below.append((current, target))
            assert base is not None  # the walk ends at a usable snapshot or at the root
            decode = self.decode_entry if strict else self._read_entry
            if base.seq < target:
                fold(base, self.read(current.run_id, base.seq + 1, target), decode)
            for fork, upto in reversed(below):
                base.seq = 0
                if upto > 0:
                    fold(base, self.read(fork.run_id, 1, upto), decode)
            return base

    @staticmethod
    def _check_target(run: Run, target: int) -> None:
        if target < 0 or target > run.last_seq:
            raise SeqOutOfRange(
                f"run {run.run_id!r} has seqs 0..{run.last_seq}; seq {target} is out of range",
                run_id=run.run_id,
                seq=target,
            )
        if target < run.horizon:
            raise HorizonError(
                f"run {run.run_id!r}: the state at seq {target} is before the retained horizon "
                f"(seq {run.horizon}); it was compacted away",
                run_id=run.run_id,
                seq=target,
                horizon=run.horizon,
            )

    def _snapshot_state(self, run: Run, seq: int, *, strict: bool = True) -> FoldedState | None:
        # Newest first, and only as far as the first usable one: a long run has
        # many snapshots, and reading them all would make state_at grow with it.
        db = self._c()
        try:
            cursor = db.snapshot_rows(run.run_id, seq, run.horizon)
            for snap_seq, state, codec, fingerprint, checksum in cursor:
                if fingerprint == self.fingerprint(codec):
                    loaded = self._load_snapshot(
                        run.run_id, snap_seq, bytes(state), codec, fingerprint, checksum, strict
                    )
                    if loaded is not None:
                        return loaded
        except db.errors as exc:
            raise db.translate(exc, f"reading snapshots of {run.run_id!r}") from exc
        return None

    def _load_snapshot(  # noqa: PLR0917 - the snapshot row's columns, in order
        self,
        run_id: str,
        snap_seq: int,
        state: bytes,
        codec: str,
        fingerprint: str,
        checksum: int,
        strict: bool = True,
    ) -> FoldedState | None:
        if snapshot_checksum(run_id, snap_seq, state, fingerprint) != checksum:
            raise CorruptionError(
                f"run {run_id!r}: snapshot at seq {snap_seq} fails its checksum",
                run_id=run_id,
                seq=snap_seq,
            )
        payload = self.decode(
            state,
            codec,
            where=f"run {run_id!r} snapshot at seq {snap_seq}",
            strict=strict,
            place=Place("snapshot", run_id, snap_seq),
        )
        if isinstance(payload, Undecoded):
            return None  # a reader may not unpickle it: the entries still tell the state
        # "compacted": what compaction dropped before this snapshot (journal.compaction).
        if not isinstance(payload, dict) or set(payload) - {"compacted"} != {"values", "pending"}:
            raise DecodeError(
                f"run {run_id!r}: snapshot at seq {snap_seq} has an unexpected shape",
                run_id=run_id,
                seq=snap_seq,
            )
        return FoldedState.from_payload(snap_seq, payload)

    def write_snapshot(self, run_id: str, seq: int | None = None) -> SnapshotInfo:
        """Write (or rewrite) the snapshot of the state at ``seq`` (default: last)."""
        with self._lock:
            db = self._c()
            target = seq
            info = None
            try:
                # Folded inside the transaction (an explicit snapshot, not an append's):
                # a compaction in another process cannot delete the entries it reads.
                with db.transaction(f"snapshotting run {run_id!r}"):
                    if target is None:
                        target = self.get_run(run_id).last_seq
                    row = self._snapshot_row(run_id, self.state_at(run_id, target), time.time())
                    info = SnapshotInfo(run_id, target, row[3], row[4], len(row[2]), row[6])
                    db.put_snapshot(row)
            except CommitUnknown:
                # Ours if the snapshot there is the one we wrote (same creation time).
                final = db.settle()
                if info is not None and info in self.snapshots(run_id):
                    return info
                raise (ConnectionLost if final else ConflictError)(
                    f"run {run_id!r}: the COMMIT of its snapshot at seq {target} failed and "
                    "the snapshot is not there now; write it again",
                    run_id=run_id,
                    seq=target,
                ) from None
            self._held.pop(run_id, None)
            self._tails.pop(run_id, None)
            assert info is not None  # set before the COMMIT that returned
            return info

    def _snapshot_row(self, run_id: str, state: FoldedState, now: float) -> tuple[Any, ...]:
        """The stored row of a snapshot of ``state`` (see :meth:`Recorder.put_snapshot`)."""
        db = self._c()
        seq = state.seq
        codec_name, horizon = db.run_codec_horizon(run_id)
        codec = self.codec_named(codec_name, run_id=run_id)
        payload = state.to_payload()
        if seq == horizon and horizon:  # rewriting the horizon: keep what compaction dropped
            payload.update(kept_compaction(cast("Journal", self), run_id, seq))
        data = codec.encode(payload, path=f"snapshot of {run_id!r} at seq {seq}")
        if isinstance(codec, EncryptedCodec):
            data = codec.bind(data, Place("snapshot", run_id, seq))
        fingerprint = self.fingerprint(codec.name)
        checksum = snapshot_checksum(run_id, seq, data, fingerprint)
        return (run_id, seq, data, codec.name, fingerprint, checksum, now)

    def snapshots(self, run_id: str) -> list[SnapshotInfo]:
        """The run's snapshots, oldest first."""
        with self._lock:
            rows = self._read(f"listing snapshots of {run_id!r}", self._c().snapshot_infos, run_id)
        return [SnapshotInfo(*r) for r in rows]

    def _forget_finished(self, run_id: str) -> None:
        """Drop a run that has finished from the per-run caches (after its entries are
        in: they read them). The caches hold runs in flight only: kept for every run
        ever appended to, they grew with every finished run. (A dropped entry is only a
        cache miss: snapshot_every never changes.)"""
        self._snapshot_every.pop(run_id, None)
        self._tails.pop(run_id, None)
        self._held.pop(run_id, None)

    def _snapshot(
        self, run_id: str, expected: int, entries: Sequence[NewEntry], now: float
    ) -> Sequence[Any] | None:
        """The snapshot row appending ``entries`` after ``expected`` calls for, if any,
        built now, before the write transaction, from the state this journal holds for
        the run (its last snapshot's, folded with the entries it appended since and
        these), or read once if it holds none. It is held as the run's from here on:
        :meth:`_appended` forgets it if the append does not land."""
        db = self._c()
        try:  # reads outside the write transaction: their errors are the journal's too
            return self._build_snapshot(run_id, expected, entries, now)
        except db.errors as exc:
            raise db.translate(exc, f"preparing a snapshot of run {run_id!r}") from exc

    def _build_snapshot(
        self, run_id: str, expected: int, entries: Sequence[NewEntry], now: float
    ) -> Sequence[Any] | None:
        if expected < 0 or not entries or not self._snapshot_due(run_id, expected, entries):
            return None
        state = self._held_state(run_id, expected)
        if state is None:
            return None
        fold(state, as_entries(run_id, expected, entries, now), self.decode_entry)
        row = self._snapshot_row(run_id, state, now)
        self._held[run_id] = [state, [], state.seq]
        tail = self._tails.get(run_id)
        if tail is not None and tail[0] == state.seq:
            tail[1:] = [0, len(row[2]), state.seq]
        else:
            self._tails.pop(run_id, None)
        return row

    def _held_state(self, run_id: str, seq: int) -> FoldedState | None:
        """The run's state at ``seq`` from what this journal holds, else read (outside
        any write transaction); ``None`` if the run has no such seq now (the append's
        guard then says why)."""
        held = self._held.pop(run_id, None)
        if held is not None and held[2] == seq:
            state: FoldedState = held[0]
            for base, entries, ts in held[1]:
                fold(state, as_entries(run_id, base, entries, ts), self.decode_entry)
            return state
        try:
            return self.state_at(run_id, seq)
        except (RunNotFound, SeqOutOfRange, HorizonError, CorruptionError):
            # No such seq now (the guard says why), or compacted under the read by
            # another process: this boundary's snapshot is left to the next one.
            return None

    def _appended(  # noqa: PLR0917 - an append as it landed
        self,
        run_id: str,
        expected: int,
        entries: Sequence[NewEntry],
        status: str | None,
        now: float,
        snapshot: Sequence[Any] | None,
    ) -> None:
        """Keep the held state of the run in step with an append that landed (or, in a
        batch, is taken to land)."""
        if status in TERMINAL_STATUSES:
            self._forget_finished(run_id)
            return
        if snapshot is not None or not entries:
            return
        held = self._held.get(run_id)
        if held is None:
            return
        if expected < 0 or held[2] != expected:
            del self._held[run_id]
            return
        held[1].append((expected, entries, now))
        held[2] += len(entries)

    def _snapshot_due(self, run_id: str, base: int, entries: Sequence[NewEntry]) -> bool:
        """Does appending ``entries`` after ``base`` call for a snapshot (see
        :class:`SnapshotPolicy`)? Counts the entries' bytes into the run's tail once."""
        policy = self.snapshot_policy
        after = base + len(entries)
        if not policy.by_size:
            return policy.crosses(base, after, self._run_snapshot_every(run_id))
        tail = self._tails.get(run_id)
        if tail is None or (tail[0] != base and tail[0] != after):
            tail = self._tails[run_id] = self._measure_tail(run_id, base)
        if tail[0] == base and entries:
            tail[0] = after
            size = ENTRY_FOLD_BYTES * len(entries)
            for e in entries:
                if e.payload is not None:
                    size += len(e.payload)
            tail[1] += size
        if tail[1] < tail[2]:
            return False  # the tail is still lighter than the snapshot it would replace
        every = self._run_snapshot_every(run_id)
        n = policy.every if every is None else every
        return n > 0 and after - tail[3] >= n

    def _measure_tail(self, run_id: str, base: int) -> list[int]:
        """The run's tail as stored: ``[base, bytes after the last snapshot, its bytes,
        its seq]``."""
        snap_seq, snap_bytes, count, size = self._c().tail_size(run_id, base)
        return [base, count * ENTRY_FOLD_BYTES + size, snap_bytes, snap_seq]

    def _run_snapshot_every(self, run_id: str) -> int | None:
        if run_id not in self._snapshot_every:
            self._snapshot_every[run_id] = self._c().run_snapshot_every(run_id)
        return self._snapshot_every[run_id]
