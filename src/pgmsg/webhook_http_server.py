"""The HTTP side of the webhook receiver (pgmsg.webhook_receiver): a small threading server.

It speaks just enough HTTP/1.1 for webhooks, strictly: a request head read by
hand (http.server hands headers to the email package, half the receiver's CPU
per webhook in bench "6. HTTP push"), no Transfer-Encoding, one Content-Length,
bodies up to the receiver's limit, keep-alive, and answers written in one piece.
What to answer a POST is the receiver's decision (``receiver.handle``,
``receiver.reject``); GET /healthz answers 200.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from pgmsg.errors import InvalidInput

# The receiver's logger: one log for the sample receiver, HTTP and decisions alike.
logger = logging.getLogger("pgmsg.webhook_receiver")


class Decider(Protocol):
    """What the server asks about each request (pgmsg.webhook_receiver.WebhookReceiver)."""

    max_body_bytes: int

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]: ...

    def reject(
        self, status: int, reason: str, headers: dict[str, str], **fields: Any
    ) -> tuple[int, dict[str, Any]]: ...


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5: a dispatcher opening its connections
    # at once (16 by default) overflowed it, and each dropped connection attempt was
    # retried by the client's kernel a second later.
    request_queue_size = 128
    # Lets a restarted receiver take its fixed port back while old sockets sit in TIME_WAIT.
    allow_reuse_address = True
    receiver: Decider

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


class Handler(BaseHTTPRequestHandler):
    server: Server
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

    def do_POST(self) -> None:
        receiver = self.server.receiver
        headers: dict[str, str] = self.headers  # type: ignore[assignment]
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            self._refuse_unread(*receiver.reject(411, "Content-Length header is required", headers))
            return
        # At most 18 digits: int() refuses over 4,300, and nothing near that is a size.
        length = (
            int(raw_length) if raw_length.isdigit() and raw_length.isascii() and len(raw_length) <= 18 else -1
        )
        if length < 0:
            self._refuse_unread(*receiver.reject(400, "invalid Content-Length header", headers))
            return
        if length > receiver.max_body_bytes:
            reason = f"body larger than {receiver.max_body_bytes} bytes"
            self._refuse_unread(*receiver.reject(413, reason, headers))
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

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"error": "not found; POST webhooks, GET /healthz"})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        """The whole answer in one write (see wbufsize), built here rather than header by header."""
        data = json.dumps(payload).encode()
        self.log_request(status, len(data))
        phrase = self.responses.get(status, ("",))[0]
        head = (
            f"{self.protocol_version} {status} {phrase}\r\n"
            f"Server: {self.server_version}\r\nDate: {_http_date()}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            + ("Connection: close\r\n" if self.close_connection else "")
            + "\r\n"
        )
        self.wfile.write(head.encode("latin-1") + data)

    def log_message(self, format: str, *args: Any) -> None:
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


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server context for the certificate chain and key (PEM files), or None for plain HTTP."""
    if not cert and not key:
        return None
    if not cert:
        raise InvalidInput("a TLS key was given without its certificate: give both, or neither")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(
            f"cannot load the TLS certificate {cert!r}" + (f" and key {key!r}" if key else "") + f": {exc}"
        ) from exc
    return context


def _log(level: int, msg: str, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})
