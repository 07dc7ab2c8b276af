"""What the client roles render when TLS is on or off, through Ansible's own templating: pgAdmin's
server entry, the services' libpq settings and the exporter's sslmode (the deployed forms are
checked with real handshakes in tests/ha/test_tls.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = Path(sys.executable).with_name("ansible")
INVENTORY = {
    "pgmsg_db_host": "db.pgmsg.example.internal",
    "pgmsg_db_port": 5432,
    "pgmsg_db_name": "messaging",
}


def render(expression: str, var_files: list[str], **variables: Any) -> Any:
    """``expression`` rendered by Ansible with the role files (as extra vars) and ``variables``."""
    env = {**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"}
    files = [arg for path in var_files for arg in ("-e", f"@{ROOT / path}")]
    run = subprocess.run(
        [
            str(ANSIBLE),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-m",
            "ansible.builtin.debug",
            "-a",
            f"msg={{{{ {expression} }}}}",
            *files,
            "-e",
            json.dumps({**INVENTORY, **variables}),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(run.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]


def pgadmin_server(tls: bool) -> dict[str, Any]:
    servers = render(
        "lookup('ansible.builtin.template', 'roles/pgadmin/templates/servers.json.j2') | from_json",
        ["roles/pgadmin/defaults/main.yml"],
        pgmsg_tls_enabled=tls,
    )
    (server,) = servers["Servers"].values()
    return server


def test_pgadmin_verifies_the_server_with_the_deployment_ca_when_tls_is_on() -> None:
    server = pgadmin_server(True)
    assert server["Host"] == "db.pgmsg.example.internal"
    # "pgmsg-tls" is the shared storage images/pgadmin/config_local.py declares for the mounted CA.
    assert server["ConnectionParameters"] == {
        "sslmode": "verify-full",
        "sslrootcert": "pgmsg-tls:/ca.crt",
        "connect_timeout": 10,
    }
    config = (ROOT / "images" / "pgadmin" / "config_local.py").read_text()
    assert '"name": "pgmsg-tls"' in config and 'os.environ["PGMSG_TLS_CA_DIR"]' in config


def test_pgadmin_keeps_libpq_default_without_tls() -> None:
    assert pgadmin_server(False)["ConnectionParameters"] == {"sslmode": "prefer", "connect_timeout": 10}


@pytest.mark.parametrize("tls", [True, False])
def test_services_and_the_publisher_get_verify_full_and_the_ca_when_tls_is_on(tls: bool) -> None:
    files = ["roles/pgmsg_services/defaults/main.yml", "roles/pgmsg_services/vars/main.yml"]
    env, mounts = render("[pgmsg_services_tls_env, pgmsg_services_tls_mounts]", files, pgmsg_tls_enabled=tls)
    if tls:
        assert env == {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/run/pgmsg/tls/ca.crt"}
        assert mounts == [
            {
                "type": "bind",
                "source": "/etc/pgmsg/tls/ca.crt",
                "target": "/run/pgmsg/tls/ca.crt",
                "read_only": True,
            }
        ]
    else:
        assert env == {} and mounts == []


@pytest.mark.parametrize(("tls", "sslmode"), [(True, "verify-full"), (False, "disable")])
def test_exporter_sslmode_follows_tls(tls: bool, sslmode: str) -> None:
    assert (
        render(
            "postgres_exporter_sslmode", ["roles/postgres_exporter/defaults/main.yml"], pgmsg_tls_enabled=tls
        )
        == sslmode
    )


def test_the_local_inventory_stays_on_loopback_without_tls_and_the_shared_ones_use_it() -> None:
    for environment, expected in (("local", False), ("staging", True), ("production", True)):
        settings = yaml.safe_load(
            (ROOT / "inventory" / environment / "group_vars" / "all" / "main.yml").read_text()
        )
        assert settings["pgmsg_tls_enabled"] is expected, environment
