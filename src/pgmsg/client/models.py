"""What the client hands back: subscriptions, claimed deliveries, notifications, results."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DELIVERY_MODES = ("async", "http", "notify")

#: The ordering key's length, as the messages_message_key_valid constraint allows.
MAX_KEY_LENGTH = 255
#: Longest message_type or namespace filter of a subscription: the longest type or namespace
#: a message can have (longer filters would also outgrow the subscriptions index).
MAX_PATTERN_LENGTH = 255


@dataclass(frozen=True)
class Subscription:
    """A row of ``subscriptions``."""

    id: int
    client_id: str
    delivery_mode: str
    message_type: str
    namespace: str
    webhook_url: str | None
    notify_channel: str | None
    http_timeout_ms: int
    active: bool
    push_mode: str = "dispatcher"
    max_attempts: int = 10
    lease_seconds: int = 30
    payload_filter: dict[str, Any] | None = None
    ordered: bool = False
    durable: bool = False
    signing_secret: str | None = None
    deactivated_reason: str | None = None
    notify_payload: bool = False
    #: http: most webhooks in flight at once; None: the dispatcher's per_subscription.
    max_in_flight: int | None = None


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery handed to a consumer, with its message.

    :meth:`Client.claim` fills the fields by position: its column list follows this order.
    """

    id: int
    message_id: int
    client_id: str
    message_type: str
    namespace: str
    payload: Any
    created_at: datetime
    attempts: int
    delivery_mode: str = "async"
    message_key: str | None = None
    lease_expires_at: datetime | None = None
    #: The claim's lease: :meth:`Client.ack` and :meth:`Client.nack` name it, and apply only
    #: while the delivery is still held under it.
    lease_token: uuid.UUID | None = None


#: What :meth:`Client.ack` and :meth:`Client.nack` take: a claimed :class:`Delivery`, or an
#: ``(id, lease token)`` pair (token ``None`` for a durable NOTIFY delivery a listener received).
DeliveryRef = Delivery | tuple[int, "uuid.UUID | str | None"]


class Acked(int):
    """How many deliveries :meth:`Client.ack` acknowledged, with the ids it did not (sorted):
    leases that lapsed and passed on, deliveries already completed, released or cancelled."""

    not_acked: tuple[int, ...]

    def __new__(cls, acked: int, not_acked: Iterable[int] = ()) -> Acked:
        self = super().__new__(cls, acked)
        self.not_acked = tuple(not_acked)
        return self


@dataclass(frozen=True)
class Notification:
    """A NOTIFY received by :meth:`Client.listen`; ``payload`` is the decoded JSON envelope.

    ``fetched`` is True when the notification was a reference (delivery and message id)
    and the envelope was read from the database as the listener's role.
    """

    channel: str
    payload: Any
    pid: int
    fetched: bool = False


@dataclass(frozen=True)
class ConsumeResult:
    """What one :meth:`Client.consume` call did."""

    delivered: list[int]
    failed: list[int]
    #: Handled, but not acknowledged or given back: the lease ran out and the delivery passed
    #: on (claimed again, released or cancelled). Its next holder delivers it again.
    stale: list[int] = dataclasses.field(default_factory=list)
