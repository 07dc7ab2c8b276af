"""NOTIFY and row-level security, from the side of the roles that should learn nothing.

PostgreSQL has no privilege on LISTEN (nor on NOTIFY): every role that can connect may
listen on any channel, and a subscription's channel is, by default, its client id. The
README promises that a default notification carries only the delivery id and the message
id, that the listener reads everything else through row-level security as its own role,
and that a subscription which opts in (notify_payload) sends its payload in the clear.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from pgmsg import Client, InvalidInput, NotFound
from tests.sql.test_security import login, role_dsn  # noqa: F401  (login is a fixture)

OWNER, OWNER_ROLE = "rls-probe-a", "rls_probe_a"
OTHER, OTHER_ROLE = "rls-probe-b", "rls_probe_b"
SECRET = {"card": "4111 1111 1111 1111", "note": "only rls-probe-a may read this"}


@pytest.fixture
def probe_subscriptions(db: psycopg.Connection[Any], run_id: str) -> Iterator[str]:
    """A notify subscription of each probe client on its default channel (its client id):
    rls-probe-a gets this test's run_id.notify.* messages, rls-probe-b its run_id.forb.*."""
    types = {OWNER: run_id + ".notify.*", OTHER: run_id + ".forb.*"}
    for cid, mtype in types.items():
        db.execute(
            "INSERT INTO subscriptions (client_id, delivery_mode, message_type) VALUES (%s, 'notify', %s)",
            (cid, mtype),
        )
    yield types[OWNER]
    db.execute("DELETE FROM subscriptions WHERE message_type = ANY (%s)", (list(types.values()),))


def raw_notifications(conn: psycopg.Connection[Any], count: int, timeout: float = 10.0) -> list[Any]:
    """The next ``count`` notifications of a plain LISTEN connection (as an attacker gets them)."""
    got = list(conn.notifies(timeout=timeout, stop_after=count))
    assert len(got) >= count, f"expected {count} notifications within {timeout} s, got {len(got)}"
    return got[:count]


@pytest.mark.parametrize("attacker", [OTHER_ROLE, "pgmsg_publisher_local"])
def test_another_role_listening_on_a_clients_channel_learns_only_the_ids(
    login, probe_subscriptions: str, client: Client, run_id: str, attacker: str
) -> None:  # type: ignore[no-untyped-def]
    spy = login(attacker)
    spy.execute(f'LISTEN "{OWNER}"')
    mtype = run_id + ".notify.payment.flagged"
    message_id = client.publish(mtype, SECRET, namespace="tenant-acme")
    [note] = raw_notifications(spy, 1)
    assert note.channel == OWNER
    [delivery] = [d for d in client.deliveries(message_id) if d["client_id"] == OWNER]
    # The README's promise: the delivery id and the message id, nothing else.
    assert json.loads(note.payload) == {"id": message_id, "delivery_id": delivery["id"]}
    for content in ("4111", "only rls-probe-a", "payment.flagged", "tenant-acme"):
        assert content not in note.payload


def test_the_owners_listener_reads_the_whole_envelope_through_rls(
    probe_subscriptions: str, client: Client, dsn: str, inventory_vars: dict[str, Any], run_id: str
) -> None:
    password = {r["name"]: r["password"] for r in inventory_vars["messaging_schema_clients"]}[OWNER_ROLE]
    mtype = run_id + ".notify.order.created"
    with Client(role_dsn(dsn, OWNER_ROLE, password), max_size=1) as owner, owner.listener(OWNER) as listener:
        # One transaction: the listener gets all three in one batch and reads them with one query.
        ids = client.publish_many([(mtype, {**SECRET, "i": i}, "shop") for i in range(3)])
        notes = list(listener.notifications(timeout=10, limit=3))
    deliveries = {
        d["message_id"]: d["id"] for i in ids for d in client.deliveries(i) if d["client_id"] == OWNER
    }
    assert [n.payload["id"] for n in notes] == ids
    for i, (note, message_id) in enumerate(zip(notes, ids, strict=False)):
        envelope = dict(note.payload)
        # The same instant; PostgreSQL writes the fraction without trailing zeros (.45207 where
        # Python's isoformat writes .452070), so the text is compared as a time.
        assert datetime.fromisoformat(envelope.pop("created_at")) == client.message(message_id)["created_at"]
        assert envelope == {
            "id": message_id,
            "delivery_id": deliveries[message_id],
            "type": mtype,
            "namespace": "shop",
            "payload": {**SECRET, "i": i},
        }
        assert note.fetched


def test_a_client_cannot_read_another_clients_message_through_the_listener(
    login, probe_subscriptions: str, client: Client, dsn: str, inventory_vars: dict[str, Any], run_id: str
) -> None:  # type: ignore[no-untyped-def]
    password = {r["name"]: r["password"] for r in inventory_vars["messaging_schema_clients"]}[OTHER_ROLE]
    with (
        Client(role_dsn(dsn, OTHER_ROLE, password), max_size=1) as other,
        other.listener(OWNER, OTHER) as listener,
    ):
        # rls-probe-a's message first, then one for rls-probe-b only (published in that order,
        # so the listener has seen the first when it yields the second).
        secret_id = client.publish(run_id + ".notify.payment.flagged", SECRET)
        own_id = client.publish(run_id + ".forb.note", {"for": OTHER})
        note = listener.next(timeout=10)
        assert note is not None
        assert note.payload["id"] == own_id, "the listener of rls-probe-b yielded rls-probe-a's message"
        assert note.payload["payload"] == {"for": OTHER}
        with pytest.raises(NotFound):
            other.message(secret_id)
    # Not through SQL either: the reference names rows rls_probe_b may not read.
    spy = login(OTHER_ROLE)
    assert spy.execute("SELECT * FROM messages WHERE id = %s", (secret_id,)).fetchall() == []
    assert spy.execute("SELECT * FROM message_delivery WHERE message_id = %s", (secret_id,)).fetchall() == []


