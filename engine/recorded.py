"""What a run's journal recorded, read as the body replays it.

Every journaled call a run body makes (a step, a deterministic value, a timer,
a child run, a patch marker) takes the next *call index* in program order and
is keyed ``"<name>#<index>"``; because indexes are handed out when a call is
made (not when it finishes), ``asyncio.gather`` over steps numbers them the same
way on every execution. Replay looks a call up by its index and compares kind,
name and argument hash with what the code does now.

The journal is read in pages as the body asks for calls, and a call is dropped
once it has been replayed, so recovering a run holds the calls just ahead of the
body, never the whole run: memory does not grow with the run's length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from journal import (
    CorruptionError,
    Entry,
    EntryKind,
    HorizonError,
    Journal,
    ResumeRecord,
    Run,
    fork_lineage,
)

from .errors import NonDeterminismError

K = EntryKind

CALL_KINDS = frozenset(
    {
        K.STEP_COMPLETED,
        K.STEP_FAILED,
        K.VALUE_RECORDED,
        K.TIMER_STARTED,
        K.CHILD_STARTED,
        K.PATCH_MARKED,
    }
)
COMPLETION_KINDS = frozenset({K.TIMER_FIRED, K.CHILD_COMPLETED})
MUTATION_KINDS = frozenset({K.STATE_SET, K.STATE_DELETED, K.STATE_APPENDED})

LOOKAHEAD = 2000
"""Calls read ahead of the body before a search for something further on (the body's
next mutation, a timer's firing) switches to a scan that keeps only what it seeks."""

FORK_STEP = "@fork"
"""The ``step`` of the state edits a fork applies at its fork point."""

Position = tuple[int, int]
"""Where an entry sits in a replayed lineage: (segment index, seq)."""


def lineage(journal: Journal, run: Run) -> list[tuple[str, int]]:
    """``(run_id, last seq used)`` from the root run down to ``run``, for forks
    (a fork cycle in a crafted journal raises :class:`~journal.LineageCycle`)."""
    return [(r.run_id, upto) for r, upto in fork_lineage(journal, run)]


def load_history(journal: Journal, run: Run) -> History:
    """The history a run's body replays: for a fork, its sources' entries up to each
    fork point, then its own. Entries are read lazily, a page at a time."""
    chain = lineage(journal, run)
    for run_id, _ in chain[:-1]:
        horizon = journal.get_run(run_id).horizon
        if horizon:
            raise HorizonError(
                f"run {run.run_id!r} forks from {run_id!r}, whose entries up to seq {horizon} "
                "were compacted: it cannot be replayed",
                run_id=run_id,
                horizon=horizon,
            )
    return History(journal, chain)


def call_key(name: str, index: int) -> str:
    """The key of the ``index``-th call, named ``name``."""
    return f"{name}#{index}"


def split_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`call_key`."""
    name, _, index = key.rpartition("#")
    return name, int(index)


@dataclass
class RecordedCall:
    """One call as the journal holds it, with what belongs to it."""

    index: int
    kind: str
    name: str
    entry: Entry
    mutations: list[Entry] = field(default_factory=list)
    completion: Entry | None = None

    @property
    def args_hash(self) -> str | None:
        """The recorded argument hash of a step (kept in the entry's key column)."""
        key = self.entry.key
        if key is None or self.kind not in (K.STEP_COMPLETED, K.STEP_FAILED):
            return None
        return key.rpartition(":")[2]

    def describe(self) -> str:
        """How the call reads in a divergence message."""
        return f"{self.kind} {call_key(self.name, self.index)!r} at seq {self.entry.seq}"


class History:
    """The recorded calls of a run still to replay, its body's mutations, and failed
    attempts per step, read from the journal as the body reaches them.

    ``History()`` is the empty history of a run just created.
    """

    def __init__(
        self, journal: Journal | None = None, segments: Iterable[tuple[str, int]] = ()
    ) -> None:
        self.journal = journal
        self.segments = [(run_id, upto) for run_id, upto in segments if upto > 0]
        self.calls: dict[int, RecordedCall] = {}
        self.body_mutations: deque[Entry] = deque()
        self.failed_attempts: dict[str, int] = {}
        self.terminal: Entry | None = None
        self.last_seq = 0
        self.entries_read = 0
        """Entries taken from the journal so far (all reads, scans included)."""
        self.peak_buffered = 0
        """The most calls and body mutations held at once (what the bound is about)."""
        self._step_mutations: dict[str, list[Entry]] = {}
        self._completions: dict[int, Entry | None] = {}  # of calls replayed before their completion
        self._edits: deque[tuple[int, list[Entry]]] = deque()  # (barrier, a fork's edits)
        self._pos: Position = (0, 0)
        self._body_upto: Position = (-1, 0)  # body mutations up to here were queued by a scan
        self._source: Iterator[tuple[Position, Entry]] | None = None
        # Final step failures a resume reopened, as (run_id, seq): those read so far,
        # and (once a final failure is replayed) those of the whole history.
        self._reopened_seen: set[tuple[str, int]] = set()
        self._reopened: set[tuple[str, int]] | None = None
        if self.segments and journal is not None:
            self._find_fork_edits()
            self._source = self._scan((0, 0))

    # -- reading ---------------------------------------------------------------------------

    def _scan(self, after: Position) -> Iterator[tuple[Position, Entry]]:
        """Entries after ``after`` in lineage order, read a page at a time."""
        assert self.journal is not None
        first, seq = after
        for i in range(first, len(self.segments)):
            run_id, upto = self.segments[i]
            start = seq + 1 if i == first else 1
            if start <= upto:
                for e in self.journal.read(run_id, start, upto):
                    self.entries_read += 1
                    yield (i, e.seq), e

    def _find_fork_edits(self) -> None:
        """A fork's edits apply once the last call recorded before its fork point is
        replayed (its *barrier*): found by one pass over the sources, kept by index only."""
        assert self.journal is not None
        found: list[tuple[int, list[Entry]]] = []
        for i in range(1, len(self.segments)):
            edits = []
            for e in self.journal.read(self.segments[i][0], 1, self.segments[i][1]):
                if e.kind == K.RUN_FORKED:
                    continue
                if e.step != FORK_STEP:
                    break
                edits.append(e)
            if edits:
                found.append((i, edits))
        if not found:
            return
        barrier, k = 0, 0
        for (i, _seq), e in self._scan((0, 0)):
            while k < len(found) and found[k][0] <= i:
                self._edits.append((barrier, found[k][1]))
                k += 1
            if k == len(found):
                break
            if e.kind in CALL_KINDS and e.step is not None and e.step != FORK_STEP:
                barrier = max(barrier, split_key(e.step)[1])
        for _, edits in found[k:]:
            self._edits.append((barrier, edits))

    def _pull(self) -> bool:
        """Index the next entry; False when the journal is exhausted."""
        if self._source is None:
            return False
        try:
            pos, e = next(self._source)
        except StopIteration:
            self._source = None
            return False
        self._pos = pos
        self.last_seq = e.seq
        kind = e.kind
        if kind in MUTATION_KINDS:
            if e.step == FORK_STEP:
                pass  # found up front, see _find_fork_edits
            elif e.step is None:
                if pos > self._body_upto:
                    self.body_mutations.append(e)
            else:
                self._step_mutations.setdefault(e.step, []).append(e)
        elif kind == K.STEP_FAILED and not (e.key or "").startswith("final:"):
            assert e.step is not None
            self.failed_attempts[e.step] = self.failed_attempts.get(e.step, 0) + 1
        elif kind in CALL_KINDS:
            assert e.step is not None
            name, index = split_key(e.step)
            self.calls[index] = RecordedCall(
                index, kind, name, e, self._step_mutations.pop(e.step, [])
            )
        elif kind in COMPLETION_KINDS:
            assert e.step is not None
            _, index = split_key(e.step)
            rec = self.calls.get(index)
            if rec is not None:
                rec.completion = e
            elif index in self._completions:
                self._completions[index] = e
        elif kind in (K.RUN_COMPLETED, K.RUN_FAILED, K.RUN_CANCELLED):
            self.terminal = e
        elif kind == K.RUN_RESUMED:
            self.terminal = None
            for run_id, seq, step in self._reopens(e):
                self._reopened_seen.add((run_id, seq))
                if self._reopened is not None:
                    self._reopened.add((run_id, seq))
                # The reopened step runs again with its whole retry policy.
                self.failed_attempts.pop(step, None)
        held = len(self.calls) + len(self.body_mutations)
        self.peak_buffered = max(self.peak_buffered, held)
        return True

    def _reopens(self, e: Entry) -> tuple[tuple[str, int, str], ...]:
        assert self.journal is not None
        try:
            return ResumeRecord.from_payload(self.journal.decode_entry(e)).reopens
        except ValueError as exc:
            raise CorruptionError(
                f"run {e.run_id!r} seq {e.seq}: {exc}", run_id=e.run_id, seq=e.seq
            ) from None

    def _is_reopened(self, rec: RecordedCall) -> bool:
        """Was this final step failure reopened by a resume (recorded after it, so
        looked for once, by a scan that keeps nothing but what it seeks)?"""
        if rec.kind != K.STEP_FAILED:
            return False
        if self._reopened is None:
            self._reopened = set(self._reopened_seen)
            if self._source is not None:
                for _, e in self._scan(self._pos):
                    if e.kind == K.RUN_RESUMED:
                        self._reopened.update((r, s) for r, s, _ in self._reopens(e))
        return (rec.entry.run_id, rec.entry.seq) in self._reopened

    def _has_calls(self) -> bool:
        while True:
            while not self.calls:
                if not self._pull():
                    return False
            # A reopened failure the code no longer reaches is no divergence: it was undone.
            first = self.calls[min(self.calls)]
            if not self._is_reopened(first):
                return True
            del self.calls[first.index]

    # -- replaying -------------------------------------------------------------------------

    def take(
        self, index: int, kind: str, name: str, args_hash: str | None = None
    ) -> RecordedCall | None:
        """The recorded call at ``index`` if it matches; None if the journal has none.

        Raises :class:`NonDeterminismError` when the journal holds a different call there.
        """
        if self._source is None and not self.calls:
            return None  # nothing left to replay: every live call of a run comes here
        rec = self._call_at(index)
        if rec is None:
            return None
        kinds = {kind, K.STEP_FAILED} if kind == K.STEP_COMPLETED else {kind}
        if rec.kind not in kinds or rec.name != name:
            raise NonDeterminismError(
                f"non-deterministic replay at seq {rec.entry.seq}: the journal recorded "
                f"{rec.describe()} but the code now calls {kind} {call_key(name, index)!r}",
                seq=rec.entry.seq,
                recorded=rec.describe(),
                got=f"{kind} {call_key(name, index)}",
            )
        if args_hash is not None and rec.args_hash not in (None, args_hash):
            raise NonDeterminismError(
                f"non-deterministic replay at seq {rec.entry.seq}: step "
                f"{call_key(name, index)!r} was recorded with arguments hashing to "
                f"{rec.args_hash} but is now called with arguments hashing to {args_hash}",
                seq=rec.entry.seq,
                recorded=rec.describe(),
                got=f"{kind} {call_key(name, index)} args {args_hash}",
            )
        del self.calls[index]
        self.failed_attempts.pop(rec.entry.step or "", None)
        if rec.kind in (K.TIMER_STARTED, K.CHILD_STARTED) and rec.completion is None:
            rec.completion = self._completion_of(rec)
        return rec

    def _completion_of(self, rec: RecordedCall) -> Entry | None:
        """A timer's firing or a child's outcome, recorded some entries after its start."""
        self._completions[rec.index] = None
        try:
            while self._completions[rec.index] is None and len(self.calls) < LOOKAHEAD:
                if not self._pull():
                    return None
            if self._completions[rec.index] is not None:
                return self._completions[rec.index]
            for _, e in self._scan(self._pos):
                if e.kind in COMPLETION_KINDS and e.step == rec.entry.step:
                    return e
            return None
        finally:
            del self._completions[rec.index]

    def peek(self, index: int) -> RecordedCall | None:
        """The recorded call at ``index`` without consuming it."""
        return self._call_at(index)

    def _call_at(self, index: int) -> RecordedCall | None:
        while True:
            while index not in self.calls:
                if not self._pull():
                    return None
            rec = self.calls[index]
            if not self._is_reopened(rec):
                return rec
            # A resume reopened this failure: the call's re-run, if recorded, comes later.
            del self.calls[index]

    def has_calls(self) -> bool:
        """True while recorded calls remain to be replayed."""
        return self._has_calls()

    @property
    def replaying(self) -> bool:
        """True while recorded calls or body mutations remain to be matched."""
        while not self.calls and not self.body_mutations:
            if not self._pull():
                return False
        return True

    def edits_due(self, index: int) -> list[Entry]:
        """A fork's edits to apply once call ``index`` is replayed (0: at the start)."""
        due: list[Entry] = []
        while self._edits and self._edits[0][0] <= index:
            due.extend(self._edits.popleft()[1])
        return due

    def _next_body_mutation(self) -> Entry | None:
        while not self.body_mutations and len(self.calls) < LOOKAHEAD:
            if not self._pull():
                break
        if self.body_mutations:
            return self.body_mutations.popleft()
        if self._source is None:
            return None
        # Far ahead of the buffered calls: scan on, keeping only the next body mutation.
        start = max(self._pos, self._body_upto)
        for pos, e in self._scan(start):
            self._body_upto = pos
            if e.kind in MUTATION_KINDS and e.step is None:
                return e
        return None

    def check_body_mutation(self, kind: str, key: str) -> bool:
        """Match a body mutation during replay; False once the journal is exhausted (live)."""
        rec = self._next_body_mutation()
        if rec is None:
            return False
        if rec.kind != kind or rec.key != key:
            raise NonDeterminismError(
                f"non-deterministic replay at seq {rec.seq}: the journal recorded {rec.kind} "
                f"{rec.key!r} but the code now does {kind} {key!r}",
                seq=rec.seq,
                recorded=f"{rec.kind} {rec.key}",
                got=f"{kind} {key}",
            )
        return True

    def check_exhausted(self) -> None:
        """At the end of the body: every recorded call must have been made again."""
        if self._has_calls():
            rec = self.calls[min(self.calls)]
            raise NonDeterminismError(
                f"non-deterministic replay at seq {rec.entry.seq}: the journal recorded "
                f"{rec.describe()} but the code returned without making that call",
                seq=rec.entry.seq,
                recorded=rec.describe(),
                got="return",
            )
