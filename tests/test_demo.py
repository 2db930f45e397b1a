"""``python -m engine.demo``: the README's first command tells the whole story."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_tells_the_story(tmp_path: Path) -> None:
    """Killed, recovered without redoing completed steps, history, state, diff, fork."""
    db = tmp_path / "demo.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    res = subprocess.run(
        [sys.executable, "-m", "engine.demo", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "NO_COLOR": "1"},
        check=False,
    )
    out = res.stdout
    assert res.returncode == 0, f"{out}\n{res.stderr}"
    assert "Traceback" not in res.stderr
    assert "\x1b[" not in out, "colour codes in output that is not a terminal"

    lowered = out.lower()
    for marker in (
        "killed process",
        "with sigkill right after step 4 completed",
        "recovered order-",
        "replayed from the journal, not executed",
        "history",
        "state at step 3",
        "diff",
        "fork at step 3",
        "forked ",
    ):
        assert marker in lowered, marker

    # A real SIGKILL, not an exit: the child's status is -9.
    assert re.search(r"exit status -9\b", out), out

    # Across both processes, every step completed before the kill ran exactly once; only
    # the step in flight at the kill (step 5) may have run twice.
    tally = re.search(r"executions by step: ((?:\d+:\d+ ?)+)", out)
    assert tally is not None, out
    counts = {int(k): int(v) for k, v in (p.split(":") for p in tally.group(1).split())}
    assert sorted(counts) == list(range(1, 9))
    assert [counts[i] for i in (1, 2, 3, 4)] == [1, 1, 1, 1]
    assert counts[5] in (1, 2)
    assert [counts[i] for i in (6, 7, 8)] == [1, 1, 1]

    # The timeline, the state at step 3 and the diff come from the journal.
    assert "validate#1" in out and "send_receipt#8" in out and "run.completed" in out
    assert '"subtotal": 7499' in out
    assert "+   charged" in out or re.search(r"\+\s+charged", out)

    # The fork's result differs from the original's, and both are in the kept journal.
    assert "81.00 EUR" in out and "67.50 EUR" in out
    cli = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--db", str(db), "runs", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    runs = json.loads(cli.stdout)
    assert [r["status"] for r in runs] == ["completed", "completed"]
    original, forked = runs
    assert forked["forked_from"] == original["run_id"]
