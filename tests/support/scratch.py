"""Throwaway PostgreSQL servers from the deployed image, on 127.0.0.1 only.

Tests take one from the ``scratch_server`` fixture (tests/conftest.py): one server per test
module that asks, migrated with webhooks allowed to 127.0.0.1 unless the module is marked
``pytest.mark.scratch(migrated=False)``, removed when the module is done. ``scratch_postgres``
is the one place a server is started (the fixture, tests/support/devdb.py and the restore tests
use it).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from pgmsg import migrations

PASSWORD = "scratch-only-test-password"
# Ports below the kernel's ephemeral range (32768 and up): a port in it can be the local end of
# any client connection at the moment PostgreSQL tries to listen on it.
PORTS = range(25400, 26000)


@dataclass(frozen=True)
class ScratchServer:
    container: str
    port: int
    dsn: str


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def deployed_image(container: str) -> str:
    """The image the deployed PostgreSQL container runs."""
    return docker("inspect", "--format", "{{.Config.Image}}", container).strip()


def free_port() -> int:
    """A port in PORTS nothing listens on now (scratch servers of parallel runs pick apart)."""
    for port in random.sample(PORTS, len(PORTS)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


def wait_for_server(dsn: str, container: str, timeout: float = 90) -> None:
    """Wait until the PostgreSQL of ``container`` accepts ``dsn``; fail with its state and logs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                logs = subprocess.run(
                    ["docker", "logs", container], capture_output=True, text=True, check=False
                )
                state = subprocess.run(
                    ["docker", "inspect", "--format", "{{json .State}}", container],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                raise AssertionError(
                    f"PostgreSQL {container} did not start: {state.stdout.strip()}\n"
                    f"{logs.stdout}{logs.stderr}"
                ) from None
            time.sleep(0.5)


def start_postgres(
    image: str,
    name: str,
    port: int,
    *,
    password: str = PASSWORD,
    dbname: str = "messaging",
    command: Sequence[str] | None = None,
) -> ScratchServer:
    """Run ``image`` as container ``name`` on 127.0.0.1:``port`` (host network, like the
    deployment) and wait for it; the caller removes it (``remove``). ``command`` defaults to
    a plain server with pg_cron, as the migrations need."""
    remove(name)
    secret = os.path.join(tempfile.gettempdir(), f"{name}.secret")
    with open(secret, "w") as f:
        f.write(password)
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--label",
        "pgmsg.test-scratch=1",
        "-e",
        f"PGPORT={port}",
        "-e",
        "POSTGRES_PASSWORD_FILE=/run/secret",
        "-v",
        f"{secret}:/run/secret:ro",
        image,
        *(
            command
            or [
                "postgres",
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "shared_preload_libraries=pg_cron",
                "-c",
                f"cron.database_name={dbname}",
            ]
        ),
    )
    dsn = psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=port, user="postgres", password=password, dbname=dbname
    )
    try:
        wait_for_server(dsn, name)
    except BaseException:
        remove(name)
        raise
    return ScratchServer(name, port, dsn)


def remove(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)


@contextmanager
def scratch_postgres(image: str, name: str, port: int) -> Iterator[str]:
    """A server of ``image`` (``start_postgres``) for the block; yields its superuser dsn."""
    server = start_postgres(image, name, port)
    try:
        yield server.dsn
    finally:
        remove(name)


def migrate_for_tests(dsn: str) -> None:
    """The project's migrations, and webhooks allowed to 127.0.0.1: a database whose
    deliveries, statistics and dispatchers are the test's alone."""
    migrations.apply(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pgmsg_set_webhook_allowlist(ARRAY['127.0.0.1/32'])")


def scratch_database_fixtures() -> tuple[Any, Any, Any]:
    """The dsn, client and db fixtures of a test module, pointed at the module's scratch server
    (the ``scratch_server`` fixture) instead of the deployed database, where the deployed
    dispatcher and services would claim what the module's tests claim by hand. Use at module
    level:

        dsn, client, db = scratch_database_fixtures()
    """
    import pytest
    from psycopg.rows import dict_row

    from pgmsg import Client

    @pytest.fixture(scope="module")
    def dsn(scratch_server: ScratchServer) -> str:
        return scratch_server.dsn

    @pytest.fixture
    def client(dsn: str) -> Iterator[Client]:
        with Client(dsn, max_size=4) as c:
            yield c

    @pytest.fixture
    def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
            yield conn

    return dsn, client, db