def test_opt_in_sends_the_payload_in_the_notification_for_every_role_to_read(
    login, client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:  # type: ignore[no-untyped-def]
    mtype = run_id + ".notify.public"
    sub = client.subscribe(OWNER, "notify", message_type=mtype, notify_payload=True)
    try:
        assert sub.notify_payload is True and sub.notify_channel == OWNER
        spy = login(OTHER_ROLE)
        spy.execute(f'LISTEN "{OWNER}"')
        message_id = client.publish(mtype, {"price": 3})
        [note] = raw_notifications(spy, 1)
        envelope = json.loads(note.payload)
        assert envelope["id"] == message_id and envelope["payload"] == {"price": 3}
        assert envelope["type"] == mtype
    finally:
        db.execute("DELETE FROM subscriptions WHERE message_type = %s", (mtype,))


def test_opt_in_is_checked_and_declared_like_the_other_columns(
    client: Client, db: psycopg.Connection[Any], run_id: str
) -> None:
    with pytest.raises(InvalidInput, match="notify_payload applies to notify subscriptions only") as raised:
        client.subscribe(run_id + "-a", "async", notify_payload=True)
    assert "async and http subscriptions receive the payload" in str(raised.value)  # the hint
    assert client.subscriptions(run_id + "-a") == []
    # The Ansible role declares subscriptions through pgmsg_ensure_subscription.
    spec = {"client_id": run_id + "-n", "delivery_mode": "notify", "message_type": run_id + ".*"}
    ensure = "SELECT pgmsg_ensure_subscription(%s::jsonb) AS changed"
    assert db.execute(ensure, (json.dumps(spec),)).fetchone()["changed"] is True
    [sub] = client.subscriptions(run_id + "-n")
    assert sub.notify_payload is False
    assert db.execute(ensure, (json.dumps({**spec, "notify_payload": True}),)).fetchone()["changed"] is True
    assert db.execute(ensure, (json.dumps({**spec, "notify_payload": True}),)).fetchone()["changed"] is False
    [sub] = client.subscriptions(run_id + "-n")
    assert sub.notify_payload is True
    assert db.execute(ensure, (json.dumps(spec),)).fetchone()["changed"] is True  # back to the default
    [sub] = client.subscriptions(run_id + "-n")
    assert sub.notify_payload is False


def test_the_sample_listener_service_reads_and_counts_as_its_client_role(
    probe_subscriptions: str,
    client: Client,
    dsn: str,
    inventory_vars: dict[str, Any],
    run_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pgmsg-listener (dashboard-service, admin-portal) logs in as a client role: it gets the
    message type through RLS and its processed-messages metric moves per notification."""
    import logging
    import threading

    from pgmsg import metrics
    from pgmsg.runtime import ServiceSettings
    from services import listener as service
    from tests.support.waiting import wait_until

    password = {r["name"]: r["password"] for r in inventory_vars["messaging_schema_clients"]}[OWNER_ROLE]
    config = ServiceSettings(
        client_id=OWNER,
        conninfo=role_dsn(dsn, OWNER_ROLE, password),
        metrics_address="127.0.0.1",
        metrics_port=None,
    )
    counter = metrics.processed_messages.labels(OWNER, "notify")
    before = counter._value.get()
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="pgmsg.listener")
    worker = threading.Thread(target=service.run, args=(stop, config, OWNER), daemon=True)
    worker.start()
    try:
        wait_until(
            lambda: any(r.getMessage() == "listening" for r in caplog.records),
            timeout=15,
            message="the listener service did not start listening",
        )
        mtype = run_id + ".notify.order.created"
        client.publish_many([(mtype, {"n": i}, "shop") for i in range(3)])
        wait_until(
            lambda: counter._value.get() >= before + 3,
            timeout=15,
            message="the listener service did not count three notifications",
        )
        logged = [r for r in caplog.records if r.getMessage() == "notification"]
        assert [r.fields["message_type"] for r in logged] == [mtype] * 3  # type: ignore[attr-defined]
    finally:
        stop.set()
        worker.join(timeout=10)
    assert not worker.is_alive()


@pytest.mark.parametrize(
    "forged",
    [
        '{"id": 1, "delivery_id": 99999999999999999999}',  # beyond bigint: the read failed
        '{"id": -5, "delivery_id": -9223372036854775809}',
        "{not json",
    ],
)
def test_a_forged_notification_from_any_role_is_dropped_and_the_listener_goes_on(
    login,
    probe_subscriptions: str,
    client: Client,
    dsn: str,
    inventory_vars: dict[str, Any],
    run_id: str,
    forged: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # type: ignore[no-untyped-def]
    """NOTIFY has no privilege: a publisher can send anything on a client's channel. The
    listener must drop what it cannot read and keep yielding the client's own deliveries."""
    password = {r["name"]: r["password"] for r in inventory_vars["messaging_schema_clients"]}[OWNER_ROLE]
    with Client(role_dsn(dsn, OWNER_ROLE, password), max_size=1) as owner, owner.listener(OWNER) as listener:
        login("pgmsg_publisher_local").execute("SELECT pg_notify(%s, %s)", (OWNER, forged))
        own_id = client.publish(run_id + ".notify.after", {"n": 1})
        notes = list(listener.notifications(timeout=10, limit=1))
    assert [n.payload["id"] for n in notes] == [own_id] and notes[0].fetched
