"""Names of the deployment under test, read from the inventory and the roles' defaults.

Tests take them from the ``deployment`` fixture (tests/conftest.py) instead of typing
``postgres-messaging``, ``messaging`` or a port again:

    deployment.db_container, deployment.db_name, deployment.db_port, deployment.services
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The deployment under test: the local inventory, or another one on this machine (local-ha).
INVENTORY = Path(os.environ.get("PGMSG_TEST_INVENTORY") or ROOT / "inventory" / "local" / "hosts.yml")
DB_HOST = "localhost"


def inventory_vars(inventory: Path = INVENTORY, host: str = DB_HOST) -> dict[str, Any]:
    """Variables of ``host`` in ``inventory``, as Ansible sees them (vars not rendered)."""
    out = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-inventory")), "-i", str(inventory), "--host", host],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return dict(json.loads(out))


def _bool(value: object) -> bool:
    """Ansible's ``bool`` filter: true, yes, on, 1 in any case are true."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "yes", "on", "1")


@dataclass
class Deployment:
    """The inventory's variables over every role's defaults, as Ansible layers them, for the
    plain values tests need (``value`` renders ``{{ other_variable }}`` references)."""

    inventory_vars: dict[str, Any]
    db_container: str = field(init=False)
    db_name: str = field(init=False)
    db_host: str = field(init=False)
    db_port: int = field(init=False)
    exporter_container: str = field(init=False)
    sql_exporter_container: str = field(init=False)
    prometheus_container: str = field(init=False)
    pgadmin_container: str = field(init=False)
    services: list[str] = field(init=False)

    @cached_property
    def variables(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for defaults in sorted(ROOT.glob("roles/*/defaults/main.yml")):
            merged.update(yaml.safe_load(defaults.read_text()) or {})
        merged.update(self.inventory_vars)
        return merged

    def value(self, name: str) -> Any:
        """``name`` as Ansible would resolve it (for values built from other plain values)."""
        value = self.variables[name]
        return self.render(value) if isinstance(value, str) else value

    def render(self, text: str) -> str:
        """``text`` with its ``{{ variable }}`` references resolved, as Ansible would."""
        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        env.filters["bool"] = _bool
        while "{{" in text:
            text = env.from_string(text).render(self.variables).strip()
        return text

    def __post_init__(self) -> None:
        # The names tests use, each read from the variable that declares it.
        self.db_container = str(self.value("postgres_container_name"))  # the single node's container
        self.db_name = str(self.value("pgmsg_db_name"))
        self.db_host = str(self.value("pgmsg_db_host"))
        self.db_port = int(self.value("pgmsg_db_port"))  # the single node, or HAProxy's leader port
        self.exporter_container = str(self.value("postgres_exporter_container_name"))
        self.sql_exporter_container = str(self.value("postgres_exporter_sql_container_name"))
        self.prometheus_container = str(self.value("prometheus_container_name"))
        self.pgadmin_container = str(self.value("pgadmin_container_name"))
        self.services = list(self.value("pgmsg_services_enabled"))  # containers enabled on this host

    @property
    def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription the deployment declares, as roles/messaging_schema derives them:
        messaging_schema_subscriptions and each client's own, with its client_id and channel."""
        found = [dict(s) for s in self.value("messaging_schema_subscriptions")]
        for client in self.value("messaging_schema_clients"):
            for subscription in client.get("subscriptions", []):
                found.append(
                    {
                        **subscription,
                        "client_id": client["client_id"],
                        **(
                            {"notify_channel": client["notify_channel"]}
                            if subscription["delivery_mode"] == "notify" and "notify_channel" in client
                            else {}
                        ),
                    }
                )
        return found
