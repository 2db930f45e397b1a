"""Child processes of the tests: where their programs live, and how a test starts them,
reads their output, waits for them and kills them (SIGKILL, checked).

Every test that runs code in another process (tests/reliability above all) takes its
paths and helpers from here. The child programs are in ``tests/_procs``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, cast

import pytest

from journal.pg_cluster import wait_for_sessions_to_end

REPO = Path(__file__).resolve().parents[1]
"""The checkout: put on a child's ``PYTHONPATH`` so it imports this tree's packages."""
TESTS = REPO / "tests"
PROCS = TESTS / "_procs"
"""The child programs."""
FIXTURES = TESTS / "fixtures"
TIMEOUT = 60
"""Seconds a child may take before ``finish`` kills it and fails the test."""

Popen = subprocess.Popen[str]

# A killed client's COMMIT may still be carried out by its server backend: each child
# names its PostgreSQL sessions, and what a kill left is read once they are gone.
_SESSION_NAMES: dict[int, str] = {}


def spawn(argv: list[str], *, env: Mapping[str, str], cwd: Path | str) -> Popen:
    """Start ``python ARGV...`` with pipes on stdin, stdout and stderr (text), its
    PostgreSQL sessions named after it (``PGAPPNAME``) so ``settle`` can wait for them."""
    environ = dict(env)
    environ["PGAPPNAME"] = name = f"durable-test-{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=cwd,
        env=environ,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _SESSION_NAMES[proc.pid] = name
    return proc


def settle(db: str, proc: Popen) -> None:
    """Wait until a killed child's server sessions (PostgreSQL) have ended."""
    name = _SESSION_NAMES.pop(proc.pid, None)
    if name is not None and db.startswith(("postgresql://", "postgres://")):
        wait_for_sessions_to_end(db, name)


def finish(proc: Popen, timeout: float = TIMEOUT) -> tuple[str, str]:
    """Wait for a child (killing it after ``timeout``); return its stdout and stderr."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"child timed out; stdout {out[-800:]!r}; stderr:\n{err[-3000:]}")


def read_line(proc: Popen, prefix: str) -> str:
    """Read the child's stdout up to its next line starting with ``prefix``; return the rest."""
    stdout = cast(IO[str], proc.stdout)  # a pipe: spawn() asks for one
    skipped: list[str] = []  # kept for the failure message (the child's "error ..." line)
    while True:
        line = stdout.readline()
        if not line:
            out, err = finish(proc)
            seen = "".join(skipped[-20:]) + out
            pytest.fail(
                f"the child ended (status {proc.returncode}) before printing {prefix!r}:"
                f" {seen[-800:]!r}\n{err[-3000:]}"
            )
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
        skipped.append(line)


def tagged(out: str, err: str, tag: str) -> dict[str, Any]:
    """The JSON of the child's ``<tag> {...}`` stdout line (failing with its output if absent)."""
    for line in out.splitlines():
        if line.startswith(f"{tag} "):
            data: dict[str, Any] = json.loads(line[len(tag) + 1 :])
            return data
    pytest.fail(f"no {tag!r} line from the child; stdout {out[-800:]!r}; stderr:\n{err[-3000:]}")


def assert_sigkilled(proc: Popen, where: str) -> tuple[str, str]:
    """Wait for the child: it must have died of SIGKILL (not finished, not crashed by an
    exception). Returns its stdout and stderr."""
    out, err = finish(proc)
    assert proc.returncode == -signal.SIGKILL, (
        f"child for {where} exited {proc.returncode} instead of dying of SIGKILL; "
        f"stdout {out[-800:]!r}; stderr:\n{err[-3000:]}"
    )
    return out, err


def kill(proc: Popen, where: str) -> tuple[str, str]:
    """SIGKILL the child now and check it died of it; return its stdout and stderr."""
    os.kill(proc.pid, signal.SIGKILL)
    return assert_sigkilled(proc, where)
