"""Generated run ids: UUIDv7 hex, increasing within a process, unique across processes."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from journal import Journal
from journal.ids import new_run_id


def test_ids_are_uuid7_and_strictly_increasing() -> None:
    """Many ids in the same milliseconds still sort in the order they were made."""
    before_ms = time.time_ns() // 1_000_000
    ids = [new_run_id() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    first = uuid.UUID(ids[0])
    assert first.version == 7 and first.variant == uuid.RFC_4122
    assert len(ids[0]) == 32 and int(ids[0][:12], 16) >= before_ms


def test_ids_from_other_processes_do_not_collide() -> None:
    """Processes started in the same millisecond share no id (the random tail)."""
    code = "from journal.ids import new_run_id\nprint(*(new_run_id() for _ in range(2000)))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    seen: list[str] = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        seen += out.split()
    assert len(seen) == 6000 and len(set(seen)) == 6000


def test_a_run_created_without_an_id_gets_a_time_ordered_one(tmp_path: Path) -> None:
    """Runs created one after another list in id order, which is creation order."""
    j = Journal(tmp_path / "j.db")
    runs = [j.create_run(name="f")[0].run_id for _ in range(50)]
    assert runs == sorted(runs)
    assert all(uuid.UUID(r).version == 7 for r in runs)
    j.close()
