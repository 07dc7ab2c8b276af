"""A sample webhook receiver that verifies Standard Webhooks signatures.

It shows what a pgmsg HTTP subscriber should do: refuse anything unsigned, badly
signed or outside the time tolerance (401), and treat deliveries idempotently by
``webhook-id``, since a push that times out is retried and may arrive twice.

Run it with ``PGMSG_WEBHOOK_SECRETS="whsec_... [whsec_...]" python -m pgmsg.webhook_receiver``.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from pgmsg import logs, signing
from pgmsg.logs import JsonFormatter  # noqa: F401  (re-exported for callers)
from pgmsg.errors import InvalidInput

logger = logging.getLogger("pgmsg.webhook_receiver")

#: Environment variable with the accepted secrets, space-separated (newest first).
SECRETS_VARIABLE = "PGMSG_WEBHOOK_SECRETS"


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send this module's log to ``stream`` (stderr) as JSON lines; idempotent."""
    logs.configure_logging(logger, level, stream)


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
        self.tls = _tls_context(tls_cert, tls_key)
        self.tolerance_seconds = tolerance_seconds
        self.on_event = on_event
        self.accepted: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.counters: dict[str, int] = {"accepted": 0, "duplicate": 0, "rejected": 0, "failed": 0}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where to POST webhooks (the bound port once started)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/webhook"

    def start(self) -> WebhookReceiver:
        """Bind and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), _Handler)
        self._server.receiver = self
        if self.tls is not None:
            # The handshake is left to each connection's thread (_Handler.setup), so a
            # client that stalls in it holds up only its own connection.
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True,
                                                       do_handshake_on_connect=False)
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
            webhook_id = signing.verify(
                self.secrets, headers, body, tolerance_seconds=self.tolerance_seconds
            )
        except signing.WebhookVerificationError as exc:
            return self._reject(401, str(exc), headers)
        try:
            event = json.loads(body)
        except ValueError:
            return self._reject(400, "body is not valid JSON", headers, webhook_id=webhook_id)
        if not isinstance(event, dict):
            return self._reject(400, "body is not a JSON object", headers, webhook_id=webhook_id)

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

    def _reject(
        self, status: int, reason: str, headers: dict[str, str], **fields: Any
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.rejected.append({"reason": reason, "headers": dict(headers)})
            self.counters["rejected"] += 1
            _trim(self.rejected, self.history_limit)
        _log(logging.WARNING, "webhook rejected", status=status, reason=reason, **fields)
        return status, {"error": reason}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5: a dispatcher opening its connections
    # at once (16 by default) overflowed it, and each dropped connection attempt was
    # retried by the client's kernel a second later.
    request_queue_size = 128
    # Lets a restarted receiver take its fixed port back while old sockets sit in TIME_WAIT.
    allow_reuse_address = True
    receiver: WebhookReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed TLS handshake or a reset connection is the client's problem: one log
        # line, not socketserver's traceback on stderr. Anything else is ours: logged whole.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # ssl.SSLError and TimeoutError included
            _log(logging.WARNING, "connection failed", client=client_address[0], error=str(exc)[:200])
        else:
            logger.exception("request failed", extra={"fields": {"client": client_address[0]}})


class _Headers(dict):
    """Request headers as sent (first of each name), read case-insensitively with get()."""

    def __init__(self) -> None:
        super().__init__()
        self._lower: dict[str, str] = {}

    def add(self, name: str, value: str) -> bool:
        """Keep the first value of a name; False when the name was already there."""
        key = name.lower()
        if key in self._lower:
            return False
        self._lower[key] = value
        self[name] = value
        return True

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._lower.get(name.lower(), default)


#: Limits on a request's head, as http.server's (lines of 64 KiB, 100 headers).
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
#: A header name (RFC 9110 token), and what may not appear in a request line or header value.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "pgmsg-webhook-receiver"
    # Keep-alive: a dispatcher reuses its connections instead of opening one
    # (and this server a thread) per webhook. Every answer has a Content-Length.
    protocol_version = "HTTP/1.1"
    # The answer is buffered and sent in one write when the request is done
    # (handle_one_request flushes), not headers and body apart: half the
    # segments, and the client is woken once per answer.
    wbufsize = -1
    # Without Nagle's algorithm a write is not held back for the client's
    # delayed ACK on a kept-alive connection.
    disable_nagle_algorithm = True
    # A client that stops sending must not hold a thread forever.
    timeout = 10

    def handle_expect_100(self) -> bool:
        # The answer buffer (wbufsize) would hold the 100 back until the final answer,
        # and the client waits for it before sending the body.
        answered = super().handle_expect_100()
        self.wfile.flush()
        return answered

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # under the timeout set by super().setup()

    def parse_request(self) -> bool:
        """Read the request line and headers; False (answered) when they are malformed.

        Replaces http.server's, which hands the headers to the email package:
        that parser was half of this server's CPU per webhook (bench "6. HTTP
        push"). Only HTTP/1.0 and 1.1 are spoken; a body must come with one
        Content-Length (do_POST), so Transfer-Encoding is refused here rather
        than left for two parties to read differently.
        """
        self.command = None  # type: ignore[assignment]
        self.request_version = "HTTP/1.0"  # for error answers sent before the version is known
        self.close_connection = True
        if self.raw_requestline in (b"\r\n", b"\n"):  # RFC 9112 2.2: an empty line before it is ignored
            self.raw_requestline = self.rfile.readline(MAX_HEADER_LINE + 1)
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        # Split on spaces only, and no control characters anywhere in the head: str.split()
        # and strip() also take \x0b, \x0c, \x1c-\x1f, \x85 and \xa0 for blanks, which a
        # proxy in front would read differently.
        words = requestline.split(" ")
        if len(words) != 3 or _CONTROL.search(requestline):
            self.send_error(400, f"Bad request line {requestline[:100]!r}")
            return False
        command, path, version = words
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            if version.startswith("HTTP/"):
                self.send_error(505, f"HTTP version {version[:20]!r} is not supported; use HTTP/1.1")
            else:
                self.send_error(400, f"Bad request version {version[:20]!r}")
            return False
        self.command, self.request_version = command, version
        # As http.server does: '//host/x' must not read as a URL with a host.
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path

        headers = _Headers()
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                self.send_error(431, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            if line[:1] in (b" ", b"\t"):
                self.send_error(400, "Folded header lines are not accepted")
                return False
            name, colon, value = str(line, "iso-8859-1").rstrip("\r\n").partition(":")
            if not colon or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
                self.send_error(400, f"Malformed header line {line[:100]!r}")
                return False
            if not headers.add(name, value.strip(" \t")) and name.lower() == "content-length":
                self.send_error(400, "More than one Content-Length header")
                return False
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        if headers.get("Transfer-Encoding") is not None:
            self.send_error(501, "Transfer-Encoding is not supported; send a Content-Length")
            return False

        connection = headers.get("Connection", "").lower()
        if version == "HTTP/1.1":
            self.close_connection = "close" in connection
        else:
            self.close_connection = "keep-alive" not in connection
        if command != "POST" and headers.get("Content-Length", "0") != "0":
            # Only a POST's body is read: any other body would be taken for the next request.
            self.close_connection = True
        if version == "HTTP/1.1" and headers.get("Expect", "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        receiver = self.server.receiver
        headers: dict[str, str] = self.headers  # type: ignore[assignment]
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            self._refuse_unread(*receiver._reject(411, "Content-Length header is required", headers))
            return
        # At most 18 digits: int() refuses over 4,300, and nothing near that is a size.
        length = int(raw_length) if raw_length.isdigit() and raw_length.isascii() and len(raw_length) <= 18 else -1
        if length < 0:
            self._refuse_unread(*receiver._reject(400, "invalid Content-Length header", headers))
            return
        if length > receiver.max_body_bytes:
            reason = f"body larger than {receiver.max_body_bytes} bytes"
            self._refuse_unread(*receiver._reject(413, reason, headers))
            return
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-body
            self.close_connection = True
            return
        self._answer(*receiver.handle(headers, body))

    def _refuse_unread(self, status: int, payload: dict[str, Any]) -> None:
        # The body was not read, so the stream is not at the next request: close it.
        self.close_connection = True
        self._answer(status, payload)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] == "/healthz":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"error": "not found; POST webhooks, GET /healthz"})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        """The whole answer in one write (see wbufsize), built here rather than header by header."""
        data = json.dumps(payload).encode()
        self.log_request(status, len(data))
        phrase = self.responses.get(status, ("",))[0]
        head = (f"{self.protocol_version} {status} {phrase}\r\n"
                f"Server: {self.server_version}\r\nDate: {_http_date()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                + ("Connection: close\r\n" if self.close_connection else "") + "\r\n")
        self.wfile.write(head.encode("latin-1") + data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base class name)
        # Replaces http.server's unstructured stderr lines with the module's JSON log.
        if logger.isEnabledFor(logging.DEBUG):
            _log(logging.DEBUG, format % args, client=self.client_address[0])


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header's value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


def _tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server context for the certificate chain and key (PEM files), or None for plain HTTP."""
    if not cert and not key:
        return None
    if not cert:
        raise InvalidInput("a TLS key was given without its certificate: give both, or neither")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot load the TLS certificate {cert!r}"
                           + (f" and key {key!r}" if key else "") + f": {exc}") from exc
    return context


def _log(level: int, msg: str, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})


def _trim(records: list[dict[str, Any]], limit: int) -> None:
    # Trimmed in batches of a tenth, so the list is not shifted on every append.
    if len(records) > limit + limit // 10:
        del records[: len(records) - limit]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sample receiver until interrupted; secrets come from the environment."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--tolerance", type=int, default=signing.DEFAULT_TOLERANCE_SECONDS)
    parser.add_argument("--tls-cert", help="serve https with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM), unless it is in --tls-cert")
    args = parser.parse_args(argv)
    configure_logging()
    # Secrets are read from the environment because command lines are visible to every user.
    secrets = os.environ.get(SECRETS_VARIABLE, "").split()
    if not secrets:
        parser.error(f"set {SECRETS_VARIABLE} to one or more space-separated webhook secrets")
    try:
        receiver = WebhookReceiver(secrets, args.host, args.port, tolerance_seconds=args.tolerance,
                                   tls_cert=args.tls_cert, tls_key=args.tls_key)
    except InvalidInput as exc:
        parser.error(str(exc))
    stopping = threading.Event()
    # Service managers stop processes with SIGTERM; treat it like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    receiver.start()
    try:
        stopping.wait()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
