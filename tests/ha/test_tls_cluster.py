"""TLS inside the cluster (staging and production run it; inventory/local-ha stays on loopback
without): a cluster of the test's own with pgmsg_tls_enabled, three members, three etcd members and
HAProxy on 256xx ports. Plain-text logins are refused by every member and through HAProxy;
verify-full through HAProxy works; replication runs over TLS; Patroni's REST API and etcd answer
HTTPS only, and etcd wants a client certificate of the CA."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
PASSWORD = "tls-cluster-local-only-password"
MEMBERS = {f"pgmsg-tlsha-{i}": (25670 + i, 25675 + i) for i in (1, 2, 3)}  # name: (postgres, REST)
ETCD = {f"pgmsg-tlsha-etcd-{i}": (25680 + 2 * i, 25681 + 2 * i) for i in (1, 2, 3)}  # name: (client, peer)
HAPROXY, PRIMARY, REPLICAS, STATS = "pgmsg-tlsha-haproxy", 25690, 25691, 25692


def inventory(base: Path) -> dict[str, Any]:
    return {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                "pgmsg_build_ca_bundle": "/etc/ssl/certs/ca-certificates.crt",
                "pgmsg_environment": "local",
                "image_build_dir": str(base / "build") + "/{{ image_build_name | basename }}",
                "postgres_superuser_password": PASSWORD,
                "pgmsg_ha_enabled": True,
                "pgmsg_tls_enabled": True,
                "pgmsg_tls_dir": str(base / "tls"),
                "pgmsg_tls_ca_dir": str(base / "controller-ca"),
                "pgmsg_tls_extra_sans": ["127.0.0.1"],
                "patroni_address": "127.0.0.1",
                "patroni_config_dir": str(base / "patroni") + "/{{ patroni_container_name }}",
                "patroni_hba_cidrs": ["127.0.0.1/32"],
                "patroni_replication_password": "replicator-local-only-tls",
                "patroni_restapi_password": "patroni-local-only-tls",
                "patroni_shared_buffers": "64MB",
                "patroni_ttl": 12,
                "patroni_loop_wait": 2,
                "patroni_retry_timeout": 5,
                "etcd_address": "127.0.0.1",
                "etcd_cluster_token": "pgmsg-tlsha",
                "haproxy_container_name": HAPROXY,
                "haproxy_config_dir": str(base / "haproxy"),
                "haproxy_replica_port": REPLICAS,
                "haproxy_stats_port": STATS,
                "postgres_port": PRIMARY,
                "pgmsg_db_host": "127.0.0.1",
                "pgmsg_db_port": PRIMARY,
                "pgmsg_db_name": "messaging",
                "pgbackrest_enabled": False,
                "messaging_schema_webhook_allowlist": ["127.0.0.1/32"],
            },
            "children": {
                "docker_hosts": {"hosts": {"localhost": None}},
                "haproxy": {"hosts": {"localhost": None}},
                "messaging_db": {
                    "hosts": {
                        n: {"patroni_postgres_port": p, "patroni_restapi_port": r}
                        for n, (p, r) in MEMBERS.items()
                    }
                },
                "etcd_cluster": {
                    "hosts": {n: {"etcd_client_port": c, "etcd_peer_port": p} for n, (c, p) in ETCD.items()}
                },
            },
        }
    }


def remove() -> None:
    for name in [*MEMBERS, *ETCD, HAPROXY]:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", "-f", name + "-data"], capture_output=True, check=False)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("tls-cluster")
    hosts = base / "hosts.yml"
    hosts.write_text(yaml.safe_dump(inventory(base), sort_keys=False))
    remove()
    try:
        run = subprocess.run(
            [str(PLAYBOOK), "-i", str(hosts), "playbooks/docker.yml", "playbooks/database.yml"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
        yield base
    finally:
        remove()


def dsn(base: Path, port: int, **extra: str) -> str:
    return psycopg.conninfo.make_conninfo(
        host="127.0.0.1",
        port=str(port),
        user="postgres",
        password=PASSWORD,
        dbname="messaging",
        connect_timeout="5",
        **extra,
    )


@pytest.mark.parametrize("port", [PRIMARY, *[p for p, _ in MEMBERS.values()]])
def test_plain_text_login_is_refused(tls_cluster: Path, port: int) -> None:
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(dsn(tls_cluster, port, sslmode="disable")).close()


def test_verify_full_through_haproxy_reaches_the_leader_over_tls(tls_cluster: Path) -> None:
    ca = str(tls_cluster / "tls" / "ca.crt")
    with psycopg.connect(
        dsn(tls_cluster, PRIMARY, sslmode="verify-full", sslrootcert=ca), autocommit=True
    ) as conn:
        row = conn.execute(
            "SELECT s.ssl, NOT pg_is_in_recovery() FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"
        ).fetchone()
        assert row == (True, True)
        # Both replicas stream from the leader over TLS.
        streaming = conn.execute(
            "SELECT r.application_name, s.ssl FROM pg_stat_replication r "
            "JOIN pg_stat_ssl s USING (pid) WHERE r.state = 'streaming'"
        ).fetchall()
    assert len(streaming) == 2 and all(ssl_on for _, ssl_on in streaming), streaming


def test_patroni_rest_api_answers_https_only(tls_cluster: Path) -> None:
    context = ssl.create_default_context(cafile=str(tls_cluster / "tls" / "ca.crt"))
    for _, rest in MEMBERS.values():
        with urllib.request.urlopen(f"https://127.0.0.1:{rest}/health", context=context, timeout=5) as answer:
            assert answer.status == 200
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{rest}/health", timeout=5).read()


def test_etcd_answers_https_with_a_client_certificate_only(tls_cluster: Path) -> None:
    tls = tls_cluster / "tls"
    name, (client, _) = next(iter(ETCD.items()))
    health = subprocess.run(
        ["docker", "exec", name, "etcdctl", "endpoint", "health", "-w", "json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert health.returncode == 0 and json.loads(health.stdout)[0]["health"], health.stderr
    # Without a client certificate of the CA the TLS handshake is refused; plain HTTP gets nothing.
    context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"https://127.0.0.1:{client}/version", context=context, timeout=5).read()
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{client}/version", timeout=5).read()
    # The peers talk over TLS too.
    listing = json.loads(
        subprocess.run(
            ["docker", "exec", name, "etcdctl", "member", "list", "-w", "json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    )
    assert all(url.startswith("https://") for m in listing["members"] for url in m["peerURLs"])
