"""The root ``pgmsg`` group: connection settings, output mode, and the error boundary.

(Named root, not main: ``pgmsg.cli.main`` is the entry-point function, and a
submodule of the same name would shadow it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
import psycopg

from pgmsg.cli.context import AppContext, CommandError, command_errors
from pgmsg.cli.dead_letters import dead_letters
from pgmsg.cli.deferred import deferred
from pgmsg.cli.deliveries import deliveries
from pgmsg.cli.health import health
from pgmsg.cli.maintenance import archive, purge
from pgmsg.cli.migrate import migrate
from pgmsg.cli.publish import publish
from pgmsg.cli.resend import replay, retry
from pgmsg.cli.subscriptions import subscriptions
from pgmsg.client import DEFAULT_CONNECT_TIMEOUT, with_connect_timeout
from pgmsg.config import DSN_VARIABLE, conninfo_from_env


class PgmsgGroup(click.Group):
    """The one place library and database errors become ``Error: ...`` and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        with command_errors():
            return super().invoke(ctx)


@click.group(name="pgmsg", cls=PgmsgGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dsn",
    envvar=DSN_VARIABLE,
    metavar="CONNINFO",
    help=f"libpq connection string or URI of the messaging database (env {DSN_VARIABLE}; "
    "otherwise PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, database 'messaging').",
)
@click.option(
    "--json",
    "json_output",
    is_flag=True,
    help="Print JSON instead of tables (every command also takes --json).",
)
@click.version_option(package_name="pgmsg", prog_name="pgmsg", help="Show the version and exit.")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, json_output: bool) -> None:
    """Operate pgmsg, event messaging on PostgreSQL: publish, manage subscriptions,
    inspect and re-send deliveries, housekeeping, health checks and migrations.

    Connection settings come from --dsn, PGMSG_DSN, or libpq's PG* variables.
    Commands that destroy or resend data ask first; --yes skips the question.

    \b
    Examples:
      export PGMSG_DSN='host=127.0.0.1 dbname=messaging user=pgmsg_admin password=...'
      pgmsg publish order.created '{"order_id": 1001}' --namespace shop
      pgmsg subscriptions list
      pgmsg deliveries stats --since 1h
      pgmsg health
    """
    conninfo = dsn.strip() if dsn and dsn.strip() else conninfo_from_env()
    try:
        # Unless the DSN or PGCONNECT_TIMEOUT sets one: an operator at a terminal should
        # hear about an unreachable host in seconds, not minutes.
        conninfo = with_connect_timeout(conninfo, DEFAULT_CONNECT_TIMEOUT)
    except psycopg.ProgrammingError as exc:
        raise CommandError(f"invalid connection string in --dsn / PGMSG_DSN: {exc}") from exc
    app = AppContext(dsn=conninfo, json=json_output)
    ctx.obj = app
    ctx.call_on_close(app.close)


for command in (
    publish,
    subscriptions,
    deliveries,
    retry,
    dead_letters,
    replay,
    deferred,
    archive,
    purge,
    health,
    migrate,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``pgmsg`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="pgmsg")
