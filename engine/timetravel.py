"""Time travel over recorded runs: history, the state at any step, diffs and forks.

A run's *checkpoints* are the entries that end a unit of work (a step's
completion or failed attempt, a timer, a child run, an event, the run's end);
checkpoint N is numbered from 1 in the order of the journal. A fork inherits its
source's checkpoints up to the fork point N; its own ``run.forked`` checkpoint (the
state with the fork's edits) is numbered N too, so step N+1 of a fork is step N+1 of
its source and diffs across runs compare like with like.

Each checkpoint says which state keys changed since the previous one, in two parts:
``set_keys``/``deleted_keys``, what the step itself changed, and
``body_set_keys``/``body_deleted_keys``, what the function's body changed after the
previous checkpoint (so after that step's result), before this one. Both are in the
state at this checkpoint.

Reading needs none of the user's code and runs none: values are decoded with
``strict=False``, so a value whose class cannot be imported here, or a pickle the
journal does not trust, reads as a :class:`journal.Undecoded` placeholder. Only
:func:`fork`, which executes, needs the run's code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from journal import EntryKind, HorizonError, Journal, Run, SeqOutOfRange, to_jsonable

from .errors import StepNotFound
from .recorded import FORK_STEP, lineage, split_key
from .runtime import Engine, RunHandle, default_engine

__all__ = [
    "CHECKPOINT_KINDS",
    "Checkpoint",
    "Diff",
    "StateView",
    "diff",
    "fork",
    "history",
    "iter_history",
    "state_at",
]

K = EntryKind

CHECKPOINT_KINDS = frozenset({
    K.STEP_COMPLETED, K.STEP_FAILED, K.TIMER_STARTED, K.TIMER_FIRED, K.CHILD_STARTED,
    K.CHILD_COMPLETED, K.EVENT_RECEIVED, K.RUN_FORKED, K.RUN_COMPLETED, K.RUN_FAILED,
    K.RUN_CANCELLED, K.RUN_RESUMED,
})  # fmt: skip


@dataclass(frozen=True)
class Checkpoint:
    """One unit of work in a run's history and what it changed."""

    number: int
    run_id: str
    seq: int
    first_seq: int
    kind: str
    step: str | None
    name: str | None
    attempt: int | None
    started_at: float | None
    ended_at: float
    set_keys: tuple[str, ...] = ()
    deleted_keys: tuple[str, ...] = ()
    emitted: tuple[str, ...] = ()
    consumed: tuple[str, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)
    body_set_keys: tuple[str, ...] = ()
    body_deleted_keys: tuple[str, ...] = ()

    @property
    def duration(self) -> float | None:
        """Seconds from the step's start to its end, when the start was recorded."""
        return None if self.started_at is None else self.ended_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        """The checkpoint as plain JSON-ready data (CLI ``--json``, the web view's API)."""
        return {
            "number": self.number,
            "run_id": self.run_id,
            "seq": self.seq,
            "first_seq": self.first_seq,
            "kind": self.kind,
            "step": self.step,
            "name": self.name,
            "attempt": self.attempt,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration": self.duration,
            "set_keys": list(self.set_keys),
            "deleted_keys": list(self.deleted_keys),
            "body_set_keys": list(self.body_set_keys),
            "body_deleted_keys": list(self.body_deleted_keys),
            "emitted": list(self.emitted),
            "consumed": list(self.consumed),
            "detail": to_jsonable(dict(self.detail)),
            "summary": self.summary(),
        }

    def summary(self) -> str:
        """One line: what happened and what changed."""
        parts = [self.kind]
        if self.step:
            parts.append(self.step)
        if self.attempt and self.attempt > 1:
            parts.append(f"attempt {self.attempt}")
        if self.set_keys:
            parts.append("set " + ", ".join(self.set_keys))
        if self.deleted_keys:
            parts.append("deleted " + ", ".join(self.deleted_keys))
        if self.body_set_keys:
            parts.append("body set " + ", ".join(self.body_set_keys))
        if self.body_deleted_keys:
            parts.append("body deleted " + ", ".join(self.body_deleted_keys))
        return " ".join(parts)


