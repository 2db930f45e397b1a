"""The ``durable`` command line against real journal files.

Commands that run user code, hold a worker or write (replay, fork, recover, worker,
cancel, compact, migrate...), usage errors and ``--help`` run as a real program
(``python -m engine.cli`` in a subprocess); the commands that only read a journal run
the same ``cli`` object in this process (click's CliRunner, in the workload's
directory, with the subprocess's environment), where an exception that escapes is
shown as the traceback the program would print. Exit statuses, one-line errors
without tracebacks, human output and ``--json`` output parsed and checked. The
journals are built once per module by a subprocess running a small workload written
into the temporary directory. ``docs/cli.md`` is checked against ``--help``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import pytest
from _children import REPO
from click.testing import CliRunner

from engine.cli import cli
from journal import Journal

ROOT = REPO
DOCS = ROOT / "docs" / "cli.md"

WORKLOAD = """
from engine import Context, current_context, durable, step


@step
def price(item: str) -> int:
    current_context().state["last_item"] = item
    return len(item) * 10


@step
def boom() -> None:
    raise ValueError("kaboom")


@step
def tick(i: int) -> int:
    return i


@durable(name="cli:checkout")
def checkout(ctx: Context, items: list) -> dict:
    ctx.state["cart"] = []
    for item in items:
        cost = price(item)
        ctx.state["cart"] = [*ctx.state["cart"], {"item": item, "cost": cost}]
        ctx.state["subtotal"] = ctx.state.get("subtotal", 0) + cost
    ctx.state["note"] = "zanzibar marker"
    return {"total": ctx.state["subtotal"], "n": len(ctx.state["cart"])}


@durable(name="cli:failing")
def failing(ctx: Context) -> None:
    boom()


@durable(name="cli:many")
def many(ctx: Context, n: int) -> int:
    return sum(tick(i) for i in range(n))
"""

# The same names, changed code: price is now called with other arguments.
WORKLOAD_V2 = WORKLOAD.replace("cost = price(item)", "cost = price(item.upper())")

BUILD = """
import sys

import engine
from journal import EntryKind, Journal

import cliwork

main_db, crashed_db = sys.argv[1:]
eng = engine.configure(main_db, durability="process")
cliwork.checkout.run(["apple", "fig", "banana"], run_id="r-ok")
cliwork.checkout.run(["kiwi"], run_id="r-2")
try:
    cliwork.failing.run(run_id="r-fail")
except engine.StepFailed:
    pass
cliwork.many.run(250, run_id="r-big")
eng.close()

# Runs whose owner died: one recoverable, one whose function no longer exists.
with Journal(crashed_db) as j:
    for rid, name, args in (
        ("r-crashed", "cli:checkout", [["kiwi", "plum"]]),
        ("r-lost", "nowhere_module:gone", []),
    ):
        j.create_run(
            rid,
            name=name,
            input={"args": args, "kwargs": {}},
            status="running",
            owner="dead-host:1:abc",
            lease_seconds=0.0,
            entries=[j.entry(EntryKind.RUN_STARTED, {"owner": "dead-host:1:abc"})],
        )
