"""What a new user of the ``durable`` command line sees: run ids whole at any width,
one-line errors for every bad input, ISO dates, NO_COLOR, the traceback of a failed
run, what a waiting run waits for, event types and the body's mutations in
``history``, forks numbered as their source, compacted runs explained.

Output is parsed, not eyeballed: most checks run the CLI in-process with click's
CliRunner (stdout is not a terminal, ``COLUMNS`` sets the width); the worker and the
colour checks run it as a real program. The journals are built once per module by a
subprocess, in a temporary directory that holds the workload.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from engine.cli import cli
from journal import Journal

WORKLOAD = """
from engine import (
    Context, Event, HumanResponseEvent, StartEvent, StopEvent, Workflow, current_context,
    durable, step,
)


@step
def charge(amount: int) -> str:
    current_context().state["charged"] = amount
    return f"rcpt-{amount}"


@step
def ship(receipt: str) -> str:
    current_context().state["shipped"] = True
    return receipt.upper()


@durable(name="nc:order")
def order(ctx: Context, amount: int) -> str:
    ctx.state["order"] = amount
    receipt = charge(amount)
    ctx.state["receipt"] = receipt  # follows charge#1's result
    out = ship(receipt)
    ctx.state["note"] = "zanzibar marker"
    return out


@step
def boom() -> None:
    raise ValueError("kaboom")


@durable(name="nc:failing")
def failing(ctx: Context) -> None:
    boom()


class Draft(Event):
    text: str


class Review(Workflow):
    @step
    async def write(self, ctx: Context, ev: StartEvent) -> Draft:
        await ctx.store.set("topic", ev.topic)
        return Draft(text="hello")

    @step
    async def approve(self, ctx: Context, ev: Draft) -> StopEvent:
        answer = await ctx.wait_for_event(HumanResponseEvent, timeout=600)
        return StopEvent(result=answer.response)
"""

BUILD = """
import asyncio, sys, uuid

import engine
from journal import EntryKind, Journal, RetentionPolicy

import ncwork

db, compacted, crashed = sys.argv[1:]
eng = engine.configure(db, lease_seconds=0.2)
ids = [uuid.uuid4().hex for _ in range(3)]
for i, rid in enumerate(ids):
    ncwork.order.run(10 + i, run_id=rid)
try:
    ncwork.failing.run(run_id="f" + uuid.uuid4().hex[1:])
except engine.StepFailed:
    pass
engine.fork(ids[0], at=1, state={"receipt": "edited"}, new_run_id="k" + ids[0][1:]).result()


async def park() -> None:
    ncwork.Review().run(run_id="wf-wait", topic="x")
    journal = engine.default_engine().journal
    while journal.get_run("wf-wait").status != "waiting":
        await asyncio.sleep(0.01)


asyncio.run(park())
eng.close()

eng = engine.configure(compacted)
ncwork.order.run(7, run_id="c-1")
ncwork.order.run(8, run_id="c-2")
eng.close()
with Journal(compacted) as j:
    j.compact("c-1", RetentionPolicy(keep_snapshots=1))

with Journal(crashed) as j:
    j.create_run(
        "r-crashed", name="nc:order", input={"args": [3], "kwargs": {}}, status="running",
        owner="dead-host:1:abc", lease_seconds=0.0,
        entries=[j.entry(EntryKind.RUN_STARTED, {"owner": "dead-host:1:abc"})],
    )
