"""testinfra against the host deployed with the local inventory."""

from __future__ import annotations

import json

import pytest

from pgmsg import migrations


@pytest.fixture(scope="module")
def hostvars(host):  # type: ignore[no-untyped-def]
    return host.ansible.get_variables()


def psql(host, hostvars, query: str) -> str:  # type: ignore[no-untyped-def]
    container = hostvars.get("postgres_container_name", "postgres-messaging")
    cmd = host.run(
        "docker exec %s psql -U postgres -d %s -At -c %s",
        container, hostvars.get("postgres_database", "messaging"), query,
    )
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def test_docker_engine_answers(host) -> None:  # type: ignore[no-untyped-def]
    assert host.run("docker info --format '{{.ServerVersion}}'").rc == 0


def test_postgres_container_running_and_healthy(host, hostvars) -> None:  # type: ignore[no-untyped-def]
    container = host.docker(hostvars.get("postgres_container_name", "postgres-messaging"))
    assert container.is_running
    state = container.inspect()["State"]
    assert state["Health"]["Status"] == "healthy"
    config = container.inspect()["HostConfig"]
    assert config["RestartPolicy"]["Name"] == "unless-stopped"
    assert config["NetworkMode"] == hostvars["postgres_network_mode"]
    mounts = {m["Destination"]: m for m in container.inspect()["Mounts"]}
    assert mounts["/var/lib/postgresql/data"]["Type"] == "volume"
    assert mounts["/var/lib/postgresql/data"]["Name"] == "pgmsg-postgres-data"


def test_postgres_listens_on_loopback_only(host, hostvars) -> None:  # type: ignore[no-untyped-def]
    port = hostvars["postgres_port"]
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_password_file_is_private(host) -> None:  # type: ignore[no-untyped-def]
    secret = host.file("/etc/pgmsg/postgres_password")
    assert secret.mode == 0o600
    assert secret.user == "root"


def test_seed_docker_exec_command_works(host) -> None:  # type: ignore[no-untyped-def]
    out = host.check_output("docker exec postgres-messaging psql -U postgres -d messaging -At -c 'SELECT current_database()'")
    assert out == "messaging"


@pytest.mark.parametrize("extension", ["http", "pg_cron"])
def test_extension_installed(host, hostvars, extension: str) -> None:  # type: ignore[no-untyped-def]
    assert psql(host, hostvars, f"SELECT count(*) FROM pg_extension WHERE extname = '{extension}'") == "1"


@pytest.mark.parametrize("setting,expected", [
    ("shared_preload_libraries", "pg_cron"),
    ("cron.database_name", "messaging"),
    ("listen_addresses", "127.0.0.1"),
])
def test_server_settings_come_from_the_role(host, hostvars, setting: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert psql(host, hostvars, f"SHOW {setting}") == expected


@pytest.mark.parametrize("table", ["messages", "subscriptions", "message_delivery", "delivery_attempts",
                                   "pgmsg_migrations"])
def test_table_present(host, hostvars, table: str) -> None:  # type: ignore[no-untyped-def]
    assert psql(host, hostvars, f"SELECT to_regclass('public.{table}') IS NOT NULL") == "t"


def test_migrations_complete(host, hostvars) -> None:  # type: ignore[no-untyped-def]
    applied = json.loads(psql(host, hostvars, "SELECT json_agg(name ORDER BY version) FROM pgmsg_migrations"))
    assert applied == [m.name for m in migrations.load()]