"""


# -- helpers ---------------------------------------------------------------------------

# Read-only commands: run in this process unless they are told to import code.
IN_PROCESS = {"runs", "show", "history", "state", "diff", "search", "export", "verify"}


class Env:
    """The working directory holding the workload and the journals built from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.main = root / "main.db"
        self.crashed = root / "crashed.db"

    def run(
        self, *args: Any, db: Path | str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``durable [--db DB] ARGS...`` in the workload's directory: in this process for
        a read-only command (``IN_PROCESS``) that imports nothing, else in a subprocess."""
        argv = (["--db", str(db)] if db is not None else []) + [str(a) for a in args]
        if self.in_process(args, env):
            return self.invoke(argv, env)
        base = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
        base.pop("COLUMNS", None)
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *argv],
            cwd=self.root,
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    @staticmethod
    def in_process(args: tuple[Any, ...], env: dict[str, str] | None) -> bool:
        imports = "--import" in args or any(k == "DURABLE_IMPORT" for k in env or {})
        return bool(args) and str(args[0]) in IN_PROCESS and not imports

    def invoke(
        self, argv: list[str], env: dict[str, str] | None
    ) -> subprocess.CompletedProcess[str]:
        """``durable ARGV...`` through CliRunner, with the environment ``run`` gives a
        subprocess; an escaping exception is appended to stderr as a traceback."""
        unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("DURABLE_")}
        here = os.getcwd()
        os.chdir(self.root)  # relative paths (export -o) as the program sees them
        try:
            result = CliRunner().invoke(
                cli, argv, env={**unset, "COLUMNS": None, **(env or {})}, prog_name="durable"
            )
        finally:
            os.chdir(here)
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(result.exception))
        return subprocess.CompletedProcess(
            ["durable", *argv], result.exit_code, result.stdout, stderr
        )

    def all(
        self, *calls: tuple[Any, ...] | dict[str, Any], db: Path | str | None = None
    ) -> list[subprocess.CompletedProcess[str]]:
        """Run independent invocations concurrently (each is mostly interpreter start-up);
        a call is a tuple of arguments, or ``{"args": ..., "db": ..., "env": ...}``."""
        specs = [c if isinstance(c, dict) else {"args": c} for c in calls]
        # In-process calls one after the other (CliRunner swaps sys.stdout), the
        # subprocesses side by side.
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [
                None
                if self.in_process(tuple(spec["args"]), spec.get("env"))
                else pool.submit(
                    self.run, *spec["args"], db=spec.get("db", db), env=spec.get("env")
                )
                for spec in specs
            ]
            return [
                f.result()
                if f is not None
                else self.run(*spec["args"], db=spec.get("db", db), env=spec.get("env"))
                for f, spec in zip(futures, specs, strict=True)
            ]

    def copy(self, src: Path, name: str) -> Path:
        """A private copy of a journal (with its -wal, if any) for a test that writes."""
        dst = self.root / name
        for suffix in ("", "-wal"):
            if Path(f"{src}{suffix}").exists():
                shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
        return dst


def ok(res: subprocess.CompletedProcess[str]) -> str:
    """stdout of a run that succeeded, with no colour codes in it."""
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "\x1b[" not in res.stdout, "colour codes in output that is not a terminal"
    return res.stdout


def ok_json(res: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document a ``--json`` run printed."""
    return json.loads(ok(res))


def failed(res: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """Assert exit ``code`` and a single ``error: ...`` line (naming ``fragments``) on stderr."""
    assert res.returncode == code, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def usage_error(res: subprocess.CompletedProcess[str], fragment: str) -> None:
    """A usage error (click's own too): exit 2, one ``error: ...`` line naming ``fragment``
    and the ``--help`` that explains it."""
    line = failed(res, 2, fragment)
    assert "--help)" in line, line


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("cli")
    (root / "cliwork.py").write_text(WORKLOAD)
    (root / "cliwork_v2.py").write_text(WORKLOAD_V2)
    e = Env(root)
    subprocess.run(
        [sys.executable, "-c", BUILD, str(e.main), str(e.crashed)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
        timeout=120,
    )
    built = digest(e.main)
    yield e
    # Every test writes to copies only: all the reading left the shared journal intact.
    assert digest(e.main) == built


# -- reading ---------------------------------------------------------------------------


class TestRead:
    """runs, show, history, state, diff: human output and --json."""

    def test_runs(self, env: Env) -> None:
        """Lists runs oldest first; filters by status, name, time; pages; --db anywhere."""
        (
            runs, failed_only, both, paged, future, past, human, bad_status, bad_time,
            after, from_env,
        ) = env.all(
            ("runs", "--json"),
            ("runs", "--status", "failed", "--json"),
            ("runs", "--status", "failed", "--status", "completed", "--json"),
            ("runs", "--name", "cli:checkout", "--limit", "1", "--offset", "1", "--json"),
            ("runs", "--since", "2999-01-01", "--json"),
            ("runs", "--until", "2000-01-01T00:00:00Z"),
            ("runs",),
            ("runs", "--status", "bogus"),
            ("runs", "--since", "last tuesday"),
            ("runs", "--json", "--db", env.main),
            {"args": ("runs", "--json"), "db": None, "env": {"DURABLE_DB": str(env.main)}},
            db=env.main,
        )  # fmt: skip
        listed = ok_json(runs)
        assert [r["run_id"] for r in listed] == ["r-ok", "r-2", "r-fail", "r-big"]
        assert [r["status"] for r in listed] == ["completed", "completed", "failed", "completed"]
        assert listed[0]["name"] == "cli:checkout"
        assert isinstance(listed[0]["created_at"], float)
        assert "kaboom" in listed[2]["error"]
        assert [r["run_id"] for r in ok_json(failed_only)] == ["r-fail"]
        assert len(ok_json(both)) == 4
        assert [r["run_id"] for r in ok_json(paged)] == ["r-2"]
        assert ok_json(future) == []
        assert "no runs" in ok(past)
        for word in ("r-ok", "r-fail", "cli:checkout", "completed", "failed", "4 runs"):
            assert word in ok(human)
        usage_error(bad_status, "--status")
        usage_error(bad_time, "--since")
        assert ok_json(after) == listed == ok_json(from_env)

    def test_show_and_history(self, env: Env) -> None:
        """One run with its decoded input and output; its timeline of checkpoints."""
        shown, failing, crashed, cps, human, fail_history = env.all(
            ("show", "r-ok", "--json"),
            ("show", "r-fail"),
            {"args": ("show", "r-crashed"), "db": env.crashed},
            ("history", "r-ok", "--json"),
            ("history", "r-ok"),
            ("history", "r-fail"),
            db=env.main,
        )
        doc = ok_json(shown)
        assert doc["status"] == "completed"
        assert doc["input"] == {"args": [["apple", "fig", "banana"]], "kwargs": {}}
        assert doc["output"] == {"total": 140, "n": 3}
        assert doc["checkpoints"] == 4
        assert doc["owner"] is None and doc["forked_from"] is None
        text = ok(failing)
        assert "failed" in text and "kaboom" in text and "checkpoints" in text
        text = ok(crashed)
        assert "dead-host:1:abc" in text and "expired" in text

        checkpoints = ok_json(cps)
        assert [c["number"] for c in checkpoints] == [1, 2, 3, 4]
        assert [c["kind"] for c in checkpoints] == ["step.completed"] * 3 + ["run.completed"]
        assert [c["step"] for c in checkpoints] == ["price#1", "price#2", "price#3", None]
        # price#2's own mutation, apart from the body's after price#1's result.
        assert checkpoints[1]["set_keys"] == ["last_item"]
        assert checkpoints[1]["body_set_keys"] == ["cart", "subtotal"]
        assert checkpoints[0]["attempt"] == 1 and checkpoints[0]["duration"] >= 0
        text = ok(human)
        for word in ("price#1", "price#3", "step.completed", "run.completed", "4 checkpoints"):
            assert word in text
        text = ok(fail_history)
        assert "step.failed" in text and "ValueError: kaboom" in text

    def test_history_streams_a_long_run(self, env: Env) -> None:
        """251 checkpoints print in chunks that read as one table (one header)."""
        as_json, human = env.all(("history", "r-big", "--json"), ("history", "r-big"), db=env.main)
        cps = ok_json(as_json)
        assert len(cps) == 251 and cps[-1]["kind"] == "run.completed"
        text = ok(human)
        assert text.count("duration") == 1
        assert "tick#250" in text and "251 checkpoints" in text

    def test_state(self, env: Env) -> None:
        """The latest state, or at a checkpoint, a seq or a time."""
        soon = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 5))
        at2, latest, seq1, start, at_time, human, both = env.all(
            ("state", "r-ok", "--at", "2", "--json"),
            ("state", "r-ok", "--json"),
            ("state", "r-ok", "--seq", "1", "--json"),
            ("state", "r-ok", "--at", "0", "--json"),
            ("state", "r-ok", "--time", soon, "--json"),
            ("state", "r-ok", "--at", "2"),
            ("state", "r-ok", "--at", "1", "--seq", "3"),
            db=env.main,
        )
        doc = ok_json(at2)
        assert doc["step"] == 2
        assert doc["values"] == {
            "cart": [{"item": "apple", "cost": 50}],
            "subtotal": 50,
            "last_item": "fig",
        }
        now = ok_json(latest)["values"]
        assert now["subtotal"] == 140 and now["note"] == "zanzibar marker"
        assert ok_json(seq1)["values"] == {} and ok_json(start)["values"] == {}
        assert ok_json(at_time)["values"] == now
        text = ok(human)
        assert "after step 2" in text and '"last_item": "fig"' in text
        usage_error(both, "at most one")

    def test_diff(self, env: Env) -> None:
        """Paths added, removed and changed, old → new; across two runs with --other."""
        as_json, other, human, same = env.all(
            ("diff", "r-ok", "2", "4", "--json"),
            ("diff", "r-ok", "4", "2", "--other", "r-2", "--json"),
            ("diff", "r-ok", "2", "4"),
            ("diff", "r-ok", "3", "3"),
            db=env.main,
        )
        d = ok_json(as_json)
        assert d["added"] == {
            "cart[1]": {"item": "fig", "cost": 30},
            "cart[2]": {"item": "banana", "cost": 60},
            "note": "zanzibar marker",
        }
        assert d["changed"] == {
            "last_item": {"old": "fig", "new": "banana"},
            "subtotal": {"old": 50, "new": 140},
        }
        assert d["removed"] == {} and d["empty"] is False
        o = ok_json(other)
        assert o["other"] == "r-2"
        assert o["changed"]["subtotal"] == {"old": 140, "new": 40}
        assert o["changed"]["last_item"] == {"old": "banana", "new": "kiwi"}
        text = ok(human)
        assert "subtotal" in text and "50 → 140" in text and "3 added" in text
        assert "no differences" in ok(same)

    def test_read_commands_never_write(self, env: Env) -> None:
        """Searching, exporting and replaying (which open their own connections) leave the
        file as it was; the module fixture checks the same after every test has run."""
        before = digest(env.main)
        for res in env.all(
            ("search", "apple"),
            ("export", "r-ok", "--format", "csv"),
            ("replay", "r-ok", "--import", "cliwork"),
            db=env.main,
        ):
            ok(res)
        assert digest(env.main) == before


class TestSearchExport:
    """search over decoded payloads; export to JSON and CSV."""

    def test_search(self, env: Env) -> None:
        """Which step set this value: the entry's run, seq, kind, step and key."""
        hits = ok_json(env.run("search", "banana", "--json", db=env.main))
        by_key = {(h["run_id"], h["kind"], h["key"]) for h in hits}
        assert ("r-ok", "state.set", "last_item") in by_key
        setter = next(h for h in hits if h["key"] == "last_item")
        assert setter["step"] == "price#3"
        assert "[banana]" in setter["snippet"]
        human = ok(env.run("search", "zanzibar", db=env.main))
        assert "note" in human and "[zanzibar]" in human and "r-ok" in human
        assert ok_json(env.run("search", "banana", "--run", "r-2", "--json", db=env.main)) == []
        assert "no entry matches" in ok(env.run("search", "qwertyuiop", db=env.main))
        quoted = ok_json(env.run("search", 'zanzibar "marker', "--json", db=env.main))
        assert quoted and quoted[0]["key"] == "note"
        one = ok_json(env.run("search", "kaboom", "--limit", "1", "--json", db=env.main))
        assert len(one) == 1 and one[0]["run_id"] == "r-fail"

    def test_export(self, env: Env) -> None:
        """JSON with decoded payloads to stdout; CSV to a file."""
        doc = ok_json(env.run("export", "r-ok", db=env.main))
        assert doc["run"]["run_id"] == "r-ok" and doc["run"]["output"] == {"total": 140, "n": 3}
        seqs = [e["seq"] for e in doc["entries"]]
        assert seqs == list(range(1, len(seqs) + 1))
        out = env.root / "r-ok.csv"
        res = env.run("export", "r-ok", "--format", "csv", "--output", out, db=env.main)
        assert ok(res) == "" and "wrote" in res.stderr
        lines = out.read_text().splitlines()
        assert lines[0] == "seq,kind,step,key,codec,ts,payload" and len(lines) == len(seqs) + 1
        usage_error(env.run("export", "r-ok", "--format", "xml", db=env.main), "--format")
        failed(
            env.run("export", "r-ok", "-o", env.root / "no" / "x.csv", db=env.main), 2, "no/x.csv"
        )


# -- executing code --------------------------------------------------------------------


class TestReplay:
    """replay: exit 0 when today's code matches the journal, 1 on divergence."""

    def test_replay_ok(self, env: Env) -> None:
        report = ok_json(env.run("replay", "r-ok", "--import", "cliwork", "--json", db=env.main))
        assert report["ok"] is True and report["calls_replayed"] == 3
        assert report["state"]["subtotal"] == 140
        until = env.run(
            "replay", "r-ok", "--until", "1", "--import", "cliwork", "--json", db=env.main
        )
        assert "stopped after 1" in ok_json(until)["stopped"]
        every = env.run("replay", "--all", "--json", db=env.main, env={"DURABLE_IMPORT": "cliwork"})
        reports = ok_json(every)
        assert [r["run_id"] for r in reports] == ["r-ok", "r-2", "r-fail", "r-big"]
        assert all(r["ok"] for r in reports)
        human = ok(
            env.run("replay", "--all", "--status", "failed", "--import", "cliwork", db=env.main)
        )
        assert "r-fail" in human and "failed as recorded" in human and "r-ok" not in human

    def test_replay_divergence_exits_1(self, env: Env) -> None:
        res = env.run("replay", "r-ok", "--import", "cliwork_v2", db=env.main)
        failed(res, 1, "diverged", "r-ok")
        assert "DIVERGED" in res.stdout and "non-deterministic" in res.stdout
        res = env.run("replay", "--all", "--import", "cliwork_v2", "--json", db=env.main)
        failed(res, 1, "diverged")
        reports = {r["run_id"]: r for r in json.loads(res.stdout)}
        assert reports["r-ok"]["ok"] is False and reports["r-ok"]["divergence"]["seq"] == 4
        assert reports["r-big"]["ok"] is True

    def test_replay_usage(self, env: Env) -> None:
        """A RUN or --all; the function must be importable (exit 2 naming it if not)."""
        usage_error(env.run("replay", db=env.main), "RUN or --all")
        usage_error(env.run("replay", "r-ok", "--all", db=env.main), "RUN or --all")
        failed(env.run("replay", "r-ok", db=env.main), 2, "cli:checkout", "r-ok")
        failed(env.run("replay", "r-ok", "--import", "no_such_mod", db=env.main), 2, "no_such_mod")


class TestFork:
    def test_fork_with_edit(self, env: Env) -> None:
        """The fork shares history up to the checkpoint, then runs live with the edit."""
        db = env.copy(env.main, "fork.db")
        res = env.run(
            "fork", "r-ok", "--at", "1", "--set", "subtotal=1000", "--run-id", "f1",
            "--wait", "--json", "--import", "cliwork", db=db,
        )  # fmt: skip
        doc = ok_json(res)
        assert doc == {
            "run_id": "f1",
            "forked_from": "r-ok",
            "at": 1,
            "status": "completed",
            "error": None,
            "output": {"total": 1140, "n": 3},
        }
        cps = ok_json(env.run("history", "f1", "--json", db=db))
        assert cps[0]["run_id"] == "r-ok" and cps[1]["kind"] == "run.forked"
        assert cps[1]["detail"]["edits"] == ["subtotal"]
        # The edit is the fork's own, at the fork point's number; the next step is step 2
        # as in the source.
        assert cps[1]["set_keys"] == ["subtotal"] and cps[1]["number"] == 1
        assert cps[2]["set_keys"] == ["last_item"]  # price#2's own, not the edit
        assert (cps[2]["number"], cps[2]["step"]) == (2, "price#2")
        shown = ok_json(env.run("show", "f1", "--json", db=db))
        assert shown["forked_from"] == "r-ok" and shown["checkpoints"] == cps[-1]["number"]
        plain = env.run("fork", "r-ok", "--at", "2", "--import", "cliwork", db=db)
        new_id = ok(plain).strip()
        assert ok_json(env.run("show", new_id, "--json", db=db))["status"] == "completed"

    def test_fork_bad_input(self, env: Env) -> None:
        db = env.copy(env.main, "fork-bad.db")
        before = ok_json(env.run("runs", "--json", db=db))
        failed(
            env.run(
                "fork", "r-ok", "--at", "1", "--set", "subtotal=abc", "--import", "cliwork", db=db
            ),
            2,
            "--set subtotal",
            "not JSON",
        )
        usage_error(env.run("fork", "r-ok", "--at", "1", "--set", "subtotal", db=db), "KEY=JSON")
        failed(env.run("fork", "r-ok", "--at", "99", "--import", "cliwork", db=db), 2, "step 99")
        failed(env.run("fork", "nope", "--at", "1", "--import", "cliwork", db=db), 2, "'nope'")
        usage_error(env.run("fork", "r-ok", db=db), "--at")
        assert ok_json(env.run("runs", "--json", db=db)) == before


class TestOperate:
    """cancel, recover, worker, compact, verify."""

    def test_recover(self, env: Env) -> None:
        """Resumes the crashed run; exit 1 because the other one cannot be imported."""
        db = env.copy(env.crashed, "recover.db")
        res = env.run("recover", "--import", "cliwork", "--json", db=db)
        failed(res, 1, "1 run could not be recovered")
        doc = json.loads(res.stdout)
        assert doc["resumed"] == [{"run_id": "r-crashed", "status": "completed"}]
        assert list(doc["errors"]) == ["r-lost"] and "nowhere_module" in doc["errors"]["r-lost"]
        shown = ok_json(env.run("show", "r-crashed", "--json", db=db))
        assert shown["output"] == {"total": 80, "n": 2}
        again = env.run("recover", "--import", "cliwork", db=db)
        assert (
            again.returncode == 1 and "r-lost" in again.stdout and "r-crashed" not in again.stdout
        )

    def test_worker(self, env: Env) -> None:
        """Polls until --max-seconds; resumes the crashed run and reports the lost one once."""
        db = env.copy(env.crashed, "worker.db")
        res = env.run(
            "worker", "--poll", "0.05", "--max-seconds", "1", "--import", "cliwork", db=db
        )
        out = ok(res)
        assert "resumed r-crashed" in out and "worker stopped" in out
        assert out.count("not recovered r-lost") == 1
        assert ok_json(env.run("show", "r-crashed", "--json", db=db))["status"] == "completed"

    def test_cancel(self, env: Env) -> None:
        db = env.copy(env.crashed, "cancel.db")
        doc = ok_json(env.run("cancel", "r-crashed", "--json", db=db))
        assert doc == {"run_id": "r-crashed", "status": "cancelled", "cancelled": True}
        assert "already cancelled" in ok(env.run("cancel", "r-crashed", db=db))
        assert ok_json(env.run("show", "r-crashed", "--json", db=db))["status"] == "cancelled"
        failed(env.run("cancel", "nope", db=db), 2, "no run 'nope'")

    def test_compact(self, env: Env) -> None:
        """Finished runs lose their old entries; time travel before the horizon is exit 2."""
        db = env.copy(env.main, "compact.db")
        doc = ok_json(env.run("compact", "--reclaim", "--json", db=db))
        assert doc["runs_compacted"] == 4 and doc["entries_deleted"] > 250
        assert doc["horizons"]["r-ok"] > 0 and isinstance(doc["pages_reclaimed"], int)
        failed(env.run("state", "r-ok", "--at", "1", db=db), 2, "compacted", "r-ok")
        assert ok_json(env.run("state", "r-ok", "--json", db=db))["values"]["subtotal"] == 140
        ok(env.run("verify", db=db))
        again = ok(env.run("compact", "r-ok", "--keep-snapshots", "2", db=db))
        assert "compacted 0 runs" in again
        usage_error(env.run("compact", "--keep-snapshots", "0", db=db), "--keep-snapshots")

    def test_verify(self, env: Env) -> None:
        """A sound journal passes; a payload changed on disk is a problem: exit 1."""
        report = ok_json(env.run("verify", "--json", db=env.main))
        assert report["ok"] is True and report["runs"] == 4 and report["problems"] == []
        assert "ok:" in ok(env.run("verify", "r-ok", db=env.main))
        db = env.copy(env.main, "tampered.db")
        with sqlite3.connect(db) as conn:
            conn.execute(
                "UPDATE entries SET payload = CAST('{\"result\": 999}' AS BLOB)"
                " WHERE run_id = 'r-ok' AND seq = 3"
            )
        conn.close()
        res = env.run("verify", "--json", db=db)
        failed(res, 1, "1 problem in")
        problems = json.loads(res.stdout)["problems"]
        assert len(problems) == 1 and "r-ok" in problems[0] and "checksum" in problems[0]
        human = env.run("verify", db=db)
        assert human.returncode == 1 and "problem:" in human.stdout and "seq 3" in human.stdout
        failed(env.run("history", "r-ok", db=db), 2, "checksum", "seq 3")


# -- bad input ---------------------------------------------------------------------------


class TestBadInput:
    """Every user error: exit 2, one line naming what and where, never a traceback."""

    def test_unknown_run_and_bad_steps(self, env: Env) -> None:
        unknown = [
            ("show", "nope"),
            ("history", "nope"),
            ("state", "nope"),
            ("diff", "nope", "1", "2"),
            ("export", "nope"),
            ("search", "x", "--run", "nope"),
        ]
        results = env.all(
            *unknown,
            ("state", "r-ok", "--at", "99"),
            ("state", "r-ok", "--at", "-1"),
            ("state", "r-ok", "--seq", "999"),
            ("diff", "r-ok", "1", "50"),
            ("state", "r-ok", "--at", "two"),
            ("diff", "r-ok", "1"),
            db=env.main,
        )
        for res in results[: len(unknown)]:
            failed(res, 2, "no run 'nope'", str(env.main))
        at99, negative, seq999, diff50, word, missing_b = results[len(unknown) :]
        failed(at99, 2, "no step 99", "r-ok")
        failed(negative, 2, "--at", "-1")
        failed(seq999, 2, "seq 999")
        failed(diff50, 2, "no step 50")
        usage_error(word, "--at")
        usage_error(missing_b, "B")

    def test_missing_file_is_not_created(self, env: Env) -> None:
        path = env.root / "absent.db"
        for res in env.all(
            ("runs",),
            ("show", "r-ok"),
            ("compact",),
            ("recover",),
            ("fork", "r-ok", "--at", "1"),
            db=path,
        ):
            failed(res, 2, f"no journal at {path}")
        assert sorted(p.name for p in env.root.glob("absent*")) == []

    def test_garbage_and_foreign_files(self, env: Env) -> None:
        """Refused with the reason and the path; left byte for byte as they were."""
        garbage = env.root / "garbage.db"
        garbage.write_bytes(os.urandom(8192))
        foreign = env.root / "foreign.db"
        with sqlite3.connect(foreign) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
            conn.execute("INSERT INTO notes VALUES ('hello')")
        conn.close()
        before = digest(garbage), digest(foreign)
        on_garbage = [("runs",), ("verify",), ("compact",)]
        on_foreign = [("show", "r-ok"), ("search", "hello"), ("recover",)]
        results = env.all(
            *({"args": c, "db": garbage} for c in on_garbage),
            *({"args": c, "db": foreign} for c in on_foreign),
        )
        for res in results[: len(on_garbage)]:
            failed(res, 2, "not an SQLite database", str(garbage))
        for res in results[len(on_garbage) :]:
            failed(res, 2, "not a durable journal", str(foreign))
        assert (digest(garbage), digest(foreign)) == before

    def test_corrupt_and_truncated_files(self, env: Env) -> None:
        corrupt = env.copy(env.main, "corrupt.db")
        data = bytearray(corrupt.read_bytes())
        page = int.from_bytes(data[16:18], "big")
        data[page:] = os.urandom(len(data) - page)  # every page after the first
        corrupt.write_bytes(bytes(data))
        truncated = env.root / "truncated.db"
        truncated.write_bytes(env.main.read_bytes()[:3000])
        *reads, verify, short = env.all(
            ("runs",),
            ("show", "r-ok"),
            ("history", "r-ok"),
            ("search", "apple"),
            ("verify",),
            {"args": ("runs",), "db": truncated},
            db=corrupt,
        )
        for res in reads:
            failed(res, 2, "corrupt.db")
        assert verify.returncode in (1, 2) and "Traceback" not in verify.stderr
        failed(short, 2, "truncated.db")


# -- migrate, and every command on PostgreSQL -----------------------------------------------


class TestMigrate:
    """migrate: a journal copied and verified, resumable; bad input refused, nothing written."""

    def test_file_to_file(self, env: Env) -> None:
        target = env.root / "migrated.db"
        doc = ok_json(env.run("migrate", env.main, target, "--json"))
        assert doc["ok"] is True and doc["problems"] == []
        assert doc["runs"] == doc["runs_copied"] == doc["runs_verified"] == 4
        assert doc["entries_copied"] == doc["entries_verified"] > 250
        again, one = env.all(
            ("migrate", env.main, target),
            ("migrate", env.main, env.root / "one.db", "--run", "r-2", "--json"),
        )
        text = ok(again)
        assert "copied 0 runs" in text and "4 already there" in text and "ok: 4 runs" in text
        assert ok_json(one)["runs_copied"] == 1
        original, copied = env.all(
            ("export", "r-ok"), {"args": ("export", "r-ok"), "db": target}, db=env.main
        )
        assert ok(original) == ok(copied)

    def test_bad_input(self, env: Env) -> None:
        foreign = env.root / "notes.db"
        with sqlite3.connect(foreign) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
        conn.close()
        conflict = env.root / "conflict.db"
        with Journal(conflict) as j:
            j.create_run("r-ok", name="another:function")
        tampered = env.copy(env.main, "tampered-source.db")
        with sqlite3.connect(tampered) as conn:
            conn.execute("UPDATE entries SET payload = X'00' WHERE run_id = 'r-2' AND seq = 2")
        conn.close()
        same = env.copy(env.main, "same.db")
        absent, on_foreign, unreachable, conflicting, itself, unknown, bad_source = env.all(
            ("migrate", env.root / "absent.db", env.root / "x.db"),
            ("migrate", env.main, foreign),
            ("migrate", env.main, "postgresql://app:hunter2@127.0.0.1:1/nowhere"),
            ("migrate", env.main, conflict),
            ("migrate", same, same),
            ("migrate", env.main, env.root / "y.db", "--run", "nope"),
            ("migrate", tampered, env.root / "z.db", "--json"),
        )
        failed(absent, 2, "no journal at", "absent.db")
        failed(on_foreign, 2, "not a durable journal", "notes.db")
        failed(unreachable, 2, "cannot connect", "app:***@127.0.0.1:1")
        assert "hunter2" not in unreachable.stderr
        failed(conflicting, 2, "already holds 1 run", "'r-ok'", "name")
        failed(itself, 2, "same journal")
        failed(unknown, 2, "no run 'nope' in the source")
        assert not any((env.root / name).exists() for name in ("x.db", "y.db"))
        with Journal(conflict, readonly=True) as j:
            assert [r.run_id for r in j.list_runs()] == ["r-ok"]
        failed(bad_source, 1, "1 problem copying", "tampered-source.db")
        doc = json.loads(bad_source.stdout)
        assert doc["ok"] is False and list(doc["not_copied"]) == ["r-2"]
        assert "seq 2: checksum mismatch" in doc["not_copied"]["r-2"]
        assert doc["runs_copied"] == 3


@pytest.fixture(scope="module")
def pg(env: Env, pg_url: str) -> str:
    """The module's journal migrated into a PostgreSQL schema of its own: its URL."""
    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}schema=cli_{uuid.uuid4().hex[:12]}"
    doc = ok_json(env.run("migrate", env.main, url, "--json"))
    assert doc["ok"] is True and doc["runs_copied"] == 4
    return url


