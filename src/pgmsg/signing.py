"""Standard Webhooks signing and verification (https://www.standardwebhooks.com).

A webhook carries three headers: ``webhook-id``, ``webhook-timestamp`` (unix
seconds) and ``webhook-signature``, a space-separated list of ``v1,<base64>``
entries. Each entry is an HMAC-SHA256 over ``"{id}.{timestamp}.{body}"`` with one
secret; sending one entry per secret lets a receiver rotate secrets without
dropping deliveries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from secrets import token_bytes

from pgmsg.errors import InvalidInput, PgmsgError

SECRET_PREFIX = "whsec_"
#: Shorter keys make HMAC guessable; the Standard Webhooks spec asks for 24 to 64 bytes.
MIN_SECRET_BYTES = 24
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300

# Strict ASCII digits: int() would also take "+1", " 1", "1_0" and Unicode digits,
# which a sender following the spec never produces.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")
# Padded standard base64, the form pgmsg_signing_secret_problem (migration 018) accepts.
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# The id is put into a header, so anything that could split or fold headers is refused.
_UNSAFE_ID_RE = re.compile(r"[\x00-\x20\x7f]")


class WebhookVerificationError(PgmsgError):
    """A received webhook is unsigned, badly signed, or outside the time tolerance."""


def generate_secret() -> str:
    """A new random signing secret, ``whsec_`` followed by 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key a secret stands for; the ``whsec_`` prefix is optional."""
    text = secret.strip()
    if text.startswith(SECRET_PREFIX):
        text = text[len(SECRET_PREFIX) :]
    try:
        # b64decode(validate=True) still ignores excess padding ("...g="); the database
        # refuses that (pgmsg_signing_secret_problem), so both read one grammar.
        if not _BASE64.fullmatch(text):
            raise ValueError("not padded base64")
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(
            "webhook secret is not valid base64 (expected 'whsec_' followed by base64, "
            "as generate_secret() returns)"
        ) from exc
    if len(key) < MIN_SECRET_BYTES:
        raise InvalidInput(
            f"webhook secret decodes to {len(key)} bytes; at least {MIN_SECRET_BYTES} are "
            "needed, use generate_secret() for a new one"
        )
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message with one secret."""
    content = f"{msg_id}.{timestamp}.".encode() + bytes(body)
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION}," + base64.b64encode(digest).decode("ascii")


def signature_headers(
    secrets: Sequence[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers, with one signature per secret."""
    secret_list = _secret_list(secrets)
    if not msg_id or _UNSAFE_ID_RE.search(msg_id):
        raise InvalidInput(
            f"webhook id {msg_id!r} must be non-empty and contain no spaces or control characters"
        )
    ts = int(time.time()) if timestamp is None else int(timestamp)
    signatures = " ".join(sign(secret, msg_id, ts, body) for secret in secret_list)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signatures,
    }


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> str:
    """Check a received webhook against any of ``secrets``; return its webhook-id.

    Raises WebhookVerificationError saying why the webhook is refused, and
    InvalidInput when a configured secret is itself malformed.
    """
    secret_list = _secret_list(secrets)
    # Decode every key up front so a broken configuration fails loudly rather than
    # looking like a forged request.
    keys = [secret_key(secret) for secret in secret_list]

    msg_id = _header(headers, "webhook-id")
    raw_timestamp = _header(headers, "webhook-timestamp")
    raw_signatures = _header(headers, "webhook-signature")

    if not _TIMESTAMP_RE.fullmatch(raw_timestamp.strip()):
        raise WebhookVerificationError(
            f"invalid webhook-timestamp header {raw_timestamp[:40]!r}: not an integer (expected unix seconds)"
        )
    timestamp = int(raw_timestamp.strip())
    current = int(time.time()) if now is None else int(now)
    # The window bounds how long a captured request can be replayed.
    if current - timestamp > tolerance_seconds:
        raise WebhookVerificationError(
            f"webhook-timestamp is stale: {current - timestamp}s old, tolerance is {tolerance_seconds}s"
        )
    if timestamp - current > tolerance_seconds:
        raise WebhookVerificationError(
            f"webhook-timestamp is in the future: {timestamp - current}s ahead, "
            f"tolerance is {tolerance_seconds}s"
        )

    content = f"{msg_id}.{timestamp}.".encode() + bytes(body)
    expected = [base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()) for key in keys]
    offered = [
        value.encode("utf-8", "replace")
        for version, _, value in (entry.partition(",") for entry in raw_signatures.split())
        if version == SIGNATURE_VERSION
    ]
    # Every pair is compared, without stopping early, so timing reveals nothing about
    # which secret or entry came close.
    matched = False
    for want in expected:
        for got in offered:
            matched |= hmac.compare_digest(want, got)
    if not matched:
        raise WebhookVerificationError(
            "no valid signature: none of the v1 signatures in webhook-signature matches any configured secret"
        )
    return msg_id


def _secret_list(secrets: Sequence[str]) -> list[str]:
    # A bare string is a Sequence too; signing with each of its characters would be a silent bug.
    if isinstance(secrets, str):
        raise InvalidInput("webhook secrets must be a list of secrets, not a single string")
    secret_list = list(secrets)
    if not secret_list:
        raise InvalidInput("at least one webhook secret is needed")
    return secret_list


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value looked up case-insensitively, as HTTP header names are."""
    for key, value in headers.items():
        if key.lower() == name and value is not None and str(value).strip():
            return str(value)
    raise WebhookVerificationError(f"missing {name} header")
