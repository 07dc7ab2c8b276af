"""The deployed cluster, member by member (testinfra on this machine), and what the operator's
tools report about it: patronictl, HAProxy's backends, etcd's members, `pgmsg health` and the
exporter."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from pgmsg.cli import cli
from tests.support.cluster import Cluster, inventory_under_test

MEMBERS = [m.name for m in Cluster(inventory_under_test()).members] if inventory_under_test().exists() else []


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    c = Cluster(inventory_under_test())
    c.start_all()
    return c


@pytest.fixture(scope="module")
def members() -> list[dict[str, Any]]:
    """`patronictl list -f json`, run in a member's container."""
    return json.loads(Cluster(inventory_under_test()).patronictl("list", "-f", "json"))


@pytest.mark.parametrize("name", MEMBERS)
def test_member_is_running_in_the_cluster(name: str, members: list[dict[str, Any]]) -> None:
    me = [m for m in members if m["Member"] == name]
    assert len(me) == 1, members
    assert me[0]["State"] in ("running", "streaming"), me
    assert me[0]["Role"] in ("Leader", "Sync Standby", "Replica"), me
    if me[0]["Role"] != "Leader":
        assert me[0]["State"] == "streaming" and float(me[0].get("Lag in MB") or 0) < 16, me
    assert me[0]["TL"] == max(m["TL"] for m in members)
    assert [m["Role"] for m in members].count("Leader") == 1
    assert [m["Role"] for m in members].count("Sync Standby") == 1


@pytest.mark.parametrize("name", MEMBERS)
def test_member_container_is_healthy_and_on_loopback(host, name: str, cluster: Cluster) -> None:  # type: ignore[no-untyped-def]
    member = cluster.by_name[name]
    state = json.loads(host.check_output(f"docker inspect --format '{{{{json .}}}}' {member.container}"))
    assert state["State"]["Health"]["Status"] == "healthy"
    assert state["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert state["HostConfig"]["NetworkMode"] == "host"
    for port in (member.pg_port, member.rest_port):
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


@pytest.mark.parametrize("name", MEMBERS)
def test_haproxy_routes_the_primary_port_to_the_leader_only(
    name: str, cluster: Cluster, members: list[dict[str, Any]]
) -> None:
    role = next(m["Role"] for m in members if m["Member"] == name)
    backends = cluster.haproxy_backends()
    assert backends["primary"][name] == ("UP" if role == "Leader" else "DOWN"), backends
    assert backends["replicas"][name] == ("DOWN" if role == "Leader" else "UP"), backends


def test_etcd_has_three_healthy_members(host, cluster: Cluster) -> None:  # type: ignore[no-untyped-def]
    for member in cluster.etcd:
        listing = json.loads(host.check_output(f"docker exec {member.container} etcdctl member list -w json"))
        assert sorted(m["name"] for m in listing["members"]) == sorted(e.name for e in cluster.etcd)
        assert host.run(f"docker exec {member.container} etcdctl endpoint health").rc == 0


def test_health_reports_leader_replicas_and_sync_standby(dsn: str, cluster: Cluster) -> None:
    leader = cluster.leader()
    result = CliRunner().invoke(cli, ["health", "--check", "cluster", "--json"], env={"PGMSG_DSN": dsn})
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["cluster"]["detail"].startswith(f"leader {leader}, timeline "), checks
    assert "2 replica(s) streaming" in checks["cluster"]["detail"]
    replicas = sorted(n for n in cluster.by_name if n != leader)
    assert sorted(n.removeprefix("replica ") for n in checks if n.startswith("replica ")) == replicas


def test_health_through_the_replica_port_warns_that_it_is_read_only(dsn: str, cluster: Cluster) -> None:
    replica_dsn = psycopg.conninfo.make_conninfo(dsn, port=str(cluster.replica_port))
    result = CliRunner().invoke(cli, ["health", "--check", "cluster"], env={"PGMSG_DSN": replica_dsn})
    assert result.exit_code == 1, result.output
    assert "a read-only replica" in result.output


def test_exporter_reports_the_cluster(inventory_vars: dict[str, Any], cluster: Cluster) -> None:
    leader = cluster.leader()
    port = inventory_vars.get("postgres_exporter_sql_port", 9188)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        samples = [
            (s.name, s.labels, s.value)
            for f in text_string_to_metric_families(answer.read().decode())
            for s in f.samples
        ]

    def get(name: str, **labels: str) -> float | None:
        found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
        return found[0] if len(found) == 1 else None

    assert get("pgmsg_cluster_is_leader", node=leader) == 1
    assert get("pgmsg_cluster_replicas_streaming", node=leader) == 2
    assert get("pgmsg_cluster_sync_standbys", node=leader) == 1
    for name in cluster.by_name:
        if name != leader:
            assert get("pgmsg_replication_lag_bytes", replica=name) is not None