eng = engine.configure(crashed)
ncwork.order.enqueue(4, run_id="r-new")
eng.close()
"""


class Journals:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.main = root / "main.db"
        self.compacted = root / "compacted.db"
        self.crashed = root / "crashed.db"

    def run(self, *args: Any, db: Path | None = None, columns: int = 120) -> Result:
        """``durable --db DB ARGS`` in-process, at ``columns`` wide."""
        runner = CliRunner()
        argv = ["--db", str(db or self.main), *(str(a) for a in args)]
        env = {"COLUMNS": str(columns), "NO_COLOR": None, "DURABLE_TRACEBACK": None}
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            return runner.invoke(cli, argv, env=env, prog_name="durable")
        finally:
            os.chdir(cwd)

    def ids(self, db: Path | None = None) -> list[str]:
        result = self.run("runs", "--json", db=db)
        assert result.exit_code == 0, result.output
        return [r["run_id"] for r in json.loads(result.stdout)]


@pytest.fixture(scope="module")
def journals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journals]:
    root = tmp_path_factory.mktemp("newcomer")
    (root / "ncwork.py").write_text(WORKLOAD)
    j = Journals(root)
    subprocess.run(
        [sys.executable, "-c", BUILD, str(j.main), str(j.compacted), str(j.crashed)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
        timeout=120,
    )
    sys.path.insert(0, str(root))
    try:
        yield j
    finally:
        sys.path.remove(str(root))


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def one_line_error(result: Result, *fragments: str) -> str:
    """Exit 2, one ``error: ...`` line on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr and not result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- widths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [60, 80, 120, 200])
def test_run_ids_are_whole_on_one_line_at_any_width(journals: Journals, columns: int) -> None:
    """Every 32-character run id appears whole on a line of `runs`; no line is wider
    than the terminal; the status column stays."""
    ids = journals.ids()
    assert len(ids) >= 6 and all(len(i) == 32 for i in ids if i != "wf-wait")
    lines = ok(journals.run("runs", columns=columns)).splitlines()
    assert all(len(line) <= columns for line in lines), [len(x) for x in lines]
    for rid in ids:
        rows = [line for line in lines if line.startswith(rid + " ")]
        assert len(rows) == 1, (rid, lines)
        assert re.search(r"\b(completed|failed|waiting)\b", rows[0]), rows[0]
    # No run id is broken over lines: every line starts with a whole id, or is the header,
    # the rule under it or the count.
    for line in lines[2:-1]:
        assert line.split()[0] in ids, line


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_search_keeps_ids_and_snippets(journals: Journals, columns: int) -> None:
    """`search` shows each hit's whole run id and its snippet, however narrow."""
    ids = journals.ids()
    out = ok(journals.run("search", "zanzibar", columns=columns))
    assert out.count("[zanzibar] marker") >= len([i for i in ids if not i.startswith(("f", "w"))])
    for rid in ids[:3]:
        assert any(line.startswith(rid) for line in out.splitlines()), rid


