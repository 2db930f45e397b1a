"""The read side: exports of a run and ad-hoc read-only queries.

A query over a journal file opens its own read-only apsw connection, so it can
never change the journal. (The CLI's full-text search builds its index with sqlite-utils, in
memory or a temporary file, never in the journal.)
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import apsw

from .encryption import Place
from .errors import DecodeError, JournalError
from .render import to_jsonable

if TYPE_CHECKING:
    from .store import Journal

__all__ = ["export_run", "open_readonly", "query"]

_EXPORTED_RUN_FIELDS = (
    "run_id",
    "kind",
    "name",
    "status",
    "codec",
    "error",
    "created_at",
    "updated_at",
    "last_seq",
    "epoch",
    "owner",
    "parent_run_id",
    "forked_from",
    "forked_at",
    "horizon",
)


class ReadOnlyView:
    """Read-only SQL over a journal file, through apsw.

    Never Python's ``sqlite3`` on the journal itself: that is a second copy of
    SQLite in the process, which does not see apsw's locks and can truncate the
    shared-memory file under a writer (SQLite's "How To Corrupt", 2.2.1).
    """

    def __init__(self, path: str) -> None:
        self.conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
        self.conn.set_busy_timeout(30_000)

    def query(self, sql: str, params: Any = ()) -> Iterator[dict[str, Any]]:
        """Rows of ``sql`` as dicts."""
        cursor = self.conn.execute(sql, params)
        try:
            names = [d[0] for d in cursor.get_description()]
        except apsw.ExecutionCompleteError:
            return
        for row in cursor:
            yield dict(zip(names, row, strict=True))


def open_readonly(path: str) -> ReadOnlyView:
    """A read-only view of the journal file: it cannot write."""
    return ReadOnlyView(path)


def query(path: str, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    """Run a read-only SQL query against the journal file; rows as dicts."""
    try:
        db = open_readonly(path)
    except apsw.Error as exc:
        raise JournalError(f"query failed: cannot open {path!r}: {exc}", sql=sql) from exc
    try:
        return list(db.query(sql, params))
    except apsw.Error as exc:
        raise JournalError(f"query failed: {exc}", sql=sql) from exc
    finally:
        db.conn.close()


def export_run(journal: Journal, run_id: str, *, format: str = "json") -> str:
    """A run's row, entries (payloads decoded) and snapshots as JSON, or its entries as CSV.

    Payloads are read, not rebuilt (``strict=False``): an untrusted pickle or a value of a
    class not importable here is exported as a placeholder (see ``Undecoded``)."""
    if format not in ("json", "csv"):
        raise ValueError(f"format must be 'json' or 'csv', got {format!r}")
    run = journal.get_run(run_id)
    entries = []
    for entry in journal.read(run_id, run.horizon + 1):
        try:
            value = to_jsonable(journal.decode_entry(entry, strict=False))
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
    run_row: dict[str, Any] = {name: getattr(run, name) for name in _EXPORTED_RUN_FIELDS}
    snapshots = [
        {
            "seq": s.seq,
            "codec": s.codec,
            "fingerprint": s.fingerprint,
            "size": s.size,
            "created_at": s.created_at,
        }
        for s in journal.snapshots(run_id)
    ]
    for name in ("input", "output"):
        data = getattr(run, name)
        value = journal.decode(
            data, run.codec, where=f"run {run_id!r} {name}", strict=False, place=Place(name, run_id)
        )
        run_row[name] = to_jsonable(value)
    return json.dumps({"run": run_row, "entries": entries, "snapshots": snapshots}, indent=2)
