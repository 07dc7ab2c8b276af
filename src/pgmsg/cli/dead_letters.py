"""``pgmsg dead-letters``: deliveries that used up their attempts; inspect and redrive them."""

from __future__ import annotations

import json

import click

from pgmsg.cli.context import AppContext, confirm, json_option, pass_app, yes_option
from pgmsg.cli.lookups import require_client, require_delivery
from pgmsg.cli.output import Column, emit, emit_record, json_default, render_table

COLUMNS = (
    Column("id"),
    Column("message_id"),
    Column("client_id"),
    Column("delivery_mode", "mode"),
    Column("attempts"),
    Column("created_at"),
    Column("dead_at"),
    Column("last_error"),
)

ATTEMPT_COLUMNS = (
    Column("attempt"),
    Column("attempted_at"),
    Column("duration_ms"),
    Column("status_code", "http"),
    Column("error"),
)


@click.group("dead-letters")
def dead_letters() -> None:
    """Dead letters: deliveries whose attempts are used up.

    \b
    Examples:
      pgmsg dead-letters list --client analytics-service
      pgmsg dead-letters show 4711
      pgmsg dead-letters redrive --client analytics-service
    """


@dead_letters.command("list")
@click.option("--client", "client_id", help="Only this client's dead letters.")
@json_option
@pass_app
def list_(app: AppContext, client_id: str | None) -> None:
    """List dead letters, oldest first, with their last error.

    \b
    Examples:
      pgmsg dead-letters list
      pgmsg dead-letters list --client analytics-service --json
    """
    emit(app.client().dead_letters(client_id), app.json, columns=COLUMNS, empty="no dead letters")


@dead_letters.command()
@click.argument("delivery_id", type=int)
@json_option
@pass_app
def show(app: AppContext, delivery_id: int) -> None:
    """Show delivery DELIVERY_ID with its message payload and every HTTP attempt.

    \b
    Examples:
      pgmsg dead-letters show 4711
      pgmsg dead-letters show 4711 --json
    """
    client = app.client()
    delivery = require_delivery(client, delivery_id)
    message = client.message(delivery["message_id"])
    attempts = client.attempts(delivery_id)
    if app.json:
        emit({"delivery": delivery, "message": message, "attempts": attempts}, True)
        return
    if delivery["status"] != "dead":
        click.echo(f"note: delivery {delivery_id} is {delivery['status']}, not a dead letter", err=True)
    emit_record(delivery)
    click.echo("")
    click.echo(
        f"message {message['id']}: {message['message_type']} in {message['namespace']}, "
        f"created {message['created_at'].isoformat(sep=' ', timespec='seconds')}"
    )
    click.echo(json.dumps(message["payload"], indent=2, ensure_ascii=False, default=json_default))
    click.echo("")
    click.echo(render_table(attempts, ATTEMPT_COLUMNS) if attempts else "no HTTP attempts recorded")


@dead_letters.command()
@click.option("--client", "client_id", help="Redrive this client's dead letters.")
@click.option("--id", "ids", type=int, multiple=True, help="Redrive this dead letter (repeatable).")
@yes_option
@json_option
@pass_app
def redrive(app: AppContext, client_id: str | None, ids: tuple[int, ...], yes: bool) -> None:
    """Send dead letters round again, attempts reset (asks first).

    Without --client or --id every dead letter is redriven.

    \b
    Examples:
      pgmsg dead-letters redrive --client analytics-service
      pgmsg dead-letters redrive --id 4711 --id 4712
      pgmsg dead-letters redrive --yes
    """
    if client_id is not None and ids:
        raise click.UsageError("give --client or --id, not both")
    client = app.client()
    if client_id is not None:
        require_client(client, client_id)
    wanted = list(ids) or None
    count = client.count_dead_letters(client_id, wanted)
    if count == 0:
        emit({"redriven": 0} if app.json else "no dead letters to redrive", app.json)
        return
    scope = (
        f"of client {client_id!r}"
        if client_id
        else f"among ids {', '.join(map(str, ids))}"
        if ids
        else "of every client"
    )
    confirm(f"Redrive {count} dead letter(s) {scope}? They will be delivered again.", yes)
    redriven = client.redrive(client_id, wanted)
    emit({"redriven": redriven} if app.json else f"redrove {redriven} dead letter(s)", app.json)
