"""Processes opening a fresh PostgreSQL schema at once: one creates it, all succeed.

Several processes are started once; for each trial they wait for a common instant and
then open the same journal URL naming a schema that does not exist yet. Every open
must succeed (none may fail with "relation journal_meta already exists"), and the
schema must end up one journal holding every process's run.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from _children import REPO

from journal import Journal

OPENERS = 5
TRIALS = 12
SPACING = 0.4  # seconds between trials' instants

pytestmark = pytest.mark.postgres

_OPEN = """
import sys, time
from journal import Journal
start, spacing, name = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
for k, url in enumerate(sys.argv[4:]):
    at = start + k * spacing
    while time.time() < at:
        time.sleep(0.0005)
    try:
        with Journal(url) as j:
            j.create_run(name, name="f")
        print("opened", k, flush=True)
    except Exception as exc:
        print("failed", k, type(exc).__name__, str(exc).splitlines()[0], flush=True)
"""


def test_concurrent_first_open_of_a_fresh_schema(pg_url: str) -> None:
    sep = "&" if "?" in pg_url else "?"
    urls = [f"{pg_url}{sep}schema=fresh_{uuid.uuid4().hex[:12]}" for _ in range(TRIALS)]
    start = time.time() + 3.0  # after every interpreter has started
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN, repr(start), repr(SPACING), f"r{i}", *urls],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(OPENERS)
    ]
    outs = [proc.communicate(timeout=120) for proc in procs]
    lines = [line for out, _ in outs for line in out.splitlines()]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outs]
    failed = [line for line in lines if not line.startswith("opened")]
    assert not failed, failed
    assert len(lines) == OPENERS * TRIALS
    for url in urls:
        with Journal(url) as journal:
            assert sorted(r.run_id for r in journal.list_runs()) == [
                f"r{i}" for i in range(OPENERS)
            ]
