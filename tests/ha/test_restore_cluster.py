"""The restore drill on the cluster (playbooks/restore.yml with a Patroni inventory): publish A,
note T, publish B; restore the latest state (both), restore to T (A, delivered as it was; not B),
then the timeline before that restore (both again). Each restore brings the whole cluster back:
the first member restored, the others cloned from it, HAProxy routing to it, the clients'
address unchanged."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgmsg import Client
from tests.support.cluster import ROOT, Cluster, inventory_under_test
from tests.support.waiting import wait_until


def restore(**extra: str) -> str:
    playbook = Path(sys.executable).with_name("ansible-playbook")
    args = [a for k, v in extra.items() for a in ("-e", f"{k}={v}")]
    run = subprocess.run(
        [str(playbook), "-i", str(inventory_under_test()), "playbooks/restore.yml", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    return run.stdout


def state(dsn: str, tag: str) -> dict[str, Any]:
    """What the clients' address shows once the restored cluster takes writes again."""

    def writable() -> bool:
        try:
            with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
                return conn.execute("SELECT NOT pg_is_in_recovery()").fetchone() == (True,)
        except psycopg.Error:
            return False

    wait_until(writable, timeout=120, interval=0.5, message="the restored cluster does not take writes")
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT m.payload->>'name' AS name, d.client_id, d.status, d.attempts "
            "FROM messages m LEFT JOIN message_delivery d ON d.message_id = m.id "
            "WHERE m.message_type LIKE %s ORDER BY 1, 2",
            (tag + "%",),
        ).fetchall()
        timeline = conn.execute("SELECT timeline FROM pgmsg_cluster_status() LIMIT 1").fetchone()["timeline"]
    messages: dict[str, list[tuple[str, str, int]]] = {}
    for r in rows:
        messages.setdefault(r["name"], []).append((r["client_id"], r["status"], r["attempts"]))
    return {"messages": messages, "timeline": timeline}


def test_restore_drill_on_the_cluster(dsn: str) -> None:
    cluster = Cluster(inventory_under_test())
    cluster.start_all()
    tag = "t" + uuid.uuid4().hex[:10]
    with Client(dsn, max_size=2) as client:
        client.subscribe(tag + "-drill", "async", message_type=tag + ".*")
        client.publish(tag + ".event", {"name": "A"})
        [delivery] = client.claim(tag + "-drill", 10)
        assert client.ack([delivery]) == 1
        with psycopg.connect(dsn, autocommit=True) as conn:
            point = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        client.publish(tag + ".event", {"name": "B"})
    target = point.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    original = state(dsn, tag)
    assert set(original["messages"]) == {"A", "B"}
    assert original["messages"]["A"] == [(tag + "-drill", "delivered", 1)]

    # Every disk lost (or a cluster rebuilt elsewhere): the latest state comes back.
    restore()
    cluster.wait_healthy()
    latest = state(dsn, tag)
    assert latest["messages"] == original["messages"]
    assert latest["timeline"] > original["timeline"]

    # A mistake after T: back to T, where A was published and delivered and B not yet.
    restore(restore_target=f"'{target}'")
    cluster.wait_healthy()
    at_t = state(dsn, tag)
    assert at_t["messages"] == {"A": original["messages"]["A"]}

    # Changed one's mind: the timeline before that restore, with both messages again.
    restore(restore_timeline=str(latest["timeline"]))
    cluster.wait_healthy()
    again = state(dsn, tag)
    assert again["messages"] == original["messages"]
    assert again["timeline"] > at_t["timeline"]
    # Every member follows the restored leader on its timeline.
    roles = cluster.roles()
    assert {m["timeline"] for m in roles.values()} == {again["timeline"]}, roles
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM subscriptions WHERE client_id LIKE %s", (tag + "%",))
        conn.execute("DELETE FROM messages WHERE message_type LIKE %s", (tag + "%",))
