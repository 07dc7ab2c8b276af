"""The pgmsg client: publish, subscribe, consume, listen, inspect and operate.

Every statement the library, the operator CLI and the services send is here, named, in
the module of its capability; nothing the caller passes is spliced into SQL text.

- :mod:`~pgmsg.client.connection`: the pool and connection settings (:class:`ClientCore`)
- :mod:`~pgmsg.client.publish`: publish, publish_many, deferred fan-out
- :mod:`~pgmsg.client.subscriptions`: subscribe, list, pause, resume, remove, secrets
- :mod:`~pgmsg.client.consume`: claim, ack, nack, consume, run_consumer
- :mod:`~pgmsg.client.listener`: NOTIFY (:class:`Listener`)
- :mod:`~pgmsg.client.inspection`: messages, deliveries, attempts, stats, dead letters
- :mod:`~pgmsg.client.operations`: redrive, replay, re-send, archive and purge
- :mod:`~pgmsg.client.monitoring`: readings for health checks
- :mod:`~pgmsg.client.codec` and :mod:`~pgmsg.client.models`: JSON, input checks, result types
"""

from __future__ import annotations

from pgmsg.client.codec import (
    _check_bool,
    _check_int,
    _check_text,
    _json_text,
    _jsonb,
    _payload_text,
    decode_json,
    parse_payload,
)
from pgmsg.client.codec import configure as _configure
from pgmsg.client.connection import (
    CHECK_AFTER_IDLE_SECONDS,
    DEFAULT_CONNECT_TIMEOUT,
    RECONNECT_PAUSE_SECONDS,
    ClientCore,
    is_connection_error,
    with_connect_timeout,
)
from pgmsg.client.consume import ConsumeMixin
from pgmsg.client.inspection import InspectionMixin
from pgmsg.client.listener import Listener, ListenMixin
from pgmsg.client.models import (
    DELIVERY_MODES,
    MAX_KEY_LENGTH,
    MAX_PATTERN_LENGTH,
    Acked,
    ConsumeResult,
    Delivery,
    DeliveryRef,
    Notification,
    Subscription,
)
from pgmsg.client.monitoring import MonitoringMixin
from pgmsg.client.operations import OperationsMixin
from pgmsg.client.publish import PublishMixin
from pgmsg.client.subscriptions import SUBSCRIPTION_COLUMNS, SubscriptionsMixin


class Client(
    PublishMixin,
    SubscriptionsMixin,
    ConsumeMixin,
    InspectionMixin,
    OperationsMixin,
    MonitoringMixin,
    ListenMixin,
    ClientCore,
):
    """A pool of connections to the messaging database.

    ``conninfo`` is a libpq connection string or URI; by default it comes from
    PGMSG_DSN or the PG* variables (see :mod:`pgmsg.config`). Its methods come
    from one mixin per capability (see the modules of :mod:`pgmsg.client`).
    """


__all__ = [
    "CHECK_AFTER_IDLE_SECONDS",
    "DEFAULT_CONNECT_TIMEOUT",
    "DELIVERY_MODES",
    "MAX_KEY_LENGTH",
    "MAX_PATTERN_LENGTH",
    "RECONNECT_PAUSE_SECONDS",
    "SUBSCRIPTION_COLUMNS",
    "Acked",
    "Client",
    "ClientCore",
    "ConsumeResult",
    "Delivery",
    "DeliveryRef",
    "Listener",
    "Notification",
    "Subscription",
    "_check_bool",
    "_check_int",
    "_check_text",
    "_configure",
    "_json_text",
    "_jsonb",
    "_payload_text",
    "decode_json",
    "is_connection_error",
    "parse_payload",
    "with_connect_timeout",
]
