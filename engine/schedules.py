"""Schedules: a durable function started on a cron expression, by whichever worker is up.

Each tick is one run whose id is the schedule's name and the tick's time
(``nightly@2026-12-08T02:00:00Z``), created pending in the function's queue. Creating
a run id that exists writes nothing, so any number of workers firing the same tick
start it once; the schedule's next tick then moves on with a compare-and-set. A
worker killed between the two leaves the next tick where it was, and the next
worker to look creates nothing new for it and moves it on.

Cron expressions are parsed and stepped by ``cronsim`` (five fields, or six with
seconds first), in the schedule's time zone (``zoneinfo``), daylight-saving changes
included.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from journal import EntryKind, JournalError, ScheduleRecord, check_tags
from journal import payloads as P

from .errors import BadSchedule, FunctionNotFound
from .queues import DEFAULT_QUEUE, WAKE_CHANNEL
from .registry import resolve

if TYPE_CHECKING:
    from .durable import DurableFunction
    from .runtime import Engine

__all__ = [
    "LATE_GRACE",
    "MissedTicks",
    "Schedule",
    "add_schedule",
    "fire_schedules",
    "list_schedules",
    "pause_schedule",
    "remove_schedule",
    "resume_schedule",
    "tick_run_id",
]

log = logging.getLogger("durable.schedules")

MissedTicks = Literal["skip", "last", "all"]
"""What a worker does with ticks that passed while no worker was up: ``"skip"`` them
(only a tick less than LATE_GRACE old still runs), run the ``"last"`` one, or run
``"all"`` of them, oldest first."""
LATE_GRACE = 60.0
"""Seconds after its time within which a tick is late, not missed: under ``"skip"`` it
still runs (a worker polls, so ticks are fired up to a poll interval late)."""
_MAX_TICKS = 100  # fired per schedule per pass under "all": the rest on the next pass


@dataclass(frozen=True)
class Schedule:
    """When a function runs: a cron expression (``"0 3 * * *"``; six fields put
    seconds first), the time zone it is read in, and the policy for missed ticks."""

    cron: str
    timezone: str = "UTC"
    missed: MissedTicks = "skip"

    def __post_init__(self) -> None:
        if not isinstance(self.cron, str):
            raise BadSchedule(f"a cron expression is a string, got {self.cron!r}", cron=self.cron)
        try:
            self._zone()
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise BadSchedule(
                f"unknown time zone {self.timezone!r} (an IANA name such as 'Europe/Paris')",
                timezone=self.timezone,
            ) from None
        try:
            CronSim(self.cron, datetime.now(timezone.utc))
        except CronSimError as exc:
            raise BadSchedule(
                f"bad cron expression {self.cron!r}: {exc} (five fields: minute hour "
                "day-of-month month day-of-week; six put seconds first)",
                cron=self.cron,
            ) from None
        if self.missed not in get_args(MissedTicks):
            raise BadSchedule(
                f"missed={self.missed!r}: expected one of {get_args(MissedTicks)}",
                missed=self.missed,
            )

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, t: float) -> float | None:
        """The first tick strictly after Unix time ``t``; None if there is none."""
        try:
            return next(CronSim(self.cron, datetime.fromtimestamp(t, self._zone()))).timestamp()
        except (StopIteration, CronSimError):
            return None

    def last_at_or_before(self, t: float) -> float | None:
        """The latest tick at or before Unix time ``t``; None if there is none."""
        start = datetime.fromtimestamp(int(t) + 1, self._zone())
        try:
            return next(CronSim(self.cron, start, reverse=True)).timestamp()
        except (StopIteration, CronSimError):
            return None

    def plan(self, next_at: float, now: float) -> tuple[list[float], float | None]:
        """The ticks to fire at ``now`` for a schedule whose next tick is ``next_at``,
        under the missed-ticks policy, and the next tick once they are fired."""
        if next_at > now:
            return [], next_at
        if self.missed == "all":
            ticks: list[float] = []
            tick: float | None = next_at
            while tick is not None and tick <= now and len(ticks) < _MAX_TICKS:
                ticks.append(tick)
                tick = self.next_after(tick)
            return ticks, tick
        latest = self.last_at_or_before(now)
        after = self.next_after(now)
        if latest is None or latest < next_at:
            return [], after
        if self.missed == "skip" and now - latest > LATE_GRACE:
            return [], after
        return [latest], after


_DECLARED: dict[str, tuple[Schedule, DurableFunction[Any, Any]]] = {}
_LOCK = threading.Lock()


def declare(fn: DurableFunction[Any, Any], schedule: Schedule) -> None:
    """Record ``@durable(schedule=...)``: every worker of this process stores it."""
    with _LOCK:
        _DECLARED[fn.name] = (schedule, fn)


def tick_run_id(name: str, tick: float) -> str:
    """The run id of schedule ``name``'s tick at Unix time ``tick``."""
    return f"{name}@{_iso(tick)}"


