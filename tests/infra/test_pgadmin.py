"""testinfra: the pgAdmin container deployed by the pgadmin role (local inventory)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def container_name(deployment) -> str:  # type: ignore[no-untyped-def]
    return deployment.pgadmin_container


@pytest.fixture(scope="module")
def inspect(host, container_name):  # type: ignore[no-untyped-def]
    return host.docker(container_name).inspect()


def test_pgadmin_container_running_and_healthy(host, container_name, inspect) -> None:  # type: ignore[no-untyped-def]
    assert host.docker(container_name).is_running
    assert inspect["State"]["Health"]["Status"] == "healthy"
    assert inspect["Config"]["Image"].startswith("pgmsg/pgadmin:")


def test_pgadmin_restart_policy_and_network(hostvars, inspect) -> None:  # type: ignore[no-untyped-def]
    config = inspect["HostConfig"]
    assert config["RestartPolicy"]["Name"] == hostvars.get("pgadmin_restart_policy", "unless-stopped")
    assert config["NetworkMode"] == hostvars["pgadmin_network_mode"]


def test_pgadmin_keeps_its_data_in_the_named_volume(inspect) -> None:  # type: ignore[no-untyped-def]
    mounts = {m["Destination"]: m for m in inspect["Mounts"]}
    assert mounts["/var/lib/pgadmin"]["Type"] == "volume"
    assert mounts["/var/lib/pgadmin"]["Name"] == "pgmsg-pgadmin-data"
    assert mounts["/run/secrets/pgadmin_password"]["RW"] is False


def test_pgadmin_listens_on_loopback_only(host, hostvars) -> None:  # type: ignore[no-untyped-def]
    port = hostvars["pgadmin_port"]
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_pgadmin_password_file_is_private(host) -> None:  # type: ignore[no-untyped-def]
    secret = host.file("/etc/pgmsg/pgadmin_password")
    assert secret.mode == 0o600
    assert secret.user == "root"
    assert secret.group == "root"


def test_pgadmin_password_is_not_in_the_container_config(hostvars, inspect) -> None:  # type: ignore[no-untyped-def]
    # Only the file name travels in the environment; the password stays in the file.
    assert hostvars["pgadmin_password"] not in json.dumps(inspect)
    assert "PGADMIN_PASSWORD_FILE=/run/secrets/pgadmin_password" in inspect["Config"]["Env"]


def test_pgadmin_runs_as_unprivileged_user(host, container_name) -> None:  # type: ignore[no-untyped-def]
    status = host.check_output("docker exec %s cat /proc/1/status", container_name)
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert "0" not in uids
    assert host.check_output("docker exec %s id -un %s", container_name, uids[0]) == "pgadmin"


def test_pgadmin_ping_answers(host, hostvars) -> None:  # type: ignore[no-untyped-def]
    url = f"http://{hostvars['pgadmin_listen_address']}:{hostvars['pgadmin_port']}/misc/ping"
    assert host.check_output("curl -fsS --max-time 10 %s", url) == "PING"


def test_pgadmin_lists_the_messaging_server_once(host, container_name) -> None:  # type: ignore[no-untyped-def]
    # What the administrator's object explorer holds after every restart so far:
    # load-servers --replace must not have added a copy per start.
    dump = host.run(
        "docker exec -u pgadmin -w /opt/pgadmin/app %s sh -c %s",
        container_name,
        'f=$(mktemp) && /opt/pgadmin/bin/python setup.py dump-servers $f --user "$PGADMIN_EMAIL" >/dev/null'
        " && cat $f; rc=$?; rm -f $f; exit $rc",
    )
    assert dump.rc == 0, dump.stderr
    servers = list(json.loads(dump.stdout)["Servers"].values())
    assert [s["Name"] for s in servers] == ["pgmsg messaging"]
    server = servers[0]
    # The inventory's values, templated by Ansible (pgmsg_db_port is "{{ postgres_port }}").
    db = host.ansible("debug", "msg={{ [pgmsg_db_host, pgmsg_db_port | int, pgmsg_db_name] }}", check=False)[
        "msg"
    ]
    assert [server["Host"], server["Port"], server["MaintenanceDB"]] == db
    assert server["Username"] == "postgres"
    assert server["ConnectionParameters"]["sslmode"] == "prefer"
