"""The PostgreSQL the benchmarks run against: the project's image plus PGQ, in a throwaway container.

The container listens on 127.0.0.1 only, with host networking, on its own port,
so a benchmark never touches the deployed database. Its settings are the ones
the deployment uses (roles/postgres/defaults), written into the report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pgmsg import migrations

ROOT = Path(__file__).resolve().parents[1]
CONTAINER = "pgmsg-bench-postgres"
IMAGE_REPOSITORY = "pgmsg/postgres-bench"
DEFAULT_PORT = 25440
PASSWORD = "pgmsg-bench-only"
DATABASE = "messaging"

#: The deployment's server settings (roles/postgres/defaults/main.yml), plus what the bench needs.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "100",
    "shared_buffers": "256MB",
    "work_mem": "8MB",
    "maintenance_work_mem": "128MB",
    "effective_cache_size": "1GB",
    "shared_preload_libraries": "pg_cron,pg_stat_statements",
    "cron.database_name": DATABASE,
    "cron.host": "/var/run/postgresql",
}


class BenchError(RuntimeError):
    """The benchmark cannot run (no Docker, no project image, server not starting)."""


def docker(*args: str, check: bool = True) -> str:
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise BenchError("docker is not installed; ./scripts/deploy.sh sets it up") from exc
    if check and done.returncode != 0:
        raise BenchError(f"docker {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def project_image(explicit: str | None = None) -> str:
    """The pgmsg/postgres image: given, else the deployed container's, else the newest built."""
    if explicit:
        docker("image", "inspect", explicit)
        return explicit
    image = docker("inspect", "--format", "{{.Config.Image}}", "postgres-messaging", check=False)
    if image:
        return image
    tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "pgmsg/postgres").splitlines()
    if not tags:
        raise BenchError("no pgmsg/postgres image on this host; run ./scripts/deploy.sh first")
    return tags[0]


def bench_image(base: str) -> str:
    """Build (once per base image and Dockerfile) the project image plus PGQ."""
    dockerfile = (ROOT / "bench" / "image" / "Dockerfile").read_bytes()
    base_id = docker("image", "inspect", "--format", "{{.Id}}", base)
    tag = hashlib.sha256(base_id.encode() + dockerfile).hexdigest()[:12]
    ref = f"{IMAGE_REPOSITORY}:{tag}"
    if not docker("images", "-q", ref):
        docker("build", "--quiet", "--build-arg", f"BASE={base}", "-t", ref, str(ROOT / "bench" / "image"))
    return ref


@dataclass
class Server:
    """A running benchmark PostgreSQL; ``dsn`` reaches it as the superuser."""

    image: str
    port: int
    dsn: str
    container: str = CONTAINER
    facts: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        docker("rm", "-f", "-v", self.container, check=False)


def start(image: str | None = None, port: int = DEFAULT_PORT) -> Server:
    """Start a fresh container from the bench image, migrate it, and return it.

    The container is named after the port, so runs on different ports do not meet."""
    base = project_image(image)
    ref = bench_image(base)
    container = CONTAINER if port == DEFAULT_PORT else f"{CONTAINER}-{port}"
    docker("rm", "-f", "-v", container, check=False)
    secret_dir = Path(tempfile.mkdtemp(prefix="pgmsg-bench-"))
    secret = secret_dir / "password"
    secret.write_text(PASSWORD)
    os.chmod(secret_dir, 0o755)
    os.chmod(secret, 0o644)
    command = ["postgres"]
    for name, value in SETTINGS.items():
        command += ["-c", f"{name}={value}"]
    docker(
        "run",
        "-d",
        "--name",
        container,
        "--network",
        "host",
        "--shm-size",
        "256m",
        "-e",
        f"PGPORT={port}",
        "-e",
        f"PGMSG_DATABASE={DATABASE}",
        "-e",
        "PGMSG_HBA_CIDRS=127.0.0.1/32",
        "-e",
        "POSTGRES_PASSWORD_FILE=/run/secret",
        "-v",
        f"{secret}:/run/secret:ro",
        ref,
        *command,
    )
    dsn = f"host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname={DATABASE}"
    deadline = time.monotonic() + 120
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                logs = docker("logs", container, check=False)
                docker("rm", "-f", "-v", container, check=False)
                raise BenchError("the benchmark PostgreSQL did not start:\n" + logs) from None
            time.sleep(0.5)
    migrations.apply(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pgmsg_set_webhook_allowlist(ARRAY['127.0.0.1/32'])")
    server = Server(image=ref, port=port, dsn=dsn, container=container)
    server.facts = describe(server, base)
    return server


def describe(server: Server, base: str) -> dict[str, Any]:
    """The machine and the server settings, for the report."""
    with psycopg.connect(server.dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(
            conn.execute(
                "SELECT name, setting || coalesce(' ' || unit, '') FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
                (
                    [
                        "shared_buffers",
                        "synchronous_commit",
                        "fsync",
                        "wal_level",
                        "max_connections",
                        "work_mem",
                        "checkpoint_timeout",
                        "max_wal_size",
                        "full_page_writes",
                    ],
                ),
            ).fetchall()
        )
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker_engine": docker("version", "--format", "{{.Server.Version}}", check=False),
        "postgres_version": version,
        "project_image": base,
        "bench_image": server.image,
        "settings": settings,
        "network": "host networking, 127.0.0.1 only",
    }


def reset(dsn: str) -> None:
    """Empty the pgmsg tables (and the reference table) between scenarios.

    No ANALYZE of the empty tables: statistics saying "empty" would make the
    plans cached in the next sessions scan instead of using indexes, until
    autovacuum analyzes again; after TRUNCATE the planner assumes a few pages,
    as on a fresh deployment."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE delivery_attempts, message_delivery, messages, message_inbox, subscriptions "
            "RESTART IDENTITY CASCADE"
        )
        conn.execute("DROP TABLE IF EXISTS bench_raw")
        conn.execute("CHECKPOINT")


def statements(dsn: str, limit: int = 8) -> list[dict[str, Any]]:
    """The most expensive statements since the last reset (pg_stat_statements)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query, calls, "
            "round(total_exec_time::numeric, 1) AS total_ms, round(mean_exec_time::numeric, 3) AS mean_ms "
            "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT %s",
            (limit,),
        ).fetchall()
    return [
        dict(
            zip(
                ("query", "calls", "total_ms", "mean_ms"),
                (r[0], r[1], float(r[2]), float(r[3])),
                strict=False,
            )
        )
        for r in rows
    ]


def reset_statements(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


if __name__ == "__main__":  # a quick manual check: start, describe, stop
    s = start()
    print(json.dumps(s.facts, indent=2))
    s.stop()
