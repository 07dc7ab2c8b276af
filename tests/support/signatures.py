"""Two independent judges of a Standard Webhooks signature: pgmsg's own (``pgmsg.signing``) and
the reference library ``standardwebhooks``. A request the tests call signed must pass both; a
tampered or stale one must fail both, so a bug shared by pgmsg's signer and its verifier cannot
hide behind a round trip.

standardwebhooks judges timestamps against the real clock with a fixed 5-minute tolerance:
requests checked here carry real, recent timestamps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as OracleRefused

from pgmsg.signing import WebhookVerificationError, verify


def oracle_headers(secrets: Sequence[str], msg_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The three signature headers as standardwebhooks writes them (one signature per secret)."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets),
    }


def verified_by_both(
    secrets: Sequence[str], headers: Mapping[str, str], body: bytes, *, tolerance_seconds: int = 300
) -> str:
    """The webhook id, once pgmsg and standardwebhooks (with one of ``secrets``) both accept."""
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = verify(list(secrets), lowered, body, tolerance_seconds=tolerance_seconds)
    accepting = [s for s in secrets if _oracle_accepts(s, lowered, body)]
    assert accepting, "standardwebhooks refused a request pgmsg accepted"
    return webhook_id


def refused_by_both(secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> None:
    """pgmsg refuses the request, and standardwebhooks refuses it with each of ``secrets``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    with pytest.raises(WebhookVerificationError):
        verify(list(secrets), lowered, body)
    for secret in secrets:
        with pytest.raises(OracleRefused):
            Webhook(secret).verify(body, lowered, json_parse=False)


def _oracle_accepts(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, dict(headers), json_parse=False)
    except OracleRefused:
        return False
    return True
