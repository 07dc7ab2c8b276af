"""``pgmsg publish``: insert one message, which fans out to every matching subscription."""

from __future__ import annotations

import sys
from typing import Any

import click

from pgmsg.cli.context import AppContext, json_option, pass_app
from pgmsg.cli.output import emit
from pgmsg.client import parse_payload
from pgmsg.errors import InvalidInput


def read_payload(payload: str | None, file: str | None) -> Any:
    """The payload from the argument, a file, or stdin ('-'); an empty object when none."""
    if payload is not None and file is not None:
        raise click.UsageError("give the payload as an argument or with --file, not both")
    try:
        if file is not None:
            where = f"--file {file}"
            with click.open_file(file, encoding="utf-8") as stream:
                source = stream.read()
        elif payload == "-":
            source, where = sys.stdin.read(), "stdin"
        elif payload is not None:
            source, where = payload, "PAYLOAD"
        else:
            return {}
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"the payload is not UTF-8 text ({exc.reason} at byte {exc.start})",
            param_hint="--file" if file is not None else "stdin",
        ) from exc
    try:
        value = parse_payload(source)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint=where) from exc
    # The library reads a None payload as "none given" and stores {}: a null that was written
    # on purpose would be silently replaced, so it is refused instead.
    if value is None:
        raise click.BadParameter(
            "the payload is JSON null; give an object or another JSON value (no payload at all publishes {})",
            param_hint=where,
        )
    return value


@click.command()
@click.argument("message_type", metavar="TYPE")
@click.argument("payload", required=False)
@click.option(
    "--file",
    "-f",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="Read the JSON payload from this file ('-' for stdin).",
)
@click.option(
    "--namespace",
    "-n",
    default="default",
    show_default=True,
    help="Namespace of the message (subscriptions filter on it).",
)
@click.option("--key", help="Ordering key: ordered subscriptions get messages with one key one at a time.")
@click.option(
    "--deferred",
    is_flag=True,
    help="Fan out after the commit (pgmsg-fan-out creates the deliveries moments later).",
)
@json_option
@pass_app
def publish(
    app: AppContext,
    message_type: str,
    payload: str | None,
    file: str | None,
    namespace: str,
    key: str | None,
    deferred: bool,
) -> None:
    """Publish a message of type TYPE with a JSON PAYLOAD and print its id.

    PAYLOAD is JSON text; '-' reads it from stdin, --file from a file. Without
    one the payload is an empty object.

    \b
    Examples:
      pgmsg publish order.created '{"order_id": 1001, "total": 19.99}' --namespace shop
      pgmsg publish order.created --file order.json --key customer-42
      pgmsg publish metrics.sample '{"cpu": 0.4}' --deferred
      echo '{"order_id": 1002}' | pgmsg publish order.created -
      pgmsg --json publish user.signed_up '{"user": 7}'
    """
    body = read_payload(payload, file)
    message_id = app.client().publish(message_type, body, namespace, key=key, deferred=deferred)
    if app.json:
        emit(
            {
                "id": message_id,
                "message_type": message_type,
                "namespace": namespace,
                "message_key": key,
                "deferred": deferred,
            },
            True,
        )
    else:
        click.echo(message_id)
