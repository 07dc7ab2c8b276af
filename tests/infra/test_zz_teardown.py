"""Teardown keeps the data; a site.yml run brings everything back (runs last among infra tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import INVENTORY
from tests.support.cluster import Cluster
from tests.support.deployment import Deployment
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def playbook(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(INVENTORY), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def running_containers() -> set[str]:
    out = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


@pytest.mark.deploy
def test_teardown_keeps_data_and_site_restores_the_stack(
    dsn: str, inventory_vars: dict, deployment: Deployment
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        message_id = conn.execute(
            "INSERT INTO messages (message_type, payload) VALUES ('teardown.probe', %s) RETURNING id",
            (json.dumps({"survives": True}),),
        ).fetchone()[0]
    if inventory_vars.get("pgmsg_ha_enabled"):
        # The cluster: its members, etcd and HAProxy restart from their volumes (Patroni and etcd
        # find their data and elect a leader again).
        cluster = Cluster(INVENTORY)
        database = (
            {m.container for m in cluster.members} | {e.container for e in cluster.etcd} | {cluster.haproxy}
        )
        data_volumes = {m.container + "-data" for m in cluster.members} | {
            e.container + "-data" for e in cluster.etcd
        }
    else:
        database, data_volumes = {"postgres-messaging"}, {"pgmsg-postgres-data"}
    monitoring = {
        deployment.exporter_container,
        deployment.sql_exporter_container,
        deployment.prometheus_container,
        deployment.pgadmin_container,
    }
    expected = set(inventory_vars["pgmsg_services_enabled"]) | monitoring | database
    assert expected <= running_containers()

    down = playbook("playbooks/teardown.yml")
    assert down.returncode == 0, down.stdout[-3000:]
    assert not (expected & running_containers())
    volumes = subprocess.run(
        ["docker", "volume", "ls", "--format", "{{.Name}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert data_volumes | {"pgmsg-pgadmin-data", deployment.value("prometheus_data_volume")} <= set(volumes)

    up = playbook("site.yml")
    assert up.returncode == 0, up.stdout[-3000:]
    assert expected <= running_containers()

    def payload() -> object:
        try:
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                row = conn.execute("SELECT payload FROM messages WHERE id = %s", (message_id,)).fetchone()
                return row[0] if row else None
        except psycopg.OperationalError:
            return None

    assert wait_until(payload, timeout=60) == {"survives": True}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM messages WHERE id = %s", (message_id,))
