"""pgmsg: event messaging on PostgreSQL.

A row inserted into ``messages`` is fanned out by triggers to every matching
subscription (async, HTTP push or NOTIFY); ``message_delivery`` tracks each
delivery. :class:`pgmsg.client.Client` is the one client the services, the
operator CLI and the tests share.
"""

from __future__ import annotations

from pgmsg.client import Client, ConsumeResult, Delivery, Listener, Notification, Subscription
from pgmsg.errors import ConnectionFailed, InvalidInput, NotFound, PgmsgError

__all__ = [
    "Client",
    "ConnectionFailed",
    "ConsumeResult",
    "Delivery",
    "InvalidInput",
    "Listener",
    "NotFound",
    "Notification",
    "PgmsgError",
    "Subscription",
]