def test_dates_are_iso_and_can_be_pasted_back(journals: Journals) -> None:
    """`runs` shows whole dates (YYYY-MM-DD HH:MM:SS) that --since takes back."""
    out = ok(journals.run("runs"))
    stamps = re.findall(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", out)
    assert stamps, out
    since = ok(journals.run("runs", "--since", stamps[0]))
    assert "runs" in since.splitlines()[-1]


# -- errors ---------------------------------------------------------------------------------


BIG = "99999999999999999999999"

BAD_INPUTS: list[tuple[list[str], tuple[str, ...]]] = [
    (["runs", "--offset", "99999999999999999999"], ("--offset", "too large")),
    (["runs", "--limit", "-1"], ("--limit",)),
    (["runs", "--since", "1e20"], ("--since", "out of range")),
    (["runs", "--until", "yesterday"], ("--until", "ISO 8601")),
    (["runs", "--status", "bogus"], ("--status",)),
    (["runs", "--bogus"], ("--bogus", "durable runs --help")),
    (["show", "nosuch"], ("no run 'nosuch'",)),
    (["show"], ("RUN", "durable show --help")),
    (["history", "nosuch"], ("no run 'nosuch'",)),
    (["state", "RUN", "--time", "1e20"], ("--time", "out of range")),
    (["state", "RUN", "--time", "0001-01-01T00:00:00+14:00"], ("--time", "out of range")),
    (["state", "RUN", "--time", "nan"], ("--time", "out of range")),
    (["state", "RUN", "--at", BIG], ("--at", "too large")),
    (["state", "RUN", "--seq", BIG], ("--seq", "too large")),
    (["state", "RUN", "--seq", "999"], ("seq 999",)),
    (["state", "RUN", "--at", "99"], ("no step 99",)),
    (["state", "RUN", "--at", "1", "--seq", "2"], ("--at", "--seq")),
    (["state", "RUN", "--time", "2000-01-01T00:00:00"], ("2000-01-01",)),
    (["diff", "RUN", "1", BIG], ("B", "too large")),
    (["diff", "RUN", "1"], ("B",)),
    (["diff", "RUN", "1", "2", "--other", "nosuch"], ("no run 'nosuch'",)),
    (["export", "nosuch"], ("no run 'nosuch'",)),
    (["export", "RUN", "--format", "xml"], ("--format",)),
    (["search", " "], ("empty",)),
    (["search", "x", "--run", "nosuch"], ("no run 'nosuch'",)),
    (["search", "x", "--limit", "0"], ("--limit",)),
    (["fork", "RUN"], ("--at",)),
    (["fork", "RUN", "--at", BIG], ("--at", "too large")),
    (["fork", "RUN", "--at", "1", "--set", "novalue"], ("KEY=JSON",)),
    (["fork", "RUN", "--at", "1", "--set", "k=not json"], ("not JSON",)),
    (["fork", "nosuch", "--at", "1"], ("no run 'nosuch'",)),
    (["fork", "RUN", "--at", "99", "--import", "ncwork"], ("no step 99",)),
    (["replay"], ("RUN", "--all")),
    (["replay", "nosuch"], ("no run 'nosuch'",)),
    (["replay", "RUN", "--until", "0"], ("--until",)),
    (["send", "RUN", "not json"], ("EVENT-JSON",)),
    (["send", "RUN", "[1]"], ("EVENT-JSON",)),
    (["send", "nosuch", '{"type": "HumanResponseEvent"}'], ("nosuch",)),
    (["cancel", "nosuch"], ("no run 'nosuch'",)),
    (["recover", "--timeout", "soon"], ("--timeout",)),
    (["worker", "--concurrency", "0"], ("--concurrency",)),
    (["worker", "--poll", "0"], ("--poll",)),
    (["compact", "nosuch"], ("no run 'nosuch'",)),
    (["compact", "--keep-snapshots", "0"], ("--keep-snapshots",)),
    (["verify", "nosuch"], ("no run 'nosuch'",)),
    (["migrate", "nosuch.db", "out.db"], ("nosuch.db",)),
    (["ui", "--port", "0"], ("--port",)),
    (["frobnicate"], ("frobnicate", "durable --help")),
]


def test_every_bad_input_is_one_line_and_exit_2(journals: Journals) -> None:
    """Each command with bad input: one `error:` line naming the problem, exit 2, no
    traceback, and the journal is left as it was."""
    run_id = journals.ids()[0]
    before = hashlib.sha256(journals.main.read_bytes()).hexdigest()
    for args, fragments in BAD_INPUTS:
        argv = [run_id if a == "RUN" and i else a for i, a in enumerate(args)]
        result = journals.run(*argv)
        try:
            one_line_error(result, *fragments)
        except AssertionError as exc:
            raise AssertionError(f"durable {' '.join(argv)}: {exc}") from exc
    assert hashlib.sha256(journals.main.read_bytes()).hexdigest() == before
    assert not (journals.root / "out.db").exists()


def test_times_in_errors_are_iso(journals: Journals) -> None:
    """A time before the run is shown as a date, not Unix seconds."""
    line = one_line_error(journals.run("state", journals.ids()[0], "--time", "2000-01-01"))
    assert "2000-01-01T00:00:00" in line and "946684800" not in line


def test_usage_lines_show_optional_arguments_as_optional(journals: Journals) -> None:
    for command in ("compact", "verify", "replay"):
        first = ok(journals.run(command, "--help")).splitlines()[0]
        assert first == f"Usage: durable {command} [OPTIONS] [RUN]", first
    assert ok(journals.run("show", "--help")).splitlines()[0] == "Usage: durable show [OPTIONS] RUN"


def _real(*args: str, db: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DURABLE_", "NO_COLOR"))}
    base.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "--db", str(db), *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


COLOUR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-7]|9[0-7]|38)[;m]")


