"""The context object every command receives: connection settings, output mode, and the
lazily opened client (the CLI's only way to the database); plus the options and error
handling commands share."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
import psycopg

from pgmsg.client import Client, is_connection_error
from pgmsg.client.connection import CONNECT_FAILED
from pgmsg.errors import ConnectionFailed, InvalidInput, NotFound, PgmsgError, describe

F = TypeVar("F", bound=Callable[..., Any])

#: What to check when the database cannot be reached, in text and in --json errors.
CONNECT_HINT = (
    "check --dsn / PGMSG_DSN (or PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, or the pgmsg "
    "service in ~/.pg_service.conf) and that PostgreSQL is running"
)


class CommandError(click.ClickException):
    """A failure shown as ``Error: <message>[; <hint>]``, with a chosen exit code (1 unless
    told); ``kind`` names it for programs (``--json`` prints it as an error object)."""

    def __init__(
        self, message: str, exit_code: int = 1, *, kind: str = "failed", hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.kind = kind
        self.hint = hint

    def format_message(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


def error_object(exc: click.ClickException | click.Abort) -> dict[str, dict[str, str | None]]:
    """What ``--json`` prints on stdout for a failure: ``{"error": {kind, message, hint}}``."""
    if isinstance(exc, CommandError):
        kind, message, hint = exc.kind, exc.message, exc.hint
    elif isinstance(exc, click.UsageError):
        command = exc.ctx.command_path if exc.ctx is not None else "pgmsg"
        kind, message, hint = "usage", exc.format_message(), f"see {command} --help"
    elif isinstance(exc, click.ClickException):
        kind, message, hint = "failed", exc.format_message(), None
    else:
        kind, message, hint = "aborted", "declined at the confirmation prompt; nothing was changed", None
    return {"error": {"kind": kind, "message": message, "hint": hint}}


def connection_failed_message(error: object) -> str:
    text = str(error)
    return text if text.startswith(CONNECT_FAILED) else f"{CONNECT_FAILED}: {text}"


@dataclass
class AppContext:
    """What the root group hands to every command (``ctx.obj``)."""

    dsn: str
    json: bool = False
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        """The library client, opened on first use. An unreachable database fails at once
        with libpq's reason, not after the pool's retries (which would say less)."""
        if self._client is None:
            try:
                self._client = Client(self.dsn, min_size=1, max_size=2, fail_fast=True)
            except ConnectionFailed as exc:
                if not str(exc).startswith(CONNECT_FAILED):
                    raise
                # Shown with CONNECT_HINT by command_errors.
                raise ConnectionFailed(str(exc)) from exc
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


pass_app = click.make_pass_decorator(AppContext)


def json_option(f: F) -> F:
    """``--json`` on a command, the same as ``pgmsg --json`` on the root."""

    def enable(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(AppContext).json = True  # type: ignore[union-attr]

    return click.option(
        "--json",
        "json_output",
        is_flag=True,
        expose_value=False,
        callback=enable,
        help="Print JSON (an array or object, datetimes as ISO 8601) instead of a table.",
    )(f)


def yes_option(f: F) -> F:
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (for scripts).")(f)


def confirm(question: str, yes: bool, *, at_terminal: bool = False) -> None:
    """Ask before a destructive step; declining (or no answer) aborts with exit 1.

    ``at_terminal``: only a person at a terminal may answer; with stdin not a terminal (cron,
    a pipe) and no --yes the step is refused at once, without reading an answer."""
    if yes:
        return
    if at_terminal and not (sys.stdin is not None and sys.stdin.isatty()):
        raise CommandError(
            f"not confirmed, nothing was done: stdin is not a terminal, so nobody can answer {question!r}",
            kind="confirmation-needed",
            hint="run it at a terminal, or pass --yes to skip the question",
        )
    click.confirm(question, abort=True, err=True)


def one_line(text: str) -> str:
    """``text`` as one printable line: control and invisible characters it quotes from the
    input (newlines, terminal escapes, bidi overrides, lone surrogates) are shown escaped."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in text
    )


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """Turn library and database errors into ``Error: ...`` messages with exit code 1."""
    try:
        yield
    except ConnectionFailed as exc:  # libpq's own text, in lines: joined
        raise unreachable(exc) from exc
    except InvalidInput as exc:
        raise CommandError(one_line(str(exc)), kind="invalid-input") from exc
    except NotFound as exc:
        raise CommandError(one_line(str(exc)), kind="not-found") from exc
    except PgmsgError as exc:
        raise CommandError(one_line(str(exc)), kind="pgmsg") from exc
    except psycopg.Error as exc:
        message = describe(exc)
        if is_connection_error(exc):
            raise unreachable(message) from exc
        raise CommandError(one_line(message), kind="database") from exc


def unreachable(reason: object, exit_code: int = 1) -> CommandError:
    """The error for a database that cannot be reached (or was lost), libpq's lines joined."""
    return CommandError(
        one_line(" ".join(connection_failed_message(reason).split())),
        exit_code,
        kind="unreachable",
        hint=CONNECT_HINT,
    )
