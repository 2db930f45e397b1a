"""Schema versions: a journal file written by the previous schema is read as it is and
upgraded in place when opened for writing, with nothing of its runs lost."""

from __future__ import annotations

from pathlib import Path

import apsw

from journal import EntryKind, Journal
from journal._schema import SCHEMA_VERSION


def _downgrade_to_v1(path: Path) -> None:
    """Make the file what version 1 wrote: no queue or checksum columns, user_version 1."""
    conn = apsw.Connection(str(path))
    for sql in (
        "DROP INDEX runs_by_start",
        "ALTER TABLE runs DROP COLUMN started_at",
        "ALTER TABLE runs DROP COLUMN heartbeat",
        "ALTER TABLE runs DROP COLUMN checksum",
        "DROP INDEX runs_by_queue",
        "ALTER TABLE runs DROP COLUMN queue",
        "ALTER TABLE runs DROP COLUMN priority",
        "PRAGMA user_version=1",
    ):
        conn.execute(sql)
    conn.close()


def _columns(path: Path) -> list[str]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    finally:
        conn.close()


def _version(path: Path) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_version_1_file_reads_read_only_and_upgrades_on_write(tmp_path: Path) -> None:
    """Read-only opening leaves a v1 file as it is; opening it to write upgrades it."""
    path = tmp_path / "old.db"
    with Journal(path) as j:
        j.create_run("r", name="m:f", entries=[j.entry(EntryKind.STATE_SET, 1, key="k")])
    _downgrade_to_v1(path)
    assert "queue" not in _columns(path)

    with Journal(path, readonly=True) as j:
        run = j.get_run("r")
        assert (run.queue, run.priority, run.last_seq) == (None, 0, 1)
        assert j.state_at("r").values == {"k": 1}
    assert _version(path) == 1 and "queue" not in _columns(path)

    with Journal(path) as j:
        assert j.get_run("r").last_seq == 1
        j.create_run("q", name="m:f", queue="emails", priority=2)
        assert [r.run_id for r in j.claim_next("w", limit=5)] == ["q", "r"]
    assert _version(path) == SCHEMA_VERSION
    assert {"queue", "priority"} <= set(_columns(path))
