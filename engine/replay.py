"""Replay debugging: re-execute today's code against a recorded run, writing nothing.

Steps return their recorded results, sleeps and waits return at once, and the
first place where the code does something other than what the journal holds is
reported. Because the real code runs, a breakpoint in it stops there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from journal import RunNotFound, to_jsonable

from .errors import EngineError, FunctionNotFound, NonDeterminismError
from .execution import _CURRENT_RUN, ContinueAsNew, ReplayStop
from .registry import resolve
from .runtime import Engine, default_engine

__all__ = ["ReplayReport", "replay", "replay_all"]


@dataclass
class ReplayReport:
    """The outcome of replaying one run: ok, or the first divergence."""

    run_id: str
    name: str
    ok: bool
    calls_replayed: int = 0
    stopped: str = "end of run"
    divergence: dict[str, Any] | None = None
    error: str | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for people."""
        if self.ok:
            return f"{self.run_id}: ok ({self.calls_replayed} calls replayed, {self.stopped})"
        return f"{self.run_id}: {self.error}"


def replay(run_id: str, *, until: int | None = None, engine: Engine | None = None) -> ReplayReport:
    """Re-execute ``run_id``'s recorded journal with today's code, writing nothing.

    ``until=N`` stops after N recorded calls, leaving the Context as it was there
    (in ``report.state``, or under a debugger at a breakpoint in the code).
    """
    eng = engine or default_engine()
    run = eng.journal.get_run(run_id)
    target = resolve(run.name, run_id=run_id, doing="replaying")
    if hasattr(target, "replay_run"):
        report: ReplayReport = target.replay_run(eng, run, until=until)
        return report
    ex, args, kwargs = eng.prepare(target, run, replay_only=True)
    ex.replay_until = until
    report = ReplayReport(run_id=run_id, name=run.name, ok=True)
    token = _CURRENT_RUN.set(ex)
    try:
        try:
            if target.is_async:
                asyncio.run(target.fn(*args, **kwargs))
            else:
                target.fn(*args, **kwargs)
        except ContinueAsNew:
            report.stopped = "end of run (continued as new)"
        ex.history.check_exhausted()
    except ReplayStop as stop:
        report.stopped = stop.reason
    except NonDeterminismError as exc:
        report.ok = False
        report.error = str(exc)
        report.divergence = {k: exc.context.get(k) for k in ("seq", "recorded", "got")}
    except Exception as exc:
        recorded = run.error or ""
        if run.status == "failed" and type(exc).__qualname__ in recorded:
            report.stopped = f"the run failed as recorded ({type(exc).__qualname__})"
        else:
            report.ok = False
            report.error = (
                f"the code raised {type(exc).__qualname__}: {exc} (recorded: {run.status})"
            )
    finally:
        _CURRENT_RUN.reset(token)
    report.calls_replayed = ex.steps_replayed
    report.state = {k: to_jsonable(v) for k, v in ex.values.items()}
    return report


def replay_all(
    *,
    name: str | None = None,
    status: str | list[str] | None = None,
    engine: Engine | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[ReplayReport]:
    """Replay every stored run (or those matching ``name``/``status``) against today's
    code: run it in CI before a deploy to prove a change safe for runs in flight."""
    eng = engine or default_engine()
    runs = eng.journal.list_runs(name=name, status=status, limit=None)
    reports = []
    for i, run in enumerate(runs):
        reports.append(_safe_replay(run.run_id, run.name, eng))
        if progress is not None:
            progress(i + 1, len(runs))
    return reports


def _safe_replay(run_id: str, name: str, engine: Engine) -> ReplayReport:
    try:
        return replay(run_id, engine=engine)
    except (FunctionNotFound, RunNotFound, EngineError) as exc:
        return ReplayReport(run_id=run_id, name=name, ok=False, error=str(exc))
