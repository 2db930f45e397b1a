"""Run rows are checksummed, lineages are walked safely, and bad files give typed errors.

- A journal written by schema version 2 (tests/fixtures/journal_v2.db, made by
  tests/make_fixture.py before run rows had a checksum) opens, upgrades and reads.
- A run row altered on disk (one digit of its output) is refused on read, named by
  ``verify``, and ``show`` says so in one line.
- Fork links crafted into a cycle (with valid checksums: a CRC is easy to recompute)
  give ``LineageCycle`` everywhere a lineage is walked, never a hang.
- Random bit flips over every page of a journal raise only JournalError subclasses.
- A full disk is ``JournalFull``, and the run's lease is given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest
from _children import FIXTURES
from _trials import scaled
from pydantic import BaseModel
from starlette.testclient import TestClient

from engine import (
    Context,
    Engine,
    Event,
    StartEvent,
    StepNotFound,
    StopEvent,
    Workflow,
    configure,
    diff,
    durable,
    fork,
    history,
    state_at,
    step,
)
from engine.ui import create_app
from journal import (
    Journal,
    JournalError,
    JournalFull,
    LineageCycle,
    RunCorrupted,
    copy_journal,
    fork_lineage,
    register_type,
)
from journal._schema import SCHEMA_VERSION, SEALED_COLUMNS, reseal_runs, run_checksum

TRIALS = int(os.environ.get("DURABLE_BITFLIP_TRIALS", scaled(300)))
FIXTURE = FIXTURES / "journal_v2.db"
RUNS = {"fn-done", "fn-compacted", "fn-failed", "fn-fork", "wf-done", "fn-pending"}


@register_type(name="__main__:Draft")
class Draft(BaseModel):
    """The fixture's workflow event, defined in its generator's ``__main__``."""

    text: str


@step
def price(item: str) -> int:
    return len(item) * 10


@durable(name="fixture:checkout")
def checkout(ctx: Context, items: list[str]) -> dict[str, int]:
    for item in items:
        ctx.state[item] = price(item)
    return {"total": sum(ctx.state[i] for i in items), "big": 123456789}


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def _edit(path: Path, *statements: str, reseal: bool = False) -> None:
    """Raw SQL, as an outside tool (or an attacker) would; ``reseal`` recomputes every
    run row's checksum afterwards, as an attacker who read this code would."""
    conn = sqlite3.connect(path)
    try:
        for sql in statements:
            conn.execute(sql)
        if reseal:
            reseal_runs(conn.execute)
        conn.commit()
    finally:
        conn.close()


