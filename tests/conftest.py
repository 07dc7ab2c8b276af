"""Shared fixtures: the deployed system's settings come from the local inventory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgmsg import Client
from tests.support.deployment import INVENTORY, Deployment
from tests.support.deployment import inventory_vars as deployment_vars
from tests.support.receiver import Receiver
from tests.support.scratch import (
    ScratchServer,
    deployed_image,
    free_port,
    migrate_for_tests,
    remove,
    start_postgres,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def inventory_vars() -> dict[str, Any]:
    """Variables of this machine in the inventory under test, as Ansible sees them."""
    return deployment_vars(INVENTORY)


@pytest.fixture(scope="session")
def deployment(inventory_vars: dict[str, Any]) -> Deployment:
    """Names of the deployment under test (containers, database, ports, services), from the
    inventory over the roles' defaults: tests read them here instead of typing them."""
    return Deployment(inventory_vars)


@pytest.fixture(scope="session")
def dsn(deployment: Deployment) -> str:
    """Superuser connection string of the deployed messaging database, or of a developer's
    private copy on port PGMSG_TEST_PGPORT (tests/support/devdb.py)."""
    return psycopg.conninfo.make_conninfo(
        host=deployment.db_host,
        port=os.environ.get("PGMSG_TEST_PGPORT") or deployment.db_port,
        user="postgres",
        password=deployment.value("postgres_superuser_password"),
        dbname=deployment.db_name,
        connect_timeout=10,
    )


@pytest.fixture(scope="module")
def scratch_server(request: pytest.FixtureRequest, deployment: Deployment) -> Iterator[ScratchServer]:
    """The test module's own throwaway PostgreSQL (tests/support/scratch.py) from the deployed
    database's image, on 127.0.0.1: migrated, webhooks allowed to 127.0.0.1, unless the module
    is marked ``pytest.mark.scratch(migrated=False)``. Removed when the module is done."""
    marker = request.node.get_closest_marker("scratch")
    migrated = marker.kwargs.get("migrated", True) if marker else True
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    name = f"pgmsg-test-scratch-{module}-{os.getpid()}"
    server = start_postgres(
        deployed_image(deployment.db_container), name, free_port(), dbname=deployment.db_name
    )
    try:
        if migrated:
            migrate_for_tests(server.dsn)
        yield server
    finally:
        remove(name)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The tests' webhook endpoint (tests/support/receiver.py), started on 127.0.0.1; set
    ``status`` or ``respond`` to change its answers, ``another()`` for a second one. Stopped
    (with the others) after the test."""
    started = Receiver().start()
    yield started
    started.stop()


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
