"""Walking a run's lineage: the runs it was forked from (or its parents), one link at a
time, with cycle detection and a depth bound.

Every reader that follows ``forked_from`` or ``parent_run_id`` goes through
:func:`ancestors`, so a crafted journal whose links loop raises :class:`LineageCycle`
(naming the runs) instead of hanging or exhausting memory, and a chain is followed
iteratively, never by recursion.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from .errors import LineageCycle, LineageError

if TYPE_CHECKING:
    from .records import Run
    from .store import Journal

__all__ = ["MAX_LINEAGE_DEPTH", "ancestors", "fork_lineage"]

MAX_LINEAGE_DEPTH = 10_000
"""Links followed before giving up: far beyond any real chain of forks or children,
and small enough that the walk's memory stays bounded."""

Link = Literal["fork", "parent"]


def _next(run: Run, link: Link) -> str | None:
    return run.forked_from if link == "fork" else run.parent_run_id


def ancestors(journal: Journal, run: Run, *, link: Link = "fork") -> Iterator[Run]:
    """``run``, then the run it was forked from (``link="parent"``: its parent), and
    so on to the root. Raises :class:`LineageCycle` when a link leads back to a run
    already on the path, :class:`LineageError` past :data:`MAX_LINEAGE_DEPTH` links,
    and :class:`~journal.RunNotFound` for a link to a run that is not there."""
    path = [run.run_id]
    seen = {run.run_id}
    yield run
    while (ref := _next(run, link)) is not None:
        if ref in seen:
            cycle = path[path.index(ref) :]
            shown = " -> ".join(repr(r) for r in [*cycle, ref])
            word = "fork" if link == "fork" else "parent"
            raise LineageCycle(
                f"run {path[0]!r}: its {word} links form a cycle ({shown}); the journal "
                "was altered or damaged",
                run_id=path[0],
                runs=cycle,
            )
        if len(path) > MAX_LINEAGE_DEPTH:
            raise LineageError(
                f"run {path[0]!r}: its {link} links go deeper than {MAX_LINEAGE_DEPTH} runs; "
                "the journal was altered or damaged",
                run_id=path[0],
            )
        run = journal.get_run(ref)
        path.append(ref)
        seen.add(ref)
        yield run


def fork_lineage(journal: Journal, run: Run) -> list[tuple[Run, int]]:
    """``(run, last seq it contributes)`` from the root of ``run``'s forks down to
    ``run`` itself: each source contributes its entries up to its fork point."""
    chain: list[tuple[Run, int]] = []
    upto = run.last_seq
    for r in ancestors(journal, run):
        chain.append((r, upto))
        upto = r.forked_at or 0
    return chain[::-1]