def test_no_color_is_honoured(journals: Journals) -> None:
    """On a terminal (forced) statuses are coloured; with NO_COLOR they are not."""
    coloured = _real("runs", db=journals.main, env={"FORCE_COLOR": "1"}, cwd=journals.root)
    plain = _real(
        "runs", db=journals.main, env={"FORCE_COLOR": "1", "NO_COLOR": "1"}, cwd=journals.root
    )
    assert coloured.returncode == 0 and plain.returncode == 0, plain.stderr
    assert COLOUR.search(coloured.stdout), coloured.stdout
    assert not COLOUR.search(plain.stdout), plain.stdout
    assert "completed" in plain.stdout


# -- show and history -------------------------------------------------------------------------


def test_show_prints_a_failed_runs_traceback(journals: Journals) -> None:
    runs = json.loads(ok(journals.run("runs", "--json")))
    failed = next(r["run_id"] for r in runs if r["status"] == "failed")
    out = ok(journals.run("show", failed))
    assert "traceback" in out and "Traceback (most recent call last)" in out
    assert 'raise ValueError("kaboom")' in out
    doc = json.loads(ok(journals.run("show", failed, "--json")))
    assert "ValueError: kaboom" in doc["traceback"] and doc["waiting_for"] == []


def test_show_prints_what_a_waiting_run_waits_for(journals: Journals) -> None:
    out = ok(journals.run("show", "wf-wait"))
    assert "waiting for" in out
    assert re.search(r"HumanResponseEvent \(step approve\), until \d{4}-\d\d-\d\d ", out), out
    doc = json.loads(ok(journals.run("show", "wf-wait", "--json")))
    [wait] = doc["waiting_for"]
    assert (wait["event"], wait["step"]) == ("HumanResponseEvent", "approve")
    assert wait["deadline"] > doc["created_at"]


def test_history_names_event_types(journals: Journals) -> None:
    out = ok(journals.run("history", "wf-wait", columns=200))
    row = next(line for line in out.splitlines() if " write " in line)
    assert "emitted Draft" in row and "consumed StartEvent" in row, row


def test_history_credits_the_body_apart_from_the_step(journals: Journals) -> None:
    """`receipt` is set by the body after charge#1 returned: ship#2's row says so as
    the body's, and names ship#2's own mutation apart."""
    out = ok(journals.run("history", journals.ids()[0], columns=200))
    rows = {}
    for line in out.splitlines():
        keys = [word for word in line.split() if re.fullmatch(r"[a-z]+#\d+", word)]
        if keys:
            rows[keys[0]] = line
    assert "body set order" in rows["charge#1"] and "set charged" in rows["charge#1"]
    assert "body set receipt" in rows["ship#2"] and "set shipped" in rows["ship#2"]
    assert "receipt" not in rows["charge#1"]


def test_fork_is_numbered_as_its_source(journals: Journals) -> None:
    """Step N of a fork is step N of its source: diffs across the runs compare the same
    step, and the fork's edit shows at the fork point only."""
    source = journals.ids()[0]
    forked = "k" + source[1:]
    out = ok(journals.run("history", forked, columns=200))
    numbers = [
        line.split()[0]
        for line in out.splitlines()
        if re.fullmatch(r"\d+\*?", line.split()[0] if line.split() else "")
        and "checkpoints" not in line
    ]
    assert numbers == ["1*", "1", "2", "3"], out
    fork_row = next(line for line in out.splitlines() if "run.forked" in line)
    assert fork_row.count("receipt") == 1, fork_row  # the edit, said once
    at_fork = ok(journals.run("diff", source, "1", "1", "--other", forked))
    assert "receipt" in at_fork and '"edited"' in at_fork
    # ship#2 of both: the fork's body set receipt again from charge#1's result, so the
    # same step of the same code holds the same state.
    same_step = ok(journals.run("diff", source, "2", "2", "--other", forked))
    assert "no differences" in same_step, same_step


