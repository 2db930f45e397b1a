"""Shared by the peer scripts, which run in the peers' venvs (stdlib only, no project imports).

A peer script is called as ``python <name>_peer.py SCENARIO PARAMS_JSON WORKDIR``
and prints one JSON object as its last line of stdout: ``seconds`` (the timed
part), ``ops`` (steps), ``extra`` (figures and the durability settings it ran with).
"""

from __future__ import annotations

import base64
import json
import random
import resource
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def args() -> tuple[str, dict[str, Any], Path]:
    scenario, params, workdir = sys.argv[1:4]
    return scenario, json.loads(params), Path(workdir)


def emit(seconds: float, ops: int, extra: dict[str, Any]) -> None:
    extra = {**extra, "peer_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    print(json.dumps({"seconds": seconds, "ops": ops, "extra": extra}), flush=True)


def pragmas(conn: Any) -> dict[str, Any]:
    """journal_mode and synchronous of a DB-API sqlite3 connection (0 OFF, 1 NORMAL, 2 FULL)."""
    return {
        "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
            conn.execute("PRAGMA synchronous").fetchone()[0]
        ),
    }


def db_bytes(path: Path) -> int:
    """Bytes the database holds (pages in use, WAL frames included), read by a fresh reader."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((count - free) * page)
    finally:
        conn.close()


def files_bytes(path: Path) -> int:
    """Bytes on disk: the database file plus its -wal and -journal files."""
    total = 0
    for suffix in ("", "-wal", "-journal"):
        p = Path(str(path) + suffix)
        if p.exists():
            total += p.stat().st_size
    return total


def growth_extra(stamps: list[float], sizes: list[tuple[int, int]], n: int) -> dict[str, Any]:
    """Figures of the growing-state scenario from per-step start times and sampled sizes."""
    k = max(1, n // 5)  # fsync latency here jumps between ~1 and ~10 ms: average over n/5
    return {
        "steps": n,
        "us_per_step_first": (stamps[k] - stamps[0]) / k * 1e6,
        "us_per_step_last": (stamps[-1] - stamps[-1 - k]) / k * 1e6,
        "bytes_at": sizes,  # [[steps done, db bytes], ...]
        "bytes_end": sizes[-1][1],
        # Bytes the run added: the database before the run (schema only) is sizes[0].
        "bytes_added": sizes[-1][1] - sizes[0][1],
    }


def item(i: int) -> str:
    """The growth scenario's 200-byte item: random base64 (deterministic in ``i``), so
    that no contender's compression (ours zlib-compresses payloads) is flattered."""
    return base64.b64encode(random.Random(i).randbytes(150)).decode()


def sample_every(n: int) -> Callable[[int], bool]:
    every = max(1, n // 20)
    return lambda done: done % every == 0 or done == n
