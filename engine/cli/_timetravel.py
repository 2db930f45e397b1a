"""Time travel: ``state``, ``diff``, ``fork``, ``replay``."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from journal import RUN_STATUSES, to_jsonable

from .. import _render as render
from ..replay import replay, replay_all
from ..timetravel import diff, fork, state_at
from ._base import CheckFailed
from ._options import (
    COUNT,
    TIMESTAMP,
    _code_engine,
    _emit_json,
    _parse_json,
    _read_engine,
    code_options,
    db_option,
    output_options,
    read_options,
    trust_option,
)


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--at",
    "step",
    type=COUNT,
    metavar="N",
    help="After checkpoint N (see `history`; 0: the start).",
)
@click.option("--seq", type=COUNT, metavar="SEQ", help="After the run's entry SEQ.")
@click.option("--time", "when", type=TIMESTAMP, help="As it was at this time.")
@output_options
@read_options
@db_option
@click.pass_context
def state(
    ctx: click.Context,
    *,
    run_id: str,
    step: int | None,
    seq: int | None,
    when: float | None,
    as_json: bool,
) -> None:
    """A run's state values, now or at a checkpoint, seq or time."""
    if sum(x is not None for x in (step, seq, when)) > 1:
        raise click.UsageError("give at most one of --at, --seq and --time")
    with _read_engine(ctx) as eng:
        view = state_at(run_id, step=step, seq=seq, time=when, engine=eng)
    if as_json:
        _emit_json(render.state_json(view))
        return
    console = render.make_console()
    where = "latest" if step is None and seq is None and when is None else ""
    if step is not None:
        where = f"after step {step}"
    elif when is not None:
        where = f"at {render.timestamp(when, ms=True)}"
    console.print(
        Text.assemble(
            ("state of ", "bold"),
            render.shown(view.run_id),
            f" {where} (seq {view.seq})".replace("  ", " "),
        )
    )
    console.print_json(data=view.to_dict())
    if view.pending_events:
        console.print(
            Text(
                render.plural(len(view.pending_events), "pending delivery", "pending deliveries"),
                style="dim",
            )
        )


@click.command(name="diff")
@click.argument("run_id", metavar="RUN")
@click.argument("a", type=COUNT)
@click.argument("b", type=COUNT)
@click.option("--other", metavar="RUN2", help="Compare with checkpoint B of RUN2 instead.")
@output_options
@read_options
@db_option
@click.pass_context
def diff_cmd(
    ctx: click.Context, *, run_id: str, a: int, b: int, other: str | None, as_json: bool
) -> None:
    """What changed in the state between two checkpoints.

    Keys and nested paths (cart.items[2]) added, removed and changed from checkpoint
    A to checkpoint B of RUN (or of RUN2 with --other), old → new.
    """
    with _read_engine(ctx) as eng:
        d = diff(run_id, a, b, other_run_id=other, engine=eng)
    if as_json:
        _emit_json({"run_id": run_id, "a": a, "b": b, "other": other, **render.diff_json(d)})
        return
    console = render.make_console()
    before = f"{render.shown(run_id)} step {a}"
    after = f"{render.shown(other or run_id)} step {b}"
    console.print(Text.assemble(("diff ", "bold"), before, " → ", after))
    if d.empty:
        console.print("no differences")
        return
    console.print(render.diff_table(d, before=f"step {a}", after=f"step {b}"))
    console.print(
        Text(
            f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed", style="dim"
        )
    )


# -- fork and replay run code ---------------------------------------------------------------


def _parse_edit(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r}: expected KEY=JSON", param_hint="--set")
    return key, _parse_json(value, f"--set {key}")


