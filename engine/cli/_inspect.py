"""Reading runs: ``runs``, ``schedules``, ``show``, ``history``, ``export``, ``search``."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from typing import Any

import click
from rich.text import Text

from journal import RUN_STATUSES, search_payloads
from journal.search import MATCH_END, MATCH_START

from .. import _render as render
from ..continuation import continued_as, continued_from
from ..timetravel import iter_history
from ._base import Failure
from ._options import (
    COUNT,
    TIMESTAMP,
    _count_checkpoints,
    _emit_json,
    _lineage,
    _read_engine,
    _reader,
    _tags,
    db_option,
    output_options,
    read_options,
)


@click.command()
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(RUN_STATUSES),
    help="Only runs with this status (repeatable).",
)
@click.option("--name", help="Only runs of this function or workflow name.")
@click.option("--since", type=TIMESTAMP, help="Only runs created at or after this time.")
@click.option("--until", type=TIMESTAMP, help="Only runs created before this time.")
@click.option(
    "--limit",
    type=COUNT,
    default=100,
    show_default=True,
    metavar="N",
    help="At most N runs (0: no limit).",
)
@click.option("--offset", type=COUNT, default=0, metavar="N", help="Skip N runs.")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    callback=lambda _ctx, _param, values: _tags(values),
    help="Only runs tagged KEY=VALUE (repeatable: every one).",
)
@output_options
@read_options
@db_option
@click.pass_context
def runs(
    ctx: click.Context,
    *,
    statuses: tuple[str, ...],
    name: str | None,
    since: float | None,
    until: float | None,
    limit: int,
    offset: int,
    tags: dict[str, str],
    as_json: bool,
) -> None:
    """List runs, oldest first."""
    with _reader(ctx) as journal:
        found = journal.list_runs(
            status=list(statuses) or None,
            name=name,
            created_after=since,
            created_before=until,
            limit=limit or None,
            offset=offset,
            tags=tags or None,
        )
    if as_json:
        _emit_json([render.run_json(r) for r in found])
        return
    console = render.make_console()
    if not found:
        console.print("no runs")
        return
    console.print(render.runs_table(found, width=console.width))
    more = " (more with --offset/--limit)" if limit and len(found) == limit else ""
    console.print(Text(f"{render.plural(len(found), 'run')}{more}", style="dim"))


@click.command()
@output_options
@db_option
@click.pass_context
def schedules(ctx: click.Context, *, as_json: bool) -> None:
    """List schedules with their next tick, by name."""
    with _reader(ctx) as journal:
        found = journal.schedules.all()
    if as_json:
        _emit_json([render.schedule_json(s) for s in found])
        return
    console = render.make_console()
    if not found:
        console.print("no schedules")
        return
    console.print(render.schedules_table(found, now=time.time()))
    console.print(Text(render.plural(len(found), "schedule"), style="dim"))


@click.command()
@click.argument("run_id", metavar="RUN")
@output_options
@read_options
@db_option
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """One run: status, times, lease, lineage, output or error."""
    with _reader(ctx) as journal:
        run = journal.get_run(run_id)
        count = _count_checkpoints(journal, run)
        if as_json:
            _emit_json(render.run_json(run, journal, checkpoints=count))
            return
        console = render.make_console()
        for part in render.run_detail(run, journal, checkpoints=count, now=journal.clock()):
            console.print(part)


@click.command()
@click.argument("run_id", metavar="RUN")
@output_options
@read_options
@db_option
@click.pass_context
def history(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """A run's timeline of checkpoints.

    One row per checkpoint (a step's end, a timer, an event, the run's end) with its
    seq, step key, attempt, start, duration, the state keys the step set or deleted,
    those the body changed after the previous step returned ("body set"), and a
    workflow step's event types. Streams, so a run of any length prints at once. The
    numbers in the first column are the N that `state --at N`, `diff` and `fork --at`
    take; a fork's checkpoints are numbered as its source's.
    """
    with _read_engine(ctx) as eng:
        run = eng.journal.get_run(run_id)
        checkpoints = iter_history(run_id, engine=eng)
        if as_json:  # one JSON array, written item by item
            head = next(checkpoints, None)  # a run that cannot be read fails before any output
            out = sys.stdout
            out.write("[")
            for i, cp in enumerate(itertools.chain([head] if head else [], checkpoints)):
                out.write(",\n  " if i else "\n  ")
                doc = json.dumps(render.checkpoint_json(cp), ensure_ascii=False, default=str)
                out.write(render.json_text(doc))
            out.write("\n]\n" if head else "]\n")
            out.flush()
            return
        console = render.make_console()
        lineage = _lineage(eng.journal, run)
        title = Text.assemble(
            ("run ", "bold"), render.shown(run.run_id), f"  {render.shown(run.name)}  "
        )
        title.append_text(render.status_text(run.status))
        if run.forked_from:
            title.append(
                f"\n(checkpoints marked * are inherited from {render.shown(run.forked_from)},"
                f" forked at seq "
                f"{run.forked_at})"
            )
        if (prev := continued_from(run)) is not None:
            title.append(f"\n(continues {render.shown(prev)}, which ended with continue_as_new)")
        console.print(title)
        note = render.compacted_note(eng.journal, lineage)
        if note is not None:
            console.print(note)
        timeline = render.Timeline(console, run, lineage)
        for cp in checkpoints:
            timeline.add(cp)
        timeline.close()
        if (nxt := continued_as(eng.journal, run)) is not None:
            console.print(Text(f"continued as {render.shown(nxt)} (continue_as_new)"))


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE, not stdout.")
@read_options
@db_option
@click.pass_context
def export(ctx: click.Context, run_id: str, fmt: str, output: str | None) -> None:
    """Export a run as JSON or CSV.

    JSON holds the run's row, its entries with decoded payloads and its snapshots;
    CSV holds one row per entry.
    """
    with _reader(ctx) as journal:
        run = journal.get_run(run_id)
        with render.progress(f"exporting {run_id} ({run.last_seq} entries)"):
            text = journal.export_run(run_id, format=fmt)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    with _private_file(output) as f:
        f.write(text)
    render.make_console(stderr=True).print(Text(f"wrote {output} ({len(text)} characters)"))


@contextlib.contextmanager
def _private_file(path: str) -> Iterator[Any]:
    """``path`` opened for writing text, readable by its owner only (0600): an export
    holds every payload of a run. A new file is created so; an existing regular file is
    set to 0600 before it is emptied (if that is not allowed, it is left as it was). A
    device or pipe (``/dev/stdout``) is written as it is."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            try:
                os.fchmod(fd, 0o600)
            except OSError as exc:
                raise OSError(exc.errno, "cannot set the file's mode to 0600", path) from exc
            os.ftruncate(fd, 0)
        f = os.fdopen(fd, "w", encoding="utf-8", newline="")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


