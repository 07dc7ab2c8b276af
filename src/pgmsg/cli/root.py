"""The root ``pgmsg`` group: connection settings, output mode, and the error boundary.

(Named root, not main: ``pgmsg.cli.main`` is the entry-point function, and a
submodule of the same name would shadow it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
import psycopg

from pgmsg.cli.context import AppContext, CommandError, command_errors, error_object
from pgmsg.cli.dead_letters import dead_letters
from pgmsg.cli.deferred import deferred
from pgmsg.cli.deliveries import deliveries
from pgmsg.cli.health import health
from pgmsg.cli.maintenance import archive, purge
from pgmsg.cli.migrate import migrate
from pgmsg.cli.output import EMITTED, to_json
from pgmsg.cli.publish import publish
from pgmsg.cli.resend import replay, retry
from pgmsg.cli.subscriptions import subscriptions
from pgmsg.client import DEFAULT_CONNECT_TIMEOUT, with_connect_timeout
from pgmsg.config import DSN_VARIABLE, operator_conninfo

#: Key of the click context's ``meta`` holding the command line as given.
ARGS = "pgmsg.args"


class PgmsgGroup(click.Group):
    """The one place library and database errors become ``Error: ...`` and an exit code, and,
    under ``--json``, also a JSON error object on stdout (unless the command printed its result)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGS] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        args = ctx.meta.get(ARGS, [])
        try:
            with command_errors():
                return super().invoke(ctx)
        except (click.ClickException, click.Abort) as exc:
            command = self.commands.get(ctx.invoked_subcommand or "")
            if isinstance(exc, click.ClickException) and hasattr(command, "error_exit_code"):
                exc.exit_code = command.error_exit_code
            if wants_json(ctx, args) and not ctx.meta.get(EMITTED):
                click.echo(to_json(error_object(exc)))
            raise


def wants_json(ctx: click.Context, args: list[str]) -> bool:
    """``--json`` on the root or the command; read from the arguments too, since a usage error
    can stop parsing before the command's ``--json`` is processed."""
    app = ctx.obj
    return bool(
        ctx.params.get("json_output")
        or (isinstance(app, AppContext) and app.json)
        or "--json" in args[: args.index("--") if "--" in args else None]
    )


@click.group(name="pgmsg", cls=PgmsgGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dsn",
    envvar=DSN_VARIABLE,
    metavar="CONNINFO",
    help=f"libpq connection string or URI of the messaging database (env {DSN_VARIABLE}; "
    "otherwise PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE; otherwise the 'pgmsg' service "
    "of ~/.pg_service.conf, which the deploy writes for root on the database hosts).",
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

    Connection settings come from --dsn, PGMSG_DSN, libpq's PG* variables, or
    the 'pgmsg' service of ~/.pg_service.conf (with ~/.pgpass), in that order.
    Commands that destroy or resend data ask first; --yes skips the question.
    With --json, a failure prints {"error": {"kind", "message", "hint"}} on stdout.

    \b
    Examples:
      export PGMSG_DSN='host=127.0.0.1 dbname=messaging user=pgmsg_admin password=...'
      pgmsg publish order.created '{"order_id": 1001}' --namespace shop
      pgmsg subscriptions list
      pgmsg deliveries stats --since 1h
      pgmsg health
    """
    conninfo = dsn.strip() if dsn and dsn.strip() else operator_conninfo()
    try:
        # Unless the DSN or PGCONNECT_TIMEOUT sets one: an operator at a terminal should
        # hear about an unreachable host in seconds, not minutes.
        conninfo = with_connect_timeout(conninfo, DEFAULT_CONNECT_TIMEOUT)
    except psycopg.ProgrammingError as exc:
        raise CommandError(
            f"invalid connection string in --dsn / PGMSG_DSN: {str(exc).strip()}", kind="invalid-input"
        ) from exc
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