@pytest.mark.postgres
class TestPostgres:
    """Every command on a postgresql:// URL: the journal migrated from the file reads the same."""

    def test_reads_match_the_file(self, env: Env, pg: str) -> None:
        """In this process (click's runner), to keep it quick: the output on the URL is
        the output on the file, byte for byte."""
        commands = [
            ("runs", "--json"),
            ("runs",),
            ("show", "r-ok", "--json"),
            ("show", "r-fail"),
            ("history", "r-ok", "--json"),
            ("history", "r-big"),
            ("state", "r-ok", "--at", "2", "--json"),
            ("diff", "r-ok", "1", "3", "--json"),
            ("export", "r-ok"),
            ("export", "r-fail", "--format", "csv"),
            ("search", "banana", "--json"),
            ("search", "kaboom"),
            ("verify", "--json"),
        ]
        runner = CliRunner()
        for command in commands:
            on_file = runner.invoke(cli, ["--db", str(env.main), *command])
            on_pg = runner.invoke(cli, ["--db", pg, *command])
            assert on_file.exit_code == on_pg.exit_code == 0, (command, on_pg.output)
            assert on_pg.stdout == on_file.stdout, command
        replayed = ok_json(env.run("replay", "r-ok", "--import", "cliwork", "--json", db=pg))
        assert replayed["ok"] is True

    def test_writes_and_errors(self, env: Env, pg: str) -> None:
        url = pg.replace("schema=cli_", "schema=cliw_")
        ok_json(env.run("migrate", env.main, url, "--run", "r-ok", "--json"))
        compacted = ok_json(env.run("compact", "r-ok", "--json", db=url))
        assert compacted["runs_compacted"] == 1 and compacted["horizons"]["r-ok"] > 0
        back = env.root / "back.db"
        copied, absent, unreachable = env.all(
            ("migrate", url, back, "--json"),
            {"args": ("runs",), "db": pg.replace("schema=cli_", "schema=nothing_")},
            {"args": ("runs",), "db": "postgresql://app:hunter2@127.0.0.1:1/x"},
        )
        assert ok_json(copied)["ok"] is True
        assert ok_json(env.run("verify", "--json", db=back))["ok"] is True
        failed(absent, 2, "no journal in schema 'nothing_")
        failed(unreachable, 2, "cannot connect", "app:***@")
        assert "hunter2" not in unreachable.stderr


