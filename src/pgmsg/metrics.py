"""Prometheus metrics of the pgmsg processes (names from the seed document)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

published_messages = Counter(
    "pgmsg_published_messages_total", "Messages published to PostgreSQL", ["message_type", "namespace"]
)
processed_messages = Counter(
    "pgmsg_processed_messages_total", "Messages processed by a subscriber", ["client_id", "delivery_mode"]
)
processing_seconds = Histogram("pgmsg_processing_seconds", "Message processing duration", ["client_id"])
webhooks_rejected = Counter(
    "pgmsg_webhooks_rejected_total", "Webhook requests refused by the receiver", ["client_id", "reason"]
)
deferred_fanned_out = Counter(
    "pgmsg_deferred_fanned_out_total", "Deferred messages moved into messages and fanned out (pgmsg-fan-out)"
)
webhooks_pushed = Counter(
    "pgmsg_webhooks_pushed_total", "Webhook requests sent by the dispatcher, by outcome", ["outcome"]
)


def serve(port: int, address: str = "127.0.0.1") -> None:
    """Expose /metrics on address:port from a daemon thread."""
    start_http_server(port, addr=address)
