"""Shared fixtures: the deployed system's settings come from the local inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgmsg import Client

ROOT = Path(__file__).resolve().parents[1]
# The deployment under test: the local inventory, or another one on this machine (local-ha).
INVENTORY = Path(os.environ.get("PGMSG_TEST_INVENTORY") or ROOT / "inventory" / "local" / "hosts.yml")
DB_HOST = "localhost"


@pytest.fixture(scope="session")
def inventory_vars() -> dict[str, Any]:
    """Variables of this machine in the inventory under test, as Ansible sees them."""
    ansible_inventory = Path(sys.executable).with_name("ansible-inventory")
    out = subprocess.run(
        [str(ansible_inventory), "-i", str(INVENTORY), "--host", DB_HOST],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    return json.loads(out)


@pytest.fixture(scope="session")
def dsn(inventory_vars: dict[str, Any]) -> str:
    """Superuser connection string of the deployed messaging database, or of a developer's
    private copy on port PGMSG_TEST_PGPORT (tests/support/devdb.py)."""
    return psycopg.conninfo.make_conninfo(
        host=inventory_vars.get("postgres_listen_addresses", "127.0.0.1"),
        port=os.environ.get("PGMSG_TEST_PGPORT") or inventory_vars.get("postgres_port", 5432),
        user="postgres",
        password=inventory_vars["postgres_superuser_password"],
        dbname=inventory_vars.get("postgres_database", "messaging"),
        connect_timeout=10,
    )


@pytest.fixture(scope="session")
def client(dsn: str) -> Iterator[Client]:
    with Client(dsn, max_size=8) as c:
        yield c


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A plain autocommit connection for SQL the tests write themselves."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def run_id(dsn: str) -> Iterator[str]:
    """A unique tag for this test's client ids and message types; its subscriptions
    and messages are removed afterwards so that tests never see each other's."""
    tag = "t" + uuid.uuid4().hex[:10]
    yield tag
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM subscriptions WHERE client_id LIKE %s", (tag + "%",))
        conn.execute("DELETE FROM messages WHERE message_type LIKE %s", (tag + "%",))
        conn.execute("DELETE FROM message_inbox WHERE message_type LIKE %s", (tag + "%",))
