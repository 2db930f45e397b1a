"""The read side over sqlite-utils: exports of a run and ad-hoc read-only queries.

The write path stays on apsw; these open their own read-only connection so a
query can never change the journal.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from .errors import DecodeError, JournalError
from .render import to_jsonable

if TYPE_CHECKING:
    from .store import Journal

__all__ = ["export_run", "open_readonly", "query"]


def open_readonly(path: str) -> sqlite_utils.Database:
    """A sqlite-utils ``Database`` over the journal file that cannot write."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    return sqlite_utils.Database(sqlite3.connect(uri, uri=True, check_same_thread=False))


def query(path: str, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    """Run a read-only SQL query against the journal file; rows as dicts."""
    db = open_readonly(path)
    try:
        return list(db.query(sql, params))
    except sqlite3.Error as exc:
        raise JournalError(f"query failed: {exc}", sql=sql) from exc
    finally:
        db.conn.close()


def export_run(journal: Journal, run_id: str, *, format: str = "json") -> str:
    """A run's row, entries (payloads decoded) and snapshots as JSON, or its entries as CSV."""
    if format not in ("json", "csv"):
        raise ValueError(f"format must be 'json' or 'csv', got {format!r}")
    run = journal.get_run(run_id)
    entries = []
    for entry in journal.read(run_id, run.horizon + 1):
        try:
            value = to_jsonable(journal.decode_entry(entry))
        except DecodeError as exc:
            value = {"undecodable": str(exc)}
        entries.append(
            {
                "seq": entry.seq,
                "kind": entry.kind,
                "step": entry.step,
                "key": entry.key,
                "codec": entry.codec,
                "ts": entry.ts,
                "payload": value,
            }
        )
    if format == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(
            out, fieldnames=["seq", "kind", "step", "key", "codec", "ts", "payload"]
        )
        writer.writeheader()
        for row in entries:
            writer.writerow({**row, "payload": json.dumps(row["payload"], sort_keys=True)})
        return out.getvalue()
    db = open_readonly(journal.path)
    try:
        run_row = next(
            iter(
                db.query(
                    "SELECT run_id, kind, name, status, codec, error, created_at, updated_at,"
                    " last_seq, epoch, owner, parent_run_id, forked_from, forked_at, horizon"
                    " FROM runs WHERE run_id = ?",
                    [run_id],
                )
            )
        )
        snapshots = list(
            db.query(
                "SELECT seq, codec, fingerprint, length(state) AS size, created_at FROM snapshots"
                " WHERE run_id = ? ORDER BY seq",
                [run_id],
            )
        )
    finally:
        db.conn.close()
    # The stored columns lag on runs in progress (see the journal format); the
    # journal's own reading of the run derives the live values.
    run_row["last_seq"] = run.last_seq
    run_row["updated_at"] = run.updated_at
    decode = journal.decode
    run_row["input"] = to_jsonable(decode(run.input, run.codec, where=f"run {run_id!r} input"))
    run_row["output"] = to_jsonable(decode(run.output, run.codec, where=f"run {run_id!r} output"))
    return json.dumps({"run": run_row, "entries": entries, "snapshots": snapshots}, indent=2)