def _journal(engine: Engine | None) -> Journal:
    return (engine or default_engine()).journal


def iter_history(run_id: str, *, engine: Engine | None = None) -> Iterator[Checkpoint]:
    """Stream a run's checkpoints in order, reading the journal page by page."""
    journal = _journal(engine)
    run = journal.get_run(run_id)
    number = 0
    for segment_id, upto in lineage(journal, run):
        segment = journal.get_run(segment_id)
        for cp in _segment_history(journal, segment_id, segment.horizon + 1, upto, number):
            number = cp.number
            yield cp


class _Changes:
    """The mutations seen since the previous checkpoint: the step's own and the body's."""

    def __init__(self) -> None:
        self.own: dict[str, list[str]] = {"set": [], "deleted": []}
        self.body: dict[str, list[str]] = {"set": [], "deleted": []}
        self.emitted: list[str] = []
        self.consumed: list[str] = []

    def add(self, entry: Any) -> None:
        kind = entry.kind
        if (entry.key or "").startswith("@"):  # a workflow's own bookkeeping
            return
        what = {K.STATE_SET: "set", K.STATE_APPENDED: "set", K.STATE_DELETED: "deleted"}.get(kind)
        if what is not None:
            # Mutations carry the key of the step that made them; the body's carry none.
            (self.body if entry.step is None else self.own)[what].append(entry.key or "")
        elif kind == K.EVENT_EMITTED and entry.step is not None:
            self.emitted.append(entry.key or "")
        elif kind == K.EVENT_CONSUMED:
            self.consumed.append(entry.key or "")

    def fields(self, step: str | None) -> dict[str, tuple[str, ...]]:
        own, body = self.own, self.body
        if step is None:  # a checkpoint of the run itself: whoever made them, the body did
            body = {k: own[k] + body[k] for k in own}
            own = {"set": [], "deleted": []}
        return {
            "set_keys": tuple(dict.fromkeys(own["set"])),
            "deleted_keys": tuple(dict.fromkeys(own["deleted"])),
            "body_set_keys": tuple(dict.fromkeys(body["set"])),
            "body_deleted_keys": tuple(dict.fromkeys(body["deleted"])),
            "emitted": tuple(self.emitted),
            "consumed": tuple(self.consumed),
        }


def _segment_history(
    journal: Journal, segment_id: str, first: int, upto: int, number: int
) -> Iterable[Checkpoint]:
    """The checkpoints of one run of a lineage, numbered on from ``number``."""
    changes = _Changes()
    forked: Any = None  # a fork's run.forked entry, held until its edits are read
    last_seq = first - 1
    for entry in journal.read(segment_id, first, upto):
        if forked is not None and entry.step != FORK_STEP:
            yield _checkpoint(
                journal, forked, segment_id, first=1, seq=last_seq, number=number, changes=changes
            )
            changes, forked, first = _Changes(), None, last_seq + 1
        last_seq = entry.seq
        if forked is not None:
            changes.own["set" if entry.kind != K.STATE_DELETED else "deleted"].append(
                entry.key or ""
            )
            continue
        changes.add(entry)
        if entry.kind == K.RUN_FORKED:
            forked = entry  # not numbered: it stands at its source's checkpoint N
            continue
        if entry.kind not in CHECKPOINT_KINDS:
            continue
        number += 1
        yield _checkpoint(
            journal, entry, segment_id, first=first, seq=entry.seq, number=number, changes=changes
        )
        changes, first = _Changes(), entry.seq + 1
    if forked is not None:
        yield _checkpoint(
            journal, forked, segment_id, first=1, seq=last_seq, number=number, changes=changes
        )


