"""The cluster loses its leader under load, or hands it over, and nobody loses anything.

Run against the local-ha deployment (scripts/test-ha.sh). The load is the shared outage
scenario (tests/support/outage.py): four publishers at full speed, async consumers acking, a
NOTIFY listener, a dispatcher pushing to a local receiver, and the deployed services. The
outage is a ``docker kill`` of the leader's container, or a ``patronictl switchover``.
Afterwards: every publish whose commit returned is on the new leader with all its deliveries,
no acknowledged delivery is handed out again, every client carried on by itself through
HAProxy, and the old leader rejoins as a replica.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import ROOT, Cluster, docker
from tests.support.deployment import Deployment
from tests.support.outage import Outage, run_outage_scenario
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

ELECTION_LIMIT_SECONDS = 30
REPORT = ROOT / "artifacts" / "ha-failover.json"


def writable(dsn: str) -> bool:
    """The address clients use leads to a node that takes writes."""
    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
            return conn.execute("SELECT NOT pg_is_in_recovery()").fetchone() == (True,)
    except psycopg.Error:
        return False


def node_name(dsn: str) -> str:
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('pgmsg.node_name')").fetchone()
        assert row is not None
        return str(row[0])


def new_leader_routed(dsn: str, cluster: Cluster, old: str, began: float, figures: dict[str, Any]) -> Outage:
    """After the leader went (killed, or handed over): wait for another leader, then for HAProxy
    to route the clients' address to it; note both in ``figures``."""
    figures["new_leader"] = cluster.wait_for_leader(other_than=old, timeout=90)
    figures["election_seconds"] = round(time.monotonic() - began, 1)
    wait_until(
        lambda: writable(dsn), timeout=60, interval=0.2, message="HAProxy did not route to the new leader"
    )
    back = time.monotonic()
    figures["writable_after_seconds"] = round(back - began, 1)
    return Outage(began=began, back=back)


def run_and_report(
    name: str,
    dsn: str,
    run_id: str,
    deployment: Deployment,
    receiver: Receiver,
    outage: Callable[[], Outage],
    figures: dict[str, Any],
) -> None:
    journal = run_outage_scenario(dsn, run_id, deployment, receiver, outage=outage, publishers=4)
    figures["committed"] = len(journal.committed)
    figures["publish_errors_retried"] = len(journal.publish_errors)
    report(name, figures)


def leaders_reported(port: int) -> list[str]:
    """The nodes the exporter reports as writable (pgmsg_cluster_is_leader 1)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return []
    return [
        s.labels["node"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "pgmsg_cluster_is_leader" and s.value == 1
    ]


def report(name: str, figures: dict[str, Any]) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data[name] = figures
    REPORT.write_text(json.dumps(data, indent=2) + "\n")


def test_leader_killed_under_load_loses_nothing_and_rejoins(
    dsn: str, run_id: str, deployment: Deployment, receiver: Receiver, cluster: Cluster
) -> None:
    old = cluster.leader()
    assert old is not None and node_name(dsn) == old
    figures: dict[str, Any] = {"old_leader": old}

    def kill_leader() -> Outage:
        began = time.monotonic()
        docker("kill", cluster.container(old))
        return new_leader_routed(dsn, cluster, old, began, figures)

    run_and_report("leader_killed", dsn, run_id, deployment, receiver, kill_leader, figures)
    assert figures["election_seconds"] <= ELECTION_LIMIT_SECONDS, figures
    assert node_name(dsn) == figures["new_leader"]

    # The exporter, never restarted, reports the new leader.
    port = deployment.value("postgres_exporter_sql_port")
    wait_until(
        lambda: leaders_reported(port) == [figures["new_leader"]],
        timeout=60,
        interval=1,
        message="the exporter does not report the new leader",
    )

    # pg_cron runs on the new leader by itself: housekeeping jobs succeed there after the failover.
    with psycopg.connect(dsn, autocommit=True) as conn:
        after = conn.execute("SELECT now()").fetchone()
        assert after is not None
        wait_until(
            lambda: conn.execute(
                "SELECT 1 FROM cron.job_run_details d JOIN cron.job j USING (jobid) "
                "WHERE j.jobname LIKE 'pgmsg-%%' AND d.start_time > %s AND d.status = 'succeeded'",
                (after[0],),
            ).fetchone(),
            timeout=120,
            interval=1,
            message="no pg_cron job ran on the new leader",
        )

    # The old leader, started again, rejoins as a replica of the new timeline (pg_rewind).
    docker("start", cluster.container(old))
    cluster.wait_healthy()
    roles = cluster.roles()
    assert roles[old]["role"] in ("replica", "sync_standby"), roles
    assert roles[old]["timeline"] == roles[figures["new_leader"]]["timeline"], roles


def test_switchover_under_load_loses_nothing(
    dsn: str, run_id: str, deployment: Deployment, receiver: Receiver, cluster: Cluster
) -> None:
    old = cluster.leader()
    assert old is not None
    candidate = next(n for n, m in cluster.roles().items() if m["role"] == "sync_standby")
    figures: dict[str, Any] = {"old_leader": old, "candidate": candidate}

    def switchover() -> Outage:
        began = time.monotonic()
        cluster.patronictl("switchover", "--leader", old, "--candidate", candidate, "--force", member=old)
        return new_leader_routed(dsn, cluster, old, began, figures)

    run_and_report("switchover", dsn, run_id, deployment, receiver, switchover, figures)
    assert figures["new_leader"] == candidate
    cluster.wait_healthy()
    assert cluster.roles()[old]["role"] in ("replica", "sync_standby")
