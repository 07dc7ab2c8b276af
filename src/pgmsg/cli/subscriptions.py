"""``pgmsg subscriptions``: add, list, pause, resume, remove, rotate-secret, test."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from pgmsg.cli.context import AppContext, CommandError, confirm, json_option, pass_app, yes_option
from pgmsg.cli.lookups import require_client
from pgmsg.cli.output import Column, emit, format_seconds
from pgmsg.cli.webhook_probe import send_test_event
from pgmsg.client import DELIVERY_MODES, Subscription

SECRET_FIELDS = ("signing_secret",)

COLUMNS = (
    Column("id"),
    Column("client_id"),
    Column("delivery_mode", "mode"),
    Column("message_type", "type"),
    Column("namespace"),
    Column("target"),
    Column("push_mode"),
    Column("active"),
    Column("max_attempts"),
    Column("options"),
    Column("deactivated_reason"),
)


def public_view(sub: Subscription, show_secrets: bool = False) -> dict[str, Any]:
    """A subscription as a dict, without its secret unless asked for."""
    data = dataclasses.asdict(sub)
    if not show_secrets:
        for name in SECRET_FIELDS:
            data.pop(name, None)
    return data


def table_row(sub: Subscription) -> dict[str, Any]:
    options = [
        name
        for name, on in (
            ("ordered", sub.ordered),
            ("durable", sub.durable),
            ("notify_payload", sub.notify_payload),
        )
        if on
    ]
    if sub.payload_filter:
        options.append("filter=" + json.dumps(sub.payload_filter, separators=(",", ":")))
    if sub.max_in_flight is not None:
        options.append(f"max_in_flight={sub.max_in_flight}")
    return {
        **public_view(sub),
        "target": sub.webhook_url or sub.notify_channel,
        "push_mode": sub.push_mode if sub.delivery_mode == "http" else None,
        "options": " ".join(options) or None,
    }


def show(app: AppContext, subs: list[Subscription], show_secrets: bool, empty: str = "") -> None:
    if show_secrets and not app.json:
        raise click.UsageError("--show-secrets only applies to --json output; tables never show secrets")
    if app.json:
        emit([public_view(s, show_secrets) for s in subs], True)
    else:
        emit([table_row(s) for s in subs], False, columns=COLUMNS, empty=empty)


def parse_filter(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:
        raise click.BadParameter("nested too deeply") from exc
    except ValueError as exc:  # an integer of more digits than Python converts
        raise click.BadParameter(f"not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter('must be a JSON object, e.g. {"country": "DE"}')
    return parsed


@click.group()
def subscriptions() -> None:
    """Manage subscriptions: who receives which messages, and how.

    \b
    Examples:
      pgmsg subscriptions add analytics-service --mode async
      pgmsg subscriptions list --client webhook-server
      pgmsg subscriptions test 12
    """


@subscriptions.command("add")
@click.argument("client_id")
@click.option(
    "--mode",
    "delivery_mode",
    type=click.Choice(DELIVERY_MODES),
    required=True,
    help="async (claimed by a consumer), http (webhook POST) or notify (NOTIFY on a channel).",
)
@click.option(
    "--type",
    "message_type",
    default="*",
    show_default=True,
    help="Message types to receive: a name or a pattern with * wildcards.",
)
@click.option(
    "--namespace",
    default="*",
    show_default=True,
    help="Namespaces to receive: a name or a pattern with * wildcards.",
)
@click.option("--url", "webhook_url", help="http: the endpoint that receives the POST (must be allowlisted).")
@click.option("--channel", "notify_channel", help="notify: the channel name (default: the client id).")
@click.option(
    "--timeout-ms",
    "http_timeout_ms",
    type=click.IntRange(100, 60000),
    default=5000,
    show_default=True,
    help="http: request timeout in milliseconds.",
)
@click.option(
    "--push-mode",
    type=click.Choice(["dispatcher", "in_transaction"]),
    default="dispatcher",
    show_default=True,
    help="http: push after commit by the dispatcher, or inside the publisher's "
    "transaction (the seed's behaviour).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 100),
    default=10,
    show_default=True,
    help="Attempts before a delivery becomes a dead letter.",
)
@click.option(
    "--lease-seconds",
    type=click.IntRange(1, 43200),
    default=30,
    show_default=True,
    help="async: how long a claim holds before the delivery is claimable again.",
)
@click.option(
    "--payload-filter",
    callback=parse_filter,
    help='Only messages whose payload contains this JSON object, e.g. \'{"country": "DE"}\'.',
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(1, 1000),
    help="http: most webhooks the dispatcher has in flight at once for this subscription "
    "(default: the dispatcher's --per-subscription).",
)
@click.option("--ordered", is_flag=True, help="Deliver messages with the same key one at a time, in order.")
@click.option("--durable", is_flag=True, help="notify: keep a claimable copy until the listener acks it.")
@click.option(
    "--notify-payload",
    is_flag=True,
    help="notify: send the message in the notification, readable by every role that can connect "
    "(default: only the message and delivery ids; the listener reads the rest through row-level "
    "security).",
)
@click.option("--show-secrets", is_flag=True, help="With --json: include the signing secret.")
@json_option
@pass_app
def add(app: AppContext, client_id: str, show_secrets: bool, **settings: Any) -> None:
    """Create a subscription for CLIENT_ID (or update and re-activate the same one).

    A subscription is identified by client, mode, type and namespace; adding it
    again updates its settings. http subscriptions get a generated signing
    secret: read it once with --json --show-secrets and configure the receiver.

    \b
    Examples:
      pgmsg subscriptions add analytics-service --mode async --type 'order.*'
      pgmsg subscriptions add webhook-server --mode http --url http://127.0.0.1:8080/webhook \\
            --type 'order.*' --max-attempts 5 --max-in-flight 16
      pgmsg subscriptions add dashboard --mode notify --namespace shop --channel dashboard --durable
      pgmsg --json subscriptions add eu-orders --mode async --payload-filter '{"country": "DE"}'
    """
    if show_secrets and not app.json:
        raise click.UsageError("--show-secrets only applies to --json output; tables never show secrets")
    sub = app.client().subscribe(client_id, **settings)
    if app.json:
        emit(public_view(sub, show_secrets), True)
    else:
        show(app, [sub], show_secrets=False)


@subscriptions.command("list")
@click.option("--client", "client_id", help="Only this client's subscriptions.")
@click.option(
    "--show-secrets",
    is_flag=True,
    help="With --json: include each signing secret (handle the output as a secret).",
)
@json_option
@pass_app
def list_(app: AppContext, client_id: str | None, show_secrets: bool) -> None:
    """List subscriptions, all or one client's. Secrets are never shown in the table.

    \b
    Examples:
      pgmsg subscriptions list
      pgmsg subscriptions list --client webhook-server
      pgmsg subscriptions list --client webhook-server --json --show-secrets

    --show-secrets needs a role that may read secrets (not pgmsg_admin: an
    administrator sees a secret once, from add or rotate-secret).
    """
    if show_secrets and not app.json:
        raise click.UsageError("--show-secrets only applies to --json output; tables never show secrets")
    # Secrets are read only when asked for: administrators may list subscriptions but
    # not read their secrets (the superuser, the dispatcher and the owning client may).
    show(
        app,
        app.client().subscriptions(client_id, with_secrets=show_secrets),
        show_secrets,
        empty="no subscriptions",
    )


@subscriptions.command()
@click.argument("client_id")
@click.option("--id", "subscription_id", type=int, help="Pause only this subscription of the client.")
@json_option
@pass_app
def pause(app: AppContext, client_id: str, subscription_id: int | None) -> None:
    """Stop fanning new messages out to CLIENT_ID (its subscriptions stay, inactive).

    Deliveries already made are kept; resume to receive new messages again.

    \b
    Examples:
      pgmsg subscriptions pause webhook-server
      pgmsg subscriptions pause webhook-server --id 12
    """
    client = app.client()
    require_client(client, client_id)
    ids = client.pause_subscriptions(client_id, subscription_id)
    emit(
        {"client_id": client_id, "paused": ids}
        if app.json
        else f"paused {len(ids)} subscription(s) of {client_id!r}: {', '.join(map(str, ids))}",
        app.json,
    )


@subscriptions.command()
@click.argument("client_id")
@click.option("--id", "subscription_id", type=int, help="Resume only this subscription of the client.")
@json_option
@pass_app
def resume(app: AppContext, client_id: str, subscription_id: int | None) -> None:
    """Activate CLIENT_ID's subscriptions again (also after a 410 Gone switched one off).

    \b
    Examples:
      pgmsg subscriptions resume webhook-server
      pgmsg subscriptions resume webhook-server --id 12
    """
    client = app.client()
    require_client(client, client_id)
    ids = client.resume_subscriptions(client_id, subscription_id)
    emit(
        {"client_id": client_id, "resumed": ids}
        if app.json
        else f"resumed {len(ids)} subscription(s) of {client_id!r}: {', '.join(map(str, ids))}",
        app.json,
    )


@subscriptions.command()
@click.argument("client_id")
@yes_option
@json_option
@pass_app
def remove(app: AppContext, client_id: str, yes: bool) -> None:
    """Delete every subscription of CLIENT_ID (asks first). Its open deliveries end as cancelled; all stay, for the audit trail.

    \b
    Examples:
      pgmsg subscriptions remove old-service
      pgmsg subscriptions remove old-service --yes
    """
    counts = require_client(app.client(), client_id)
    confirm(
        f"Delete the {counts['total']} subscription(s) of {client_id!r}? It receives no further messages.",
        yes,
    )
    removed = app.client().remove_subscriptions(client_id)
    emit(
        {"client_id": client_id, "removed": removed}
        if app.json
        else f"removed {removed} subscription(s) of {client_id!r}",
        app.json,
    )


@subscriptions.command("rotate-secret")
@click.argument("subscription_id", type=int)
@click.option(
    "--overlap-hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="How long the old secret still signs too (both signatures are sent).",
)
@json_option
@pass_app
def rotate_secret(app: AppContext, subscription_id: int, overlap_hours: float) -> None:
    """Give http subscription SUBSCRIPTION_ID a new signing secret and print it.

    During the overlap every webhook carries signatures with both secrets, so
    the receiver can switch to the new one without refusing deliveries.

    \b
    Examples:
      pgmsg subscriptions rotate-secret 12
      pgmsg subscriptions rotate-secret 12 --overlap-hours 1
    """
    secret = app.client().rotate_secret(subscription_id, overlap_seconds=round(overlap_hours * 3600))
    emit(
        {
            "subscription_id": subscription_id,
            "signing_secret": secret,
            "previous_secret_valid_for_seconds": round(overlap_hours * 3600),
        }
        if app.json
        else secret,
        app.json,
    )


@subscriptions.command("test")
@click.argument("subscription_id", type=int)
@json_option
@pass_app
def send_test(app: AppContext, subscription_id: int) -> None:
    """Send a signed test event to http subscription SUBSCRIPTION_ID and show the answer.

    The request is built like a real delivery (Standard Webhooks signature,
    allowlist check, the subscription's timeout); the body is an event of
    type pgmsg.test with id 0. Exits 1 unless the endpoint answers 2xx.

    \b
    Examples:
      pgmsg subscriptions test 12
      pgmsg subscriptions test 12 --json
    """
    result = send_test_event(app.client(), subscription_id)
    if app.json:
        emit({**dataclasses.asdict(result), "ok": result.ok}, True)
    else:
        outcome = f"HTTP {result.status}" if result.status is not None else f"no answer ({result.error})"
        click.echo(f"POST {result.url} -> {outcome} in {format_seconds(result.duration_ms / 1000)}")
        click.echo(f"webhook-id: {result.webhook_id}")
        if result.response:
            click.echo(f"response: {' '.join(result.response.split())}")
    if not result.ok:
        raise CommandError(
            f"subscription {subscription_id}: the endpoint did not accept the test event "
            f"({f'HTTP {result.status}' if result.status is not None else result.error})"
        )
