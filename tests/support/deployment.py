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
from dataclasses import dataclass
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
        check=True, capture_output=True, text=True, cwd=ROOT,
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

    # -- the database -----------------------------------------------------------------
    @property
    def db_container(self) -> str:
        """The single node's PostgreSQL container."""
        return str(self.value("postgres_container_name"))

    @property
    def db_name(self) -> str:
        return str(self.value("pgmsg_db_name"))

    @property
    def db_port(self) -> int:
        """Where clients reach PostgreSQL (the single node, or HAProxy's leader port)."""
        return int(self.value("pgmsg_db_port"))

    @property
    def db_host(self) -> str:
        return str(self.value("pgmsg_db_host"))

    # -- monitoring and services -------------------------------------------------------
    @property
    def exporter_container(self) -> str:
        return str(self.value("postgres_exporter_container_name"))

    @property
    def pgadmin_container(self) -> str:
        return str(self.value("pgadmin_container_name"))

    @property
    def services(self) -> list[str]:
        """The service containers the inventory enables on this host."""
        return list(self.value("pgmsg_services_enabled"))

    def client(self, client_id: str) -> dict[str, Any]:
        """The inventory's client login role (name, client_id, password, ...) of ``client_id``."""
        return next(c for c in self.value("messaging_schema_clients") if c["client_id"] == client_id)

    @property
    def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription the deployment declares, as roles/messaging_schema derives them:
        messaging_schema_subscriptions and each client's own, with its client_id and channel."""
        found = [dict(s) for s in self.value("messaging_schema_subscriptions")]
        for client in self.value("messaging_schema_clients"):
            for subscription in client.get("subscriptions", []):
                found.append({**subscription, "client_id": client["client_id"],
                              **({"notify_channel": client["notify_channel"]}
                                 if subscription["delivery_mode"] == "notify" and "notify_channel" in client else {})})
        return found
