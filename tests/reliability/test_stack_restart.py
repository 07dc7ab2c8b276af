"""The whole stack stopped and brought back by site.yml: nothing is lost, and messages flow again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgmsg import Client
from tests.support.deployment import Deployment
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = str(ROOT / "inventory" / "local" / "hosts.yml")

#: A fingerprint of every row that matters: count and a hash of the ids (and of each
#: delivery's state), so that a lost, duplicated or rolled-back row shows.
FINGERPRINTS = {
    "messages": "SELECT count(*), md5(coalesce(string_agg(id::text || payload::text, ',' ORDER BY id), '')) "
    "FROM messages",
    "message_delivery": "SELECT count(*), md5(coalesce(string_agg(id::text || ':' || message_id, ',' "
    "ORDER BY id), '')) FROM message_delivery",
    "delivery_attempts": "SELECT count(*), md5(coalesce(string_agg(id::text, ',' ORDER BY id), '')) "
    "FROM delivery_attempts",
    "subscriptions": "SELECT count(*), md5(coalesce(string_agg(id::text || client_id || signing_secret, ',' "
    "ORDER BY id), '')) FROM subscriptions",
}


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def fingerprint(dsn: str) -> dict[str, tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return {table: tuple(conn.execute(query).fetchone()) for table, query in FINGERPRINTS.items()}


def stack_containers(deployment: Deployment) -> list[str]:
    return [
        *deployment.services,
        deployment.exporter_container,
        deployment.sql_exporter_container,
        deployment.prometheus_container,
        deployment.pgadmin_container,
        deployment.db_container,
    ]


def reachable(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=3).close()
        return True
    except psycopg.OperationalError:
        return False


@pytest.mark.deploy
def test_stack_restart_through_site_yml_keeps_everything(
    dsn: str, client: Client, run_id: str, deployment: Deployment
) -> None:
    # Some data of every kind, with deliveries in several states.
    consumer = f"{run_id}-consumer"
    client.subscribe(consumer, "async", message_type=f"{run_id}.kept")
    ids = client.publish_many(
        [(f"{run_id}.kept", {"n": n, "text": "ünïcode ✓"}, "default") for n in range(200)]
    )
    assert len(ids) == 200
    claimed = client.claim(consumer, 50)
    client.ack([d for d in claimed[:25]])
    # The sample services must not change rows while the fingerprint is taken: it is taken
    # with the services stopped, Postgres still up.
    containers = stack_containers(deployment)
    database = containers[-1]
    docker("stop", *containers[:-1])
    before = fingerprint(dsn)
    docker("stop", database)
    assert not set(containers) & set(docker("ps", "--format", "{{.Names}}").split())

    up = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", INVENTORY, "site.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert up.returncode == 0, up.stdout[-3000:]
    assert set(containers) <= set(docker("ps", "--format", "{{.Names}}").split())
    wait_until(lambda: reachable(dsn), timeout=120, message="the database did not come back")

    after = fingerprint(dsn)
    # Nothing publishes, subscribes or archives meanwhile: messages, subscriptions and
    # deliveries are the same rows as before. The dispatcher may have recorded new attempts
    # for deliveries that were waiting for a retry.
    for table in ("messages", "subscriptions", "message_delivery"):
        assert after[table] == before[table], table
    assert after["delivery_attempts"][0] >= before["delivery_attempts"][0]
    with psycopg.connect(dsn) as conn:
        rows = dict(
            conn.execute(
                "SELECT status, count(*) FROM message_delivery WHERE client_id = %s GROUP BY status",
                (consumer,),
            ).fetchall()
        )
    # The 25 claimed but not acked may be back to pending: their lease lapsed during the restart.
    assert rows.get("delivered") == 25
    assert rows.get("pending", 0) + rows.get("processing", 0) == 175

    # And messages flow again end to end: a new one reaches our consumer.
    new_id = client.publish(f"{run_id}.kept", {"after": "restart"})
    got = wait_until(
        lambda: [d for d in client.claim(consumer, 200) if d.message_id == new_id] or None,
        timeout=60,
        message="the message published after the restart was not claimable",
    )
    assert client.ack([d for d in got]) == 1