# -- compacted runs and wording -----------------------------------------------------------


def test_compacted_run_history_compact_and_search(journals: Journals) -> None:
    db = journals.root / "compacted-copy.db"
    shutil.copyfile(journals.compacted, db)
    out = ok(journals.run("history", "c-1", db=db))
    # How many steps went, and when (ISO, as --since takes it), from the horizon snapshot.
    said = re.search(r"(\d+) checkpoints \((\d+) completed steps, (\d+) entries up to seq"
                     r" (\d+)\) of c-1 were compacted on (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)",
                     out)  # fmt: skip
    assert said, out
    with Journal(db) as j:
        record = j.compaction("c-1")
        assert record is not None and j.compaction("c-2") is None
        assert int(said[4]) == record.horizon == j.get_run("c-1").horizon
        assert int(said[3]) == record.entries == record.horizon  # every entry up to it
        # charge, ship and the run's end are its checkpoints; two of them steps.
        assert int(said[1]) == 3 and int(said[2]) == 2 == record.kinds["step.completed"]
        assert abs(dt.datetime.fromisoformat(said[5]).timestamp() - record.at) < 1
    assert "has not completed a step" not in out
    line = one_line_error(journals.run("state", "c-1", "--at", "1", db=db))
    assert "--seq" in line and "seq=" not in line
    # Found though only its snapshot holds it: the entries that set it are gone.
    hits = ok(journals.run("search", "zanzibar", "--run", "c-1", db=db))
    assert "snapshot" in hits and "[zanzibar] marker" in hits
    first = ok(journals.run("compact", "c-1", db=db))
    assert "nothing to compact" in first and "--keep-snapshots" in first
    everything = ok(journals.run("compact", "--keep-snapshots", "2", db=db))
    assert "compacted" in everything


def test_compact_names_unfinished_runs(journals: Journals) -> None:
    db = journals.root / "crashed-copy.db"
    shutil.copyfile(journals.crashed, db)
    out = ok(journals.run("compact", db=db))
    assert "nothing to compact: 2 runs are unfinished (--include-active" in out


def test_fork_without_import_is_not_told_it_is_recovering(journals: Journals) -> None:
    db = journals.root / "fork-copy.db"
    shutil.copyfile(journals.main, db)
    # Run from a directory where the workload is not importable.
    res = _real("fork", journals.ids()[0], "--at", "1", db=db, env={}, cwd=journals.root.parent)
    assert res.returncode == 2, res.stderr
    assert "before forking" in res.stderr and "recovering" not in res.stderr
    assert "--import" in res.stderr


def test_replay_says_each_thing_once(journals: Journals) -> None:
    (journals.root / "ncwork_v2.py").write_text(
        WORKLOAD.replace("receipt = charge(amount)", "receipt = charge(amount + 1)")
    )
    res = _real(
        "replay", journals.ids()[0], "--import", "ncwork_v2", db=journals.main, env={},
        cwd=journals.root,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert res.stdout.count("charge#1") == 1, res.stdout
    hashes = re.findall(r"[0-9a-f]{16}", res.stdout)
    assert len(hashes) == len(set(hashes)), res.stdout


def test_worker_says_started_and_resumed(journals: Journals) -> None:
    """A queued run is started; a run whose owner died is resumed."""
    db = journals.root / "worker-copy.db"
    shutil.copyfile(journals.crashed, db)
    res = _real(
        "worker", "--poll", "0.05", "--max-seconds", "1.5", "--import", "ncwork", db=db,
        env={}, cwd=journals.root,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "started r-new" in lines and "resumed r-crashed" in lines, res.stdout
    assert "recovered" not in res.stdout
