"""A crash-testing kit: prove that a durable function or workflow survives a crash anywhere.

:func:`check_crash_safety` runs your ``@durable`` function (or ``Workflow``) once
without interruption, then once more for every commit that run made, each time
killing the run right after that commit (in-process: the engine's journal raises
:class:`SimulatedCrash`, a ``BaseException``, and accepts no write after it, as a dead
process would) and recovering it with a fresh :class:`~engine.Engine` on the same
file. Every recovered run must end as the uninterrupted one did: same status and
result (or error), same final state, same step completions in the journal.

What it catches: work done in a ``@durable`` body outside any step, whose effect
feeds the result or the state (a global counter, a read of something the crashed
execution changed, a clock or random number not taken from ``ctx``); and code that
does not take the same path when it is re-executed. Give ``reset`` to put your
globals or fakes back before each fresh run, and ``side_effects`` to also compare how
much an external effect grew (a sent-mail counter...): a step interrupted before its
commit legitimately runs again, so with steps running concurrently (``gather``,
``num_workers``) that comparison can report re-runs that are at-least-once by design.

Use it from a test::

    from engine.testing import check_crash_safety

    def test_checkout_is_crash_safe(tmp_path):
        check_crash_safety(checkout, cart_id=7, db_dir=tmp_path).assert_ok()

or, with the pytest plugin this package installs, the ``durable_crash_check`` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journal import (
    AppendRequest,
    ConflictError,
    CreateRequest,
    EntryKind,
    Journal,
    JournalError,
    NewEntry,
    RunNotFound,
    to_jsonable,
)

from .committer import GroupCommitter
from .durable import DurableFunction
from .errors import CrashSafetyError, EngineError
from .runtime import Engine
from .timetravel import Diff, _walk
from .workflow import Workflow

__all__ = [
    "CrashReport",
    "CrashSafetyError",
    "CrashTrial",
    "Outcome",
    "SimulatedCrash",
    "check_crash_safety",
]

RUN_ID = "crash-check"
"""The id of the run under test, in every trial's journal."""

_LABELLED = (
    EntryKind.STEP_COMPLETED,
    EntryKind.STEP_FAILED,
    EntryKind.CHILD_STARTED,
    EntryKind.CHILD_COMPLETED,
    EntryKind.TIMER_STARTED,
    EntryKind.RUN_COMPLETED,
    EntryKind.RUN_FAILED,
    EntryKind.RUN_STARTED,
)


class SimulatedCrash(BaseException):
    """The process "dies" here: raised from the engine's commit path right after the
    chosen commit, and by every later write. Not an ``Exception``, so neither the engine
    nor your ``except Exception`` records or swallows it."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as its journal file tells it."""

    status: str
    result: Any
    error: str | None
    state: dict[str, Any]
    """The final state (values as plain JSON data; the engine's own ``@`` keys left out)."""
    steps: dict[str, int]
    """Step completions recorded, by ``"<run id>: <step>"`` (child runs included)."""
    effects: Any = None
    """How much ``side_effects()`` grew during the run (if given)."""


@dataclass(frozen=True)
class CrashTrial:
    """One crash point: the run was killed after commit ``crash_after``, then recovered."""

    crash_after: int
    label: str
    """What that commit held, e.g. ``"step.completed charge#2"``."""
    crashed: bool
    """False if the run ended before reaching that commit (a different path)."""
    outcome: Outcome
    differences: list[str] = field(default_factory=list)
    """How the outcome differs from the uninterrupted run's (empty: it does not)."""

    @property
    def ok(self) -> bool:
        """True when the recovered run ended exactly as the uninterrupted one."""
        return not self.differences


