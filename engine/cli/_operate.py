"""Running the journal's work: ``recover``, ``worker``, ``ui``."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from journal import Journal
from journal.extras import install_hint

from .. import _render as render
from ..errors import EngineError
from ..runtime import RecoveryReport
from ._base import IMPORT_ENV, CheckFailed, Failure
from ._options import (
    _code_engine,
    _emit_json,
    _path,
    _retention,
    _trust,
    code_options,
    db_option,
    output_options,
    retention_options,
    trust_option,
)


def _report_lines(
    console: Console, report: RecoveryReport, journal: Journal, *, final: bool
) -> None:
    for handle in report.handles:
        run = journal.get_run(handle.run_id)
        if final:
            line = Text.assemble(("recovered ", "bold"), handle.run_id, ": ")
            console.print(line + render.status_text(run.status))
        else:  # a worker's claim: epoch 1 is a run's first execution, more a resumed one
            verb = "started " if run.epoch <= 1 else "resumed "
            console.print(Text.assemble((verb, "bold"), handle.run_id))
    for rid, exc in report.errors.items():
        console.print(Text.assemble(("not recovered ", "bold red"), rid, f": {exc}"))


@click.command()
@click.option(
    "--timeout", type=float, metavar="SECONDS", help="How long to wait for each resumed run."
)
@click.option(
    "--wait",
    "wait_leased",
    is_flag=True,
    help="Also wait for runs another owner still holds (its lease has not expired: its "
    "worker may be alive, or died less than a lease ago) and resume them once it lapses.",
)
@code_options
@output_options
@trust_option
@db_option
@click.pass_context
def recover(
    ctx: click.Context,
    timeout: float | None,
    wait_leased: bool,
    imports: tuple[str, ...],
    as_json: bool,
) -> None:
    """Resume every run whose owner died, once.

    Claims each unfinished run whose lease expired, resumes it from its first
    unrecorded step and waits for it. Runs still held by an unexpired lease are
    listed with their owner and the seconds left (--wait waits for them). Exit
    status 1 if a run could not be resumed (its function cannot be imported: see
    --import; or its journal does not decode here).
    """
    with _code_engine(ctx, imports) as eng:
        if wait_leased and not as_json:
            console = render.make_console()
            now = eng.journal.clock()
            for run in eng.journal.list_runs(status=["pending", "running", "waiting"]):
                left = (run.lease_expires_at or 0) - now
                if run.owner is not None and left > 0:
                    console.print(
                        Text(f"waiting for {run.run_id}: held by {run.owner} for {left:.1f}s more")
                    )
        report = eng.recover(wait=True, timeout=timeout, wait_leased=wait_leased)
        statuses = {h.run_id: eng.journal.get_run(h.run_id).status for h in report.handles}
        if as_json:
            _emit_json(
                {
                    "resumed": [{"run_id": r, "status": s} for r, s in statuses.items()],
                    "errors": {rid: str(exc) for rid, exc in report.errors.items()},
                    "held": [
                        {"run_id": rid, "owner": report.owners.get(rid), "seconds_left": left}
                        for rid, left in sorted(report.leased.items())
                    ],
                }
            )
        else:
            console = render.make_console()
            if not report.handles and not report.errors and not report.leased:
                console.print("nothing to recover")
            _report_lines(console, report, eng.journal, final=True)
            for rid, left in sorted(report.leased.items()):
                console.print(
                    Text.assemble(
                        ("held ", "bold yellow"),
                        rid,
                        f": leased by {report.owners.get(rid)} for {left:.1f}s more; "
                        "left alone (its worker may be alive); --wait to wait for it",
                    )
                )
    if report.errors:
        raise CheckFailed(f"{render.plural(len(report.errors), 'run')} could not be recovered")


@click.command()
@click.option(
    "--poll",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between recovery passes.",
)
@click.option(
    "--max-seconds", type=click.FloatRange(min=0), metavar="SECONDS", help="Stop after this long."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    metavar="N",
    help="Runs executed at once by this worker.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Lease on each run, renewed every third of it: a dead worker's runs resume "
    "about this long after it died.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="On stop, how long runs in flight get to reach their next step boundary.",
)
@retention_options
@code_options
@trust_option
@db_option
@click.pass_context
def worker(
    ctx: click.Context,
    poll: float,
    max_seconds: float | None,
    concurrency: int,
    lease: float,
    grace: float,
    imports: tuple[str, ...],
    delete_completed_after: float | None,
    delete_failed_after: float | None,
    compact_after: float | None,
) -> None:
    """Claim and execute runs until stopped: enqueued ones, and those whose owner died.

    Any number of workers (on any number of hosts, with a PostgreSQL journal) share
    the work: each run is leased by one of them at a time. Queued runs go highest
    priority first, within each queue's concurrency limit.

    SIGTERM, Ctrl-C or --max-seconds stop it like a service: it claims nothing more,
    each run in flight finishes the step it is in (at most --grace seconds), and
    their leases are released so another worker resumes them at once; exit status 0.
    A second signal abandons the runs in flight at once (leases still released; the
    steps they were in run again on the next worker): exit status 128 + signal.

    With --delete-completed-after, --delete-failed-after or --compact-after, it
    also applies that retention in the background, once an hour (see prune).
    """
    retention = _retention(delete_completed_after, delete_failed_after, compact_after)
    stop = threading.Event()
    abandon = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        if stop.is_set():
            abandon.set()
        stop.set()

    if max_seconds is not None:
        timer = threading.Timer(max_seconds, stop.set)
        timer.daemon = True
        timer.start()
    with _code_engine(ctx, imports, lease_seconds=lease) as eng:
        console = render.make_console()
        reported: set[str] = set()

        def on_recover(report: RecoveryReport) -> None:
            fresh = {rid: exc for rid, exc in report.errors.items() if rid not in reported}
            reported.update(fresh)  # a run that cannot be imported is reported once
            _report_lines(console, RecoveryReport(report.handles, fresh), eng.journal, final=False)

        def on_cannot_resume(run_id: str, exc: EngineError) -> None:
            console.print(Text.assemble(("not resumed ", "bold red"), run_id, f": {exc}"))

        eng.on_cannot_resume.append(on_cannot_resume)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        console.print(
            Text(
                f"worker {eng.owner} on {eng.journal.where}: {concurrency} at once, "
                f"polling every {poll}s, Ctrl-C or SIGTERM to stop"
            )
        )
        eng.worker(
            poll_interval=poll,
            stop=stop,
            on_recover=on_recover,
            concurrency=concurrency,
            retention=retention,
        )

        def on_begin(in_flight: list[str]) -> None:
            if in_flight:
                console.print(
                    Text(
                        f"stopping: {render.plural(len(in_flight), 'run')} in flight finish "
                        f"their current step (at most {grace}s; signal again to abandon them)"
                    )
                )

        report = eng.drain(grace, abandon=abandon, on_begin=on_begin)
        console.print(Text(f"worker stopped: {report.summary()}"))
    code = 128 + received[-1] if abandon.is_set() and received else 0
    if report.abandoned:
        # Their threads are still inside user code: do not wait for them at exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        sys.exit(code)


@click.command(name="ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback).")
@click.option("--port", default=8321, type=click.IntRange(1, 65535), show_default=True)
@click.option("--readonly", is_flag=True, help="Offer no action; refuse writes.")
@click.option(
    "--token",
    envvar="DURABLE_UI_TOKEN",
    metavar="TOKEN",
    help="The access token every request must carry (16+ characters of A-Z a-z 0-9 . _ ~ -;"
    " also $DURABLE_UI_TOKEN). Default: a random one per launch.",
)
@code_options
@trust_option
@db_option
@click.pass_context
def ui_cmd(
    ctx: click.Context,
    host: str,
    port: int,
    readonly: bool,
    token: str | None,
    imports: tuple[str, ...],
) -> None:
    """Serve a local web view of the journal's runs (needs the ui extra).

    Runs, timelines, the state at any step, diffs; fork, send and cancel unless
    read-only (the default when the journal is not writable). Binds to loopback
    unless --host says otherwise. Prints the address to open, with its access
    token: every page and API call needs it.
    """
    path = _path(ctx)
    try:
        from engine.ui import serve  # noqa: PLC0415 - optional extra, imported on use
    except ImportError as exc:
        raise Failure(f"durable ui needs the ui extra: {install_hint('ui')} ({exc})") from exc
    extra = [m for m in os.environ.get(IMPORT_ENV, "").split(",") if m.strip()]
    try:
        serve(path, host=host, port=port, readonly=True if readonly else None,
              imports=[*imports, *extra], token=token, **_trust(ctx))  # fmt: skip
    except ImportError as exc:
        raise Failure(str(exc)) from exc
