"""Webhook POSTs on one asyncio event loop, over kept-alive connections.

The dispatcher used to make each request on a thread of its own with urllib3.
In the bench ("6. HTTP push") that cost about 1.4 ms of CPU per webhook in the
dispatcher: urllib3 and http.client build and parse every request in many
small Python steps, and sixteen threads handed the GIL around. Here every
request of a dispatcher runs on one event loop; a request is written in one
piece and the answer is parsed with a handful of reads.

What the dispatcher relies on:

- The connection goes to the address the SSRF check approved, never to a new
  lookup of the name (DNS rebinding); the name is sent as Host and, for https,
  as SNI, and the certificate is verified against it.
- ``timeout`` bounds the whole request: connecting, sending, and reading the
  answer.
- Only the first ``MAX_KEPT_BODY`` bytes of an answer are kept (they end up in
  error messages); a connection whose answer was not read to the end is closed
  instead of being reused.
- Anything that yields no HTTP answer raises :class:`NoAnswer`, whose message
  names the cause (``ConnectionRefusedError: ...``, ``TimeoutError: ...``).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Bytes of an answer's body that are kept.
MAX_KEPT_BODY = 64 * 1024
#: Longest status or header line, and most header lines, accepted in an answer.
MAX_LINE = 16 * 1024
MAX_HEADERS = 200
#: Idle connections kept per target (scheme, address, port, host name).
MAX_IDLE_PER_TARGET = 64


class NoAnswer(Exception):
    """The request got no (complete, well-formed) HTTP answer."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes  # at most MAX_KEPT_BODY bytes


