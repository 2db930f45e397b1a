"""The ``durable`` command line: a thin layer over the journal and engine APIs.

Every command opens the journal named by ``--db`` (default ``$DURABLE_DB``, else
``./durable.db``), calls one public function and renders what it returns: rich tables
for people (coloured only on a terminal), or one JSON document on stdout with
``--json``. Read commands open the journal read-only and never create it.

Errors are one line on stderr and an exit code: 0 ok, 1 a check failed (a replay
diverged, ``verify`` found problems, ``recover`` could not resume a run), 2 bad usage
or bad input (unknown run, step out of range, a file that is not a journal, JSON that
does not parse). Set ``DURABLE_TRACEBACK=1`` to see the traceback behind an error.

Reading runs no code from the journal and needs none of the user's: a pickled payload
is unpickled only with ``--trust-pickle`` or the journal's key in ``$DURABLE_HMAC_KEY``,
and a value whose class is not imported (see ``--import``) shows as its stored fields
and class name, not rebuilt. Commands that execute runs need the user's modules.

The package: ``_base`` (errors, exit statuses), ``_options`` (shared options, opening the
journal and the engine), then one module per family of commands, registered here in the
order ``durable --help`` lists them (reading, debugging, operating).
"""

from __future__ import annotations

import click

from ._base import DurableGroup
from ._control import cancel, resume_cmd, send
from ._inspect import export, history, runs, schedules, search, show
from ._maintain import compact, migrate, prune, verify
from ._operate import recover, ui_cmd, worker
from ._options import db_option
from ._timetravel import diff_cmd, fork_cmd, replay_cmd, state

__all__ = ["cli", "main"]


@click.group(cls=DurableGroup, context_settings={"help_option_names": ["-h", "--help"]})
@db_option
@click.version_option(package_name="durable", prog_name="durable", message="%(prog)s %(version)s")
def cli() -> None:
    """Inspect, debug and operate durable runs stored in a journal (a file or PostgreSQL).

    \b
    Exit status: 0 ok; 1 a check failed (replay diverged, verify found
    problems, recover could not resume a run); 2 bad usage or bad input.
    """


for _command in (
    runs,
    schedules,
    show,
    history,
    state,
    diff_cmd,
    export,
    search,
    fork_cmd,
    resume_cmd,
    replay_cmd,
    send,
    cancel,
    recover,
    worker,
    compact,
    prune,
    verify,
    migrate,
    ui_cmd,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """The ``durable`` console script."""
    cli.main(args=argv, prog_name="durable")
