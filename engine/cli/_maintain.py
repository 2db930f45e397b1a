"""Maintenance: ``compact``, ``prune``, ``verify``, ``migrate``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator

import click
from rich.text import Text

from journal import (
    Journal,
    MigrationError,
    MigrationReport,
    RetentionPolicy,
    Run,
    apply_retention,
    copy_journal,
    is_url,
)

from .. import _render as render
from ._base import PATH_KEY, CheckFailed, Failure
from ._options import (
    _emit_json,
    _existing,
    _reader,
    _retention,
    _writer,
    db_option,
    output_options,
    read_options,
    retention_options,
    trust_option,
)


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option(
    "--keep-snapshots",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="K",
    help="Keep the newest K snapshots of each run (and the entries after the oldest).",
)
@click.option(
    "--keep-seconds",
    type=click.FloatRange(min=0),
    metavar="S",
    help="Keep every entry newer than S seconds.",
)
@click.option(
    "--include-active",
    is_flag=True,
    help="Compact unfinished runs too. A @durable function's run recovers by replaying its "
    "entries from the first, so one compacted while unfinished can no longer be recovered.",
)
@click.option("--reclaim", is_flag=True, help="Then return the freed pages to the OS.")
@output_options
@trust_option
@db_option
@click.pass_context
def compact(
    ctx: click.Context,
    *,
    run_id: str | None,
    keep_snapshots: int,
    keep_seconds: float | None,
    include_active: bool,
    reclaim: bool,
    as_json: bool,
) -> None:
    """Drop entries that snapshots already cover.

    Compacts RUN, or every finished run (with --include-active, unfinished ones
    too). History, state and diffs before a run's new horizon are no longer
    available.
    """
    policy = RetentionPolicy(
        keep_snapshots=keep_snapshots, keep_seconds=keep_seconds, include_active=include_active
    )
    totals = {"runs_compacted": 0, "entries_deleted": 0, "snapshots_deleted": 0}
    horizons: dict[str, int] = {}
    with _writer(ctx) as journal:
        runs_seen = (
            [journal.get_run(run_id)] if run_id is not None else journal.list_runs(limit=None)
        )
        targets = [r.run_id for r in runs_seen]
        with render.progress("compacting", total=len(targets)) as tick:
            for i, rid in enumerate(targets, 1):
                report = journal.compact(rid, policy)
                totals["runs_compacted"] += report.runs_compacted
                totals["entries_deleted"] += report.entries_deleted
                totals["snapshots_deleted"] += report.snapshots_deleted
                horizons.update(report.horizons)
                tick(i, len(targets))
        pages = journal.reclaim() if reclaim else None
    if as_json:
        _emit_json({**totals, "horizons": horizons, "pages_reclaimed": pages})
        return
    console = render.make_console()
    console.print(
        f"compacted {totals['runs_compacted']} runs: {totals['entries_deleted']} entries and "
        f"{totals['snapshots_deleted']} snapshots deleted"
    )
    if not totals["runs_compacted"]:
        console.print(Text(_nothing_compacted(runs_seen, policy), style="dim"))
    for rid, horizon in horizons.items():
        console.print(Text(f"  {rid}: horizon now seq {horizon}"))
    if pages is not None:
        console.print(f"reclaimed {pages} pages")


@click.command()
@retention_options
@output_options
@trust_option
@db_option
@click.pass_context
def prune(
    ctx: click.Context,
    *,
    delete_completed_after: float | None,
    delete_failed_after: float | None,
    compact_after: float | None,
    as_json: bool,
) -> None:
    """Apply a retention policy once: delete and compact finished runs past their age.

    A run is deleted with its history; one that a fork or a child run still refers
    to is kept (and said why). Safe to interrupt and to run beside workers: a pass
    cut short is finished by the next. `durable worker` takes the same options and
    applies them in the background.
    """
    policy = _retention(delete_completed_after, delete_failed_after, compact_after)
    if policy is None:
        raise click.UsageError(
            "say what to prune: --delete-completed-after, --delete-failed-after or --compact-after"
        )
    with _writer(ctx) as journal:
        report = apply_retention(journal, policy)
    if as_json:
        _emit_json(dataclasses.asdict(report))
        return
    console = render.make_console()
    console.print(
        f"deleted {render.plural(len(report.deleted), 'run')}, compacted "
        f"{render.plural(len(report.compacted), 'run')}: {report.entries_deleted} entries removed"
    )
    for rid, why in report.kept.items():
        console.print(Text.assemble(("kept ", "yellow"), rid, f": {why}"))


def _nothing_compacted(runs: list[Run], policy: RetentionPolicy) -> str:
    """Why a compaction deleted nothing, from what it was given."""
    if not runs:
        return "nothing to compact: the journal has no runs"
    skipped = [r for r in runs if not r.finished and not policy.include_active]
    reasons = []
    if skipped:
        reasons.append(
            f"{render.plural(len(skipped), 'run is', 'runs are')} unfinished "
            "(--include-active compacts them too)"
        )
    rest = len(runs) - len(skipped)
    if rest:
        k = policy.keep_snapshots
        kept = ("the newest snapshot" if k == 1 else f"the newest {k} snapshots") + (
            " (--keep-snapshots)"
        )
        if policy.keep_seconds is not None:
            kept += f" and entries newer than {policy.keep_seconds:g} s (--keep-seconds)"
        reasons.append(
            f"{render.plural(rest, 'run has', 'runs have')} no entry older than {kept}, "
            "or an unfinished fork still reads them"
        )
    return "nothing to compact: " + "; ".join(reasons)


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@output_options
@read_options
@db_option
@click.pass_context
def verify(ctx: click.Context, run_id: str | None, as_json: bool) -> None:
    """Check checksums, seqs, snapshots and tags; exit 1 on problems.

    Checks the file's integrity, every entry's checksum and seq density, every
    snapshot against the fold of its entries, that each encrypted value sits where
    it was sealed (no key needed), and the tag index against the tags each run
    sealed (of RUN, or of every run).
    """
    with _reader(ctx) as journal, render.progress("verifying") as tick:
        if run_id is not None:
            journal.get_run(run_id)  # an unknown run is bad input (2), not a failed check (1)
        report = journal.verify(run_id, progress=tick)
    if as_json:
        _emit_json(
            {
                "ok": report.ok,
                "runs": report.runs,
                "entries": report.entries,
                "snapshots": report.snapshots,
                "problems": report.problems,
            }
        )
    else:
        console = render.make_console()
        for problem in report.problems:
            console.print(Text.assemble(("problem: ", "bold red"), problem))
        summary = (
            f"{report.runs} runs, {report.entries} entries, {report.snapshots} snapshots checked"
        )
        console.print(
            Text.assemble(
                ("ok: " if report.ok else "FAILED: ", "green" if report.ok else "bold red"), summary
            )
        )
    if not report.ok:
        raise CheckFailed(
            f"{render.plural(len(report.problems), 'problem')} in journal {journal.where!r}"
        )


@click.command()
@click.argument("source", metavar="SOURCE")
@click.argument("target", metavar="TARGET")
@click.option(
    "--run",
    "run_ids",
    multiple=True,
    metavar="RUN",
    help="Copy only this run (repeatable), with the runs it refers to (parent, fork source).",
)
@output_options
@click.pass_context
def migrate(
    ctx: click.Context, source: str, target: str, run_ids: tuple[str, ...], as_json: bool
) -> None:
    """Copy a journal into another and verify the copy entry by entry.

    SOURCE and TARGET are each a journal file or a postgresql:// URL: a file into
    PostgreSQL, back, or file to file. Runs, entries and snapshots are copied
    unchanged (same seqs, timestamps and checksums), each run in one transaction of
    TARGET (created if missing); then both journals are read back and compared.

    Stop the workers writing to SOURCE first. An interrupted migrate is resumed by
    running it again: runs already copied are skipped. Exit status 1 if a run could
    not be copied (e.g. an entry of SOURCE fails its checksum) or the copy differs;
    2 if TARGET holds a different run under the id of one to copy (nothing is written).
    """
    ctx.meta[PATH_KEY] = None  # messages name source and target themselves
    created = not is_url(target) and not os.path.exists(target)
    if not is_url(target) and os.path.isdir(target):
        raise Failure(f"{target} is a directory, not a journal")
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(Journal(_existing(source), readonly=True))
        dst = stack.enter_context(Journal(target))
        try:
            with _phases({"copy": "copying", "verify": "verifying"}) as progress:
                report = copy_journal(src, dst, run_ids=list(run_ids) or None, progress=progress)
        except MigrationError:
            if created:  # refused before writing: leave no empty journal behind
                dst.close()
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(target + suffix)
            raise
    if as_json:
        _emit_json(report.to_dict())
    else:
        _print_migration(report)
    if not report.ok:
        raise CheckFailed(
            f"{render.plural(len(report.problems), 'problem')} copying {report.source!r} "
            f"to {report.target!r}"
        )


@contextlib.contextmanager
def _phases(labels: dict[str, str]) -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(phase, done, total)`` callback showing one bar per phase in turn."""
    with contextlib.ExitStack() as stack:
        shown: list[str] = []
        bars: list[Callable[[int, int], None]] = []

        def update(phase: str, done: int, total: int) -> None:
            if not shown or shown[-1] != phase:
                stack.close()
                shown.append(phase)
                bars.append(stack.enter_context(render.progress(labels.get(phase, phase))))
            bars[-1](done, total)

        yield update


def _print_migration(report: MigrationReport) -> None:
    console = render.make_console()
    for problem in report.problems:
        console.print(Text.assemble(("problem: ", "bold red"), problem))
    console.print(
        Text(
            f"copied {render.plural(report.runs_copied, 'run')} "
            f"({render.plural(report.entries_copied, 'entry', 'entries')}, "
            f"{render.plural(report.snapshots_copied, 'snapshot')}) from {report.source} "
            f"to {report.target}"
            + (f"; {report.runs_skipped} already there" if report.runs_skipped else "")
        )
    )
    summary = (
        f"{report.runs_verified} runs, {report.entries_verified} entries, "
        f"{report.snapshots_verified} snapshots compared"
    )
    console.print(
        Text.assemble(
            ("ok: " if report.ok else "FAILED: ", "green" if report.ok else "bold red"), summary
        )
    )