@dataclass(frozen=True)
class Target:
    """Where a URL's request goes: ``address`` is the checked IP address to connect to."""

    scheme: str
    address: str
    port: int
    host: str  # for SNI and certificate verification
    host_header: str  # the URL's host[:port]
    path: str  # path and query

    @classmethod
    def of(cls, url: str, address: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise NoAnswer(f"ValueError: only http and https URLs can be pushed to, not {parts.scheme!r}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if any(c <= " " or c == "\x7f" for c in path):
            raise NoAnswer("ValueError: the URL's path has spaces or control characters; percent-encode them")
        return cls(
            parts.scheme,
            address,
            parts.port or (443 if parts.scheme == "https" else 80),
            parts.hostname or "",
            parts.netloc.rsplit("@", 1)[-1],
            path,
        )


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The system's trusted CAs, plus those in ``ca_file`` (for endpoints behind a private CA)."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def _request_bytes(target: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}", f"Content-Length: {len(body)}"]
    for name, value in headers.items():
        if any(c in name for c in ":\r\n ") or "\r" in value or "\n" in value:
            raise NoAnswer(
                f"ValueError: header {name!r} cannot be sent: it contains a line break or separator"
            )
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace") + body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()

    async def _line(self) -> bytes:
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            raise NoAnswer(f"ProtocolError: an answer line longer than {MAX_LINE} bytes") from exc
        except asyncio.IncompleteReadError as exc:
            raise NoAnswer(
                "RemoteDisconnected: the connection closed before the answer was complete"
            ) from exc

    async def _head(self) -> tuple[str, int, dict[str, str]]:
        status_line = (await self._line()).decode("latin-1").rstrip("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit() or rest[3:4] not in ("", " "):
            raise NoAnswer(f"ProtocolError: not an HTTP/1 status line: {status_line[:100]!r}")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = (await self._line()).decode("latin-1").rstrip("\r\n")
            if not line:
                return version, int(code), headers
            name, colon, value = line.partition(":")
            if not colon:
                raise NoAnswer(f"ProtocolError: not a header line: {line[:100]!r}")
            headers[name.strip().lower()] = value.strip()
        raise NoAnswer(f"ProtocolError: more than {MAX_HEADERS} header lines")

    async def _exactly(self, n: int) -> bytes:
        try:
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise NoAnswer(
                "RemoteDisconnected: the connection closed before the answer was complete"
            ) from exc

    async def _chunked(self) -> tuple[bytes, bool]:
        kept = bytearray()
        while True:
            size_text = (await self._line()).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise NoAnswer(f"ProtocolError: bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while (await self._line()).strip():  # trailer fields
                    pass
                return bytes(kept), True
            if len(kept) + size > MAX_KEPT_BODY:  # not read further: the connection is not reused
                kept += await self.reader.read(MAX_KEPT_BODY - len(kept))
                return bytes(kept), False
            kept += await self._exactly(size)
            await self._exactly(2)  # the chunk's CRLF

    async def exchange(self, request: bytes) -> tuple[Answer, bool]:
        """Send one request, read its answer; also whether the connection can carry another."""
        self.writer.write(request)
        await self.writer.drain()
        version, status, headers = await self._head()
        while 100 <= status < 200:  # interim answers (100 Continue, 103 Early Hints)
            version, status, headers = await self._head()
        reusable = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body, complete = await self._chunked()
            reusable = reusable and complete
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise NoAnswer(
                    f"ProtocolError: bad Content-Length {headers['content-length'][:20]!r}"
                ) from None
            if length < 0:
                raise NoAnswer(f"ProtocolError: bad Content-Length {length}")
            if length <= MAX_KEPT_BODY:
                body = await self._exactly(length)
            else:
                body, reusable = await self._exactly(MAX_KEPT_BODY), False
        else:  # delimited by the end of the connection
            body = await self.reader.read(MAX_KEPT_BODY)
            reusable = False
        return Answer(status, headers, body), reusable


class WebhookClient:
    """POSTs from one event loop; connections are kept alive per target.

    Only used from the loop it first runs on (not thread-safe, like asyncio).
    """

    def __init__(self, ca_file: str | None = None) -> None:
        self._tls = tls_context(ca_file)
        self._idle: dict[tuple[str, str, int, str], list[_Connection]] = {}

    async def _connect(self, target: Target) -> _Connection:
        https = target.scheme == "https"
        reader, writer = await asyncio.open_connection(
            target.address,
            target.port,
            limit=MAX_LINE,
            ssl=self._tls if https else None,
            server_hostname=target.host if https else None,
        )
        return _Connection(reader, writer)

    def _reused(self, key: tuple[str, str, int, str]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            # Closed by the server while idle (its keep-alive timeout): the loop
            # has already seen the end of the stream.
            if conn.reader.at_eof() or conn.writer.is_closing():
                conn.close()
                continue
            return conn
        return None

    async def post(
        self, url: str, address: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Answer:
        """POST ``body`` to ``url`` through ``address``; NoAnswer when there is no HTTP answer."""
        target = Target.of(url, address)
        request = _request_bytes(target, headers, body)
        key = (target.scheme, target.address, target.port, target.host)
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(timeout):
                conn = self._reused(key) or await self._connect(target)
                answer, reusable = await conn.exchange(request)
        except NoAnswer:
            if conn is not None:
                conn.close()
            raise
        except TimeoutError:
            if conn is not None:
                conn.close()
            raise NoAnswer(f"TimeoutError: no complete answer within {timeout:g} s") from None
        except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError
            if conn is not None:
                conn.close()
            if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno:
                # asyncio says "Connect call failed"; the cause is in the errno.
                raise NoAnswer(
                    f"{type(exc).__name__}: {os.strerror(exc.errno)} ({target.address}:{target.port})"
                ) from exc
            raise NoAnswer(f"{type(exc).__name__}: {exc}") from exc
        idle = self._idle.setdefault(key, [])
        if reusable and len(idle) < MAX_IDLE_PER_TARGET:
            idle.append(conn)
        else:
            conn.close()
        return answer

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def post_once(
    url: str,
    address: str,
    headers: Mapping[str, str],
    body: bytes,
    timeout: float,
    ca_file: str | None = None,
) -> Answer:
    """One POST from synchronous code (its own event loop and connection)."""

    async def once() -> Answer:
        client = WebhookClient(ca_file)
        try:
            return await client.post(url, address, headers, body, timeout)
        finally:
            client.close()

    return asyncio.run(once())
