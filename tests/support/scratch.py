"""Throwaway PostgreSQL servers from the deployed image, on 127.0.0.1 only."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from pgmsg import migrations

PASSWORD = "scratch-only-test-password"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def deployed_image(container: str) -> str:
    """The image the deployed PostgreSQL container runs."""
    return docker("inspect", "--format", "{{.Config.Image}}", container).strip()


def wait_for_server(dsn: str, container: str, timeout: float = 90) -> None:
    """Wait until the PostgreSQL of ``container`` accepts ``dsn``; fail with its state and logs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True, check=False)
                state = subprocess.run(["docker", "inspect", "--format", "{{json .State}}", container],
                                       capture_output=True, text=True, check=False)
                raise AssertionError(f"PostgreSQL {container} did not start: {state.stdout.strip()}\n"
                                     f"{logs.stdout}{logs.stderr}") from None
            time.sleep(0.5)


@contextmanager
def scratch_postgres(image: str, name: str, port: int) -> Iterator[str]:
    """Run ``image`` as container ``name`` on 127.0.0.1:``port`` (host network, like the
    deployment), yield a superuser dsn for its empty messaging database, remove it after.

    Take ``port`` below the kernel's ephemeral range (32768 and up): a port in it can be
    the local end of any client connection at the moment PostgreSQL tries to listen on it."""
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)
    with tempfile.NamedTemporaryFile("w", prefix="pgmsg-scratch-", delete=False) as secret:
        secret.write(PASSWORD)
    docker("run", "-d", "--name", name, "--network", "host",
           "-e", f"PGPORT={port}", "-e", "POSTGRES_PASSWORD_FILE=/run/secret",
           "-v", f"{secret.name}:/run/secret:ro", image,
           "postgres", "-c", "listen_addresses=127.0.0.1", "-c", "shared_preload_libraries=pg_cron",
           "-c", "cron.database_name=messaging")
    dsn = f"host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname=messaging"
    try:
        wait_for_server(dsn, name)
        yield dsn
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)


@contextmanager
def migrated_scratch(inventory_vars: dict[str, Any], name: str, port: int) -> Iterator[str]:
    """A scratch server from the deployed PostgreSQL's image, migrated, webhooks allowed to
    127.0.0.1: a database whose deliveries, statistics and dispatchers are the test's alone."""
    image = deployed_image(inventory_vars.get("postgres_container_name", "postgres-messaging"))
    with scratch_postgres(image, name, port) as dsn:
        migrations.apply(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pgmsg_set_webhook_allowlist(ARRAY['127.0.0.1/32'])")
        yield dsn


def scratch_database_fixtures(name: str, port: int) -> tuple[Any, Any, Any]:
    """The dsn, client and db fixtures of a test module, pointed at a migrated scratch server
    of its own instead of the deployed database, where the deployed dispatcher and services
    would claim what the module's tests claim by hand. Use at module level:

        dsn, client, db = scratch_database_fixtures("pgmsg-test-scratch-x", 25439)
    """
    import pytest
    from psycopg.rows import dict_row

    from pgmsg import Client

    @pytest.fixture(scope="module")
    def dsn(inventory_vars: dict[str, Any]) -> Iterator[str]:
        with migrated_scratch(inventory_vars, name, port) as scratch:
            yield scratch

    @pytest.fixture
    def client(dsn: str) -> Iterator[Client]:
        with Client(dsn, max_size=4) as c:
            yield c

    @pytest.fixture
    def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
            yield conn

    return dsn, client, db
