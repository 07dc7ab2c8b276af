"""TLS between hosts, proved with real handshakes against a deployment of the test's own.

A fixture writes a scratch inventory (pgmsg_tls_enabled true, a CA on the "controller" in
tmp_path, its own container names, volume and ports 25650-25652) and runs playbooks/docker.yml,
database.yml, monitoring.yml (the exporter) and services.yml (one consumer) with it: the
PostgreSQL of our image serves the certificate role pgmsg_tls issued, with hostssl lines
only, and the exporter and the consumer connect with sslmode=verify-full. Everything is
removed afterwards. The tests run in file order: the later ones re-run the playbooks.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.tls import make_certificates
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
PASSWORD = "tls-scratch-local-only-password"
DB, EXPORTER, CONSUMER = "pgmsg-tls-db", "pgmsg-tls-exporter", "pgmsg-tls-consumer"
SQL_EXPORTER, SQL_EXPORTER_PORT = "pgmsg-tls-sql-exporter", 25653
DB_PORT, EXPORTER_PORT, CONSUMER_PORT = 25650, 25651, 25652
VOLUME = "pgmsg-tls-data"
# The certificate's names: the inventory host (localhost, which the clients connect to) and
# extra names, but not 127.0.0.1: a client that connects to that address must refuse it.
EXTRA_SANS = ["pgmsg-tls-proxy.internal", "10.0.0.50"]
PLAYBOOKS = [
    "playbooks/docker.yml",
    "playbooks/database.yml",
    "playbooks/monitoring.yml",
    "playbooks/services.yml",
]


@dataclass
class Deployment:
    base: Path
    inventory: Path

    @property
    def tls_dir(self) -> Path:
        return self.base / "tls"

    @property
    def ca_dir(self) -> Path:
        return self.base / "controller-ca"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.crt"

    def play(
        self,
        *playbooks: str,
        extra: dict[str, Any] | None = None,
        check: bool = True,
        args: tuple[str, ...] = ("--skip-tags", "pgadmin,prometheus"),
    ) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            [
                str(PLAYBOOK),
                "-i",
                str(self.inventory),
                *(playbooks or PLAYBOOKS),
                *args,
                "-e",
                json.dumps(extra or {}),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if check:
            assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
        return run


def scratch_inventory(base: Path) -> dict[str, Any]:
    secrets = base / "secrets"
    return {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                "pgmsg_build_ca_bundle": "/etc/ssl/certs/ca-certificates.crt",
                # Test-only passwords; "local" lets the roles accept them.
                "pgmsg_environment": "local",
                "postgres_superuser_password": PASSWORD,
                # Build contexts and secrets of its own: the deployed stack's stay untouched.
                "image_build_dir": str(base / "build") + "/{{ image_build_name | basename }}",
                "postgres_build_dir": str(base / "build" / "postgres"),
                "postgres_exporter_build_dir": str(base / "build" / "postgres-exporter"),
                "postgres_secrets_dir": str(secrets),
                "postgres_exporter_secrets_dir": str(secrets),
                "postgres_exporter_config_dir": str(base / "exporter"),
                "pgmsg_services_secrets_dir": str(base / "services"),
                "pgmsg_services_publisher_command": str(base / "pgmsg-publisher"),
                # TLS on, certificates in tmp_path, the CA "on the controller" in tmp_path.
                "pgmsg_tls_enabled": True,
                "pgmsg_tls_dir": str(base / "tls"),
                "pgmsg_tls_ca_dir": str(base / "controller-ca"),
                "pgmsg_tls_extra_sans": EXTRA_SANS,
                "postgres_container_name": DB,
                "postgres_data_volume": VOLUME,
                "postgres_network_mode": "host",
                "postgres_listen_addresses": "127.0.0.1",
                "postgres_port": DB_PORT,
                "postgres_hba_cidrs": ["127.0.0.1/32"],
                "postgres_shared_buffers": "64MB",
                "pgmsg_db_host": "localhost",
                "pgmsg_db_port": DB_PORT,
                "pgmsg_db_name": "messaging",
                "messaging_schema_webhook_allowlist": ["127.0.0.1/32"],
                "messaging_schema_monitors": [{"name": "tls_exporter", "password": "exporter-local-only"}],
                # A client service runs as the client whose client_id is the service's name.
                "messaging_schema_clients": [
                    {"name": "tls_consumer", "client_id": CONSUMER, "password": "consumer-local-only"}
                ],
                "postgres_exporter_container_name": EXPORTER,
                "postgres_exporter_network_mode": "host",
                "postgres_exporter_listen_address": "127.0.0.1",
                "postgres_exporter_port": EXPORTER_PORT,
                "postgres_exporter_sql_container_name": SQL_EXPORTER,
                "postgres_exporter_sql_port": SQL_EXPORTER_PORT,
                "pgmsg_services_network_mode": "host",
                "pgmsg_services_bind_address": "127.0.0.1",
                "pgmsg_services_catalog": {
                    CONSUMER: {
                        "command": ["pgmsg-consumer"],
                        "login_as": "client",
                        "metrics_port": CONSUMER_PORT,
                        "env": {},
                    }
                },
                "pgmsg_services_enabled": [CONSUMER],
            },
            "children": {
                "docker_hosts": {"children": {"messaging_db": None, "monitoring": None, "services": None}},
                "messaging_db": {"hosts": {"localhost": None}},
                "monitoring": {"hosts": {"localhost": None}},
                "services": {"hosts": {"localhost": None}},
            },
        }
    }


def remove_deployment() -> None:
    for name in (CONSUMER, SQL_EXPORTER, EXPORTER, DB):
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)
    subprocess.run(["docker", "volume", "rm", "-f", VOLUME], capture_output=True, check=False)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("tls-deployment")
    inventory = base / "hosts.yml"
    inventory.write_text(yaml.safe_dump(scratch_inventory(base), sort_keys=False))
    remove_deployment()
    try:
        deployment = Deployment(base, inventory)
        deployment.play()
        yield deployment
    finally:
        remove_deployment()


def dsn(host: str = "localhost", **params: str) -> str:
    return psycopg.conninfo.make_conninfo(
        host=host,
        port=DB_PORT,
        user="postgres",
        password=PASSWORD,
        dbname="messaging",
        connect_timeout=10,
        **params,
    )


def connection_error(conninfo: str) -> str:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(conninfo).close()
    return str(refused.value)


def served_certificate() -> x509.Certificate:
    """The certificate the server presents in a TLS handshake (PostgreSQL's SSLRequest first)."""
    with socket.create_connection(("127.0.0.1", DB_PORT), timeout=10) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))
        assert raw.recv(1) == b"S", "the server refused to negotiate TLS"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # read what it presents; verification is libpq's job below
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def file_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def changed_counts(run: subprocess.CompletedProcess[str]) -> list[int]:
    return [
        int(line.split("changed=")[1].split()[0]) for line in run.stdout.splitlines() if "changed=" in line
    ]


