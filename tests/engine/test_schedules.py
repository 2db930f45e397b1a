"""Schedules: cron in a time zone, the missed-ticks policies, the run-time API, the
schema-4 table on both backends, and the upgrade of a version-3 journal.

The crash test (three worker processes, SIGKILLs mid-tick) is
tests/reliability/test_schedule_crash.py.
"""

from __future__ import annotations

import shutil
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from _children import FIXTURES

from engine import (
    BadSchedule,
    Engine,
    EngineError,
    Schedule,
    Worker,
    add_schedule,
    durable,
    fire_schedules,
    list_schedules,
    pause_schedule,
    remove_schedule,
    resume_schedule,
    tick_run_id,
)
from engine.schedules import store_declared
from journal import (
    Journal,
    JournalError,
    ScheduleConflict,
    ScheduleCorrupted,
    ScheduleNotFound,
)
from journal._schema import SCHEMA_VERSION


@durable(name="test_schedules:job")
def job(n: int = 0) -> int:
    return n * 2


def _utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()  # type: ignore[misc]


class TestSchedule:
    """The value object: validation, ticks in a time zone, the missed-ticks plan."""

    @pytest.mark.parametrize(
        ("cron", "tz", "missed"),
        [
            ("61 * * * *", "UTC", "skip"),
            ("* * *", "UTC", "skip"),
            ("0 3 * * *", "Mars/Olympus", "skip"),
            ("0 3 * * *", "../etc/passwd", "skip"),
            ("0 3 * * *", "UTC", "some"),
        ],
    )
    def test_bad_definitions_are_typed_errors(self, cron: str, tz: str, missed: str) -> None:
        """Cron, time zone and policy are checked; the error is an EngineError and ValueError."""
        with pytest.raises(BadSchedule) as info:
            Schedule(cron, tz, missed)  # type: ignore[arg-type]
        assert isinstance(info.value, EngineError) and isinstance(info.value, ValueError)

    def test_ticks_follow_the_time_zone_across_daylight_saving(self) -> None:
        """03:00 in Paris is 02:00 UTC in winter and 01:00 UTC in summer."""
        paris = Schedule("0 3 * * *", "Europe/Paris")
        assert paris.next_after(_utc(2026, 1, 10, 12)) == _utc(2026, 1, 11, 2)
        assert paris.next_after(_utc(2026, 7, 10, 12)) == _utc(2026, 7, 11, 1)
        # 02:30 does not exist on 2026-03-29 in Paris: the tick runs once, after the jump.
        spring = Schedule("30 2 * * *", "Europe/Paris")
        tick = spring.next_after(_utc(2026, 3, 28, 12))
        assert tick is not None
        local = datetime.fromtimestamp(tick, ZoneInfo("Europe/Paris"))
        assert local.date().isoformat() == "2026-03-29" and local.hour == 3
        assert spring.next_after(tick) == _utc(2026, 3, 30, 0, 30)

    def test_next_after_is_strictly_after(self) -> None:
        """A tick exactly at ``t`` is not the next one."""
        every_minute = Schedule("* * * * *")
        t = _utc(2026, 5, 1, 10, 0)
        assert every_minute.next_after(t) == t + 60
        assert every_minute.next_after(t - 0.5) == t
        assert every_minute.last_at_or_before(t) == t
        assert every_minute.last_at_or_before(t + 59.9) == t

    def test_plan_per_missed_policy(self) -> None:
        """Hourly ticks 10:00 .. 12:00 missed: skip fires none, last 12:00, all each in order."""
        start = _utc(2026, 5, 1, 10, 0)
        now = _utc(2026, 5, 1, 12, 30)
        skip, last, every = (Schedule("0 * * * *", missed=m) for m in ("skip", "last", "all"))
        after = _utc(2026, 5, 1, 13, 0)
        assert skip.plan(start, now) == ([], after)
        assert last.plan(start, now) == ([_utc(2026, 5, 1, 12, 0)], after)
        assert every.plan(start, now) == ([start, start + 3600, start + 7200], after)
        # A tick less than LATE_GRACE old is late, not missed: "skip" still runs it.
        assert skip.plan(start, _utc(2026, 5, 1, 12, 0, 59)) == ([start + 7200], after)
        assert every.plan(after, now) == ([], after)  # nothing due yet

    def test_all_is_fired_in_bounded_passes(self) -> None:
        """A long backlog under "all" fires at most 100 ticks per pass, resuming after them."""
        every_second = Schedule("* * * * * *", missed="all")
        start = _utc(2026, 5, 1)
        ticks, after = every_second.plan(start, start + 1000)
        assert len(ticks) == 100 and after == start + 100


