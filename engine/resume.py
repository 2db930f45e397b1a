"""Resuming a failed run: the same run goes on from its failing step with today's code.

``resume`` reopens a failed run in one guarded transaction (see :mod:`journal.reopen`):
a ``run.resumed`` entry follows its ``run.failed`` entry, which stays in the history,
and the run becomes pending. It is then claimed through the engine's one door for
holding runs (a queue's limit and priorities apply to a run of a queue) and executed:
its body replays, completed steps return their recorded results without running, and
the step whose failure ended the run runs again, with its whole retry policy. Unlike
``fork``, no new run is made: the run id stays the same.

A workflow run is resumed the same way: its state is the journal's fold, so the events
its completed steps consumed stay consumed, and the delivery of the step that failed
is still pending: it is dispatched again, with its attempt count reset by the
reopening (``state.deleted`` entries in the same transaction) and the run's living
time (its ``timeout``) counted again from the resume.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from journal import (
    EntryKind,
    HorizonError,
    Journal,
    NotFailed,
    ResumeRecord,
    Run,
)
from journal import payloads as P

from .errors import NotResumable
from .queues import WAKE_CHANNEL
from .recorded import CALL_KINDS, COMPLETION_KINDS, lineage, load_history
from .registry import resolve
from .workflow_context import INTERNAL

if TYPE_CHECKING:
    from .runtime import Engine, RunHandle

__all__ = ["check_resumable", "reopened_failures", "resume", "resume_run"]

K = EntryKind


def resume(run_id: str, *, by: str | None = None, engine: Engine | None = None) -> RunHandle:
    """Resume the failed run ``run_id`` of the default engine (or ``engine``) from its
    failing step with today's code, as the same run; see :meth:`Engine.resume`."""
    from .runtime import default_engine  # noqa: PLC0415 - runtime imports this module

    return (engine or default_engine()).resume(run_id, by=by)


def resume_run(engine: Engine, run_id: str, by: str | None) -> RunHandle:
    """What :meth:`Engine.resume` does: check, reopen, claim, launch."""
    from .runtime import RunHandle  # noqa: PLC0415 - runtime imports this module

    journal = engine.journal
    run = journal.get_run(run_id)
    _check(run)
    target = resolve(run.name, run_id=run.run_id, doing="resuming")
    if run.horizon:
        raise NotResumable(
            f"run {run_id!r} was compacted up to seq {run.horizon}: a resume replays its "
            "entries from the start, so it cannot be resumed (fork it from a later step)",
            run_id=run_id,
            status=run.status,
            reason="compacted",
        )
    try:
        load_history(journal, run)  # a fork whose sources were compacted cannot replay
    except HorizonError as exc:
        raise NotResumable(
            f"run {run_id!r} cannot be resumed: {exc}",
            run_id=run_id,
            status=run.status,
            reason="compacted",
        ) from exc
    failure = journal.last_entry(run_id)
    if failure is None or failure.kind != K.RUN_FAILED or failure.seq != run.last_seq:
        raise NotResumable(
            f"run {run_id!r} is failed but its journal does not end with its failure "
            f"(last entry: {failure.kind if failure else 'none'}); nothing was written",
            run_id=run_id,
            status=run.status,
            reason="no failure entry",
        )
    codec = engine.codec_of(run)
    record = ResumeRecord(
        by=by or engine.owner,
        at=time.time(),
        failed_seq=failure.seq,
        error=run.error,
        reopens=reopened_failures(journal, run, journal.decode_entry(failure)),
    )
    entry = journal.entry(K.RUN_RESUMED, record.to_payload(), codec=codec)
    resets = _workflow_resets(journal, run, journal.decode_entry(failure), codec)
    try:
        journal.reopen_failed(run_id, entry, failed_seq=failure.seq, error=run.error, resets=resets)
    except NotFailed as exc:
        raise NotResumable(
            f"run {run_id!r} was not resumed: {exc}",
            run_id=run_id,
            status=exc.status,
            reason="not failed",
        ) from exc
    # Held through the one door every run is held by: a run of a queue waits for room
    # in it (a worker takes it then), any other is claimed here and now.
    held = engine.hold_claimed(journal.get_run(run_id))
    if held is None:
        journal.notify(WAKE_CHANNEL, run_id)
        return RunHandle(engine, run_id)
    taken, future = held
    target.launch(engine, taken, future)
    return RunHandle(engine, run_id, future)


def _check(run: Run) -> None:
    if run.status != "failed":
        raise NotResumable(
            f"run {run.run_id!r} is {run.status}: only a failed run can be resumed "
            "(a finished run stays as it ended; fork it to go on from a step); "
            "nothing was written",
            run_id=run.run_id,
            status=run.status,
            reason="not failed",
        )


def _workflow_resets(journal: Journal, run: Run, failure: Any, codec: Any) -> list[Any]:
    """For a workflow run: ``state.deleted`` entries for the attempt counts of the
    pending deliveries to the step whose failure ended the run, so that it runs again
    with its whole retry policy (as a @durable step does). Other steps in flight when
    the run failed go on with their counts."""
    if run.kind != "workflow" or not isinstance(failure, dict):
        return []
    step = P.read_run_failed(failure).step
    if step is None:
        return []  # a timeout or a setup failure: no step to reset
    state = journal.state_at(run.run_id)
    keys = sorted(
        f"{INTERNAL}attempts/{key}"
        for key, item in state.pending.items()
        if isinstance(item, dict)
        and item.get("to") == step
        and f"{INTERNAL}attempts/{key}" in state.values
    )
    return [journal.entry(K.STATE_DELETED, key=k, step=step, codec=codec) for k in keys]


def reopened_failures(journal: Journal, run: Run, failure: Any) -> tuple[tuple[str, int, str], ...]:
    """The final step failures a resume of ``run`` executes again, as ``(run_id, seq,
    step key)``: the one its ``run.failed`` entry (decoded: ``failure``) names as what
    ended the run; for a failure recorded before runs named it, the final step
    failures after the body's last other call. A failure the body caught and went on
    from is history, replayed as it was."""
    read = P.read_run_failed(failure)
    named = read.step if read.names_step else ...
    last_final: dict[str, tuple[str, int]] = {}
    trailing: list[tuple[str, int, str]] = []
    for run_id, upto in lineage(journal, run):
        for e in journal.read(run_id, 1, upto):
            kind = e.kind
            if kind == K.RUN_RESUMED:
                trailing = []  # what came before was reopened (or settled) already
            elif kind == K.STEP_FAILED:
                if e.step is not None and (e.key or "").startswith("final:"):
                    last_final[e.step] = (run_id, e.seq)
                    trailing.append((run_id, e.seq, e.step))
            elif kind in CALL_KINDS or kind in COMPLETION_KINDS:
                trailing = []
    if named is ...:  # written before run.failed named its step
        return tuple(trailing)
    if named is None or named not in last_final:
        return ()
    run_id, seq = last_final[named]
    return ((run_id, seq, named),)


def check_resumable(run: Run) -> NotResumable | None:
    """Why ``run`` cannot be resumed (it is not failed), or None."""
    try:
        _check(run)
    except NotResumable as exc:
        return exc
    return None