def test_plain_text_connection_is_refused(deployment: Deployment) -> None:
    error = connection_error(dsn("127.0.0.1", sslmode="disable"))
    assert "pg_hba.conf rejects connection" in error and "no encryption" in error, error


def test_verify_full_with_the_ca_and_the_host_name_connects_over_tls(deployment: Deployment) -> None:
    with psycopg.connect(dsn(sslmode="verify-full", sslrootcert=str(deployment.ca_file))) as conn:
        ssl_on, version = conn.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('ssl', 'ssl_min_protocol_version', "
                "'ssl_cert_file', 'ssl_key_file', 'ssl_ca_file')"
            ).fetchall()
        )
    assert ssl_on is True and version == "TLSv1.3"
    assert settings == {
        "ssl": "on",
        "ssl_min_protocol_version": "TLSv1.3",
        "ssl_cert_file": f"{deployment.tls_dir}/server.crt",
        "ssl_key_file": f"{deployment.tls_dir}/server.key",
        "ssl_ca_file": f"{deployment.tls_dir}/ca.crt",
    }


def test_verify_full_refuses_a_name_the_certificate_does_not_carry(deployment: Deployment) -> None:
    error = connection_error(dsn("127.0.0.1", sslmode="verify-full", sslrootcert=str(deployment.ca_file)))
    assert 'does not match host name "127.0.0.1"' in error, error


def test_verify_full_refuses_the_server_under_another_ca(deployment: Deployment, tmp_path: Path) -> None:
    other_ca = make_certificates(tmp_path, names=())["ca"]
    error = connection_error(dsn(sslmode="verify-full", sslrootcert=str(other_ca)))
    assert "certificate verify failed" in error, error