class TestApi:
    """add / pause / resume / remove / list, stored in the journal (both backends)."""

    def test_add_is_idempotent_and_conflicts_on_another_definition(
        self, journal_location: str
    ) -> None:
        """The same definition returns the stored one; another needs replace=True."""
        with Engine(journal_location) as eng:
            first = add_schedule("nightly", job, "0 3 * * *", kwargs={"n": 1}, engine=eng)
            again = add_schedule("nightly", job, "0 3 * * *", kwargs={"n": 1}, engine=eng)
            assert again == first
            with pytest.raises(ScheduleConflict, match="cron"):
                add_schedule("nightly", job, "0 4 * * *", kwargs={"n": 1}, engine=eng)
            with pytest.raises(ScheduleConflict, match="input"):
                add_schedule("nightly", job, "0 3 * * *", kwargs={"n": 2}, engine=eng)
            changed = add_schedule(
                "nightly", job, "0 4 * * *", timezone="Asia/Tokyo", replace=True, engine=eng
            )
            assert changed.cron == "0 4 * * *" and changed.timezone == "Asia/Tokyo"
            assert [s.name for s in list_schedules(engine=eng)] == ["nightly"]
            assert changed.next_at is not None and changed.next_at > time.time()
            local = datetime.fromtimestamp(changed.next_at, ZoneInfo("Asia/Tokyo"))
            assert (local.hour, local.minute, local.second) == (4, 0, 0)

    def test_bad_input_writes_nothing(self, journal_location: str) -> None:
        """A bad expression, zone or tag fails before the journal is written."""
        with Engine(journal_location) as eng:
            with pytest.raises(BadSchedule):
                add_schedule("x", job, "nope", engine=eng)
            with pytest.raises(BadSchedule):
                add_schedule("x", job, "* * * * *", timezone="Nowhere/Land", engine=eng)
            with pytest.raises(ValueError, match="tag key"):
                add_schedule("x", job, "* * * * *", tags={"a=b": "c"}, engine=eng)
            with pytest.raises(BadSchedule, match="time zone"):
                add_schedule("x", job, "* * * * *", since=datetime(2026, 1, 1), engine=eng)
            assert list_schedules(engine=eng) == []

    def test_fire_creates_each_tick_once_with_its_id_and_tags(self, journal_location: str) -> None:
        """Ticks due become pending runs named by tick; firing again creates nothing."""
        with Engine(journal_location) as eng:
            since = float(int(time.time()) - 10)
            add_schedule("burst", job, "* * * * * *", missed="all", since=since,
                         kwargs={"n": 21}, tags={"team": "ops"}, engine=eng)  # fmt: skip
            started = fire_schedules(engine=eng, now=since + 4.5)
            assert started == [tick_run_id("burst", since + k) for k in range(1, 5)]
            assert fire_schedules(engine=eng, now=since + 4.5) == []
            first = since + 1
            run = eng.journal.get_run(started[0])
            assert run.status == "pending" and run.name == "test_schedules:job"
            assert run.queue == "default"
            assert run.tags == {"schedule": "burst", "team": "ops"}
            tagged = eng.journal.list_runs(tags={"schedule": "burst"}, limit=None)
            assert sorted(r.run_id for r in tagged) == sorted(started)
            stored = eng.journal.schedules.get("burst")
            assert stored.next_at is not None and stored.next_at > first + 3

    def test_pause_resume_remove(self, journal_location: str) -> None:
        """A paused schedule fires nothing; resuming skips the ticks of the pause."""
        with Engine(journal_location) as eng:
            add_schedule("p", job, "* * * * * *", missed="all", since=time.time() - 5,
                         engine=eng)  # fmt: skip
            assert pause_schedule("p", engine=eng).paused
            assert fire_schedules(engine=eng) == []
            resumed = resume_schedule("p", engine=eng)
            assert not resumed.paused and resumed.next_at is not None
            assert resumed.next_at > time.time() - 1
            assert remove_schedule("p", engine=eng) is True
            assert remove_schedule("p", engine=eng) is False
            with pytest.raises(ScheduleNotFound):
                pause_schedule("p", engine=eng)
            with pytest.raises(ScheduleNotFound):
                resume_schedule("p", engine=eng)

    def test_altered_row_is_refused(self, journal_location: str) -> None:
        """A schedule whose target was changed on disk raises instead of firing."""
        with Engine(journal_location) as eng:
            add_schedule("t", job, "* * * * * *", missed="all", since=time.time() - 2,
                         engine=eng)  # fmt: skip
            db = eng.journal.backend
            with eng.journal.lock, db.transaction("altering"):
                db.execute("UPDATE schedules SET target = 'os:system' WHERE name = 't'")
            with pytest.raises(ScheduleCorrupted):
                fire_schedules(engine=eng)
            assert eng.journal.list_runs(tags={"schedule": "t"}) == []


@durable(name="test_schedules:declared", schedule=Schedule("*/5 * * * *", "Asia/Tokyo", "last"))
def declared() -> str:
    return "tick"


