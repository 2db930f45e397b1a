"""Errors as the CLI shows them (one line, an exit status) and the keys it keeps in
click's context."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from journal import JournalError

from .. import _render as render
from ..errors import EngineError

F = TypeVar("F", bound=Callable[..., Any])

DB_KEY = "durable.db"
PATH_KEY = "durable.path"
IMPORTS_KEY = "durable.imports"
TRUST_KEY = "durable.trust_pickle"
IMPORT_ENV = "DURABLE_IMPORT"
HMAC_KEY_ENV = "DURABLE_HMAC_KEY"
TRACEBACK_ENV = "DURABLE_TRACEBACK"


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
