"""SSRF protection in the database, and least-privilege roles with row-level security."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgmsg import Client, InvalidInput


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.5/hook", "webhook target 10.0.0.5 refused: not in the webhook allowlist"),
        ("http://192.168.1.1/hook", "not in the webhook allowlist"),
        ("http://172.16.0.1/hook", "not in the webhook allowlist"),
        ("http://127.0.0.2:8080/hook", "webhook target 127.0.0.2 refused: not in the webhook allowlist"),
        ("http://169.254.169.254/latest/meta-data", "link-local / cloud metadata address"),
        ("http://[fe80::1]/hook", "link-local address"),
        ("http://[::ffff:169.254.169.254]/hook", "link-local / cloud metadata address"),
        ("http://[::ffff:10.0.0.1]/hook", "webhook target 10.0.0.1 refused"),
        ("http://[::1]/hook", "not in the webhook allowlist"),
        ("http://2130706433/hook", "numeric hosts must be written as a dotted quad"),
        ("http://0x7f000001/hook", "numeric hosts must be written as a dotted quad"),
        ("http://0177.0.0.1/hook", "numeric hosts must be written as a dotted quad"),
        ("http://127.1/hook", "numeric hosts must be written as a dotted quad"),
        ("http://metadata.google.internal/computeMetadata", "webhook host metadata.google.internal refused"),
        ("http://user:pw@127.0.0.1/hook", "must not carry credentials"),
    ],
)
def test_webhook_targets_outside_the_allowlist_are_refused(db: psycopg.Connection[Any], url: str, reason: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        db.execute("INSERT INTO subscriptions (client_id, delivery_mode, webhook_url) VALUES ('ssrf-probe', 'http', %s)",
                   (url,))
    assert reason in caught.value.diag.message_primary
    assert "allowlist" in caught.value.diag.message_hint


def test_update_cannot_bypass_the_allowlist(client: Client, db: psycopg.Connection[Any], run_id: str) -> None:
    sub = client.subscribe(run_id + "-h", "http", webhook_url="http://127.0.0.1:8080/ok")
    with pytest.raises(psycopg.errors.CheckViolation, match="link-local / cloud metadata"):
        db.execute("UPDATE subscriptions SET webhook_url = 'http://169.254.169.254/' WHERE id = %s", (sub.id,))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost:8080/hook", "https://127.0.0.1/x"])
def test_allowlisted_targets_are_accepted(client: Client, run_id: str, url: str) -> None:
    assert client.subscribe(run_id + "-ok", "http", webhook_url=url).webhook_url == url


def test_allowlist_entries_are_checked(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="invalid allowlist network"):
        db.execute("SELECT pgmsg_set_webhook_allowlist(ARRAY['10.0.0.1/8'])")
    with pytest.raises(psycopg.errors.CheckViolation, match="invalid allowlist entry"):
        db.execute("SELECT pgmsg_set_webhook_allowlist(ARRAY['not a host!'])")


def test_signing_secret_is_generated_and_validated(client: Client, run_id: str) -> None:
    sub = client.subscribe(run_id + "-sec", "http", webhook_url="http://127.0.0.1:8080/ok")
    assert sub.signing_secret is not None and sub.signing_secret.startswith("whsec_")
    with pytest.raises(InvalidInput, match="signing_secret must be whsec_"):
        client.subscribe(run_id + "-sec2", "http", webhook_url="http://127.0.0.1:8080/ok", signing_secret="hunter2")


# -- roles and row-level security ---------------------------------------------

def role_dsn(dsn: str, user: str, password: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params.update(user=user, password=password)
    return psycopg.conninfo.make_conninfo(**params)


@pytest.fixture
def login(dsn: str, inventory_vars: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Connect as one of the login roles the local inventory declares."""
    declared = {r["name"]: r["password"] for key in ("messaging_schema_publishers", "messaging_schema_clients",
                                                     "messaging_schema_dispatchers", "messaging_schema_admins")
                for r in inventory_vars.get(key, [])}
    opened: list[psycopg.Connection[Any]] = []

    def connect(name: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(role_dsn(dsn, name, declared[name]), autocommit=True, row_factory=dict_row)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def two_clients(client: Client, db: psycopg.Connection[Any], run_id: str) -> Iterator[int]:
    """A message delivered to the two probe clients (no running service consumes as them)."""
    mtype = run_id + ".rls"
    for cid in ("rls-probe-a", "rls-probe-b"):
        db.execute("INSERT INTO subscriptions (client_id, delivery_mode, message_type) VALUES (%s, 'async', %s)",
                   (cid, mtype))
    message_id = client.publish(mtype, {"secret": "for both"})
    yield message_id
    db.execute("DELETE FROM subscriptions WHERE message_type = %s", (mtype,))


def test_client_sees_and_updates_only_its_own_deliveries(login, two_clients: int) -> None:  # type: ignore[no-untyped-def]
    probe_a = login("rls_probe_a")
    rows = probe_a.execute("SELECT client_id FROM message_delivery WHERE message_id = %s", (two_clients,)).fetchall()
    assert [r["client_id"] for r in rows] == ["rls-probe-a"]
    updated = probe_a.execute("UPDATE message_delivery SET status = 'delivered' WHERE message_id = %s "
                                "AND client_id = 'rls-probe-b'", (two_clients,))
    assert updated.rowcount == 0
    assert probe_a.execute("SELECT * FROM pgmsg_claim('rls-probe-b', 10)").fetchall() == []
    [mine] = probe_a.execute("SELECT * FROM pgmsg_claim('rls-probe-a', 10)").fetchall()
    assert mine["payload"] == {"secret": "for both"}
    assert probe_a.execute("SELECT acked AS n FROM pgmsg_ack(%s, %s)",
                           ([mine["delivery_id"]], [mine["lease_token"]])).fetchone()["n"] == 1
    probe_b = login("rls_probe_b")
    [theirs] = probe_b.execute("SELECT status FROM message_delivery WHERE message_id = %s", (two_clients,)).fetchall()
    assert theirs["status"] == "pending"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        probe_b.execute("INSERT INTO messages (message_type) VALUES ('x.forged')")


def test_publisher_can_publish_but_not_read(login, two_clients: int, run_id: str) -> None:  # type: ignore[no-untyped-def]
    publisher = login("pgmsg_publisher_local")
    row = publisher.execute("INSERT INTO messages (message_type, payload) VALUES (%s, '{}') RETURNING id",
                            (run_id + ".pub",)).fetchone()
    assert row["id"] > two_clients
    for query in ("SELECT * FROM message_delivery", "SELECT payload FROM messages", "SELECT * FROM subscriptions",
                  "SELECT * FROM delivery_attempts"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            publisher.execute(query)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        publisher.execute("UPDATE message_delivery SET status = 'delivered'")


def test_admin_sees_everything_and_roles_cannot_change_the_allowlist(login, two_clients: int) -> None:  # type: ignore[no-untyped-def]
    admin = login("pgmsg_ops")
    rows = admin.execute("SELECT client_id FROM message_delivery WHERE message_id = %s ORDER BY client_id",
                         (two_clients,)).fetchall()
    assert [r["client_id"] for r in rows] == ["rls-probe-a", "rls-probe-b"]
    for name in ("pgmsg_ops", "rls_probe_a", "pgmsg_publisher_local"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            login(name).execute("SELECT pgmsg_set_webhook_allowlist(ARRAY['0.0.0.0/0'])")