@click.command()
@click.argument("text")
@click.option("--run", "run_id", metavar="RUN", help="Only this run's entries.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    metavar="N",
    help="At most N matches.",
)
@output_options
@read_options
@db_option
@click.pass_context
def search(ctx: click.Context, text: str, run_id: str | None, limit: int, as_json: bool) -> None:
    """Full-text search over the journal's payloads.

    Which step set this value? Every entry's payload, every run's input (as seq 0,
    kind run.input) and a compacted run's values as its oldest snapshot holds them
    (kind snapshot) are decoded into a temporary FTS5 index (the journal file is only
    read); the matching entries print best first. All the words of TEXT must match,
    as whole words.
    """
    if not text.strip():
        raise Failure("search: TEXT is empty")
    with _reader(ctx) as journal, render.progress("indexing payloads") as tick:
        hits = search_payloads(journal, text, run_id=run_id, limit=limit, progress=tick)
    if as_json:
        _emit_json(
            [
                {**h, "snippet": _highlight(h["snippet"], colour=False, safe=False).plain}
                for h in hits
            ]
        )
        return
    console = render.make_console()
    if not hits:
        console.print(Text(f"no entry matches {text!r}"))
        return
    colour = console.is_terminal and not console.no_color
    snippets = [_highlight(hit["snippet"], colour=colour) for hit in hits]
    console.print(render.search_hits(hits, snippets, width=console.width))
    console.print(Text(render.plural(len(hits), "match", "matches"), style="dim"))


def _highlight(snippet: str, *, colour: bool, safe: bool = True) -> Text:
    out = Text()
    for i, raw in enumerate(snippet.replace(MATCH_END, MATCH_START).split(MATCH_START)):
        part = render.clean(raw) if safe else raw
        if i % 2:
            out.append(part, style="bold yellow") if colour else out.append(f"[{part}]")
        else:
            out.append(part)
    return out
