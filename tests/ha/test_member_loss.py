"""Losing a replica, both replicas, or an etcd member: writes go on.

Patroni's synchronous mode (not strict, the role's default): a commit waits for the synchronous
standby. When that standby dies, Patroni names the other replica synchronous and commits go on
after a pause of at most a few loop_waits; with no replica left, the leader runs alone
(asynchronously) rather than stop writes, and names a synchronous standby again once one is back.
etcd keeps its quorum with two of three members, so the leader keeps its lease.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from pgmsg import Client, PgmsgError
from tests.support.cluster import ROOT, Cluster, docker, inventory_under_test
from tests.support.waiting import wait_until

WRITES_RESUME_LIMIT = 30


class Publisher:
    """Publishes one message after another; notes when each commit returned."""

    def __init__(self, dsn: str, message_type: str) -> None:
        self.client = Client(dsn, max_size=2)
        self.message_type = message_type
        self.committed: list[tuple[int, float]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.committed.append(
                    (self.client.publish(self.message_type, {"n": len(self.committed)}), time.monotonic())
                )
            except PgmsgError as exc:
                self.errors.append(str(exc)[:200])
                self.stop.wait(0.2)
            self.stop.wait(0.02)

    def committed_after(self, t: float) -> int:
        return sum(1 for _, at in self.committed if at > t)

    def close(self) -> list[int]:
        self.stop.set()
        self.thread.join(timeout=60)
        self.client.close()
        return [i for i, _ in self.committed]


def assert_all_present(dsn: str, ids: list[int]) -> None:
    """Every publish whose commit returned is on the leader."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = {r[0] for r in conn.execute("SELECT id FROM messages WHERE id = ANY(%s)", (ids,)).fetchall()}
    assert set(ids) - found == set()


def test_losing_the_sync_standby_moves_sync_to_the_other_replica(
    dsn: str, run_id: str, cluster: Cluster
) -> None:
    leader = cluster.leader()
    roles = cluster.roles()
    sync = next(n for n, m in roles.items() if m["role"] == "sync_standby")
    other = next(n for n, m in roles.items() if m["role"] == "replica")
    publisher = Publisher(dsn, run_id + ".evt")
    try:
        wait_until(lambda: len(publisher.committed) >= 20, timeout=30, message="no load")
        killed = time.monotonic()
        docker("kill", cluster.container(sync))
        wait_until(
            lambda: publisher.committed_after(killed + 0.5) >= 20,
            timeout=WRITES_RESUME_LIMIT,
            message="writes did not resume after losing the synchronous standby",
        )
        wait_until(
            lambda: cluster.roles(exclude={sync}).get(other, {}).get("role") == "sync_standby",
            timeout=30,
            message="Patroni did not make the other replica synchronous",
        )
        assert cluster.leader(exclude={sync}) == leader
    finally:
        ids = publisher.close()
    assert_all_present(dsn, ids)


def test_losing_both_replicas_leaves_the_leader_writing_alone(
    dsn: str, run_id: str, cluster: Cluster
) -> None:
    leader = cluster.leader()
    replicas = [n for n in cluster.by_name if n != leader]
    publisher = Publisher(dsn, run_id + ".evt")
    try:
        wait_until(lambda: len(publisher.committed) >= 20, timeout=30, message="no load")
        killed = time.monotonic()
        for name in replicas:
            docker("kill", cluster.container(name))
        # Not strict: the leader stops waiting for a standby that is gone and goes on alone.
        wait_until(
            lambda: publisher.committed_after(killed + 0.5) >= 20,
            timeout=WRITES_RESUME_LIMIT,
            message="writes did not resume with no replica left",
        )
        assert cluster.leader(exclude=set(replicas)) == leader
        # A replica back: it catches up and becomes the synchronous standby again.
        docker("start", cluster.container(replicas[0]))
        wait_until(
            lambda: cluster.roles().get(replicas[0], {}).get("role") == "sync_standby",
            timeout=90,
            message="the returning replica did not become synchronous",
        )
    finally:
        ids = publisher.close()
    assert_all_present(dsn, ids)


def test_losing_one_etcd_member_keeps_the_leader_and_writes(dsn: str, run_id: str, cluster: Cluster) -> None:
    leader = cluster.leader()
    victim = cluster.etcd[0].container
    publisher = Publisher(dsn, run_id + ".evt")
    try:
        wait_until(lambda: len(publisher.committed) >= 20, timeout=30, message="no load")
        killed = time.monotonic()
        docker("kill", victim)
        # Longer than the leader lease: the leader renewed it through the remaining quorum.
        ttl = int(cluster.vars.get("patroni_ttl", 30))
        time.sleep(ttl * 1.5)
        assert cluster.leader() == leader
        assert publisher.committed_after(killed + ttl) >= 20
        cluster.patronictl("list")  # the tools work with two of three members
    finally:
        ids = publisher.close()
    assert_all_present(dsn, ids)


def test_replacing_a_member_clones_it_from_the_leader(dsn: str, run_id: str, cluster: Cluster) -> None:
    """docs/operations.md, "Replace a node": container and volume removed, the member deployed
    again with --limit; it clones the leader and has what was committed meanwhile."""
    leader = cluster.leader()
    victim = next(n for n in cluster.by_name if n != leader)
    container = cluster.container(victim)
    docker("rm", "-f", container)
    docker("volume", "rm", container + "-data")
    with Client(dsn, max_size=1) as client:
        message_id = client.publish(run_id + ".evt", {"while": "replacing"})
    playbook = Path(sys.executable).with_name("ansible-playbook")
    run = subprocess.run(
        [str(playbook), "-i", str(inventory_under_test()), "playbooks/database.yml", "--limit", victim],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    cluster.wait_healthy()
    member = cluster.by_name[victim]
    with psycopg.connect(
        psycopg.conninfo.make_conninfo(dsn, host=member.address, port=str(member.pg_port)), autocommit=True
    ) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        wait_until(
            lambda: conn.execute("SELECT 1 FROM messages WHERE id = %s", (message_id,)).fetchone(),
            timeout=30,
            message="the new member does not have what the leader committed",
        )
