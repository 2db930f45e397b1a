"""The run list: the search query, filters, one page of runs, totals and counts by status.

Plain functions over ``Journal.query`` (read-only SQL) and ``Journal.get_run`` (each
listed row verified), so the same code serves SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from journal import Journal, Run, check_tags
from journal.kinds import RUN_STATUSES
from journal.tags import tag_clauses

from .views import BadRequest

__all__ = ["DEFAULT_LIMIT", "Page", "Search", "list_page", "parse_search"]

DEFAULT_LIMIT = 50
"""Runs on one page of the list."""

FIELDS = ("id", "name")
"""What ``field:text`` may name in a search."""


@dataclass(frozen=True)
class Search:
    """A parsed search box: words, each matching a run's id or name (case-insensitive,
    anywhere in it), or only its id (``id:text``) or only its name (``name:text``).

    ``key=value`` words are tags: only runs carrying every one of them match.
    """

    words: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.words or self.fields or self.tags)


def parse_search(text: str | None) -> Search:
    """Split the search box on white space into words, ``field:text`` and ``key=value``."""
    words: list[str] = []
    fields: list[tuple[str, str]] = []
    tags: list[tuple[str, str]] = []
    for token in (text or "").split():
        name, colon, rest = token.partition(":")
        if colon and name in FIELDS:
            if not rest:
                raise BadRequest(f"search: {name}: needs text after it (e.g. {name}:abc)")
            fields.append((name, rest))
        elif "=" in token.strip("="):
            key, _, value = token.partition("=")
            tags.append((key, value))
        else:
            words.append(token)
    try:
        check_tags(dict(tags))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"search: {exc}") from None
    if len({key for key, _ in tags}) < len(tags):
        raise BadRequest("search: a tag key is given twice (a run has one value per key)")
    return Search(tuple(words), tuple(fields), tuple(tags))


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere, its own ``%``/``_`` literal."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_COLUMN = {"id": "lower(run_id)", "name": "lower(name)"}


def _where(
    search: Search,
    name: str | None,
    since: float | None,
    until: float | None,
    statuses: Sequence[str] | None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for word in search.words:
        clauses.append("(lower(run_id) LIKE ? ESCAPE '\\' OR lower(name) LIKE ? ESCAPE '\\')")
        params += [_like(word), _like(word)]
    for fld, text in search.fields:
        clauses.append(f"{_COLUMN[fld]} LIKE ? ESCAPE '\\'")
        params.append(_like(text))
    tagged, tag_params = tag_clauses(dict(search.tags))
    clauses += tagged
    params += tag_params
    if name is not None:
        clauses.append("name = ?")
        params.append(name)
    if since is not None:
        clauses.append("created_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("created_at < ?")
        params.append(until)
    if statuses:
        clauses.append(f"status IN ({','.join('?' * len(statuses))})")
        params += list(statuses)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


@dataclass
class Page:
    """One page of the list: its runs, where it sits, and what the filters match."""

    runs: list[Run]
    offset: int
    limit: int
    total: int  # runs matching every filter
    counts: dict[str, int] = field(default_factory=dict)  # by status, status filter aside
    all_runs: int = 0  # runs matching the filters other than status

    @property
    def next_offset(self) -> int | None:
        after = self.offset + self.limit
        return after if after < self.total else None

    @property
    def prev_offset(self) -> int | None:
        return max(self.offset - self.limit, 0) if self.offset > 0 else None

    @property
    def pages(self) -> int:
        return max(math.ceil(self.total / self.limit), 1)

    @property
    def number(self) -> int:
        return self.offset // self.limit + 1


def list_page(journal: Journal, filters: Mapping[str, Any]) -> Page:
    """The runs matching ``filters`` (``search``, ``status``, ``name``, ``since``,
    ``until``, ``limit``, ``offset``), newest first; ties in creation time fall back
    to the id, so pages neither repeat nor skip a run."""
    search: Search = filters["search"]
    statuses = filters["status"]
    if search.tags and journal.backend.schema_version < 4:
        # A journal older than tags, read without migrating: no run carries any.
        return Page([], filters["offset"], filters["limit"], 0, dict.fromkeys(RUN_STATUSES, 0))
    args = (search, filters["name"], filters["since"], filters["until"])
    where, params = _where(*args, None)
    rows = journal.query(f"SELECT status, count(*) AS n FROM runs {where} GROUP BY status", params)
    counts = dict.fromkeys(RUN_STATUSES, 0)
    counts.update({str(r["status"]): int(r["n"]) for r in rows})
    total = sum(n for s, n in counts.items() if not statuses or s in statuses)
    where, params = _where(*args, statuses)
    ids = journal.query(
        f"SELECT run_id FROM runs {where} ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?",
        [*params, filters["limit"], filters["offset"]],
    )
    # find_run: a run deleted (retention) between the two reads is left out, not a 404.
    found = (journal.find_run(str(r["run_id"])) for r in ids)
    runs = [r for r in found if r is not None]
    # The tag index is not sealed, the row is: a run indexed under a tag it does not carry
    # (an altered index) is left out.
    runs = [r for r in runs if all(r.tags.get(k) == v for k, v in search.tags)]
    return Page(runs, filters["offset"], filters["limit"], total, counts, sum(counts.values()))
