"""What the CLI prints from a journal cannot drive the terminal, and stays exact as JSON.

A run whose id, name, state keys and values and error hold escape sequences (a window
title, a screen clear), C1 controls and a bidi override: every human view shows them as
visible escapes (``\\x1b``), coloured output keeps only rich's own colour codes, and
``--json`` gives back the very strings. Also: a 4 MiB run id does not make ``runs``
fold it into a hundred thousand lines, ``export -o`` writes a file only its owner can
read, and a ``postgresql://`` URL that cannot be parsed is one typed line that never
shows the password.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine import Context, StepFailed, configure, durable, step
from engine._render import MAX_SHOWN, clean, json_text
from engine.cli import cli
from journal import BadJournalURL, Journal, JournalError, redact_location

TITLE = "\x1b]0;pwned\x07"  # sets the terminal's window title
CLEAR = "\x1b[2J"  # clears the screen
HOSTILE = f"evil{TITLE}{CLEAR}\u202etxt\x9b31m\x7f\x08end"
RUN_ID = f"run-{HOSTILE}"
UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
SGR = re.compile(r"\x1b\[[0-9;]*m")  # a colour code: the only escape rich may write


@step
def fails(note: str) -> None:
    raise ValueError(f"bad input {note}")


@durable(name=f"safety:{HOSTILE}")
def hostile(ctx: Context, note: str) -> None:
    ctx.state[f"key-{HOSTILE}"] = f"value-{HOSTILE}"
    ctx.state["plain"] = 1
    fails(note)


@pytest.fixture
def journal_file(db_path: Path) -> Path:
    eng = configure(db_path, lease_seconds=0)
    try:
        with pytest.raises(StepFailed, match="bad input"):
            hostile.run(HOSTILE, run_id=RUN_ID)
    finally:
        eng.close()
    return db_path


def cli_run(db: Path | str, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["--db", str(db), *args], env=env, catch_exceptions=False)


def assert_safe(text: str) -> None:
    """No control character but newline and tab, no escape but colour codes."""
    bare = SGR.sub("", text)
    found = UNSAFE.search(bare)
    assert found is None, (
        f"{found.group()!r} at {found.start()}: {bare[found.start() - 40 : found.start() + 40]!r}"
    )


READ_COMMANDS = [
    ("runs",),
    ("show", RUN_ID),
    ("history", RUN_ID),
    ("state", RUN_ID),
    ("state", RUN_ID, "--at", "0"),
    ("diff", RUN_ID, "0", "1"),
    ("search", "value"),
    ("search", "evil"),
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: " ".join(a[:1] + a[2:]))
def test_human_output_shows_escapes_not_controls(journal_file: Path, args: tuple[str, ...]) -> None:
    result = cli_run(journal_file, *args, env={"COLUMNS": "400"})  # wide: no folding
    assert result.exit_code == 0, result.output
    assert_safe(result.output)
    assert "\\x1b" in result.output, result.output
    if args[0] in ("runs", "show", "history"):
        assert "evil\\x1b]0;pwned\\x07\\x1b[2J\\u202etxt\\x9b31m\\x7f\\x08end" in result.output


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: " ".join(a[:1] + a[2:]))
def test_colour_keeps_riches_own_codes_only(journal_file: Path, args: tuple[str, ...]) -> None:
    result = cli_run(journal_file, *args, env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert result.exit_code == 0, result.output
    if args[0] in ("runs", "show", "history"):
        assert SGR.search(result.output), "no colour: the test would prove nothing"
    assert_safe(result.output)


@pytest.mark.parametrize(
    "args",
    [("runs", "--json"), ("show", RUN_ID, "--json"), ("history", RUN_ID, "--json"),
     ("state", RUN_ID, "--json"), ("export", RUN_ID)],
)  # fmt: skip
def test_json_stays_exact_and_prints_no_control(journal_file: Path, args: tuple[str, ...]) -> None:
    result = cli_run(journal_file, *args)
    assert result.exit_code == 0, result.output
    assert_safe(result.output)
    doc = json.loads(result.output)
    text = json.dumps(doc, ensure_ascii=False)
    assert RUN_ID in text or json.dumps(RUN_ID, ensure_ascii=False)[1:-1] in text
    if args[0] == "runs":
        assert doc[0]["run_id"] == RUN_ID and doc[0]["name"] == f"safety:{HOSTILE}"
        assert HOSTILE in doc[0]["error"]
    if args[0] == "state":
        assert doc["values"][f"key-{HOSTILE}"] == f"value-{HOSTILE}"


def test_error_messages_are_cleaned(journal_file: Path) -> None:
    result = cli_run(journal_file, "show", f"ghost-{HOSTILE}")
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert_safe(result.output)


def test_a_real_process_on_a_pipe(journal_file: Path) -> None:
    """The console script itself, as a pipe to a pager would see it."""
    for args in (["runs"], ["show", RUN_ID], ["history", RUN_ID]):
        res = subprocess.run(
            [sys.executable, "-m", "engine.cli", "--db", str(journal_file), *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert_safe(res.stdout + res.stderr)
        assert "pwned" in res.stdout


def test_clean_and_json_text() -> None:
    assert clean("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert clean("a\nb\tc") == "a\\x0ab\\x09c"
    assert clean("a\nb\tc", lines=True) == "a\nb\tc"
    assert clean("\u202e\x9b\x7f") == "\\u202e\\x9b\\x7f"
    assert clean("plain ünïcode ✓") == "plain ünïcode ✓"
    text = json.dumps({"k\u202e": "v\x9b\x1b"}, ensure_ascii=False)
    safe = json_text(text)
    assert json.loads(safe) == json.loads(text) and not UNSAFE.search(safe)


def test_runs_with_a_huge_run_id_does_work_bounded_by_the_screen(db_path: Path) -> None:
    """A 4 MiB run id: the table shows its start and its length, not 95,000 folded lines
    (rich's folding of such a cell took 53 s); ``--json`` still prints it whole."""
    huge = "r" * (4 << 20)
    with Journal(db_path) as j:
        j.create_run(huge, name="n", status="running")
    result = cli_run(db_path, "runs")
    assert result.exit_code == 0
    assert len(result.output) < 20 * MAX_SHOWN
    assert f"({4 << 20} characters)" in result.output
    assert json.loads(cli_run(db_path, "runs", "--json").output)[0]["run_id"] == huge


# -- export -o -----------------------------------------------------------------------------


def test_export_writes_a_private_file(journal_file: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        assert cli_run(journal_file, "export", RUN_ID, "-o", str(new)).exit_code == 0
        assert stat.S_IMODE(new.stat().st_mode) == 0o600
        assert json.loads(new.read_text())["run"]["run_id"] == RUN_ID

        existing = tmp_path / "existing.csv"
        existing.write_text("x" * 1_000_000)
        existing.chmod(0o644)
        assert (
            cli_run(
                journal_file, "export", RUN_ID, "--format", "csv", "-o", str(existing)
            ).exit_code
            == 0
        )
        assert stat.S_IMODE(existing.stat().st_mode) == 0o600  # tightened, then rewritten
        assert existing.read_text().startswith("seq,kind,")  # emptied, then written
    finally:
        os.umask(old)


# -- postgresql:// URLs that do not parse ----------------------------------------------------

SECRET = "Zq9-s3cret-Wx7"
BAD_URLS = {
    "raw %": "postgresql://bob:Zq9-s3cret%-Wx7@127.0.0.1:1/db",
    "raw % in password=": "postgresql://bob@127.0.0.1:1/db?password=Zq9-s3cret%-Wx7",
    "unknown parameter": f"postgresql://bob:{SECRET}@127.0.0.1:1/db?bogus_option=1",
    "bad IPv6 literal": f"postgresql://bob:{SECRET}@[::1x]:5432/db",
    "unclosed IPv6": f"postgresql://bob:{SECRET}@[fe80::1:5432/db",
    "bad port": f"postgresql://bob:{SECRET}@localhost:99999/db",
    "raw / in password": "postgresql://bob:Zq9/s3cret/Wx7@[::1x]/db",
    "raw ? in password": "postgresql://bob:Zq9?s3cret?Wx7@localhost/db",
}
PIECES = ("Zq9", "s3cret", "Wx7")


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_bad_url_is_one_typed_line_without_the_password(url: str, db_path: Path) -> None:
    pytest.importorskip("psycopg", reason="PostgreSQL support is not installed")
    with pytest.raises(BadJournalURL) as info:
        Journal(url)
    assert isinstance(info.value, JournalError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert "\n" not in message and "***" in message
    assert not any(p in message for p in PIECES), message
    assert not any(p in redact_location(url) for p in PIECES)

    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--db", url, "runs"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the journal URL"), result.stderr
    assert not any(p in result.stderr for p in PIECES), result.stderr