class TestDeclared:
    """``@durable(schedule=...)``: stored by each worker, updated when the code changes."""

    def test_worker_stores_declared_schedules(self, journal_location: str) -> None:
        """A worker's start stores it once; a second store writes nothing."""
        with Engine(journal_location) as eng:
            stop = threading.Event()
            worker = Worker(eng, poll_interval=0.05)
            thread = threading.Thread(target=worker.run, args=(stop,))
            thread.start()
            try:
                deadline = time.monotonic() + 10
                while eng.journal.schedules.find("test_schedules:declared") is None:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            finally:
                stop.set()
                thread.join()
            stored = eng.journal.schedules.get("test_schedules:declared")
            assert (stored.cron, stored.timezone, stored.missed, stored.origin) == (
                "*/5 * * * *",
                "Asia/Tokyo",
                "last",
                "code",
            )
            assert "test_schedules:declared" not in store_declared(eng)

    def test_bad_declaration_fails_at_import(self) -> None:
        """A bad expression in the decorator raises where the function is defined."""
        with pytest.raises(BadSchedule):

            @durable(name="test_schedules:bad", schedule="every day")
            def bad() -> None: ...


def test_worker_fires_and_executes_ticks(tmp_path: Path) -> None:
    """A worker turns due ticks into runs and executes them."""
    with Engine(tmp_path / "w.db") as eng:
        add_schedule("w", job, "* * * * * *", missed="all", since=time.time() - 2.5,
                     kwargs={"n": 5}, engine=eng)  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=Worker(eng, poll_interval=0.05).run, args=(stop,))
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while True:
                runs = eng.journal.list_runs(tags={"schedule": "w"}, limit=None)
                if len(runs) >= 3 and all(r.status == "completed" for r in runs[:3]):
                    break
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join()
        assert eng.handle(runs[0].run_id).result() == 10


class TestSchemaFour:
    """The upgrade from version 3 (tests/fixtures/journal_v3.db) and its read-only view."""

    def test_v3_file_upgrades_and_takes_schedules_and_tags(self, tmp_path: Path) -> None:
        """Opening for writing upgrades to 4; old runs still verify; new tables work."""
        path = tmp_path / "v3.db"
        shutil.copy(FIXTURES / "journal_v3.db", path)
        with Journal(path, readonly=True) as old:
            assert old.backend.schema_version == 3
            assert old.schedules.all() == [] and old.list_runs(tags={"a": "b"}) == []
            before = [(r.run_id, r.status, r.last_seq) for r in old.list_runs(limit=None)]
        with Engine(path) as eng:
            journal = eng.journal
            version = journal.raw_connection().execute("PRAGMA user_version").fetchone()[0]
            assert version == SCHEMA_VERSION
            assert journal.verify().ok
            after = [(r.run_id, r.status, r.last_seq) for r in journal.list_runs(limit=None)]
            assert after == before and len(after) == 6
            assert all(r.tags == {} for r in journal.list_runs(limit=None))
            add_schedule("s", job, "0 3 * * *", engine=eng)
            eng.start(job, (3,), {}, tags={"customer": "acme"}).result()
            assert [s.name for s in list_schedules(engine=eng)] == ["s"]
            assert len(journal.list_runs(tags={"customer": "acme"})) == 1

    @pytest.mark.postgres
    def test_postgres_v3_schema_upgrades(self, pg_schema_url: str) -> None:
        """A PostgreSQL journal at version 3 (the new tables dropped) is upgraded on open."""
        with Journal(pg_schema_url) as journal:
            journal.create_run("old", name="test_schedules:job", input={"args": [], "kwargs": {}})
            db = journal.backend
            with journal.lock, db.transaction("downgrading"):
                db.execute("DROP TABLE run_tags")
                db.execute("DROP TABLE schedules")
                db.execute("UPDATE journal_meta SET value = '3' WHERE key = 'schema_version'")
        with Journal(pg_schema_url, readonly=True) as old:
            assert old.backend.schema_version == 3
            assert old.schedules.all() == [] and old.list_runs(tags={"a": "b"}) == []
        with Engine(pg_schema_url) as eng:
            rows = eng.journal.query("SELECT value FROM journal_meta WHERE key = 'schema_version'")
            assert rows == [{"value": str(SCHEMA_VERSION)}]
            assert eng.journal.get_run("old").status == "pending"
            add_schedule("s", job, "0 3 * * *", engine=eng)
            assert [s.name for s in list_schedules(engine=eng)] == ["s"]
            eng.start(job, (1,), {}, run_id="tagged", tags={"k": "v"}).result()
            assert [r.run_id for r in eng.journal.list_runs(tags={"k": "v"})] == ["tagged"]


def test_journal_error_in_a_worker_pass_is_retried(tmp_path: Path) -> None:
    """A firing pass that meets a journal error logs it and goes on (the next pass retries)."""
    from engine.schedules import fire_in_worker

    with Engine(tmp_path / "e.db") as eng:
        add_schedule("e", job, "* * * * * *", missed="all", since=time.time() - 2, engine=eng)
        db = eng.journal.backend
        with eng.journal.lock, db.transaction("altering"):
            db.execute("UPDATE schedules SET cron = '0 0 * * *' WHERE name = 'e'")
        assert fire_in_worker(eng) is None  # ScheduleCorrupted, a JournalError: logged
        assert issubclass(ScheduleCorrupted, JournalError)
        since = datetime.now(timezone.utc) - timedelta(seconds=1)
        add_schedule("f", job, "* * * * * *", since=since, engine=eng)