def _durable(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process, killed if it runs past 60 s (a hang fails the test)."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "--db", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def upgraded(tmp_path: Path) -> Path:
    """The version-2 fixture, copied and opened once to write (which upgrades it)."""
    path = tmp_path / "journal.db"
    shutil.copy(FIXTURE, path)
    Journal(path).close()
    return path


class TestUpgradeFromVersion2:
    """A journal written before run rows had a checksum."""

    def test_fixture_is_version_2(self) -> None:
        assert _version(FIXTURE) == 2 < SCHEMA_VERSION

    def test_read_only_reads_it_as_it_is(self, tmp_path: Path) -> None:
        path = tmp_path / "old.db"
        shutil.copy(FIXTURE, path)
        before = path.read_bytes()
        with Journal(path, readonly=True) as j:
            assert {r.run_id for r in j.list_runs(limit=None)} == RUNS
            assert j.state_at("fn-fork").values["apple"] == 1
        assert _version(path) == 2 and path.read_bytes() == before

    def test_upgrade_seals_every_row_and_keeps_every_run(self, upgraded: Path) -> None:
        assert _version(upgraded) == SCHEMA_VERSION
        conn = sqlite3.connect(upgraded)
        rows = conn.execute(f"SELECT {SEALED_COLUMNS}, checksum FROM runs").fetchall()
        conn.close()
        assert {r[0] for r in rows} == RUNS
        for *values, checksum in rows:
            assert checksum == run_checksum(values) != 0
        with Journal(upgraded) as j:
            done = j.get_run("fn-done")
            assert j.decode(done.output, done.codec, where="t")["big"] == 123456789
            assert j.get_run("fn-failed").error.startswith("ValueError")
            assert j.get_run("fn-compacted").horizon == 16
            assert j.get_run("fn-fork").forked_from == "fn-done"
            assert j.state_at("fn-fork", 4).values["apple"] == 1
            assert len(j.snapshots("fn-done")) >= 4

    def test_verify_passes_and_the_engine_goes_on(self, upgraded: Path) -> None:
        with Journal(upgraded) as j:
            report = j.verify()
            assert report.ok, report.problems
            assert report.runs == len(RUNS)
        with Engine(upgraded, lease_seconds=1) as eng:
            assert eng.recover(timeout=30).run_ids == ["fn-pending"]
            # Its input was made by hand, not by a call: the body's outcome does not
            # matter here, only that the upgraded row was claimed and finished.
            assert eng.journal.get_run("fn-pending").finished
            assert [c.number for c in history("fn-done", engine=eng)][-1] == 8
            handle = fork("fn-done", at=2, state={"fig": 0}, engine=eng)
            assert handle.result(timeout=30)["total"] > 0
            assert eng.journal.verify().ok
        assert _durable(upgraded, "show", "fn-fork").returncode == 0


class TestTamperedRunRow:
    """One digit of a run's output changed on disk: 123456789 becomes 122456789."""

    @pytest.fixture
    def tampered(self, upgraded: Path) -> Path:
        _edit(
            upgraded,
            "UPDATE runs SET output = CAST(replace(CAST(output AS TEXT), '123456789',"
            " '122456789') AS BLOB) WHERE run_id = 'fn-done'",
        )
        conn = sqlite3.connect(upgraded)
        (output,) = conn.execute("SELECT output FROM runs WHERE run_id = 'fn-done'").fetchone()
        conn.close()
        assert b"122456789" in output
        return upgraded

    @pytest.mark.parametrize(
        "read",
        [
            lambda j: j.get_run("fn-done"),
            lambda j: j.find_run("fn-done"),
            lambda j: j.list_runs(limit=None),
            lambda j: j.state_at("fn-done"),
            lambda j: list(j.read("fn-done")),
            lambda j: j.export_run("fn-done"),
        ],
        ids=["get_run", "find_run", "list_runs", "state_at", "read", "export"],
    )
    def test_read_raises_run_corrupted(
        self, tampered: Path, read: Callable[[Journal], Any]
    ) -> None:
        with Journal(tampered, readonly=True) as j, pytest.raises(RunCorrupted) as info:
            read(j)
        assert info.value.run_id == "fn-done"
        assert "fn-done" in str(info.value) and "checksum" in str(info.value)

    def test_other_runs_still_read(self, tampered: Path) -> None:
        with Journal(tampered, readonly=True) as j:
            assert j.get_run("fn-fork").status == "completed"

    def test_a_write_does_not_reseal_it(self, tampered: Path) -> None:
        with Journal(tampered) as j:
            with pytest.raises(RunCorrupted):
                j.update_run("fn-done", status="failed")
            with pytest.raises(RunCorrupted):
                j.compact("fn-done")
        conn = sqlite3.connect(tampered)
        assert conn.execute("SELECT status FROM runs WHERE run_id='fn-done'").fetchone() == (
            "completed",
        )
        conn.close()

    def test_verify_reports_it_and_checks_the_rest(self, tampered: Path) -> None:
        with Journal(tampered, readonly=True) as j:
            report = j.verify()
        assert not report.ok
        assert report.runs == len(RUNS)
        assert [p for p in report.problems if "fn-done" in p and "checksum" in p]
        result = _durable(tampered, "verify", "--json")
        assert result.returncode == 1, result.stderr
        assert any("fn-done" in p for p in json.loads(result.stdout)["problems"])

    def test_show_refuses_in_one_line(self, tampered: Path) -> None:
        before = tampered.read_bytes()
        _one_line_error(_durable(tampered, "show", "fn-done"), "fn-done", "checksum")
        assert tampered.read_bytes() == before

    @pytest.mark.parametrize(
        "column",
        ["status = 'failed'", "error = 'x'", "input = NULL", "forked_from = 'fn-failed'",
         "created_at = created_at + 1", "codec = 'pickle'", "horizon = 1"],
    )  # fmt: skip
    def test_every_sealed_column_counts(self, upgraded: Path, column: str) -> None:
        _edit(upgraded, f"UPDATE runs SET {column} WHERE run_id = 'fn-fork'")
        with Journal(upgraded, readonly=True) as j, pytest.raises(RunCorrupted):
            j.get_run("fn-fork")


@pytest.fixture
def cyclic(upgraded: Path) -> Path:
    """fn-fork was forked from fn-done; now fn-done claims to be forked from fn-fork,
    and fn-fork is unfinished (so recovery would take it). Checksums recomputed."""
    _edit(
        upgraded,
        "UPDATE runs SET forked_from = 'fn-fork', forked_at = 3 WHERE run_id = 'fn-done'",
        "UPDATE runs SET status = 'running', owner = NULL, lease_expires_at = NULL,"
        " output = NULL WHERE run_id = 'fn-fork'",
        "DELETE FROM snapshots WHERE run_id IN ('fn-fork', 'fn-done')",
        reseal=True,
    )
    return upgraded


class TestLineageCycle:
    """Fork links that loop: every walker stops with LineageCycle naming the runs."""

    @pytest.mark.parametrize(
        "args",
        [
            ("show", "fn-fork"),
            ("history", "fn-fork"),
            ("state", "fn-fork"),
            ("state", "fn-fork", "--at", "2"),
            ("diff", "fn-fork", "1", "2"),
            ("fork", "fn-fork", "--at", "2"),
        ],
        ids=" ".join,
    )
    def test_cli_commands(self, cyclic: Path, args: tuple[str, ...]) -> None:
        before = cyclic.read_bytes()
        _one_line_error(_durable(cyclic, *args), "cycle", "'fn-fork' -> 'fn-done' -> 'fn-fork'")
        assert cyclic.read_bytes() == before

    def test_cli_verify(self, cyclic: Path) -> None:
        result = _durable(cyclic, "verify", "--json")
        assert result.returncode == 1, result.stderr
        problems = json.loads(result.stdout)["problems"]
        assert [p for p in problems if "cycle" in p and "fn-fork" in p]

    @pytest.mark.parametrize(
        "call",
        [
            lambda j, e: j.state_at("fn-fork"),
            lambda j, e: fork_lineage(j, j.get_run("fn-done")),
            lambda j, e: history("fn-fork", engine=e),
            lambda j, e: state_at("fn-fork", step=1, engine=e),
            lambda j, e: diff("fn-fork", 1, 2, engine=e),
            lambda j, e: fork("fn-fork", at=1, engine=e),
        ],
        ids=["state_at", "fork_lineage", "history", "state_at-step", "diff", "fork"],
    )
    def test_python_api(self, cyclic: Path, call: Callable[[Journal, Engine], Any]) -> None:
        with Engine(cyclic, lease_seconds=1) as eng, pytest.raises(LineageCycle) as info:
            call(eng.journal, eng)
        assert set(info.value.runs) == {"fn-fork", "fn-done"}

    def test_recover_reports_it_and_leaves_it(self, cyclic: Path) -> None:
        with Engine(cyclic, lease_seconds=1) as eng:
            report = eng.recover(timeout=30)
            assert isinstance(report.errors["fn-fork"], LineageCycle)
            assert "fn-fork" not in report.run_ids
            run = eng.journal.get_run("fn-fork")
            assert (run.status, run.owner) == ("running", None)

    def test_ui_run_page_and_api(self, cyclic: Path) -> None:
        app = create_app(cyclic, readonly=True)
        bearer = {"Authorization": f"Bearer {app.state.token}"}
        with TestClient(app, base_url="http://127.0.0.1", headers=bearer) as c:
            page = c.get("/runs/fn-fork")
            assert page.status_code == 422 and "cycle" in page.text
            for path in ("/api/runs/fn-fork/history", "/api/runs/fn-fork/state?step=1"):
                answer = c.get(path)
                assert answer.status_code == 422, (path, answer.text)
                assert answer.json()["type"] == "LineageCycle"

    def test_self_fork_and_parent_cycle(self, upgraded: Path) -> None:
        _edit(
            upgraded,
            "UPDATE runs SET forked_from = run_id, forked_at = 1 WHERE run_id = 'fn-failed'",
            "UPDATE runs SET parent_run_id = 'wf-done' WHERE run_id = 'fn-pending'",
            "UPDATE runs SET parent_run_id = 'fn-pending' WHERE run_id = 'wf-done'",
            reseal=True,
        )
        with Journal(upgraded, readonly=True) as j:
            with pytest.raises(LineageCycle):
                j.state_at("fn-failed", 2)
            problems = j.verify().problems
        assert [p for p in problems if "fn-failed" in p and "cycle" in p]
        assert [p for p in problems if "parent links form a cycle" in p]

    def test_a_long_chain_is_walked_without_recursion(self, tmp_path: Path) -> None:
        """3000 forks deep (past Python's recursion limit): state and verify answer."""
        path = tmp_path / "deep.db"
        with Journal(path) as j:
            j.create_run("r0", name="f", entries=[j.entry("state.set", 0, key="k")])
            for i in range(1, 3000):
                j.create_run(
                    f"r{i}", name="f", forked_from=f"r{i - 1}", forked_at=1,
                    entries=[j.entry("state.set", i, key="k")],
                )  # fmt: skip
            assert j.state_at("r2999").values == {"k": 2999}
            assert j.state_at("r2999", 0).values == {"k": 2998}
            assert j.verify("r2999").ok


def _flip_one_bit(data: bytearray, rng: random.Random, page: int, page_size: int) -> None:
    bit = rng.randrange(page_size * 8)
    data[page * page_size + bit // 8] ^= 1 << (bit % 8)


def _read_everything(path: Path, errors: list[str]) -> None:
    """Every read path over every run: journal API, time travel, verify, export, the CLI's
    lineage helpers. A JournalError from one is noted and the next is tried."""
    with Journal(path, readonly=True) as j:
        report = j.verify()
        errors += ["verify"] * len(report.problems)
        ids: list[str] = []
        _typed(lambda: ids.extend(j.run_ids()), errors)
        _typed(lambda: j.list_runs(limit=None), errors)
        eng = Engine(j)
        calls: list[Callable[[str], Any]] = [
            j.get_run,
            lambda rid: [j.decode_entry(e) for e in j.read(rid, j.get_run(rid).horizon + 1)],
            j.state_at,
            lambda rid: j.state_at(rid, 1),
            j.snapshots,
            j.export_run,
            lambda rid: fork_lineage(j, j.get_run(rid)),
            lambda rid: history(rid, engine=eng),
            lambda rid: state_at(rid, step=1, engine=eng),
            lambda rid: diff(rid, 1, 2, engine=eng),
        ]
        for rid in ids:
            for call in calls:
                # StepNotFound: no step 1 or 2 in a run that has none, an answer.
                with contextlib.suppress(StepNotFound):
                    _typed(functools.partial(call, rid), errors)


def _typed(call: Callable[[], Any], errors: list[str]) -> None:
    """Run ``call``; a JournalError is an answer, anything else is recorded."""
    try:
        call()
    except JournalError as exc:
        errors.append(type(exc).__name__)


# The quick set flips the first QUICK_FLIPS bits (every page of the fixture at least
# twice); the full suite the rest of the TRIALS too.
QUICK_FLIPS = min(30, TRIALS)


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("first", "end"),
    [
        pytest.param(0, QUICK_FLIPS, id="first"),
        pytest.param(QUICK_FLIPS, TRIALS, id="rest", marks=pytest.mark.slow),
    ],
)
def test_bit_flips_over_every_page_raise_only_journal_errors(
    upgraded: Path, first: int, end: int
) -> None:
    """Seeded: TRIALS damaged copies of the journal, each with one flipped bit, the
    pages taken in turn so every page is hit; every read path runs over each copy and
    nothing but a JournalError escapes (never another exception, never a hang)."""
    conn = apsw.Connection(str(upgraded))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    pristine = upgraded.read_bytes()
    pages = len(pristine) // page_size
    escaped: list[str] = []
    detected = 0
    for trial in range(first, end):
        data = bytearray(pristine)
        _flip_one_bit(data, random.Random(f"20261207-{trial}"), trial % pages, page_size)
        damaged = upgraded.with_name(f"flip{trial}.db")
        damaged.write_bytes(bytes(data))
        errors: list[str] = []
        try:
            _typed(lambda: _read_everything(damaged, errors), errors)  # noqa: B023
        except Exception as exc:
            escaped.append(f"trial {trial} (page {trial % pages}): {type(exc).__name__}: {exc}")
        detected += bool(errors)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{damaged}{suffix}").unlink(missing_ok=True)
    assert not escaped, "\n".join(escaped[:20])
    assert detected > 0 or first == end


class TestDiskFull:
    """A journal that cannot grow: the write is JournalFull, and the run is let go."""

    def test_function_run(self, tmp_path: Path) -> None:
        path = tmp_path / "full.db"
        big = random.Random(1).randbytes(20_000).hex()  # incompressible

        @step
        def grow(i: int) -> str:
            return big + str(i)

        @durable(name="integrity:grower")
        def grower(ctx: Context, n: int) -> int:
            for i in range(n):
                grow(i)
            return n

        with configure(path, lease_seconds=60) as eng:
            conn = eng.journal.raw_connection()
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={pages + 30}").fetchall()
            with pytest.raises(JournalFull) as info:
                grower.run(1000, run_id="g")
            message = str(info.value)
            assert "full" in message and "Free space" in message
            assert "no longer owns" not in message
            run = eng.journal.get_run("g")
            assert run.status == "running" and run.owner is None  # released, not failed
            done = run.last_seq
        with configure(path, lease_seconds=60) as eng:  # space again: another worker resumes it
            assert eng.recover(timeout=60).run_ids == ["g"]
            run = eng.journal.get_run("g")
            assert run.status == "completed" and run.last_seq > done


@pytest.mark.postgres
class TestPostgres:
    """The same checksums, upgrade and errors in a PostgreSQL journal."""

    def test_version_2_schema_is_upgraded_and_sealed(
        self, upgraded: Path, pg_schema_url: str
    ) -> None:
        with Journal(upgraded, readonly=True) as source, Journal(pg_schema_url) as target:
            assert copy_journal(source, target).ok
        with Journal(pg_schema_url) as j:  # make it what version 2 wrote
            db = j.backend
            with j.lock, db.transaction("downgrading"):
                db.execute("ALTER TABLE runs DROP COLUMN checksum")
                db.execute("UPDATE journal_meta SET value = '2' WHERE key = 'schema_version'")
        with Journal(pg_schema_url, readonly=True) as j:  # read as it is
            assert not j.backend.sealed
            assert j.get_run("fn-done").status == "completed"
        with Journal(pg_schema_url) as j:
            assert j.backend.sealed
            rows = j.query(f"SELECT {SEALED_COLUMNS}, checksum FROM runs")
            assert {r["run_id"] for r in rows} == RUNS
            for row in rows:
                *values, checksum = row.values()
                assert checksum == run_checksum([_plain(v) for v in values]) != 0
            assert j.query("SELECT value FROM journal_meta WHERE key = 'schema_version'") == [
                {"value": str(SCHEMA_VERSION)}
            ]
            report = j.verify()
            assert report.ok, report.problems
            j.update_run("fn-pending", status="cancelled")
            assert j.get_run("fn-pending").status == "cancelled"

    def test_tampered_row_and_cycle(self, upgraded: Path, pg_schema_url: str) -> None:
        with Journal(upgraded, readonly=True) as source, Journal(pg_schema_url) as target:
            assert copy_journal(source, target).ok
        with Journal(pg_schema_url) as j:
            db = j.backend
            with j.lock, db.transaction("tampering"):
                db.execute(
                    "UPDATE runs SET output = convert_to(replace(convert_from(output, 'UTF8'),"
                    " '123456789', '122456789'), 'UTF8') WHERE run_id = 'fn-done'"
                )
                db.execute("UPDATE runs SET forked_from = 'fn-fork' WHERE run_id = 'fn-failed'")
                db.execute(
                    "UPDATE runs SET forked_from = 'fn-failed', forked_at = 2"
                    " WHERE run_id = 'fn-fork'"
                )
                reseal_runs(lambda sql, params=(): db.execute(sql, params))
                db.execute(
                    "UPDATE runs SET output = convert_to(replace(convert_from(output, 'UTF8'),"
                    " '122456789', '123456789'), 'UTF8') WHERE run_id = 'fn-done'"
                )
            with pytest.raises(RunCorrupted) as info:
                j.get_run("fn-done")
            assert info.value.run_id == "fn-done"
            with pytest.raises(LineageCycle):
                j.state_at("fn-fork", 1)
            problems = j.verify().problems
        assert [p for p in problems if "fn-done" in p and "checksum" in p]
        assert [p for p in problems if "cycle" in p]

    def test_disk_full_sqlstate_is_journal_full(self, pg_schema_url: str) -> None:
        from psycopg import errors as pg_errors

        with Journal(pg_schema_url) as j:
            error = j.backend.translate(pg_errors.DiskFull("could not extend file"), "appending")
        assert isinstance(error, JournalFull)
        assert "out of disk space" in str(error) and "Free space" in str(error)


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def test_a_worker_claims_past_an_altered_row(upgraded: Path) -> None:
    """claim_next leaves a run whose row fails its checksum alone and claims the others,
    call after call (one bad row must not stop a worker)."""
    with Journal(upgraded) as j:
        j.create_run("older", name="fixture:checkout", priority=5)
        j.create_run("newer", name="fixture:checkout")
    _edit(upgraded, "UPDATE runs SET input = X'00' WHERE run_id = 'older'")
    with Journal(upgraded) as j:
        # The first call finds the altered row first (highest priority) and leaves it;
        # from then on it is out of the way.
        claimed = [r.run_id for _ in range(3) for r in j.claim_next("w", limit=1)]
        assert claimed == ["fn-pending", "newer"]
        assert j.claim_next("w", limit=5) == []
    conn = sqlite3.connect(upgraded)
    assert conn.execute("SELECT owner FROM runs WHERE run_id = 'older'").fetchone() == (None,)
    conn.close()


class Tick(Event):
    i: int


class Grow(Workflow):
    """Stores ~40 kB per step until the journal cannot grow."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Tick:
        return Tick(i=0)

    @step
    async def tick(self, ctx: Context, ev: Tick) -> Tick | StopEvent:
        await ctx.store.set(f"k{ev.i}", BIG + str(ev.i))
        return StopEvent(result=ev.i) if ev.i >= 40 else Tick(i=ev.i + 1)


BIG = random.Random(1).randbytes(20_000).hex()  # incompressible


def test_disk_full_in_a_workflow(tmp_path: Path) -> None:
    """A workflow's commit meets a full disk: JournalFull, the run left running and
    released, and a worker with space finishes it."""
    path = tmp_path / "full.db"
    with configure(path, lease_seconds=60) as eng:
        conn = eng.journal.raw_connection()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages + 30}").fetchall()

        async def main() -> Any:
            return await Grow().run(run_id="w")

        with pytest.raises(JournalFull, match="Free space"):
            asyncio.run(main())
        run = eng.journal.get_run("w")
        assert (run.status, run.owner) == ("running", None)
    with configure(path, lease_seconds=60) as eng:
        assert eng.recover(timeout=60).run_ids == ["w"]
        run = eng.journal.get_run("w")
        assert run.status == "completed"
        assert eng.journal.decode(run.output, run.codec, where="t") == 40
