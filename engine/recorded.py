"""What a run's journal recorded, indexed for replay.

Every journaled call a run body makes (a step, a deterministic value, a timer,
a child run, a patch marker) takes the next *call index* in program order and
is keyed ``"<name>#<index>"``; because indexes are handed out when a call is
made (not when it finishes), ``asyncio.gather`` over steps numbers them the same
way on every execution. Replay looks a call up by its index and compares kind,
name and argument hash with what the code does now.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from journal import Entry, EntryKind, HorizonError, Journal, Run, fork_lineage

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


FORK_STEP = "@fork"
"""The ``step`` of the state edits a fork applies at its fork point."""


def lineage(journal: Journal, run: Run) -> list[tuple[str, int]]:
    """``(run_id, last seq used)`` from the root run down to ``run``, for forks
    (a fork cycle in a crafted journal raises :class:`~journal.LineageCycle`)."""
    return [(r.run_id, upto) for r, upto in fork_lineage(journal, run)]


def load_history(journal: Journal, run: Run) -> History:
    """Index everything a run's body must replay: for a fork, its sources' entries up
    to each fork point, then its own."""
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

    def entries() -> Iterable[Entry]:
        for run_id, upto in chain:
            if upto:
                yield from journal.read(run_id, 1, upto)

    return History.load(entries())


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


@dataclass
class History:
    """The recorded calls of a run, its body's mutations, and failed attempts per step."""

    calls: dict[int, RecordedCall] = field(default_factory=dict)
    body_mutations: deque[Entry] = field(default_factory=deque)
    failed_attempts: dict[str, int] = field(default_factory=dict)
    terminal: Entry | None = None
    last_seq: int = 0
    fork_edits: list[Entry] = field(default_factory=list)
    fork_barrier: int = 0
    """The fork's edits apply once the call with this index (the last one recorded
    before the fork point) has been replayed; 0 means at the start."""

    @classmethod
    def load(cls, entries: Iterable[Entry]) -> History:
        """Index a run's entries (in seq order)."""
        h = cls()
        step_mutations: dict[str, list[Entry]] = {}
        for e in entries:
            h.last_seq = e.seq
            kind = e.kind
            if kind in (K.STATE_SET, K.STATE_DELETED, K.STATE_APPENDED):
                if e.step == FORK_STEP:
                    h.fork_edits.append(e)
                    h.fork_barrier = max(h.calls, default=0)
                elif e.step is None:
                    h.body_mutations.append(e)
                else:
                    step_mutations.setdefault(e.step, []).append(e)
            elif kind == K.STEP_FAILED and not (e.key or "").startswith("final:"):
                assert e.step is not None
                h.failed_attempts[e.step] = h.failed_attempts.get(e.step, 0) + 1
            elif kind in CALL_KINDS:
                assert e.step is not None
                name, index = split_key(e.step)
                h.calls[index] = RecordedCall(index, kind, name, e, step_mutations.pop(e.step, []))
            elif kind in (K.TIMER_FIRED, K.CHILD_COMPLETED):
                assert e.step is not None
                _, index = split_key(e.step)
                h.calls[index].completion = e
            elif kind in (K.RUN_COMPLETED, K.RUN_FAILED, K.RUN_CANCELLED):
                h.terminal = e
        return h

    def take(
        self, index: int, kind: str, name: str, args_hash: str | None = None
    ) -> RecordedCall | None:
        """The recorded call at ``index`` if it matches; None if the journal has none.

        Raises :class:`NonDeterminismError` when the journal holds a different call there.
        """
        rec = self.calls.pop(index, None)
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
        return rec

    def peek(self, index: int) -> RecordedCall | None:
        """The recorded call at ``index`` without consuming it."""
        return self.calls.get(index)

    @property
    def replaying(self) -> bool:
        """True while recorded calls or body mutations remain to be matched."""
        return bool(self.calls) or bool(self.body_mutations)

    def check_body_mutation(self, kind: str, key: str) -> bool:
        """Match a body mutation during replay; False once the journal is exhausted (live)."""
        if not self.body_mutations:
            return False
        rec = self.body_mutations.popleft()
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
        if self.calls:
            rec = self.calls[min(self.calls)]
            raise NonDeterminismError(
                f"non-deterministic replay at seq {rec.entry.seq}: the journal recorded "
                f"{rec.describe()} but the code returned without making that call",
                seq=rec.entry.seq,
                recorded=rec.describe(),
                got="return",
            )
