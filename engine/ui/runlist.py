"""The run list: the search query, filters, one page of runs, totals and counts by status.

Plain functions over ``Journal.count_runs`` and ``Journal.list_runs`` (each listed row
verified), so the same code serves SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from journal import Journal, Run, check_tags
from journal.kinds import RUN_STATUSES

from ..errors import BadRequest

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
    where: dict[str, Any] = {
        "name": filters["name"],
        "created_after": filters["since"],
        "created_before": filters["until"],
        "tags": dict(search.tags),
        "contains": search.words,
        "id_contains": [text for fld, text in search.fields if fld == "id"],
        "name_contains": [text for fld, text in search.fields if fld == "name"],
    }
    counts = dict.fromkeys(RUN_STATUSES, 0)
    counts.update(journal.count_runs("status", **where))
    total = sum(n for s, n in counts.items() if not statuses or s in statuses)
    found = journal.list_runs(
        status=statuses or None,
        newest_first=True,
        limit=filters["limit"],
        offset=filters["offset"],
        **where,
    )
    # The tag index is not sealed, the row is: list_runs leaves out a run indexed under a
    # tag it does not carry.
    return Page(found, filters["offset"], filters["limit"], total, counts, sum(counts.values()))