@dataclass
class CrashReport:
    """The uninterrupted run, a repeat of it, and every crash trial."""

    target: str
    baseline: Outcome
    repeat_differences: list[str]
    """How a second uninterrupted run differed from the first (empty: repeatable)."""
    trials: list[CrashTrial]

    @property
    def repeatable(self) -> bool:
        """Two uninterrupted runs ended the same way."""
        return not self.repeat_differences

    @property
    def ok(self) -> bool:
        """Repeatable, and every crash trial ended as the uninterrupted run."""
        return self.repeatable and all(t.ok for t in self.trials)

    @property
    def first_failure(self) -> CrashTrial | None:
        """The earliest crash point whose recovered run differs, if any."""
        return next((t for t in self.trials if not t.ok), None)

    def render(self) -> str:
        """A human-readable summary: what was tried and, on failure, where and how it differs."""
        failed = [t for t in self.trials if not t.ok]
        head = (
            f"crash check of {self.target}: {len(self.trials)} crash points "
            f"(one after each commit), {len(self.trials) - len(failed)} recovered to the "
            "uninterrupted outcome"
        )
        lines = [head]
        if not self.repeatable:
            lines.append(
                "NOT REPEATABLE: a second uninterrupted run ended differently, so the run "
                "depends on something outside the journal (global state, time, randomness, "
                "an external system) or was not reset between runs:"
            )
            lines += [f"  {d}" for d in self.repeat_differences]
        first = self.first_failure
        if first is not None:
            lines.append(
                f"FIRST FAILURE: crash after commit {first.crash_after} ({first.label}); "
                "recovered run differs from the uninterrupted one:"
            )
            lines += [f"  {d}" for d in first.differences]
            others = [t.crash_after for t in failed[1:]]
            if others:
                lines.append(f"also failing after commits: {others}")
            lines.append(
                "Likely cause: work in the @durable body outside any @step (it runs again on "
                "recovery), or a value not taken from ctx (ctx.now(), ctx.random(), ...)."
            )
        if self.ok:
            lines.append("OK: every crash point recovered to the same result, state and steps.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()

    def assert_ok(self) -> CrashReport:
        """Raise :class:`CrashSafetyError` with :meth:`render` unless :attr:`ok`; return self."""
        if not self.ok:
            raise CrashSafetyError(self.render())
        return self


# -- the crash injection -----------------------------------------------------------------


class _CrashingJournal(Journal):
    """A journal that counts its commits and "dies" right after the chosen one."""

    def __init__(self, path: Path, crash_after: int | None, hmac_key: bytes | str | None) -> None:
        super().__init__(path, durability="process", hmac_key=hmac_key)
        self.crash_after = crash_after
        self.commits: list[str] = []
        self.dead = False

    def _alive(self) -> None:
        if self.dead:
            raise SimulatedCrash("the process is dead: it writes nothing more")

    def _committed(self, entries: Sequence[NewEntry], what: str) -> None:
        self.commits.append(_label(entries, what))
        if self.crash_after is not None and len(self.commits) >= self.crash_after:
            self.dead = True
            raise SimulatedCrash(f"crash after commit {len(self.commits)}: {self.commits[-1]}")

    def create(self, request: CreateRequest) -> Any:  # create_run comes through here too
        self._alive()
        run, created = super().create(request)
        if created:
            self._committed(request.entries, f"run created {run.run_id}")
        return run, created

    def append(self, run_id: str, entries: Sequence[NewEntry], **kwargs: Any) -> int:
        self._alive()
        seq = super().append(run_id, entries, **kwargs)
        self._committed(entries, f"update of {run_id} ({kwargs.get('status') or 'no status'})")
        return seq

    def append_batch(self, requests: Sequence[AppendRequest | CreateRequest]) -> list[Any]:
        self._alive()
        results = super().append_batch(requests)
        applied = [
            e
            for req, r in zip(requests, results, strict=True)
            if not isinstance(r, JournalError)
            for e in req.entries
        ]
        if any(not isinstance(r, JournalError) for r in results):
            self._committed(applied, "batch")
        return results

    def claim_run(self, *args: Any, **kwargs: Any) -> Any:
        self._alive()
        return super().claim_run(*args, **kwargs)

    def renew_lease(
        self,
        run_id: str,
        owner: str,
        epoch: int,
        lease_seconds: float,
        *,
        heartbeat: str | None = None,
    ) -> float:
        if self.dead:  # the heartbeat thread: report the lease lost, write nothing
            raise ConflictError(f"run {run_id!r}: the process is dead", run_id=run_id)
        return super().renew_lease(run_id, owner, epoch, lease_seconds, heartbeat=heartbeat)

    def renew_leases(
        self,
        owner: str,
        leases: Mapping[str, int],
        lease_seconds: float,
        *,
        heartbeats: Mapping[str, str] | None = None,
    ) -> list[str]:
        if self.dead:  # the heartbeat thread: every lease lost, nothing written
            return list(leases)
        return super().renew_leases(owner, leases, lease_seconds, heartbeats=heartbeats)

    def write_snapshot(self, run_id: str, seq: int | None = None) -> Any:
        self._alive()
        return super().write_snapshot(run_id, seq)


def _label(entries: Sequence[NewEntry], fallback: str) -> str:
    for kind in _LABELLED:
        for e in reversed(entries):
            if e.kind == kind:
                return f"{e.kind} {e.step}" if e.step else e.kind
    return entries[-1].kind if entries else fallback


class _DirectCommitter(GroupCommitter):
    """One commit per request, awaited directly, so a SimulatedCrash reaches the run.

    Commits go through the committer's one thread, as the group committer's do: steps of
    one ``gather`` submit in order, and a pool of several threads could land a later
    append before an earlier one (which then fails its expected-seq check).
    """

    async def submit(self, request: AppendRequest | CreateRequest) -> Any:
        loop = asyncio.get_running_loop()
        (result,) = await loop.run_in_executor(self._pool, self._journal.append_batch, [request])
        if isinstance(result, JournalError):
            raise result
        return result


class _CrashingEngine(Engine):
    """An engine whose async commits go straight to the journal (no group commit)."""

    def committer(self) -> GroupCommitter:
        loop = asyncio.get_running_loop()
        found = self._committers.get(loop)
        if found is None:
            found = self._committers[loop] = _DirectCommitter(self.journal, loop)
        return found


# -- running the target -------------------------------------------------------------------


def _describe(target: Any) -> str:
    if isinstance(target, DurableFunction):
        return f"@durable {target.name}"
    cls = target if isinstance(target, type) else type(target)
    return f"workflow {cls.__module__}:{cls.__qualname__}"


def _execute(eng: Engine, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Run the target to its end (or its crash) on ``eng`` under :data:`RUN_ID`."""
    if isinstance(target, DurableFunction):
        if target.is_async:
            asyncio.run(eng.acall(target, args, kwargs, run_id=RUN_ID))
        else:
            eng.call(target, args, kwargs, run_id=RUN_ID)
        return
    instance = target() if isinstance(target, type) else copy.copy(target)
    instance._engine = eng

    async def main() -> Any:
        return await instance.run(run_id=RUN_ID, **kwargs)

    asyncio.run(main())


def _outcome(path: Path, effects: Any, hmac_key: bytes | str | None) -> Outcome:
    with Journal(path, hmac_key=hmac_key) as j:
        run = j.get_run(RUN_ID)
        result = (
            to_jsonable(j.decode(run.output, run.codec, where=f"run {RUN_ID!r} output"))
            if run.status == "completed"
            else None
        )
        state = {
            k: to_jsonable(v) for k, v in j.state_at(RUN_ID).values.items() if not k.startswith("@")
        }
        steps: Counter[str] = Counter()
        for r in j.list_runs(limit=None):
            for e in j.read(r.run_id, r.horizon + 1):
                if e.kind == EntryKind.STEP_COMPLETED:
                    steps[f"{r.run_id}: {e.step}"] += 1
        return Outcome(run.status, result, run.error, state, dict(steps), effects)


def _grew(before: Any, after: Any) -> Any:
    if before is None and after is None:
        return None
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        return {k: after.get(k, 0) - before.get(k, 0) for k in sorted({*before, *after})}
    return after - before


def _differences(base: Outcome, got: Outcome) -> list[str]:
    out: list[str] = []
    for name in ("status", "error"):
        if getattr(base, name) != getattr(got, name):
            out.append(f"{name}: {getattr(base, name)!r} -> {getattr(got, name)!r}")
    for name in ("result", "state", "steps", "effects"):
        d = Diff({}, {}, {})
        _walk(name, getattr(base, name), getattr(got, name), d)
        out += [f"{path}: added {v!r}" for path, v in sorted(d.added.items())]
        out += [f"{path}: removed {v!r}" for path, v in sorted(d.removed.items())]
        out += [f"{path}: {a!r} -> {b!r}" for path, (a, b) in sorted(d.changed.items())]
    return out


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def check_crash_safety(
    target: Any,
    *args: Any,
    db_dir: str | Path | None = None,
    reset: Callable[[], Any] | None = None,
    side_effects: Callable[[], Any] | None = None,
    run_timeout: float = 60.0,
    hmac_key: bytes | str | None = None,
    **kwargs: Any,
) -> CrashReport:
    """Crash ``target`` after each of its commits in turn, recover it, and compare.

    ``target`` is a ``@durable`` function (sync or async; ``args``/``kwargs`` are its
    arguments) or a ``Workflow`` class or instance (``kwargs`` are its start event's
    fields). Journals are written under ``db_dir`` (a temporary directory by default,
    removed afterwards). ``reset`` is called before every fresh run (not before a
    recovery); ``side_effects`` returns a number or a mapping of counters whose growth
    per run is compared too. ``run_timeout`` bounds each recovery; ``hmac_key`` is the
    key of a signed pickle codec, if the target uses one. Returns a :class:`CrashReport`; call
    :meth:`~CrashReport.assert_ok` to fail a test with its rendering.
    """
    if not isinstance(target, DurableFunction | Workflow) and not (
        isinstance(target, type) and issubclass(target, Workflow)
    ):
        raise TypeError(f"expected a @durable function or a Workflow, got {target!r}")
    if args and not isinstance(target, DurableFunction):
        raise TypeError("a workflow takes its start event's fields as keyword arguments")
    own_dir = db_dir is None
    if db_dir is None:
        base = Path(tempfile.mkdtemp(prefix="durable-crash-check-"))
    else:
        base = Path(db_dir)
        base.mkdir(parents=True, exist_ok=True)
    path = base / "crash-check.db"
    probe = side_effects or (lambda: None)
    try:

        def uninterrupted() -> tuple[Outcome, list[str]]:
            _fresh(path)
            if reset is not None:
                reset()
            before = probe()
            journal = _CrashingJournal(path, None, hmac_key)
            error: Exception | None = None
            with _CrashingEngine(journal, lease_seconds=0) as eng:
                try:
                    _execute(eng, target, args, kwargs)
                except Exception as exc:  # a failed run is an outcome like any other...
                    error = exc
            try:
                outcome = _outcome(path, _grew(before, probe()), hmac_key)
            except RunNotFound:  # ...but one that never started is the caller's error
                if error is not None:
                    raise error from None
                raise
            return outcome, list(journal.commits)

        baseline, commits = uninterrupted()
        repeat, _ = uninterrupted()
        trials = []
        for k in range(1, len(commits) + 1):
            _fresh(path)
            if reset is not None:
                reset()
            before = probe()
            journal = _CrashingJournal(path, k, hmac_key)
            with (
                _CrashingEngine(journal, lease_seconds=0) as eng,
                contextlib.suppress(SimulatedCrash, Exception),
            ):
                _execute(eng, target, args, kwargs)
            # A run that does not finish after recovery shows as such in its outcome.
            with (
                Engine(
                    path,
                    durability="process",
                    hmac_key=hmac_key,
                    lease_seconds=max(run_timeout, 1.0),
                ) as rec,
                contextlib.suppress(EngineError),
            ):
                rec.recover(timeout=run_timeout)
            got = _outcome(path, _grew(before, probe()), hmac_key)
            label = commits[k - 1]
            trials.append(CrashTrial(k, label, journal.dead, got, _differences(baseline, got)))
        return CrashReport(_describe(target), baseline, _differences(baseline, repeat), trials)
    finally:
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
