"""A journal written by the code of schema version 4 reads the same today.

tests/fixtures/journal_v4.db was written by ``python tests/make_fixture.py`` (function
runs completed, failed, pending and asleep on a timer, a workflow run done and one
waiting for an event, snapshots, a compacted run, a fork, tags, a schedule), and
journal_v4.json beside it is what that code read from it. Today's code must read the
same runs, entries, history, state at every step, seq and time, lineage, snapshots,
tags and schedules, from the file and from a copy of it on PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from make_fixture import describe

from engine import Engine
from journal import Journal, copy_journal

FIXTURE = Path(__file__).parents[1] / "fixtures" / "journal_v4.db"
EXPECTED: dict[str, Any] = json.loads(FIXTURE.with_suffix(".json").read_text())


def _copy(tmp_path: Path) -> Path:
    path = tmp_path / "v4.db"
    shutil.copy(FIXTURE, path)
    return path


def test_the_fixture_holds_every_kind_of_run() -> None:
    """The expectation is not vacuous: each kind of run is there, with history."""
    runs = EXPECTED["runs"]
    status = {rid: doc["run"]["status"] for rid, doc in runs.items()}
    assert status["fn-done"] == "completed" and status["fn-failed"] == "failed"
    assert status["wf-waiting"] == "waiting" and status["fn-pending"] == "pending"
    assert runs["fn-compacted"]["run"]["horizon"] > 0
    assert next(at for _, at in runs["fn-fork"]["lineage"]) < runs["fn-done"]["run"]["last_seq"]
    assert all(runs[r]["snapshots"] for r in ("fn-done", "wf-done", "fn-fork"))
    assert len(runs["fn-done"]["history"]) > 3 and len(runs["fn-done"]["state_at_seq"]) > 10
    assert EXPECTED["tagged"] == ["fn-tagged"] and len(EXPECTED["schedules"]) == 1
    assert EXPECTED["verify"] is True


def test_v4_file_reads_as_it_was_written(tmp_path: Path) -> None:
    """Runs, entries, history, state at every step/seq/time, lineage, snapshots: equal."""
    got = describe(_copy(tmp_path))
    assert sorted(got["runs"]) == sorted(EXPECTED["runs"])
    for rid, doc in EXPECTED["runs"].items():
        for part, value in doc.items():
            assert got["runs"][rid][part] == value, (rid, part)
    assert got == EXPECTED


def test_v4_file_opens_for_writing_and_still_reads_the_same(tmp_path: Path) -> None:
    """Opened by an engine (for writing) and closed, the file reads the same, and a new
    run appended to it verifies beside the old ones."""
    path = _copy(tmp_path)
    with Engine(path) as eng:
        assert eng.journal.verify().ok
    assert describe(path) == EXPECTED
    with Journal(path) as j:
        j.create_run("new", name="fixture:checkout", input={"items": []})
        assert j.verify().ok


@pytest.mark.postgres
def test_v4_file_copied_to_postgres_reads_the_same(tmp_path: Path, pg_schema_url: str) -> None:
    """The same journal copied to PostgreSQL reads as the file does."""
    with Journal(_copy(tmp_path), readonly=True) as source, Journal(pg_schema_url) as target:
        assert copy_journal(source, target).ok
    got = describe(pg_schema_url)  # type: ignore[arg-type]
    for rid, doc in EXPECTED["runs"].items():
        for part, value in doc.items():
            assert got["runs"][rid][part] == value, (rid, part)
    # copy_journal copies runs and their tags, not the schedules
    assert got["schedules"] == []
    assert {**got, "schedules": EXPECTED["schedules"]} == EXPECTED
