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
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from journal import (
    RUN_STATUSES,
    Journal,
    JournalError,
    MigrationError,
    MigrationReport,
    Retention,
    RetentionPolicy,
    Run,
    ancestors,
    apply_retention,
    check_tags,
    copy_journal,
    fork_lineage,
    is_url,
    parse_tag,
    redact_location,
    resolve_path,
    to_jsonable,
)
from journal.extras import install_hint
from journal.search import MATCH_END, MATCH_START, search_payloads

from . import _render as render
from .continuation import continued_as, continued_from
from .errors import EngineError
from .registry import import_user_modules
from .replay import replay, replay_all
from .runtime import Engine, RecoveryReport, configure
from .timetravel import NUMBERED_KINDS, diff, fork, iter_history, state_at

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

DB_KEY = "durable.db"
PATH_KEY = "durable.path"
IMPORTS_KEY = "durable.imports"
TRUST_KEY = "durable.trust_pickle"
IMPORT_ENV = "DURABLE_IMPORT"
HMAC_KEY_ENV = "DURABLE_HMAC_KEY"
TRACEBACK_ENV = "DURABLE_TRACEBACK"


# -- errors -------------------------------------------------------------------------------


class Failure(click.ClickException):
    """Bad input: a one-line ``error: ...`` on stderr and exit status 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line, and no escape sequence from a journal or an argument reaches the terminal.
        super().__init__(render.clean(" ".join(message.split())) or "unknown error")

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class CheckFailed(Failure):
    """A check failed (divergence, verify problems, recovery errors): exit status 1."""

    exit_code = 1


USER_ERRORS: tuple[type[BaseException], ...] = (
    JournalError,
    EngineError,
    ValueError,  # includes json.JSONDecodeError and UnicodeDecodeError
    OSError,
    OverflowError,  # a number too large for SQLite or for a date
)

MAX_INT = 2**63 - 1
"""The largest number an integer option takes: SQLite's (and PostgreSQL's) bigint."""


class DurableGroup(click.Group):
    """Maps the library's errors to one line on stderr and exit status 2, centrally;
    lists commands in the order they are defined (reading, debugging, operating)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            raise _one_line(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Failure:
            raise
        except click.ClickException as exc:  # click's own usage errors, as one line too
            raise _one_line(exc) from exc
        except (click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except USER_ERRORS as exc:
            if os.environ.get(TRACEBACK_ENV):
                raise
            raise Failure(_describe(exc, ctx.meta.get(PATH_KEY))) from exc


_NO_ARGS: type[click.ClickException] = getattr(
    click.exceptions, "NoArgsIsHelpError", Failure
)  # click >= 8.2: `durable` alone prints its help


def _one_line(exc: click.ClickException) -> click.ClickException:
    """A click error as every other error is shown: one ``error: ...`` line, and for a
    usage error the command whose ``--help`` explains it."""
    if isinstance(exc, Failure | _NO_ARGS):
        return exc
    message = exc.format_message()
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        message = f"{message} (see: {exc.ctx.command_path} --help)"
    return (CheckFailed if exc.exit_code == 1 else Failure)(message)


def _describe(exc: BaseException, path: str | None) -> str:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    elif path and path not in message:
        message = f"{message} (journal {path!r})"
    return message


# -- shared options -----------------------------------------------------------------------


def _remember_db(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[DB_KEY] = value


def db_option(fn: F) -> F:
    """``--db PATH|URL``, accepted before and after the command name."""
    return click.option(
        "--db",
        metavar="PATH|URL",
        expose_value=False,
        callback=_remember_db,
        help="The journal file, or a postgresql:// URL. Default: $DURABLE_DB, else ./durable.db.",
    )(fn)


def output_options(fn: F) -> F:
    """``--json``: machine output, one JSON document on stdout."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document instead of tables."
    )(fn)


def code_options(fn: F) -> F:
    """``--import MODULE``: commands that execute user code import it first."""
    return click.option(
        "--import",
        "imports",
        metavar="MODULE",
        multiple=True,
        help="Import MODULE before starting (repeatable; also $DURABLE_IMPORT, "
        "comma-separated), so functions registered under a custom name= are found. "
        "The current directory is on the import path.",
    )(fn)


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value:
            ctx.meta[key] = value

    return callback


def trust_option(fn: F) -> F:
    """``--trust-pickle``: unpickle payloads even without the journal's HMAC key."""
    return click.option(
        "--trust-pickle",
        is_flag=True,
        expose_value=False,
        callback=_remember(TRUST_KEY),
        help="Unpickle pickled payloads (unpickling runs code: only for journals whose every "
        "writer you trust). Without it, and without the journal's key in $DURABLE_HMAC_KEY, "
        "they show as 'pickled value, N bytes, not decoded'.",
    )(fn)


def read_options(fn: F) -> F:
    """``--import MODULE`` and ``--trust-pickle`` for commands that only read."""
    fn = click.option(
        "--import",
        "imports",
        metavar="MODULE",
        multiple=True,
        expose_value=False,
        callback=_remember(IMPORTS_KEY),
        help="Import MODULE first (repeatable; also $DURABLE_IMPORT, comma-separated), so "
        "values of its classes are rebuilt; without it they show as their stored fields.",
    )(fn)
    return trust_option(fn)


if TYPE_CHECKING:
    _ParamType = click.ParamType[float, Any]
else:  # click < 8.2 has no generic ParamType
    _ParamType = click.ParamType


class Timestamp(_ParamType):
    """An ISO 8601 time (naive = local time) or a Unix timestamp; converted to Unix seconds."""

    name = "ISO-TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return self._in_range(float(value), str(value), param, ctx)
        text = str(value).strip()
        try:
            return self._in_range(float(text), text, param, ctx)
        except ValueError:
            pass
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            self.fail(f"{text!r} is not an ISO 8601 time (e.g. 2025-01-31T12:00:00)", param, ctx)
        try:
            seconds = when.timestamp()
        except (OverflowError, OSError, ValueError):
            self.fail(f"{text!r} is out of range for a time (years 1 to 9999)", param, ctx)
        return self._in_range(seconds, text, param, ctx)

    def _in_range(
        self, seconds: float, text: str, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        # Times are shown as dates: a number no date can hold is refused here, not
        # half-way through printing.
        try:
            dt.datetime.fromtimestamp(seconds)
        except (OverflowError, OSError, ValueError):
            self.fail(f"{text!r} is out of range for a time (years 1 to 9999)", param, ctx)
        return seconds


TIMESTAMP = Timestamp()


if TYPE_CHECKING:
    _IntType = click.ParamType[int, Any]
else:
    _IntType = click.ParamType


class Number(_IntType):
    """A whole number from ``low`` to :data:`MAX_INT` (what the journal's integers hold)."""

    name = "integer"

    def __init__(self, low: int = 0) -> None:
        self.low = low

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a whole number", param, ctx)
        if number < self.low:
            self.fail(f"{number} is below {self.low}", param, ctx)
        if number > MAX_INT:
            self.fail(f"{number} is too large (at most {MAX_INT})", param, ctx)
        return number


COUNT = Number(0)


# -- opening the journal and the engine -------------------------------------------------


def _shown(location: str) -> str:
    """The location as messages show it: a URL without its password."""
    return redact_location(location)


def _existing(path: str) -> str:
    """``path`` if it names a journal that may exist: a URL (a server, checked when it is
    opened) or an existing file; a missing file or a directory is an error."""
    if is_url(path):
        return path
    if not os.path.exists(path):
        raise Failure(f"no journal at {path}")
    if os.path.isdir(path):
        raise Failure(f"{path} is a directory, not a journal")
    return path


def _path(ctx: click.Context) -> str:
    """The journal path or URL; a missing file is an error (no command creates a journal
    file; a PostgreSQL URL names a server, checked when it is opened)."""
    path = resolve_path(ctx.meta.get(DB_KEY))
    ctx.meta[PATH_KEY] = _shown(path)
    return _existing(path)


def _trust(ctx: click.Context) -> dict[str, Any]:
    """The reader's trust options: ``--trust-pickle`` and ``$DURABLE_HMAC_KEY``."""
    return {
        "trust_pickle": bool(ctx.meta.get(TRUST_KEY)),
        "hmac_key": os.environ.get(HMAC_KEY_ENV) or None,
    }


@contextlib.contextmanager
def _reader(ctx: click.Context) -> Iterator[Journal]:
    """The journal, opened read-only. Modules of --import and $DURABLE_IMPORT are imported
    first: decoding never imports code, so typed values need their classes imported to be
    rebuilt (without them they read as placeholders)."""
    path = _path(ctx)
    _import_user_code(tuple(ctx.meta.get(IMPORTS_KEY, ())))
    journal = Journal(path, readonly=True, **_trust(ctx))
    try:
        yield journal
    finally:
        journal.close()


@contextlib.contextmanager
def _writer(ctx: click.Context) -> Iterator[Journal]:
    """The journal, opened for writing."""
    journal = Journal(_path(ctx), **_trust(ctx))
    try:
        yield journal
    finally:
        journal.close()


@contextlib.contextmanager
def _read_engine(ctx: click.Context) -> Iterator[Engine]:
    """An engine over the journal opened read-only (time travel reads through one)."""
    with _reader(ctx) as journal:
        eng = Engine(journal)
        try:
            yield eng
        finally:
            eng.close()


def _import_user_code(imports: tuple[str, ...]) -> None:
    try:
        import_user_modules([*imports, *os.environ.get(IMPORT_ENV, "").split(",")])
    except ImportError as exc:
        raise Failure(str(exc)) from exc


@contextlib.contextmanager
def _code_engine(
    ctx: click.Context,
    imports: tuple[str, ...],
    *,
    readonly: bool = False,
    lease_seconds: float | None = None,
) -> Iterator[Engine]:
    """Import the user's modules, then make the journal the default engine's
    (``engine.configure``), so code that runs finds it as its own."""
    path = _path(ctx)
    _import_user_code(imports)
    options: dict[str, Any] = {} if lease_seconds is None else {"lease_seconds": lease_seconds}
    trust = _trust(ctx)
    if readonly:
        eng = configure(Journal(path, readonly=True, **trust), **options)
    else:
        eng = configure(path, **trust, **options)
    try:
        eng.journal  # opens now: a bad file fails before anything runs  # noqa: B018
        yield eng
    finally:
        eng.close()


def _emit_json(doc: Any) -> None:
    click.echo(render.json_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str)))


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Failure(
            f"{what}: {text!r} is not JSON ({exc.msg} at column {exc.colno}); "
            "a string needs quotes, e.g. '\"text\"'"
        ) from exc


def _tags(values: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for text in values:
        try:
            key, value = parse_tag(text)
            check_tags({key: value})
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(str(exc), param_hint="'--tag'") from None
        tags[key] = value
    return tags


def _lineage(journal: Journal, run: Run) -> dict[str, Run]:
    """The run and every run it was forked from, by id."""
    return {r.run_id: r for r in ancestors(journal, run)}


def _count_checkpoints(journal: Journal, run: Run) -> int:
    """Checkpoints of a run, numbered as ``history`` numbers them (a fork counts its
    sources' up to the fork point), counted by the journal from the retained entries."""
    kinds = sorted(NUMBERED_KINDS)
    return sum(
        journal.count_checkpoints(source.run_id, upto, kinds)
        for source, upto in fork_lineage(journal, run)
    )


# -- the group ----------------------------------------------------------------------------


@click.group(cls=DurableGroup, context_settings={"help_option_names": ["-h", "--help"]})
@db_option
@click.version_option(package_name="durable", prog_name="durable", message="%(prog)s %(version)s")
def cli() -> None:
    """Inspect, debug and operate durable runs stored in a journal (a file or PostgreSQL).

    \b
    Exit status: 0 ok; 1 a check failed (replay diverged, verify found
    problems, recover could not resume a run); 2 bad usage or bad input.
    """


# -- read commands ------------------------------------------------------------------------


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command(name="diff")
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


@cli.command()
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


@cli.command()
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


# -- commands that execute code -----------------------------------------------------------


def _parse_edit(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r}: expected KEY=JSON", param_hint="--set")
    return key, _parse_json(value, f"--set {key}")


@cli.command(name="fork")
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
        doc["output"] = to_jsonable(
            eng.journal.decode(
                final.output, final.codec, where=f"run {final.run_id!r} output", run_id=final.run_id
            )
        )
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


@cli.command(name="resume")
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
        doc["output"] = to_jsonable(
            eng.journal.decode(
                final.output, final.codec, where=f"run {final.run_id!r} output", run_id=final.run_id
            )
        )
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


@cli.command(name="replay")
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


def retention_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--delete-completed-after``, ``--delete-failed-after`` and ``--compact-after``."""
    days = click.FloatRange(min=0)
    for flag, help_text in reversed(
        [
            ("--delete-completed-after", "Delete completed runs DAYS after they ended."),
            ("--delete-failed-after", "Delete failed and cancelled runs DAYS after they ended."),
            ("--compact-after", "Keep only the final state of runs DAYS after they ended."),
        ]
    ):
        fn = click.option(flag, type=days, metavar="DAYS", help=help_text)(fn)
    return fn


def _retention(
    completed: float | None, failed: float | None, compact_after: float | None
) -> Retention | None:
    if completed is None and failed is None and compact_after is None:
        return None
    return Retention(completed_days=completed, failed_days=failed, compact_days=compact_after)


@cli.command()
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


# -- maintenance ---------------------------------------------------------------------------


@cli.command()
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


@cli.command()
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


@cli.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@output_options
@read_options
@db_option
@click.pass_context
def verify(ctx: click.Context, run_id: str | None, as_json: bool) -> None:
    """Check checksums, seqs and snapshots; exit 1 on problems.

    Checks the file's integrity, every entry's checksum and seq density, and every
    snapshot against the fold of its entries (of RUN, or of every run).
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


@cli.command()
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


@cli.command(name="ui")
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


def main(argv: list[str] | None = None) -> None:
    """The ``durable`` console script."""
    cli.main(args=argv, prog_name="durable")


if __name__ == "__main__":
    main()
