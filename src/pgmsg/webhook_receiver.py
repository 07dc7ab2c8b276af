"""A webhook receiver that verifies Standard Webhooks signatures: what a pgmsg HTTP subscriber should do.

It refuses anything unsigned, badly signed or outside the time tolerance (401),
and treats deliveries idempotently by ``webhook-id``, since a push that times
out is retried and may arrive twice. The decisions are here (:meth:`WebhookReceiver.handle`,
usable without HTTP); the HTTP server they run in is pgmsg.webhook_http_server.
The sample programs services/webhook_receiver.py (pgmsg-webhook-receiver) and
services/webhook_server.py (the deployed webhook-server) run it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from pgmsg import signing
from pgmsg.errors import InvalidInput
from pgmsg.webhook_http_server import Handler, Server, tls_context

logger = logging.getLogger("pgmsg.webhook_receiver")

#: Environment variable with the accepted secrets, space-separated (newest first).
SECRETS_VARIABLE = "PGMSG_WEBHOOK_SECRETS"


class WebhookReceiver:
    """An HTTP server on ``host:port`` that accepts verified webhooks once each."""

    #: How many webhook ids (and accepted/rejected records) are remembered.
    history_limit = 100_000
    #: Larger bodies are refused unread, so a client cannot make us buffer without bound.
    max_body_bytes = 1 << 20

    def __init__(
        self,
        secrets: Sequence[str],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tolerance_seconds: int = signing.DEFAULT_TOLERANCE_SECONDS,
        on_event: Callable[[str, dict], None] | None = None,
        on_reject: Callable[[int, str], None] | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        if isinstance(secrets, str):
            raise InvalidInput("webhook secrets must be a list of secrets, not a single string")
        self.secrets = list(secrets)
        # A bad secret is a configuration error: fail now, not on the first request.
        for secret in self.secrets:
            signing.secret_key(secret)
        if not self.secrets:
            raise InvalidInput("at least one webhook secret is needed")
        self.host = host
        self.port = port
        self.tls = tls_context(tls_cert, tls_key)
        self.tolerance_seconds = tolerance_seconds
        self.on_event = on_event
        #: Called with the status and reason of every refused request (e.g. to count them).
        self.on_reject = on_reject
        self.accepted: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.counters: dict[str, int] = {"accepted": 0, "duplicate": 0, "rejected": 0, "failed": 0}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where to POST webhooks (the bound port once started)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/webhook"

    def start(self) -> WebhookReceiver:
        """Bind and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._server = Server((self.host, self.port), Handler)
        self._server.receiver = self
        if self.tls is not None:
            # The handshake is left to each connection's thread (Handler.setup), so a
            # client that stalls in it holds up only its own connection.
            self._server.socket = self.tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self._server.server_address[1]
        # A short poll interval keeps stop() prompt; the default waits up to half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"webhook-receiver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        _log(logging.INFO, "webhook receiver started", url=self.url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        _log(logging.INFO, "webhook receiver stopped", url=self.url)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Decide on one POST: the status and JSON answer. Separate from HTTP for reuse."""
        try:
            webhook_id = signing.verify(self.secrets, headers, body, tolerance_seconds=self.tolerance_seconds)
        except signing.WebhookVerificationError as exc:
            return self.reject(401, str(exc), headers)
        try:
            event = json.loads(body)
        except ValueError:
            return self.reject(400, "body is not valid JSON", headers, webhook_id=webhook_id)
        if not isinstance(event, dict):
            return self.reject(400, "body is not a JSON object", headers, webhook_id=webhook_id)

        # Claimed under the lock so that two concurrent deliveries of one id
        # cannot both reach on_event.
        with self._lock:
            duplicate = webhook_id in self._seen
            if duplicate:
                self._seen.move_to_end(webhook_id)
                self.counters["duplicate"] += 1
            else:
                self._seen[webhook_id] = None
                while len(self._seen) > self.history_limit:
                    self._seen.popitem(last=False)
        if duplicate:
            _log(logging.INFO, "duplicate webhook ignored", webhook_id=webhook_id)
            return 200, {"duplicate": True}

        try:
            if self.on_event is not None:
                self.on_event(webhook_id, event)
        except Exception:
            # Forget the id so the sender's retry is processed rather than called a duplicate.
            with self._lock:
                self._seen.pop(webhook_id, None)
                self.counters["failed"] += 1
            logger.exception("on_event failed", extra={"fields": {"webhook_id": webhook_id}})
            return 500, {"error": "event handler failed"}

        with self._lock:
            self.accepted.append({"webhook_id": webhook_id, "body": event})
            self.counters["accepted"] += 1
            _trim(self.accepted, self.history_limit)
        _log(logging.INFO, "webhook accepted", webhook_id=webhook_id)
        return 200, {"ok": True}

    def reject(
        self, status: int, reason: str, headers: dict[str, str], **fields: Any
    ) -> tuple[int, dict[str, Any]]:
        """Refuse a request: remembered, logged, and passed to on_reject; returns the answer."""
        with self._lock:
            self.rejected.append({"reason": reason, "headers": dict(headers)})
            self.counters["rejected"] += 1
            _trim(self.rejected, self.history_limit)
        _log(logging.WARNING, "webhook rejected", status=status, reason=reason, **fields)
        if self.on_reject is not None:
            self.on_reject(status, reason)
        return status, {"error": reason}


def _log(level: int, msg: str, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})


def _trim(records: list[dict[str, Any]], limit: int) -> None:
    # Trimmed in batches of a tenth, so the list is not shifted on every append.
    if len(records) > limit + limit // 10:
        del records[: len(records) - limit]
