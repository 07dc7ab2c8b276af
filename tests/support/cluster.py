"""The deployed Patroni cluster, as its inventory and Patroni's REST API describe it.

Members, their ports and the REST API come from the inventory under test
(PGMSG_TEST_INVENTORY, e.g. inventory/local-ha/hosts.yml); the cluster's state comes from
Patroni itself (GET /cluster on any member that answers), so a test sees what HAProxy sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Member:
    name: str  # Patroni member name
    container: str  # its container on its host
    address: str
    pg_port: int
    rest_port: int

    @property
    def rest_url(self) -> str:
        return f"http://{self.address}:{self.rest_port}"


@dataclass(frozen=True)
class EtcdMember:
    name: str
    container: str
    address: str
    client_port: int


def inventory_hostvars(inventory: Path) -> dict[str, dict[str, Any]]:
    ansible_inventory = Path(sys.executable).with_name("ansible-inventory")
    out = subprocess.run(
        [str(ansible_inventory), "-i", str(inventory), "--list"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    ).stdout
    listing = json.loads(out)
    hostvars: dict[str, dict[str, Any]] = listing["_meta"]["hostvars"]
    hostvars["__groups__"] = {g: v.get("hosts", []) for g, v in listing.items() if g != "_meta"}
    return hostvars


def docker(*args: str, timeout: float = 60, check: bool = True) -> str:
    run = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {run.stderr.strip()}")
    return run.stdout


class Cluster:
    def __init__(self, inventory: Path) -> None:
        hostvars = inventory_hostvars(inventory)
        groups = hostvars.pop("__groups__")
        self.members = [
            Member(
                name=hostvars[h].get("patroni_member_name", h),
                container=hostvars[h].get(
                    "patroni_container_name", hostvars[h].get("patroni_member_name", h)
                ),
                address=hostvars[h].get("patroni_address", "127.0.0.1"),
                pg_port=int(hostvars[h]["patroni_postgres_port"]),
                rest_port=int(hostvars[h]["patroni_restapi_port"]),
            )
            for h in groups["messaging_db"]
        ]
        self.etcd = [
            EtcdMember(
                name=hostvars[h].get("etcd_member_name", h),
                container=hostvars[h].get("etcd_container_name", hostvars[h].get("etcd_member_name", h)),
                address=hostvars[h].get("etcd_address", "127.0.0.1"),
                client_port=int(hostvars[h]["etcd_client_port"]),
            )
            for h in groups["etcd_cluster"]
        ]
        any_host = hostvars[groups["messaging_db"][0]]
        self.vars = any_host
        self.haproxy = any_host.get("haproxy_container_name", "pgmsg-haproxy")
        self.haproxy_stats = int(any_host.get("haproxy_stats_port", 7000))
        self.replica_port = int(any_host.get("haproxy_replica_port", 5433))
        self.by_name = {m.name: m for m in self.members}

    def container(self, member: str) -> str:
        return self.by_name[member].container

    # -- Patroni's view ------------------------------------------------------------------

    def state(self, exclude: set[str] = frozenset()) -> dict[str, Any] | None:  # type: ignore[assignment]
        """GET /cluster from the first member that answers (None if none does)."""
        for m in self.members:
            if m.name in exclude:
                continue
            try:
                with urllib.request.urlopen(m.rest_url + "/cluster", timeout=2) as answer:
                    return json.loads(answer.read())
            except (OSError, urllib.error.URLError, ValueError):
                continue
        return None

    def roles(self, exclude: set[str] = frozenset()) -> dict[str, dict[str, Any]]:  # type: ignore[assignment]
        state = self.state(exclude) or {"members": []}
        return {m["name"]: m for m in state["members"]}

    def leader(self, exclude: set[str] = frozenset()) -> str | None:  # type: ignore[assignment]
        leaders = [
            n for n, m in self.roles(exclude).items() if m["role"] == "leader" and m["state"] == "running"
        ]
        return leaders[0] if len(leaders) == 1 else None

    def wait_for_leader(self, *, other_than: str | None = None, timeout: float = 60) -> str:
        found: list[str] = []

        def elected() -> bool:
            name = self.leader(exclude={other_than} if other_than else set())
            if name and name != other_than:
                found.append(name)
                return True
            return False

        wait_until(elected, timeout=timeout, interval=0.2, message=f"no new leader (other than {other_than})")
        return found[-1]

    def wait_healthy(self, timeout: float = 180) -> None:
        """Every member runs: one leader, the others streaming, one of them the sync standby."""

        def healthy() -> bool:
            roles = self.roles()
            if set(roles) != set(self.by_name):
                return False
            states = [(m["role"], m["state"]) for m in roles.values()]
            return (
                states.count(("leader", "running")) == 1
                and sum(1 for r, s in states if r != "leader" and s == "streaming") == len(self.members) - 1
                and any(r == "sync_standby" for r, _ in states)
            )

        wait_until(healthy, timeout=timeout, interval=0.5, message=f"cluster not healthy: {self.roles()}")

    def patronictl(self, *args: str, member: str | None = None, timeout: float = 120) -> str:
        name = member or self.leader() or self.members[0].name
        return docker(
            "exec",
            self.by_name[name].container,
            "patronictl",
            "-c",
            "/etc/patroni/patroni.yml",
            *args,
            timeout=timeout,
        )

    def start_all(self) -> None:
        """Start whatever member, etcd member or HAProxy a test stopped, and wait for health."""
        for name in [m.container for m in self.members] + [e.container for e in self.etcd] + [self.haproxy]:
            if docker("inspect", "--format", "{{.State.Running}}", name).strip() != "true":
                docker("start", name)
        self.wait_healthy()

    def haproxy_rows(self) -> list[dict[str, str]]:
        """HAProxy's statistics CSV, a dict per proxy, frontend, backend and server."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.haproxy_stats}/;csv", timeout=5) as answer:
            lines = answer.read().decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]

    def haproxy_backends(self) -> dict[str, dict[str, str]]:
        """{proxy: {server: status}} from HAProxy's statistics CSV."""
        out: dict[str, dict[str, str]] = {}
        for row in self.haproxy_rows():
            if row.get("svname") not in ("FRONTEND", "BACKEND", None):
                out.setdefault(row["pxname"], {})[row["svname"]] = row["status"]
        return out


def monotonic_since(t: float) -> float:
    return time.monotonic() - t


def inventory_under_test() -> Path:
    """The inventory the tests run against (PGMSG_TEST_INVENTORY), which must describe a cluster."""
    import os

    return Path(os.environ.get("PGMSG_TEST_INVENTORY") or ROOT / "inventory" / "local-ha" / "hosts.yml")