# -- help and the generated reference ------------------------------------------------------


def reference() -> str:
    """The generated part of docs/cli.md: ``--help`` of the group and of every command."""
    width = 88
    root = click.Context(
        cli,
        info_name="durable",
        terminal_width=width,
        max_content_width=width,
        **cli.context_settings,
    )
    parts = [f"### `durable`\n\n```text\n{cli.get_help(root)}\n```\n"]
    for name in cli.list_commands(root):
        command = cli.get_command(root, name)
        assert command is not None
        sub = click.Context(
            command, info_name=name, parent=root, terminal_width=width, max_content_width=width
        )
        parts.append(f"### `durable {name}`\n\n```text\n{command.get_help(sub)}\n```\n")
    return "\n".join(parts)


BEGIN = "<!-- BEGIN GENERATED: durable --help (tests/cli/test_cli.py) -->"
END = "<!-- END GENERATED -->"


def test_docs_reference_is_current() -> None:
    """docs/cli.md holds every command's current --help. To regenerate it:
    ``DURABLE_UPDATE_DOCS=1 pytest tests/cli/test_cli.py -k docs``."""
    text = DOCS.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, "docs/cli.md lost its generated-section markers"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    expected = f"{head}{BEGIN}\n\n{reference()}\n{END}{tail}"
    if text != expected and os.environ.get("DURABLE_UPDATE_DOCS"):
        DOCS.write_text(expected, encoding="utf-8")
        return
    assert text == expected, (
        "docs/cli.md is out of date: run DURABLE_UPDATE_DOCS=1 pytest tests/cli/test_cli.py -k docs"
    )


def test_docs_list_every_command_and_exit_code() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in cli.list_commands(click.Context(cli)):
        assert f"### `durable {name}`" in text
    table = re.search(r"\| *status *\|.*?\n\n", text, re.S)
    assert table is not None, "docs/cli.md has no exit status table"
    for code in ("0", "1", "2"):
        assert f"| {code} " in table.group(0)


def test_help_and_version(env: Env) -> None:
    out = ok(env.run("--help"))
    assert "runs" in out and "history" in out and "Exit status" in out
    assert ok(env.run("history", "-h")).startswith("Usage: durable history")
    assert ok(env.run("--version")).startswith("durable ")
    usage_error(env.run("frobnicate"), "frobnicate")