@click.command(name="fork")
@click.argument("run_id", metavar="RUN")
@click.option(
    "--at",
    "at",
    type=COUNT,
    required=True,
    metavar="N",
    help="Fork after checkpoint N (see `history`).",
)
@click.option(
    "--set",
    "edits",
    multiple=True,
    metavar="KEY=JSON",
    help="Set a state value at the fork point (repeatable), e.g. --set 'qty=3'.",
)
@click.option("--run-id", "new_run_id", metavar="ID", help="The new run's id (default: random).")
@click.option("--wait", is_flag=True, help="Wait for the fork to finish and print its outcome.")
@code_options
@output_options
@trust_option
@db_option
@click.pass_context
def fork_cmd(
    ctx: click.Context,
    *,
    run_id: str,
    at: int,
    edits: tuple[str, ...],
    new_run_id: str | None,
    wait: bool,
    imports: tuple[str, ...],
    as_json: bool,
) -> None:
    """Start a new run from a checkpoint of RUN, with edited state.

    The fork shares RUN's history up to checkpoint N, applies the --set edits there
    and goes on live with today's code (RUN's function must be importable).

    The fork executes in this process: without --wait its id is printed at once and
    the process exits when the fork has finished (interrupted, it is left for
    `recover`). With --wait the exit status is 1 if the fork failed.
    """
    changes = dict(_parse_edit(e) for e in edits)
    with _code_engine(ctx, imports) as eng:
        handle = fork(run_id, at=at, state=changes, new_run_id=new_run_id, engine=eng)
        doc: dict[str, Any] = {"run_id": handle.run_id, "forked_from": run_id, "at": at}
        if not wait:
            if as_json:
                _emit_json(doc)
            else:
                click.echo(render.clean(handle.run_id))
            # The fork runs on this process's threads: wait for it before closing.
            handle.wait()
            return
        final = handle.wait()
        doc.update(status=final.status, error=final.error)
        doc["output"] = to_jsonable(eng.journal.decode_run_value(final, "output"))
    if as_json:
        _emit_json(doc)
    else:
        console = render.make_console()
        console.print(
            Text.assemble(
                ("forked ", "bold"), run_id, f" at step {at} → ", (handle.run_id, "bold"), ": "
            )
            + render.status_text(final.status)
        )
        if final.status == "completed":
            console.print(Text(render.pretty_json(doc["output"])))
        elif final.error:
            console.print(Text(final.error, style="red"))
    if final.status != "completed":
        raise CheckFailed(f"fork {handle.run_id!r} {final.status}")


@click.command(name="replay")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option(
    "--until", type=click.IntRange(min=1), metavar="N", help="Stop after N replayed calls."
)
@click.option(
    "--all", "all_runs", is_flag=True, help="Replay every run (or those matching --name/--status)."
)
@click.option("--name", help="With --all: only runs of this name.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(RUN_STATUSES),
    help="With --all (repeatable).",
)
@code_options
@output_options
@trust_option
@db_option
@click.pass_context
def replay_cmd(
    ctx: click.Context,
    *,
    run_id: str | None,
    until: int | None,
    all_runs: bool,
    name: str | None,
    statuses: tuple[str, ...],
    imports: tuple[str, ...],
    as_json: bool,
) -> None:
    """Re-execute recorded runs with today's code; exit 1 on divergence.

    Steps return their recorded results and nothing is written. Exit status 1 if a
    run's code now does something other than its journal holds: run `replay --all`
    in CI before a deploy.
    """
    if all_runs == (run_id is not None):
        raise click.UsageError("give a RUN or --all")
    if not all_runs and (name or statuses):
        raise click.UsageError("--name and --status go with --all")
    if all_runs and until is not None:
        raise click.UsageError("--until goes with a single RUN")
    with _code_engine(ctx, imports, readonly=True) as eng:
        if run_id is not None:
            reports = [replay(run_id, until=until, engine=eng)]
        else:
            with render.progress("replaying") as tick:
                reports = replay_all(
                    name=name, status=list(statuses) or None, engine=eng, progress=tick
                )
    failed = [r for r in reports if not r.ok]
    if as_json:
        docs = [render.replay_json(r) for r in reports]
        _emit_json(docs[0] if run_id is not None else docs)
    else:
        console = render.make_console()
        for report in reports:
            console.print(render.replay_line(report))  # the error says where and what
        if run_id is None:
            console.print(
                Text(
                    f"{render.plural(len(reports), 'run')} replayed, {len(failed)} diverged",
                    style="dim",
                )
            )
    if failed:
        what = failed[0].run_id if len(failed) == 1 else f"{len(failed)} runs"
        raise CheckFailed(f"replay diverged: {what}")