def _iso(tick: float) -> str:
    return datetime.fromtimestamp(tick, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _engine_of(fn: DurableFunction[Any, Any] | str | None, engine: Engine | None) -> Engine:
    if engine is not None:
        return engine
    if fn is not None and not isinstance(fn, str):
        return fn.engine
    from .runtime import default_engine  # noqa: PLC0415 - runtime imports this module's users

    return default_engine()


def _record(
    engine: Engine,
    name: str,
    fn: DurableFunction[Any, Any] | str,
    schedule: Schedule,
    *,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    tags: Mapping[str, str] | None,
    queue: str | None,
    origin: str,
    since: float,
) -> ScheduleRecord:
    if not isinstance(name, str) or not name:
        raise BadSchedule(f"a schedule needs a non-empty name, got {name!r}", name=name)
    journal = engine.journal
    target = fn if isinstance(fn, str) else fn.name
    codec = journal.codec if isinstance(fn, str) else (fn._codec or journal.codec)
    value = {"args": list(args), "kwargs": dict(kwargs or {})}
    now = time.time()
    return ScheduleRecord(
        name=name,
        target=target,
        cron=schedule.cron,
        timezone=schedule.timezone,
        missed=schedule.missed,
        codec=codec.name,
        input=codec.encode(value, path="input"),
        tags=check_tags(tags),
        queue=queue if queue is not None else (None if isinstance(fn, str) else fn.queue),
        origin=origin,
        created_at=now,
        paused=False,
        next_at=schedule.next_after(since),
        updated_at=now,
    )


def add_schedule(
    name: str,
    fn: DurableFunction[Any, Any] | str,
    cron: str,
    *,
    timezone: str = "UTC",
    missed: MissedTicks = "skip",
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    queue: str | None = None,
    since: datetime | float | None = None,
    replace: bool = False,
    engine: Engine | None = None,
) -> ScheduleRecord:
    """Store a schedule in the journal: every worker sharing it starts ``fn(*args,
    **kwargs)`` on each tick of ``cron`` read in ``timezone``. ``fn`` is a durable
    function or the name it records. The first tick is the first after ``since``
    (default now; an earlier time with ``missed="all"`` runs the ticks since then).

    Adding a name that exists with the same definition returns it as stored (so
    every process may add its schedules when it starts); another definition raises
    :class:`journal.ScheduleConflict` unless ``replace=True``."""
    schedule = Schedule(cron, timezone, missed)
    eng = _engine_of(fn, engine)
    start = time.time() if since is None else _unix(since)
    record = _record(eng, name, fn, schedule, args=args, kwargs=kwargs, tags=tags,
                     queue=queue, origin="api", since=start)  # fmt: skip
    stored, _ = eng.journal.schedules.put(record, replace=replace)
    return stored


def _unix(when: datetime | float) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise BadSchedule(f"since={when!r} has no time zone: pass an aware datetime")
        return when.timestamp()
    return float(when)


def pause_schedule(name: str, *, engine: Engine | None = None) -> ScheduleRecord:
    """Stop firing ``name`` until :func:`resume_schedule`; its runs so far go on."""
    schedules = _engine_of(None, engine).journal.schedules
    schedules.get(name)  # ScheduleNotFound names it
    schedules.set_paused(name, True)
    return schedules.get(name)


def resume_schedule(name: str, *, engine: Engine | None = None) -> ScheduleRecord:
    """Fire ``name`` again from its next tick after now (ticks while paused are not run)."""
    schedules = _engine_of(None, engine).journal.schedules
    record = schedules.get(name)
    next_at = Schedule(record.cron, record.timezone, record.missed).next_after(time.time())  # type: ignore[arg-type]
    schedules.set_paused(name, False, next_at=next_at)
    return schedules.get(name)


def remove_schedule(name: str, *, engine: Engine | None = None) -> bool:
    """Delete ``name`` (False if there was none); the runs it started stay. A schedule
    declared in code (``@durable(schedule=...)``) is stored again when a worker starts:
    pause it, or take it out of the code."""
    return _engine_of(None, engine).journal.schedules.remove(name)


def list_schedules(*, engine: Engine | None = None) -> list[ScheduleRecord]:
    """Every stored schedule, by name, with its next tick (``next_at``)."""
    return _engine_of(None, engine).journal.schedules.all()


def store_declared(engine: Engine) -> list[str]:
    """Store (or update) every ``@durable(schedule=...)`` of this process in ``engine``'s
    journal; a worker does this when it starts. The names stored or changed."""
    with _LOCK:
        declared = list(_DECLARED.items())
    written = []
    now = time.time()
    for name, (schedule, fn) in declared:
        if fn._engine is not None and fn._engine is not engine:
            continue
        record = _record(engine, name, fn, schedule, args=(), kwargs=None, tags=fn.tags,
                         queue=None, origin="code", since=now)  # fmt: skip
        _, changed = engine.journal.schedules.put(record, replace=True)
        if changed:
            written.append(name)
    return written


def fire_schedules(*, engine: Engine | None = None, now: float | None = None) -> list[str]:
    """Start the runs of every tick due by ``now`` (default: now) that no worker started
    yet; return their ids. Workers call this as they poll: call it yourself only where
    no worker runs."""
    eng = _engine_of(None, engine)
    journal = eng.journal
    at = time.time() if now is None else now
    started: list[str] = []
    for record in journal.schedules.due(at):
        assert record.next_at is not None  # due() reads only schedules with a next tick
        try:
            schedule = Schedule(record.cron, record.timezone, record.missed)  # type: ignore[arg-type]
        except BadSchedule as exc:
            log.warning("schedule %r cannot fire: %s", record.name, exc)
            continue
        ticks, next_at = schedule.plan(record.next_at, at)
        for tick in ticks:
            if _start_tick(eng, record, tick):
                started.append(tick_run_id(record.name, tick))
        journal.schedules.advance(record.name, record.next_at, next_at)
    return started


def _start_tick(engine: Engine, record: ScheduleRecord, tick: float) -> bool:
    """Create the pending run of ``record``'s tick; False if it exists (started already)."""
    journal = engine.journal
    codec = journal.codec_named(record.codec)
    where = f"schedule {record.name!r} input"
    value = journal.decode(record.input, record.codec, where=where)
    queue = record.queue or DEFAULT_QUEUE
    meta = None
    if engine.telemetry is not None:  # OpenTelemetry: the tick's trace, kept across workers
        meta = engine.telemetry._creation_meta(
            "schedule", record.target, tick_run_id(record.name, tick), queue
        )
    request = journal.new_run(
        tick_run_id(record.name, tick),
        name=record.target,
        kind="function",
        input=value,
        codec=codec,
        status="pending",
        entries=[
            journal.entry(
                EntryKind.RUN_STARTED,
                P.run_started(None, queue=queue, schedule=record.name, tick=_iso(tick)),
                codec=codec,
            )
        ],
        queue=queue,
        tags={**record.tags, "schedule": record.name},
        snapshot_every=_snapshot_every(record.target),
        meta=meta,
    )
    _, created = journal.create(request)
    if created:
        journal.notify(WAKE_CHANNEL, request.run.run_id)
    return created


def _snapshot_every(target: str) -> int | None:
    try:
        fn = resolve(target, doing="starting a scheduled run")
    except FunctionNotFound:
        return None  # a worker that can import it runs it; the journal's policy applies
    value = getattr(fn, "snapshot_every", None)
    return value if isinstance(value, int) else None


def fire_in_worker(engine: Engine) -> float | None:
    """One pass of a worker: fire what is due, then the soonest next tick (Unix time)."""
    try:
        fire_schedules(engine=engine)
        return engine.journal.schedules.next_due()
    except JournalError as exc:
        log.warning("worker %s: firing schedules failed (%s); retrying", engine.owner, exc)
        return None
