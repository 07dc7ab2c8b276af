"""A single-node deployment of a test's own with backups on (roles/pgbackrest): made from the
local inventory with its own container, ports, volumes and host directories (``pgmsg-bk-test-*``,
127.0.0.1:25610, exporter 25611), deployed with the playbooks; tests/ha/conftest.py's
``backup_node`` fixture creates and removes it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCAL_INVENTORY = ROOT / "inventory" / "local"

#: Names and ports of the backup tests' deployment (the backup helper's range, 25600-25649).
BACKUP_NODE_PREFIX = "pgmsg-bk-test"
BACKUP_NODE_PG_PORT = 25610
BACKUP_NODE_EXPORTER_PORT = 25611
BACKUP_NODE_SQL_EXPORTER_PORT = 25613


@dataclass(frozen=True)
class BackupNode:
    """A deployed single node with backups on, as its scratch inventory describes it."""

    inventory: Path
    variables: dict[str, Any]

    @property
    def container(self) -> str:
        return str(self.variables["postgres_container_name"])

    @property
    def stanza(self) -> str:
        return str(self.variables.get("pgbackrest_stanza", "pgmsg"))

    def dsn(self, user: str = "postgres", password: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1",
            port=self.variables["postgres_port"],
            dbname=self.variables["pgmsg_db_name"],
            user=user,
            password=password or self.variables["postgres_superuser_password"],
            connect_timeout=10,
        )

    def login(self, inventory_key: str) -> tuple[str, str]:
        """The first login role of an inventory list (messaging_schema_admins, ...): name, password."""
        role = self.variables[inventory_key][0]
        return str(role["name"]), str(role["password"])

    def playbook(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(self.inventory), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def deploy(self) -> subprocess.CompletedProcess[str]:
        """The database tier and the exporter, as site.yml deploys them."""
        return self.playbook(
            "playbooks/docker.yml",
            "playbooks/database.yml",
            "playbooks/monitoring.yml",
            "--tags",
            "docker,database,exporter",
        )

    def pgbackrest(self, *args: str) -> str:
        """pgbackrest ARGS for the stanza, run in the database container as postgres; its stdout."""
        return subprocess.run(
            [
                "docker",
                "exec",
                "-u",
                "postgres",
                self.container,
                "pgbackrest",
                f"--stanza={self.stanza}",
                *args,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        ).stdout

    def info(self) -> dict[str, Any]:
        """`pgbackrest info --output=json` of the stanza."""
        return dict(json.loads(self.pgbackrest("--output=json", "info"))[0])


def backup_node_inventory(directory: Path) -> Path:
    """inventory/local copied into directory, with the database tier and exporter renamed and moved
    to the backup tests' ports, volumes and host directories."""
    group_vars = yaml.safe_load((LOCAL_INVENTORY / "group_vars" / "all" / "main.yml").read_text())
    assert group_vars.get("pgbackrest_enabled") is True, "the local inventory has backups on"
    group_vars.update(
        {
            "postgres_container_name": f"{BACKUP_NODE_PREFIX}-postgres",
            "postgres_port": BACKUP_NODE_PG_PORT,
            "postgres_data_volume": f"{BACKUP_NODE_PREFIX}-data",
            "postgres_secrets_dir": str(directory / "secrets"),
            "postgres_build_dir": str(directory / "build" / "postgres"),
            "pgmsg_tls_dir": str(directory / "tls"),
            "pgbackrest_repo_volume": f"{BACKUP_NODE_PREFIX}-repo",
            "pgbackrest_config_dir": str(directory / "pgbackrest"),
            "postgres_exporter_container_name": f"{BACKUP_NODE_PREFIX}-exporter",
            "postgres_exporter_port": BACKUP_NODE_EXPORTER_PORT,
            "postgres_exporter_sql_container_name": f"{BACKUP_NODE_PREFIX}-sql-exporter",
            "postgres_exporter_sql_port": BACKUP_NODE_SQL_EXPORTER_PORT,
            "postgres_exporter_config_dir": str(directory / "exporter"),
            "postgres_exporter_secrets_dir": str(directory / "secrets"),
            "postgres_exporter_build_dir": str(directory / "build" / "postgres-exporter"),
            # The operator's libpq service and password files of its own: root's name the
            # deployed stack's database (a second site.yml found them rewritten to this node).
            "operator_access_service_file": str(directory / "pg_service.conf"),
            "operator_access_pgpass_file": str(directory / "pgpass"),
        }
    )
    (directory / "group_vars" / "all").mkdir(parents=True)
    (directory / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump(group_vars, sort_keys=False))
    (directory / "hosts.yml").write_text((LOCAL_INVENTORY / "hosts.yml").read_text())
    return directory / "hosts.yml"


def remove_backup_node(variables: dict[str, Any]) -> None:
    containers = [
        variables["postgres_container_name"],
        variables["postgres_exporter_container_name"],
        variables["postgres_exporter_sql_container_name"],
    ]
    # One-off containers of playbooks/restore.yml, should a run have been cut short.
    containers += [f"{variables['postgres_container_name']}-{command}" for command in ("info", "restore")]
    subprocess.run(["docker", "rm", "-f", "-v", *containers], capture_output=True, check=False)
    subprocess.run(
        [
            "docker",
            "volume",
            "rm",
            "-f",
            variables["postgres_data_volume"],
            variables["pgbackrest_repo_volume"],
        ],
        capture_output=True,
        check=False,
    )
