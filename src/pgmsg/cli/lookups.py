"""Checks that what the operator named exists, so commands fail with a clear NotFound
instead of quietly doing nothing."""

from __future__ import annotations

from typing import Any

from pgmsg.client import Client
from pgmsg.errors import NotFound


def require_client(client: Client, client_id: str) -> dict[str, int]:
    """How many subscriptions (and active ones) ``client_id`` has; NotFound when none."""
    counts = client.client_subscription_counts(client_id)
    if counts["total"] == 0:
        raise NotFound(
            f"no subscription for client {client_id!r}; "
            "see `pgmsg subscriptions list` for the clients there are"
        )
    return counts


def require_delivery(client: Client, delivery_id: int) -> dict[str, Any]:
    """One row of message_delivery; NotFound when there is none with that id."""
    return client.delivery(delivery_id)