def _checkpoint(
    journal: Journal,
    entry: Any,
    segment_id: str,
    *,
    first: int,
    seq: int,
    number: int,
    changes: _Changes,
) -> Checkpoint:
    payload = _payload(journal, entry)
    detail = payload if isinstance(payload, dict) else {}
    name = split_key(entry.step)[0] if entry.step and "#" in entry.step else entry.step
    step = entry.step if entry.step != FORK_STEP else None
    fields = changes.fields(step)
    if entry.kind == K.RUN_FORKED:  # the edits are the fork's own
        fields["set_keys"], fields["body_set_keys"] = fields["body_set_keys"], ()
        fields["deleted_keys"], fields["body_deleted_keys"] = fields["body_deleted_keys"], ()
    return Checkpoint(
        number=number,
        run_id=segment_id,
        seq=seq,
        first_seq=first,
        kind=entry.kind,
        step=step,
        name=name,
        attempt=detail.get("attempt"),
        started_at=detail.get("started"),
        ended_at=entry.ts,
        detail={k: v for k, v in detail.items() if k not in ("result", "started")},
        **fields,
    )


def _payload(journal: Journal, entry: Any) -> Any:
    if entry.kind in (
        K.STEP_FAILED, K.RUN_FAILED, K.RUN_RESUMED, K.STEP_COMPLETED, K.RUN_FORKED, K.TIMER_STARTED
    ):  # fmt: skip
        return journal.decode_entry(entry, strict=False)
    return None


def history(run_id: str, *, engine: Engine | None = None) -> list[Checkpoint]:
    """A run's checkpoints, in order (see :func:`iter_history` to stream a long run)."""
    return list(iter_history(run_id, engine=engine))


