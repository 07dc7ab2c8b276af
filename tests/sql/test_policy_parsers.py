"""The database and the dispatcher read the webhook allowlist and signing secrets the same way.

The database checks an entry (pgmsg_set_webhook_allowlist) or a secret (the subscription
trigger) when it is written; the dispatcher parses them again (pgmsg.ssrf.Allowlist.parse,
pgmsg.signing.secret_key) when it sends. An entry or secret one accepts and the other refuses
stops deliveries long after it was written, so both are fed one corpus here and must give the
same verdict and the same meaning for each item.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgmsg.errors import InvalidInput
from pgmsg.signing import secret_key
from pgmsg.ssrf import Allowlist, BlockedTarget, check_url

ALLOWLIST_CORPUS = [
    # networks, valid
    "127.0.0.1/32",
    "127.0.0.1",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "255.255.255.255",
    "::1",
    "::1/128",
    "::/0",
    "fd00::/8",
    "2001:DB8::/32",
    "fe80::/10",
    "::1.2.3.4",
    # dots that are not one whole IPv4 address at the end: PostgreSQL's inet alone took them
    "::.0",
    "1::.0",
    "::1.2.3",
    "::1.2.3.4.5",
    "1.2.3.4::",
    " 10.0.0.0/8 ",
    "\t127.0.0.1\n",
    # networks, invalid: host bits, short forms, leading zeros, odd prefixes, mapped IPv6
    "10.0.0.1/8",
    "10/8",
    "127.1",
    "10.1/16",
    "1.2.3",
    "1.2.3.4.5",
    "1.2.3.4.",
    "2130706433",
    "0x7f000001",
    "0x7f.0.0.1",
    "0177.0.0.1",
    "010.0.0.0/8",
    "10.0.0.0/08",
    "10.0.0.0/33",
    "10.0.0.0/-1",
    "10.0.0.0/",
    "/8",
    "10.0.0.0/255.0.0.0",
    "10.0.0.0/0.255.255.255",
    "300.1.2.3",
    "::ffff:a00:0/104",
    "::ffff:127.0.0.1",
    "::ffff:0:0/96",
    "1::2::3",
    "::1/129",
    "fe80::1%eth0",
    "::1/0128",
    "12345::",
    "[::1]",
    "1:2:3:4:5:6:7:8:9",
    ":::",
    # names, valid
    "localhost",
    "LOCALHOST",
    "Hooks.Example.com.",
    "hooks.example.com",
    "*.internal.example",
    "*.Internal.Example.",
    "a_b.example",
    "xn--bcher-kva.example",
    "a" * 63 + ".example",
    "foo.123abc",
    "1a.example",
    # names, invalid
    "",
    "   ",
    "*",
    "*.",
    "hooks.*.example",
    "**.example",
    "*example.com",
    "not a host!",
    "-a.example",
    "a-.example",
    "a..example",
    "example.com..",
    ".example.com",
    "a" * 64 + ".example",
    ".".join(["a" * 60] * 5),
    "bücher.example",
    "ex ample.com",
    "foo.123",
    "foo.0x1f",
    "*.1.2.3.4",
    "http://example.com",
    "example.com:8080",
    "example.com/path",
    "user@example.com",
    "\u00a0localhost",
    "localhost\x1c",
]


def sql_verdict(db: psycopg.Connection[dict[str, Any]], entry: str) -> tuple[str, Any] | str:
    """(kind, meaning) when pgmsg_set_webhook_allowlist takes the entry, else the error message."""
    try:
        with db.transaction(force_rollback=True):
            db.execute("SELECT pgmsg_set_webhook_allowlist(%s)", ([entry],))
            row = db.execute(
                "SELECT network::text AS network, host_pattern FROM pgmsg_webhook_allowlist"
            ).fetchone()
    except psycopg.errors.CheckViolation as exc:
        assert exc.diag.message_hint, f"{entry!r} was refused without a hint"
        return str(exc.diag.message_primary)
    assert row is not None
    if row["network"] is not None:
        return ("network", ipaddress.ip_network(row["network"]))
    return ("host", row["host_pattern"])


def python_verdict(entry: str) -> tuple[str, Any] | str:
    try:
        allowlist = Allowlist.parse([entry], [("169.254.0.0/16", "link-local")])
    except InvalidInput as exc:
        return str(exc)
    if allowlist.networks:
        return ("network", allowlist.networks[0])
    return ("host", allowlist.hosts[0])


def assert_agree(db: psycopg.Connection[dict[str, Any]], entry: str) -> None:
    in_sql, in_python = sql_verdict(db, entry), python_verdict(entry)
    if isinstance(in_sql, str) or isinstance(in_python, str):
        assert isinstance(in_sql, str) and isinstance(in_python, str), (
            f"{entry!r}: SQL says {in_sql!r}, Python says {in_python!r}"
        )
    else:
        assert in_sql == in_python, f"{entry!r}: SQL reads {in_sql}, Python reads {in_python}"


@pytest.mark.parametrize("entry", ALLOWLIST_CORPUS)
def test_allowlist_entry_has_one_meaning(db: psycopg.Connection[dict[str, Any]], entry: str) -> None:
    assert_agree(db, entry)


_ENTRY_ALPHABET = st.sampled_from([*list("0123456789abcdefxAF.:/*-_ "), "10", "127", "255", "ffff", "::"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_ENTRY_ALPHABET, max_size=12).map("".join))
def test_allowlist_parsers_agree_on_generated_entries(
    db: psycopg.Connection[dict[str, Any]], entry: str
) -> None:
    assert_agree(db, entry)


def test_bad_allowlist_entry_is_refused_with_a_reason_and_changes_nothing(
    db: psycopg.Connection[dict[str, Any]],
) -> None:
    before = db.execute("SELECT array_agg(entry ORDER BY entry) AS e FROM pgmsg_webhook_allowlist").fetchone()
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        db.execute("SELECT pgmsg_set_webhook_allowlist(%s)", (["127.0.0.1/32", "10/8"],))
    assert "10/8" in str(caught.value.diag.message_primary)
    assert caught.value.diag.message_hint
    after = db.execute("SELECT array_agg(entry ORDER BY entry) AS e FROM pgmsg_webhook_allowlist").fetchone()
    assert after == before


# --- signing secrets ----------------------------------------------------------------------------

_KEY = bytes(range(40))


def _b64(n: int) -> str:
    return base64.b64encode(_KEY[:n]).decode()


SECRET_CORPUS = [
    "whsec_" + _b64(24),
    "whsec_" + _b64(32),
    "whsec_" + _b64(33),
    "whsec_" + _b64(34),
    "whsec_" + _b64(40),
    "whsec_" + _b64(32).rstrip("="),
    "whsec_" + _b64(34).rstrip("="),
    "whsec_" + _b64(33) + "=",
    "whsec_" + _b64(32)[:-1],
    "whsec_" + _b64(32) + "==",
    "whsec_" + _b64(23),
    "whsec_" + _b64(23) + "AA",
    "whsec_" + _b64(34)[:-2] + "=A",
    "whsec_" + _b64(24) + "A",
    "whsec_" + _b64(24) + "AB=",
    "whsec_" + _b64(32).replace("+", "-").replace("/", "_"),
    "whsec_" + _b64(32) + " ",
    "whsec_ " + _b64(32),
    "WHSEC_" + _b64(32),
    _b64(32),
    "whsec_",
    "hunter2",
    "whsec_" + "=" * 44,
]


def sql_secret_verdict(db: psycopg.Connection[dict[str, Any]], run_id: str, secret: str) -> bytes | str:
    """The key the database signs with when it stores the secret, else its error message."""
    try:
        with db.transaction(force_rollback=True):
            row = db.execute(
                "INSERT INTO subscriptions (client_id, delivery_mode, webhook_url, signing_secret)"
                " VALUES (%s, 'http', 'http://127.0.0.1:9/x', %s)"
                " RETURNING decode(substr(signing_secret, 7), 'base64') AS key",
                (run_id + "-secret", secret),
            ).fetchone()
    except psycopg.errors.CheckViolation as exc:
        assert exc.diag.message_hint, f"{secret!r} was refused without a hint"
        return str(exc.diag.message_primary)
    assert row is not None
    return bytes(row["key"])


@pytest.mark.parametrize("secret", SECRET_CORPUS)
def test_signing_secret_the_database_takes_is_one_the_signer_can_use(
    db: psycopg.Connection[dict[str, Any]], run_id: str, secret: str
) -> None:
    in_sql = sql_secret_verdict(db, run_id, secret)
    try:
        in_python: bytes | str = secret_key(secret)
    except InvalidInput as exc:
        in_python = str(exc)
    if isinstance(in_sql, bytes):
        # Stored secrets are signed by the dispatcher: it must read the same key.
        assert in_python == in_sql, f"{secret!r}: database key {in_sql!r}, signer says {in_python!r}"
    elif secret.startswith("whsec_") and secret == secret.strip():
        # The signer also takes a bare base64 key and surrounding spaces (for receivers);
        # with the prefix written exactly, a refusal must be shared.
        assert isinstance(in_python, str), f"{secret!r}: database refuses ({in_sql}), signer accepts"


def test_the_database_and_the_dispatcher_refuse_the_blocked_networks_with_one_message(
    db: psycopg.Connection[dict[str, Any]],
) -> None:
    """pgmsg_blocked_networks is the one list: the URL check in the database (the in-transaction
    push, a subscription write) and the dispatcher's send-time check refuse each of its networks,
    even under a catch-all allowlist, with the same words."""
    blocked = [
        (r["network"], r["reason"])
        for r in db.execute(
            "SELECT network::text AS network, reason FROM pgmsg_blocked_networks ORDER BY network"
        ).fetchall()
    ]
    assert len(blocked) >= 9
    before = [r["entry"] for r in db.execute("SELECT entry FROM pgmsg_webhook_allowlist").fetchall()]
    allow_all = Allowlist.parse(["0.0.0.0/0", "::/0"], blocked)
    try:
        db.execute("SELECT pgmsg_set_webhook_allowlist(%s)", (["0.0.0.0/0", "::/0"],))
        for network, reason in blocked:
            address = ipaddress.ip_network(network)[-1]
            host = f"[{address}]" if address.version == 6 else str(address)
            url = f"http://{host}/hook"
            in_sql = db.execute("SELECT pgmsg_webhook_url_problem(%s) AS why", (url,)).fetchone()["why"]
            with pytest.raises(BlockedTarget) as in_python:
                check_url(url, allow_all)
            assert in_sql == str(in_python.value) == f"webhook target {address} refused: {reason}"
    finally:
        db.execute("SELECT pgmsg_set_webhook_allowlist(%s)", (before,))
