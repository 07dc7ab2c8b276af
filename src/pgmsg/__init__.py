"""pgmsg: event messaging on PostgreSQL.

A row inserted into ``messages`` is fanned out by triggers to every matching
subscription (async, HTTP push or NOTIFY); ``message_delivery`` tracks each
delivery. :class:`pgmsg.client.Client` is the one client the services, the
operator CLI and the tests share.
"""

from __future__ import annotations

from pgmsg.client import Acked, Client, ConsumeResult, Delivery, Listener, Notification, Subscription
from pgmsg.errors import ConnectionFailed, InvalidInput, LeaseLost, NotFound, PgmsgError

__all__ = [
    "Acked",
    "Client",
    "ConnectionFailed",
    "ConsumeResult",
    "Delivery",
    "InvalidInput",
    "LeaseLost",
    "Listener",
    "NotFound",
    "Notification",
    "PgmsgError",
    "Subscription",
]