def test_files_keep_the_contract(deployment: Deployment) -> None:
    """/etc/pgmsg/tls (here in tmp_path): ca.crt and server.crt 0644, server.key 0600 owned by
    the image's postgres user (uid 100, gid 102); the controller's CA directory 0700."""
    modes = {name: os.stat(deployment.tls_dir / name) for name in ("ca.crt", "server.crt", "server.key")}
    assert {name: oct(st.st_mode & 0o777) for name, st in modes.items()} == {
        "ca.crt": "0o644",
        "server.crt": "0o644",
        "server.key": "0o600",
    }
    assert (modes["server.key"].st_uid, modes["server.key"].st_gid) == (100, 102)
    assert oct(os.stat(deployment.ca_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(deployment.ca_dir / "ca.key").st_mode & 0o777) == "0o600"
    assert (deployment.ca_dir / "ca.crt").read_bytes() == deployment.ca_file.read_bytes()

    certificate = file_certificate(deployment.tls_dir / "server.crt")
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(names.get_values_for_type(x509.DNSName)) == ["localhost", "pgmsg-tls-proxy.internal"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.50"]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert certificate.issuer == file_certificate(deployment.ca_file).subject
    assert fingerprint(served_certificate()) == fingerprint(certificate)


def test_exporter_and_services_connect_with_verify_full(deployment: Deployment) -> None:
    dsn_file = (deployment.base / "secrets" / "postgres_exporter_dsn").read_text()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(dsn_file).query)
    assert query["sslmode"] == ["verify-full"], dsn_file.split("@")[-1]
    assert query["sslrootcert"] == ["/run/pgmsg/tls/ca.crt"], dsn_file.split("@")[-1]
    consumer = json.loads(
        subprocess.run(["docker", "inspect", CONSUMER], check=True, capture_output=True, text=True).stdout
    )[0]
    env = dict(entry.split("=", 1) for entry in consumer["Config"]["Env"])
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == "/run/pgmsg/tls/ca.crt"
    assert {(m["Source"], m["Destination"], m["RW"]) for m in consumer["Mounts"]} >= {
        (str(deployment.ca_file), "/run/pgmsg/tls/ca.crt", False)
    }

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{EXPORTER_PORT}/metrics", timeout=30).read().decode()
    assert "\npg_up 1\n" in metrics
    sql_metrics = urllib.request.urlopen(f"http://127.0.0.1:{SQL_EXPORTER_PORT}/metrics", timeout=30).read()
    assert b"\npgmsg_sql_exporter_up 1.0\n" in sql_metrics
    query = (
        "SELECT DISTINCT a.usename, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
        "WHERE a.usename IN ('tls_exporter', 'tls_consumer') ORDER BY 1"
    )
    with psycopg.connect(
        dsn(sslmode="verify-full", sslrootcert=str(deployment.ca_file)), autocommit=True
    ) as conn:

        def both_connected() -> list[tuple[str, bool]] | None:
            rows = conn.execute(query).fetchall()
            return rows if len({user for user, _ in rows}) == 2 else None

        rows = wait_until(both_connected, timeout=60, message="the exporter and the consumer connected")
    assert sorted(rows) == [("tls_consumer", True), ("tls_exporter", True)]


def test_a_second_run_changes_nothing(deployment: Deployment) -> None:
    run = deployment.play()
    assert changed_counts(run) and set(changed_counts(run)) == {0}, run.stdout[-6000:]


def test_a_certificate_due_for_renewal_is_reissued_and_served_without_a_restart(
    deployment: Deployment,
) -> None:
    before = served_certificate()
    started = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.StartedAt}}", DB],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # Above the certificate's lifetime (397 days): the current one is due.
    deployment.play(extra={"pgmsg_tls_renew_before_days": 500})
    issued = file_certificate(deployment.tls_dir / "server.crt")
    assert fingerprint(issued) != fingerprint(before)
    assert issued.not_valid_after_utc > before.not_valid_after_utc
    assert fingerprint(served_certificate()) == fingerprint(issued)
    assert (
        subprocess.run(
            ["docker", "inspect", "--format", "{{.State.StartedAt}}", DB],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        == started
    )
    with psycopg.connect(dsn(sslmode="verify-full", sslrootcert=str(deployment.ca_file))) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    # Below it again: nothing is due, nothing changes.
    assert set(changed_counts(deployment.play())) == {0}


def test_an_inventory_certificate_not_issued_by_the_inventory_ca_is_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    ours, theirs = make_certificates(tmp_path / "ours"), make_certificates(tmp_path / "theirs")
    served = fingerprint(served_certificate())
    run = deployment.play(
        "playbooks/docker.yml",
        args=("--tags", "tls"),
        check=False,
        extra={
            "pgmsg_tls_source": "inventory",
            "pgmsg_tls_renew_before_days": 1,
            "pgmsg_tls_ca_certificate": ours["ca"].read_text(),
            "pgmsg_tls_server_certificate": Path(f"{theirs['localhost']}.pem").read_text(),
            "pgmsg_tls_server_private_key": Path(f"{theirs['localhost']}.key").read_text(),
        },
    )
    assert run.returncode != 0
    assert "was not issued by pgmsg_tls_ca_certificate" in run.stdout, run.stdout[-4000:]
    assert Path(f"{theirs['localhost']}.key").read_text() not in run.stdout + run.stderr
    assert fingerprint(file_certificate(deployment.tls_dir / "server.crt")) == served


def test_inventory_certificates_are_placed_and_served(deployment: Deployment, tmp_path: Path) -> None:
    supplied = make_certificates(tmp_path)
    deployment.play(
        "playbooks/docker.yml",
        "playbooks/database.yml",
        extra={
            "pgmsg_tls_source": "inventory",
            "pgmsg_tls_renew_before_days": 1,
            "pgmsg_tls_ca_certificate": supplied["ca"].read_text(),
            "pgmsg_tls_server_certificate": Path(f"{supplied['localhost']}.pem").read_text(),
            "pgmsg_tls_server_private_key": Path(f"{supplied['localhost']}.key").read_text(),
        },
    )
    assert deployment.ca_file.read_text() == supplied["ca"].read_text()
    assert fingerprint(served_certificate()) == fingerprint(
        file_certificate(Path(f"{supplied['localhost']}.pem"))
    )
    with psycopg.connect(dsn(sslmode="verify-full", sslrootcert=str(supplied["ca"]))) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    # The controller's CA no longer verifies the server.
    assert "certificate verify failed" in connection_error(
        dsn(sslmode="verify-full", sslrootcert=str(deployment.ca_dir / "ca.crt"))
    )
