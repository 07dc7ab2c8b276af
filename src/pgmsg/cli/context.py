"""The context object every command receives: connection settings, output mode, and the
lazily opened client (the CLI's only way to the database); plus the options and error
handling commands share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
import psycopg

from pgmsg.client import Client, is_connection_error
from pgmsg.client.connection import CONNECT_FAILED
from pgmsg.errors import ConnectionFailed, PgmsgError, describe

F = TypeVar("F", bound=Callable[..., Any])

#: Exit code of ``pgmsg health`` (and nothing else) when the database is unreachable.
EXIT_UNREACHABLE = 3


class CommandError(click.ClickException):
    """A failure shown as ``Error: <message>``, with a chosen exit code (1 unless told)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
                raise ConnectionFailed(
                    f"{exc}; check --dsn / PGMSG_DSN (or PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) "
                    "and that PostgreSQL is running"
                ) from exc
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


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive step; declining (or no terminal to ask) aborts with exit 1."""
    if not yes:
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
        raise CommandError(one_line(" ".join(connection_failed_message(exc).split()))) from exc
    except PgmsgError as exc:
        raise CommandError(one_line(str(exc))) from exc
    except psycopg.Error as exc:
        message = describe(exc)
        if is_connection_error(exc):
            raise CommandError(one_line(" ".join(connection_failed_message(message).split()))) from exc
        raise CommandError(one_line(message)) from exc
