"""``pgmsg migrate``: apply pending schema migrations; ``pgmsg migrate status``: compare."""

from __future__ import annotations

from pathlib import Path

import click

from pgmsg import migrations
from pgmsg.cli.context import AppContext, CommandError, json_option, pass_app
from pgmsg.cli.output import Column, emit

STATUS_COLUMNS = (
    Column("version"),
    Column("name"),
    Column("state"),
    Column("applied_at"),
)

sql_dir_option = click.option(
    "--sql-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    envvar="PGMSG_SQL_DIR",
    help="Directory with bootstrap.sql and migrations/ (default: the repository's sql/; env PGMSG_SQL_DIR).",
)


def resolve_sql_dir(sql_dir: Path | None) -> Path:
    """The sql directory to use; an error naming --sql-dir when it has no migrations."""
    directory = sql_dir or migrations.default_sql_dir()
    if not (directory / "migrations").is_dir() or not (directory / "bootstrap.sql").is_file():
        raise CommandError(
            f"{directory} has no bootstrap.sql and migrations/; "
            "point --sql-dir (or PGMSG_SQL_DIR) at the sql/ directory of pgmsg"
        )
    return directory


@click.group(invoke_without_command=True)
@sql_dir_option
@json_option
@click.pass_context
def migrate(ctx: click.Context, sql_dir: Path | None) -> None:
    """Apply every pending schema migration and print what was applied.

    Migrations are versioned files (sql/migrations/NNN_name.sql.j2), applied
    in order and recorded in pgmsg_migrations, each in one transaction; one
    that changed after it was applied is refused. The Ansible role applies
    them the same way.

    \b
    Examples:
      pgmsg migrate
      pgmsg migrate status
      pgmsg migrate --sql-dir /opt/pgmsg/sql
    """
    ctx.meta["pgmsg.sql_dir"] = sql_dir
    if ctx.invoked_subcommand is not None:
        return
    sql_dir = resolve_sql_dir(sql_dir)
    app = ctx.find_object(AppContext)
    assert app is not None
    app.client()  # a clear "cannot connect" before anything else
    applied = migrations.apply(app.dsn, sql_dir)
    if app.json:
        emit({"applied": applied}, True)
    elif applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo(f"nothing to apply: all {len(migrations.load(sql_dir))} migrations are applied")


@migrate.command()
@sql_dir_option
@json_option
@pass_app
def status(app: AppContext, sql_dir: Path | None) -> None:
    """Compare the migration files with the database; exit 1 on a checksum mismatch.

    States: applied, pending (not applied yet), CHECKSUM MISMATCH (the file
    changed after it was applied: revert it and add a new migration), not in
    sql dir (applied here, but the files do not have it: older code?).

    \b
    Examples:
      pgmsg migrate status
      pgmsg migrate status --json
    """
    sql_dir = resolve_sql_dir(sql_dir or click.get_current_context().meta.get("pgmsg.sql_dir"))
    rows = migrations.status(app.client().applied_migrations(), sql_dir)
    emit(rows, app.json, columns=STATUS_COLUMNS, empty="no migrations found")
    mismatched = [f"{r['version']:03d} {r['name']}" for r in rows if r["state"] == migrations.MISMATCH]
    if mismatched:
        raise CommandError(
            f"{len(mismatched)} migration(s) changed after they were applied: "
            f"{', '.join(mismatched)}; revert the edits and add a new migration instead"
        )
