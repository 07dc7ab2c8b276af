"""The context object every command receives: connection settings, output mode, and
lazily opened database handles; plus the options and error handling commands share."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
import psycopg
from psycopg.rows import dict_row

from pgmsg.client import Client
from pgmsg.errors import ConnectionFailed, PgmsgError, describe

F = TypeVar("F", bound=Callable[..., Any])

#: Used when neither the DSN nor PGCONNECT_TIMEOUT sets one: an operator at a
#: terminal should hear about an unreachable host in seconds, not minutes.
DEFAULT_CONNECT_TIMEOUT = 10

CONNECT_FAILED = "cannot connect to the messaging database"

#: Exit code of ``pgmsg health`` (and nothing else) when the database is unreachable.
EXIT_UNREACHABLE = 3


class CommandError(click.ClickException):
    """A failure shown as ``Error: <message>``, with a chosen exit code (1 unless told)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def with_connect_timeout(dsn: str, environ: dict[str, str] | None = None) -> str:
    """``dsn`` with connect_timeout added unless the DSN or PGCONNECT_TIMEOUT sets one."""
    env = os.environ if environ is None else environ
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise CommandError(f"invalid connection string in --dsn / PGMSG_DSN: {exc}") from exc
    if "connect_timeout" in params or env.get("PGCONNECT_TIMEOUT"):
        return dsn
    return psycopg.conninfo.make_conninfo(dsn, connect_timeout=DEFAULT_CONNECT_TIMEOUT)


def is_connection_error(exc: psycopg.Error) -> bool:
    """Lost or refused connections (no SQLSTATE, or class 08), not e.g. a cancelled statement."""
    return isinstance(exc, psycopg.OperationalError) and (exc.sqlstate is None or exc.sqlstate.startswith("08"))


def connection_failed_message(error: object) -> str:
    text = str(error)
    return text if text.startswith(CONNECT_FAILED) else f"{CONNECT_FAILED}: {text}"


@dataclass
class AppContext:
    """What the root group hands to every command (``ctx.obj``)."""

    dsn: str
    json: bool = False
    _conn: psycopg.Connection[dict[str, Any]] | None = field(default=None, repr=False)
    _client: Client | None = field(default=None, repr=False)

    def connection(self) -> psycopg.Connection[dict[str, Any]]:
        """One autocommit connection with dict rows, for the CLI's own queries."""
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row)
            except psycopg.OperationalError as exc:
                reason = " ".join(describe(exc).split())  # libpq's message spans lines
                raise ConnectionFailed(
                    f"{CONNECT_FAILED}: {reason}; check --dsn / PGMSG_DSN (or PGHOST, PGPORT, "
                    "PGUSER, PGPASSWORD, PGDATABASE) and that PostgreSQL is running"
                ) from exc
        return self._conn

    def client(self) -> Client:
        """The library client, for operations it already offers."""
        if self._client is None:
            # Connecting directly first fails fast with libpq's reason; the
            # client's pool would retry until its timeout and then say less.
            self.connection()
            self._client = Client(self.dsn, min_size=1, max_size=2)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


pass_app = click.make_pass_decorator(AppContext)


def json_option(f: F) -> F:
    """``--json`` on a command, the same as ``pgmsg --json`` on the root."""

    def enable(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(AppContext).json = True  # type: ignore[union-attr]

    return click.option("--json", "json_output", is_flag=True, expose_value=False, callback=enable,
                        help="Print JSON (an array or object, datetimes as ISO 8601) instead of a table.")(f)


def yes_option(f: F) -> F:
    return click.option("--yes", "-y", is_flag=True,
                        help="Do not ask for confirmation (for scripts).")(f)


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive step; declining (or no terminal to ask) aborts with exit 1."""
    if not yes:
        click.confirm(question, abort=True, err=True)


def one_line(text: str) -> str:
    """``text`` as one printable line: control and invisible characters it quotes from the
    input (newlines, terminal escapes, bidi overrides, lone surrogates) are shown escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in text)


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
