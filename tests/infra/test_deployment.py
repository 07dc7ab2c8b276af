"""testinfra against the host deployed with the local inventory."""

from __future__ import annotations

import json

import pytest

from pgmsg import migrations


def test_docker_engine_answers(host) -> None:  # type: ignore[no-untyped-def]
    assert host.run("docker info --format '{{.ServerVersion}}'").rc == 0


def test_postgres_container_running_and_healthy(host, deployment) -> None:  # type: ignore[no-untyped-def]
    container = host.docker(deployment.db_container)
    assert container.is_running
    state = container.inspect()["State"]
    assert state["Health"]["Status"] == "healthy"
    config = container.inspect()["HostConfig"]
    assert config["RestartPolicy"]["Name"] == deployment.value("postgres_restart_policy")
    assert config["NetworkMode"] == deployment.value("postgres_network_mode")
    mounts = {m["Destination"]: m for m in container.inspect()["Mounts"]}
    assert mounts["/var/lib/postgresql/data"]["Type"] == "volume"
    assert mounts["/var/lib/postgresql/data"]["Name"] == deployment.value("postgres_data_volume")


def test_postgres_listens_on_loopback_only(host, deployment) -> None:  # type: ignore[no-untyped-def]
    port = deployment.db_port
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_password_file_is_private(host) -> None:  # type: ignore[no-untyped-def]
    secret = host.file("/etc/pgmsg/postgres_password")
    assert secret.mode == 0o600
    assert secret.user == "root"


def test_seed_docker_exec_command_works(host, deployment) -> None:  # type: ignore[no-untyped-def]
    out = host.check_output(
        "docker exec %s psql -U postgres -d %s -At -c 'SELECT current_database()'",
        deployment.db_container,
        deployment.db_name,
    )
    assert out == deployment.db_name


@pytest.mark.parametrize("extension", ["http", "pg_cron"])
def test_extension_installed(psql, extension: str) -> None:  # type: ignore[no-untyped-def]
    assert psql(f"SELECT count(*) FROM pg_extension WHERE extname = '{extension}'") == "1"


@pytest.mark.parametrize(
    "setting,variable",
    [
        ("cron.database_name", "pgmsg_db_name"),
        ("listen_addresses", "postgres_listen_addresses"),
    ],
)
def test_server_settings_come_from_the_inventory(psql, deployment, setting: str, variable: str) -> None:  # type: ignore[no-untyped-def]
    assert psql(f"SHOW {setting}") == str(deployment.value(variable))


def test_pg_cron_is_preloaded(psql) -> None:  # type: ignore[no-untyped-def]
    assert psql("SHOW shared_preload_libraries") == "pg_cron"


@pytest.mark.parametrize(
    "table", ["messages", "subscriptions", "message_delivery", "delivery_attempts", "pgmsg_migrations"]
)
def test_table_present(psql, table: str) -> None:  # type: ignore[no-untyped-def]
    assert psql(f"SELECT to_regclass('public.{table}') IS NOT NULL") == "t"


def test_migrations_complete(psql) -> None:  # type: ignore[no-untyped-def]
    applied = json.loads(psql("SELECT json_agg(name ORDER BY version) FROM pgmsg_migrations"))
    assert applied == [m.name for m in migrations.load()]
