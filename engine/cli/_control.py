"""Acting on one run: ``resume``, ``send``, ``cancel``."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from journal import to_jsonable

from .. import _render as render
from ..runtime import Engine
from ._base import CheckFailed, Failure
from ._options import (
    _code_engine,
    _emit_json,
    _parse_json,
    _path,
    code_options,
    db_option,
    output_options,
    trust_option,
)


@click.command(name="resume")
@click.argument("run_id", metavar="RUN")
@click.option("--wait", is_flag=True, help="Wait for the run to end and print its outcome.")
@click.option(
    "--by", metavar="WHO", help="Who resumes it, as the history shows (default: this process)."
)
@code_options
@output_options
@trust_option
@db_option
@click.pass_context
def resume_cmd(
    ctx: click.Context,
    *,
    run_id: str,
    wait: bool,
    by: str | None,
    imports: tuple[str, ...],
    as_json: bool,
) -> None:
    """Resume the failed RUN from its failing step with today's code.

    The same run goes on: completed steps return their recorded results, the step it
    failed at runs again, and the failure stays in its history, followed by a
    run.resumed entry. Only a failed run is resumed; any other (or one resumed
    meanwhile) is refused with nothing written. RUN's function must be importable.

    The run executes in this process (a run of a queue with no room left waits for a
    worker): without --wait its id is printed at once and the process exits when it has
    ended. With --wait the exit status is 1 if it failed again.
    """
    with _code_engine(ctx, imports) as eng:
        handle = eng.resume(run_id, by=by)
        doc: dict[str, Any] = {"run_id": run_id, "resumed": True}
        if not wait:
            if as_json:
                _emit_json(doc)
            else:
                click.echo(render.clean(run_id))
            if handle._future is not None:  # executing on this process's threads
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
            Text.assemble(("resumed ", "bold"), run_id, ": ") + render.status_text(final.status)
        )
        if final.status == "completed":
            console.print(Text(render.pretty_json(doc["output"])))
        elif final.error:
            console.print(Text(final.error, style="red"))
    if final.status != "completed":
        raise CheckFailed(f"run {run_id!r} {final.status}")


@click.command()
@click.argument("run_id", metavar="RUN")
@click.argument("event_json", metavar="EVENT-JSON")
@code_options
@output_options
@trust_option
@db_option
@click.pass_context
def send(
    ctx: click.Context, run_id: str, event_json: str, imports: tuple[str, ...], as_json: bool
) -> None:
    """Deliver an event to a waiting workflow run.

    For humans in the loop. EVENT-JSON is an object whose "type" names the event
    class, e.g. `durable send RUN '{"type": "HumanResponseEvent", "response": "yes"}'`.
    The event is journaled at once; whichever process runs the workflow gets it.
    """
    event = _parse_json(event_json, "EVENT-JSON")
    if not isinstance(event, dict):
        raise Failure(f'EVENT-JSON: {event_json!r} is not a JSON object with a "type"')
    try:
        from engine import send_event  # noqa: PLC0415 - workflows may be absent in a build
    except ImportError as exc:
        raise Failure(f"this build of durable cannot send events ({exc})") from exc
    with _code_engine(ctx, imports) as eng:
        event_id = send_event(run_id, event, engine=eng)
    if as_json:
        _emit_json({"run_id": run_id, "event_id": to_jsonable(event_id)})
    else:
        sent = f"sent {event.get('type', 'event')} to {run_id} (journaled as {event_id})"
        click.echo(render.clean(sent))


@click.command()
@click.argument("run_id", metavar="RUN")
@output_options
@db_option
@click.pass_context
def cancel(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Cancel a run.

    The cancellation is journaled at once; the run's code stops at its next step
    boundary. A finished run is left as it is.
    """
    path = _path(ctx)
    with Engine(path) as eng:
        before = eng.journal.get_run(run_id).status
        status = eng.cancel(run_id)
    # A run that ended while the cancel was on its way keeps its status: not cancelled.
    cancelled = before != "cancelled" and status == "cancelled"
    if as_json:
        _emit_json({"run_id": run_id, "status": status, "cancelled": cancelled})
    elif cancelled:
        click.echo(f"{render.clean(run_id)}: cancelled")
    else:
        click.echo(f"{render.clean(run_id)}: already {render.clean(status)}, left as it is")
