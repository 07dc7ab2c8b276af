"""Standard Webhooks signing and verification, without a network or database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from pgmsg.errors import InvalidInput, PgmsgError
from pgmsg.signing import (
    WebhookVerificationError,
    generate_secret,
    secret_key,
    sign,
    signature_headers,
    verify,
)
from tests.support.signatures import oracle_headers, refused_by_both, verified_by_both

NOW = 1_700_000_000
BODY = b'{"type":"order.created","data":{"order":42}}'
# Fixed secrets so a failure is reproducible.
OLD = "whsec_" + base64.b64encode(bytes(range(32))).decode()
NEW = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()


def _headers(secrets: list[str], msg_id: str = "msg_1", body: bytes = BODY, ts: int = NOW) -> dict[str, str]:
    return signature_headers(secrets, msg_id, body, timestamp=ts)


def test_generated_secret_has_prefix_and_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_")
    assert len(secret_key(first)) == 32
    assert first != second


def test_round_trip_returns_the_webhook_id() -> None:
    headers = _headers([NEW], msg_id="msg_abc")
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-timestamp"] == str(NOW)
    assert verify([NEW], headers, BODY, now=NOW) == "msg_abc"


def test_timestamp_defaults_to_now() -> None:
    headers = signature_headers([NEW], "msg_now", BODY)
    assert verify([NEW], headers, BODY) == "msg_now"


def test_known_answer_computed_independently() -> None:
    key = bytes(range(32))
    content = b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330." + b'{"test": 2432232314}'
    expected = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()

    got = sign(OLD, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')

    assert got == expected
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", got)


def test_prefix_is_optional_in_secrets() -> None:
    bare = OLD.removeprefix("whsec_")
    assert sign(bare, "m", 1, b"x") == sign(OLD, "m", 1, b"x")


def test_header_names_are_case_insensitive() -> None:
    headers = {k.title(): v for k, v in _headers([NEW]).items()}
    assert "Webhook-Signature" in headers
    assert verify([NEW], headers, BODY, now=NOW) == "msg_1"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda h, b: (h, b + b" "), id="body"),
        pytest.param(lambda h, b: ({**h, "webhook-id": "msg_2"}, b), id="id"),
        pytest.param(lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b), id="timestamp"),
    ],
)
def test_tampering_is_rejected(change) -> None:  # type: ignore[no-untyped-def]
    headers, body = change(_headers([NEW]), BODY)
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify([NEW], headers, body, now=NOW)


def test_stale_timestamp_is_rejected_even_if_correctly_signed() -> None:
    headers = _headers([NEW], ts=NOW - 301)
    with pytest.raises(WebhookVerificationError, match="stale"):
        verify([NEW], headers, BODY, now=NOW)
    # At the edge of the window it still passes.
    assert verify([NEW], _headers([NEW], ts=NOW - 300), BODY, now=NOW) == "msg_1"


def test_future_timestamp_is_rejected() -> None:
    headers = _headers([NEW], ts=NOW + 301)
    with pytest.raises(WebhookVerificationError, match="in the future"):
        verify([NEW], headers, BODY, now=NOW)


def test_tolerance_is_configurable() -> None:
    headers = _headers([NEW], ts=NOW - 60)
    with pytest.raises(WebhookVerificationError, match="stale"):
        verify([NEW], headers, BODY, now=NOW, tolerance_seconds=30)


@pytest.mark.parametrize("value", ["abc", "1.5", "", " ", "+1700000000", "1_700_000_000", "١٧"])
def test_non_integer_timestamp_is_rejected(value: str) -> None:
    headers = {**_headers([NEW]), "webhook-timestamp": value}
    message = "missing webhook-timestamp" if not value.strip() else "not an integer"
    with pytest.raises(WebhookVerificationError, match=message):
        verify([NEW], headers, BODY, now=NOW)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_rejected(name: str) -> None:
    headers = _headers([NEW])
    del headers[name]
    with pytest.raises(WebhookVerificationError, match=f"missing {name} header"):
        verify([NEW], headers, BODY, now=NOW)


def test_unsigned_request_is_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="missing webhook-id header"):
        verify([NEW], {"content-type": "application/json"}, BODY, now=NOW)


def test_verification_error_is_a_pgmsg_error() -> None:
    assert issubclass(WebhookVerificationError, PgmsgError)


def test_rotation_both_signatures_sent_and_either_secret_verifies() -> None:
    headers = _headers([OLD, NEW])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify([OLD], headers, BODY, now=NOW) == "msg_1"
    assert verify([NEW], headers, BODY, now=NOW) == "msg_1"


def test_rotation_old_signature_accepted_only_while_old_secret_is_configured() -> None:
    headers = _headers([OLD])
    assert verify([NEW, OLD], headers, BODY, now=NOW) == "msg_1"
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify([NEW], headers, BODY, now=NOW)


def test_only_the_second_signature_matches() -> None:
    wrong = sign(OLD, "msg_1", NOW, BODY)
    right = sign(NEW, "msg_1", NOW, BODY)
    headers = {**_headers([NEW]), "webhook-signature": f"{wrong} {right}"}
    assert verify([NEW], headers, BODY, now=NOW) == "msg_1"


def test_signatures_of_other_versions_are_ignored() -> None:
    right = sign(NEW, "msg_1", NOW, BODY)
    digest = right.split(",", 1)[1]
    headers = {**_headers([NEW]), "webhook-signature": f"v2,{digest} v1a,{digest}"}
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify([NEW], headers, BODY, now=NOW)
    headers["webhook-signature"] += f" {right}"
    assert verify([NEW], headers, BODY, now=NOW) == "msg_1"


def test_garbage_signature_entries_do_not_crash() -> None:
    headers = {**_headers([NEW]), "webhook-signature": "v1 , v1,é€ ,,, v1,"}
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify([NEW], headers, BODY, now=NOW)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_not base64!", "not valid base64"),
        ("whsec_abc", "not valid base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "23 bytes; at least 24"),
        ("", "0 bytes; at least 24"),
    ],
)
def test_bad_secrets_raise_invalid_input(secret: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        secret_key(secret)
    with pytest.raises(InvalidInput):
        sign(secret, "m", 1, b"")
    with pytest.raises(InvalidInput):
        verify([NEW, secret], _headers([NEW]), BODY, now=NOW)


def test_24_byte_secret_is_enough() -> None:
    assert len(secret_key(base64.b64encode(b"k" * 24).decode())) == 24


def test_secret_lists_must_be_lists_and_not_empty() -> None:
    with pytest.raises(InvalidInput, match="not a single string"):
        signature_headers(NEW, "m", BODY)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="at least one"):
        verify([], _headers([NEW]), BODY, now=NOW)


@pytest.mark.parametrize("msg_id", ["", "msg 1", "msg\r\nx-injected: 1"])
def test_ids_that_would_break_headers_are_refused(msg_id: str) -> None:
    with pytest.raises(InvalidInput, match="webhook id"):
        signature_headers([NEW], msg_id, BODY)


# The independent oracle (standardwebhooks): it checks timestamps against the real clock.


def test_the_oracle_signs_what_pgmsg_signs() -> None:
    when = datetime.fromtimestamp(1614265330, tz=UTC)
    body = b'{"test": 2432232314}'
    for secret in (OLD, NEW, OLD.removeprefix("whsec_")):
        assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == Webhook(secret).sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek", when, body
        )


@pytest.mark.parametrize("secrets", [[NEW], [OLD, NEW], [OLD.removeprefix("whsec_")]])
def test_what_pgmsg_signs_the_oracle_verifies(secrets: list[str]) -> None:
    body = '{"type":"order.created","data":{"name":"Zoë"}}'.encode()
    headers = signature_headers(secrets, "msg_oracle", body)
    assert verified_by_both(secrets, headers, body) == "msg_oracle"
    for secret in secrets:  # every secret of a rotation signs on its own
        Webhook(secret).verify(body, headers, json_parse=False)


def test_what_the_oracle_signs_pgmsg_verifies() -> None:
    headers = oracle_headers([OLD, NEW], "msg_from_oracle", BODY, int(time.time()))
    assert verify([NEW], headers, BODY) == verify([OLD], headers, BODY) == "msg_from_oracle"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda h, b: (h, b + b" "), id="body"),
        pytest.param(lambda h, b: (h, b.replace(b"42", b"43")), id="body-value"),
        pytest.param(lambda h, b: ({**h, "webhook-id": "msg_2"}, b), id="id"),
        pytest.param(
            lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b), id="timestamp"
        ),
        pytest.param(
            lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) - 301)}, b),
            id="timestamp-backdated",
        ),
    ],
)
def test_tampering_is_refused_by_pgmsg_and_the_oracle(change) -> None:  # type: ignore[no-untyped-def]
    headers, body = change(signature_headers([NEW], "msg_1", BODY), BODY)
    refused_by_both([NEW], headers, body)


@pytest.mark.parametrize("offset", [-301, 301])
def test_correctly_signed_but_stale_or_future_is_refused_by_both(offset: int) -> None:
    headers = signature_headers([NEW], "msg_1", BODY, timestamp=int(time.time()) + offset)
    refused_by_both([NEW], headers, BODY)


def test_a_stranger_s_secret_is_refused_by_both() -> None:
    stranger = "whsec_" + base64.b64encode(b"s" * 32).decode()
    refused_by_both([NEW, OLD], signature_headers([stranger], "msg_1", BODY), BODY)
