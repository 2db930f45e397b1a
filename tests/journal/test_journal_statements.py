"""What the journal executes on its hot paths (SQLite), and what it keeps in memory."""

from __future__ import annotations

from pathlib import Path

from journal import Journal


def test_a_run_ends_in_five_statements_and_leaves_nothing_cached(tmp_path: Path) -> None:
    """A run's end is BEGIN, guard, row update, insert, COMMIT: no re-read of its settings,
    and the journal keeps nothing of it in memory afterwards (RSS stays flat)."""
    j = Journal(tmp_path / "j.db")
    conn = j.backend.conn  # type: ignore[attr-defined]
    ends: list[str] = []
    for i in range(20):
        run, _ = j.create_run(name="f")
        seq = j.append(run.run_id, [j.entry("state.set", i, key="k")], expected_seq=0)
        conn.exec_trace = lambda _c, sql, _b: ends.append(sql) or True
        j.append(
            run.run_id,
            [j.entry("run.completed", {"result": i})],
            expected_seq=seq,
            status="completed",
            release=True,
        )
        conn.exec_trace = None
    # (The guard of a run's end also reads its sealed columns, snapshot_every among them,
    # to reseal the row: that is not a re-read of the setting.)
    assert len(ends) == 20 * 5
    assert not any(sql.startswith("SELECT snapshot_every") for sql in ends)
    assert j._snapshot_every == {}
    j.close()
