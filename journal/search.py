"""Full-text search over a journal's payloads (the read side).

Payloads are decoded into a temporary FTS5 index built with sqlite-utils, in memory or,
for a large journal, in a temporary file; the journal is only read, through the
:class:`~journal.Journal` facade, so the same search serves SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from .errors import DecodeError, JournalError
from .render import to_jsonable

if TYPE_CHECKING:
    from .records import Run
    from .store import Journal

__all__ = ["INDEX_IN_MEMORY", "MATCH_END", "MATCH_START", "search_payloads"]

INDEX_IN_MEMORY: Final = 64 << 20
"""Journals up to this size (bytes) are indexed in memory; larger ones in a temporary file."""
MATCH_START: Final = "\x02"
"""Where a snippet's matching text starts."""
MATCH_END: Final = "\x03"
"""Where it ends."""

_SEARCH = (
    "SELECT p.run_id, p.seq, p.kind, p.step, p.key,"
    f" snippet(payloads_fts, -1, '{MATCH_START}', '{MATCH_END}', '…', 12) AS snippet"
    " FROM payloads_fts JOIN payloads p ON p.rowid = payloads_fts.rowid"
    " WHERE payloads_fts MATCH ? ORDER BY rank LIMIT ?"
)


def search_payloads(
    journal: Journal,
    text: str,
    *,
    run_id: str | None = None,
    limit: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """The entries whose decoded payload holds every word of ``text`` (whole words),
    best first: ``{run_id, seq, kind, step, key, snippet}`` each, the matching words of
    ``snippet`` between :data:`MATCH_START` and :data:`MATCH_END`.

    Every run's input (seq 0, kind ``run.input``), every retained entry with a payload
    and a compacted run's values as its horizon snapshot holds them (kind ``snapshot``)
    are searched; ``run_id`` keeps to one run. ``progress(done, total)`` is called as
    entries are indexed. ValueError if ``text`` is empty."""
    if not text.strip():
        raise ValueError("search: TEXT is empty")
    # Imported here: sqlite-utils (and what it imports) is for search only, and `import
    # journal` stays as quick as it was.
    import sqlite_utils  # noqa: PLC0415

    runs = [journal.get_run(run_id)] if run_id is not None else journal.list_runs(limit=None)
    tick = progress or (lambda done, total: None)
    try:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="durable-search-"))
            if journal.size() > INDEX_IN_MEMORY:
                index = sqlite_utils.Database(os.path.join(tmp, "index.db"))
            else:
                index = sqlite_utils.Database(memory=True)
            stack.callback(index.conn.close)
            table = index.table("payloads")
            total = sum(r.last_seq - r.horizon for r in runs)
            tick(0, total)
            table.insert_all(_documents(journal, runs, tick, total), batch_size=1000)
            if not table.exists():
                return []
            table.enable_fts(["key", "text"], tokenize="unicode61")
            return list(index.query(_SEARCH, [index.quote_fts(text), limit]))
    except sqlite3.Error as exc:  # the temporary index's own database
        raise JournalError(f"search: the temporary index failed: {exc}") from exc


def _documents(
    journal: Journal, runs: list[Run], tick: Callable[[int, int], None], total: int
) -> Iterator[dict[str, Any]]:
    """One row per run input and per retained entry with a payload, decoded to JSON text."""
    done = 0
    for run in runs:
        yield {
            "run_id": run.run_id,
            "seq": 0,
            "kind": "run.input",
            "step": None,
            "key": None,
            "text": _text(journal.decode_run_value, run, "input", strict=False),
        }
        yield from _snapshot_documents(journal, run)
        for entry in journal.read(run.run_id, run.horizon + 1, run.last_seq):
            done += 1
            if done % 500 == 0:
                tick(done, total)
            if entry.payload is None:
                continue
            yield {
                "run_id": entry.run_id,
                "seq": entry.seq,
                "kind": entry.kind,
                "step": entry.step,
                "key": entry.key,
                "text": _text(journal.decode_entry, entry, strict=False),
            }


def _snapshot_documents(journal: Journal, run: Run) -> Iterator[dict[str, Any]]:
    """A compacted run's values as its horizon snapshot holds them (kind ``snapshot``, one
    row per key): the entries that set them are gone, the values are not."""
    if not run.horizon:
        return
    try:
        values = journal.state_at(run.run_id, run.horizon).values
    except (DecodeError, JournalError) as exc:
        values = {"": f"(undecodable: {exc})"}
    for key, value in values.items():
        if key.startswith("@"):  # a workflow's own bookkeeping
            continue
        yield {
            "run_id": run.run_id,
            "seq": run.horizon,
            "kind": "snapshot",
            "step": None,
            "key": key,
            "text": _text(lambda v: v, value),
        }


def _text(decode: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    try:
        return json.dumps(to_jsonable(decode(*args, **kwargs)), ensure_ascii=False)
    except DecodeError as exc:
        return f"(undecodable: {exc})"
