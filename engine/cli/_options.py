"""The options the commands share, their parameter types, and opening the journal
and the engine the way every command does."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from journal import (
    Journal,
    Retention,
    Run,
    ancestors,
    check_tags,
    fork_lineage,
    is_url,
    parse_tag,
    redact_location,
    resolve_path,
)

from .. import _render as render
from ..registry import import_user_modules
from ..runtime import Engine, configure
from ..timetravel import NUMBERED_KINDS
from ._base import (
    DB_KEY,
    HMAC_KEY_ENV,
    IMPORT_ENV,
    IMPORTS_KEY,
    MAX_INT,
    PATH_KEY,
    TRUST_KEY,
    F,
    Failure,
)

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