@dataclass(frozen=True)
class StateView:
    """A run's state as it was at one point: read-only."""

    run_id: str
    seq: int
    step: int | None
    values: Mapping[str, Any]
    pending_events: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The values as plain JSON-ready data."""
        return {k: to_jsonable(v) for k, v in self.values.items()}


NUMBERED_KINDS = CHECKPOINT_KINDS - {K.RUN_FORKED}
"""Checkpoints that take a number of their own (a fork's ``run.forked`` takes its fork
point's)."""


def _locate(journal: Journal, run: Run, step: int) -> tuple[str, int]:
    """(run id, seq) of checkpoint ``step``, without reading more than needed. Step N of a
    fork forked at N is the fork's state with its edits."""
    if step < 0:
        raise StepNotFound(f"run {run.run_id!r}: step numbers start at 1 (0 is the start)")
    chain = lineage(journal, run)
    kinds = sorted(NUMBERED_KINDS)
    remaining = step
    for i, (segment_id, upto) in enumerate(chain):
        if remaining == 0 and i == 0:
            return segment_id, 0
        horizon = journal.get_run(segment_id).horizon
        if horizon:
            # Checkpoints below the horizon are gone, so steps from here on can no longer
            # be counted: refuse rather than answer with another step.
            raise HorizonError(
                f"run {segment_id!r} was compacted up to seq {horizon}: its steps can no "
                "longer be numbered; ask by seq instead (--seq on the command line)",
                run_id=segment_id,
                horizon=horizon,
            )
        count = journal.count_checkpoints(segment_id, upto, kinds)
        last = i == len(chain) - 1
        if remaining == 0 and (count or last):
            # Past the end of a source: the fork point, as this fork has it, edits included
            # (a fork forked at its own fork point passes on to its fork).
            return segment_id, _fork_point(journal, segment_id)
        # The last checkpoint of a source is the fork point: the fork's own state there.
        if 0 < remaining < count or (remaining == count and last):
            seq = journal.locate_checkpoint(segment_id, upto, kinds, remaining)
            assert seq is not None  # fewer than count checkpoints up to upto: counted above
            return segment_id, seq
        remaining -= count
    raise StepNotFound(
        f"run {run.run_id!r} has {step - remaining} checkpoints; there is no step {step}",
        run_id=run.run_id,
        step=step,
    )


def _fork_point(journal: Journal, fork_id: str) -> int:
    """The seq that ends a fork's preamble: its ``run.forked`` entry and its edits."""
    return journal.last_seq_marked(fork_id, K.RUN_FORKED, FORK_STEP)


def state_at(
    run_id: str,
    step: int | None = None,
    *,
    seq: int | None = None,
    time: float | None = None,
    engine: Engine | None = None,
) -> StateView:
    """The run's state after checkpoint ``step`` (``state_at(run_id, 3)``, as the CLI's
    ``--at 3``), after its own ``seq``, or at ``time`` (a Unix timestamp); the latest
    state if none is given. Costs at most one snapshot
    interval of entries, whatever the run's length."""
    if sum(x is not None for x in (step, seq, time)) > 1:
        raise ValueError("give at most one of step=, seq=, time=")
    journal = _journal(engine)
    run = journal.get_run(run_id)
    target_run, target_seq = run.run_id, seq
    if step is not None:
        target_run, target_seq = _locate(journal, run, step)
    elif time is not None:
        found = journal.seq_at_time(run_id, time)
        if found is None:
            if run.forked_from is None:
                when = dt.datetime.fromtimestamp(time).astimezone().isoformat(timespec="seconds")
                raise StepNotFound(f"run {run_id!r} has no entry at or before {when}")
            found = 0
        target_seq = int(found)
    folded = journal.state_at(target_run, target_seq, strict=False)
    return StateView(
        run_id=target_run,
        seq=folded.seq,
        step=step,
        values=MappingProxyType(dict(folded.values)),
        pending_events=MappingProxyType(dict(folded.pending)),
    )


@dataclass(frozen=True)
class Diff:
    """What changed between two states, by path (``cart.items[2]``)."""

    added: dict[str, Any]
    removed: dict[str, Any]
    changed: dict[str, tuple[Any, Any]]

    @property
    def empty(self) -> bool:
        """True when the two states are equal."""
        return not (self.added or self.removed or self.changed)


def _walk(path: str, old: Any, new: Any, out: Diff) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old.keys() - new.keys():
            out.removed[f"{path}.{key}" if path else str(key)] = old[key]
        for key in new.keys() - old.keys():
            out.added[f"{path}.{key}" if path else str(key)] = new[key]
        for key in old.keys() & new.keys():
            _walk(f"{path}.{key}" if path else str(key), old[key], new[key], out)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _walk(f"{path}[{i}]", a, b, out)
    elif isinstance(old, list) and isinstance(new, list) and new[: len(old)] == old:
        for i in range(len(old), len(new)):
            out.added[f"{path}[{i}]"] = new[i]
    elif old != new:
        out.changed[path] = (old, new)


def diff(
    run_id: str,
    a: int,
    b: int,
    *,
    other_run_id: str | None = None,
    engine: Engine | None = None,
) -> Diff:
    """Keys added, removed and changed from checkpoint ``a`` of ``run_id`` to checkpoint
    ``b`` (of ``other_run_id`` if given: diff two runs); nested values by path."""
    before = state_at(run_id, step=a, engine=engine)
    after = state_at(other_run_id or run_id, step=b, engine=engine)
    out = Diff({}, {}, {})
    old = {k: to_jsonable(v) for k, v in before.values.items()}
    new = {k: to_jsonable(v) for k, v in after.values.items()}
    _walk("", old, new, out)
    return Diff(
        dict(sorted(out.added.items())),
        dict(sorted(out.removed.items())),
        dict(sorted(out.changed.items())),
    )


def fork(
    run_id: str,
    *,
    at: int,
    state: Mapping[str, Any] | None = None,
    new_run_id: str | None = None,
    engine: Engine | None = None,
) -> RunHandle:
    """Start a new run that shares ``run_id``'s history up to checkpoint ``at``, with
    ``state`` edits applied there as journaled mutations, and that goes on live with
    today's code. Nothing the fork writes reaches the source, and nothing the source
    writes after the fork point reaches the fork."""
    eng = engine or default_engine()
    journal = eng.journal
    source = journal.get_run(run_id)
    segment_id, seq = _locate(journal, source, at)
    segment = journal.get_run(segment_id)
    if segment.horizon:
        raise HorizonError(
            f"run {segment_id!r} was compacted up to seq {segment.horizon}: a fork replays "
            "its entries from the start, so it cannot be forked",
            run_id=segment_id,
            horizon=segment.horizon,
        )
    if seq > segment.last_seq:
        raise SeqOutOfRange(f"run {segment_id!r} has no seq {seq}", run_id=segment_id, seq=seq)
    return eng.start_fork(segment, seq, at, dict(state or {}), new_run_id)
