"""Migrations: tracked, immutable, and a fresh database migrated step by step
has exactly the schema of the deployed one."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from pgmsg import migrations
from tests.support.deployment import Deployment
from tests.support.scratch import ScratchServer, docker

# The module's scratch server starts empty: the tests migrate it themselves.
pytestmark = pytest.mark.scratch(migrated=False)


def schema_dump(container: str, port: int, dbname: str) -> str:
    """pg_dump --schema-only of the messaging database, without volatile lines."""
    text = docker(
        "exec", container, "pg_dump", "--schema-only", "--no-owner", "-p", str(port), "-U", "postgres", dbname
    )
    lines = [
        line
        for line in text.splitlines()
        if line and not line.startswith("--") and not re.match(r"\\(un)?restrict ", line)
    ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def scratch_dsn(scratch_server: ScratchServer) -> str:
    return scratch_server.dsn


def test_deployed_database_has_every_migration(db: psycopg.Connection[Any]) -> None:
    rows = db.execute("SELECT version, name, checksum FROM pgmsg_migrations ORDER BY version").fetchall()
    assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
        (m.version, m.name, m.checksum) for m in migrations.load()
    ]


def test_fresh_database_migrated_step_by_step_equals_deployed_schema(
    scratch_server: ScratchServer, deployment: Deployment
) -> None:
    applied = migrations.apply(scratch_server.dsn)
    assert applied == [m.name for m in migrations.load()]
    deployed = schema_dump(deployment.db_container, deployment.value("postgres_port"), deployment.db_name)
    assert schema_dump(scratch_server.container, scratch_server.port, deployment.db_name) == deployed


def test_rerun_applies_nothing(scratch_dsn: str) -> None:
    migrations.apply(scratch_dsn)
    assert migrations.apply(scratch_dsn) == []


def test_edited_migration_is_refused(scratch_dsn: str) -> None:
    migrations.apply(scratch_dsn)
    first = migrations.load()[0]
    with (
        psycopg.connect(scratch_dsn, autocommit=True) as conn,
        pytest.raises(psycopg.errors.DataException, match="was changed after it was applied"),
    ):
        conn.execute(
            "SELECT pgmsg_apply_migration(%s, %s, %s, %s)",
            (first.version, first.name, "0" * 64, first.sql + "\n-- edited"),
        )


def test_new_migration_is_applied_once(scratch_dsn: str) -> None:
    migrations.apply(scratch_dsn)
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        args = (999, "999_probe", "c" * 64, "CREATE TABLE migration_probe (id int)")
        assert conn.execute("SELECT pgmsg_apply_migration(%s, %s, %s, %s)", args).fetchone()[0] is True
        assert conn.execute("SELECT pgmsg_apply_migration(%s, %s, %s, %s)", args).fetchone()[0] is False
        assert conn.execute("SELECT count(*) FROM pgmsg_migrations WHERE version = 999").fetchone()[0] == 1


def test_an_index_build_runs_outside_the_transaction_and_an_interrupted_one_is_redone(
    scratch_dsn: str, tmp_path: Any
) -> None:
    """A migration's '-- pgmsg:concurrently' section: the build takes no lock that stops
    writers (CREATE INDEX CONCURRENTLY, impossible inside a transaction), and a build that
    failed half-way (an invalid index) is dropped and built again by the next run."""
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE concurrent_probe")
    params = psycopg.conninfo.conninfo_to_dict(scratch_dsn)
    probe = psycopg.conninfo.make_conninfo(**{**params, "dbname": "concurrent_probe"})
    sql_dir = tmp_path / "sql"
    (sql_dir / "migrations").mkdir(parents=True)
    (sql_dir / "bootstrap.sql").write_text((migrations.default_sql_dir() / "bootstrap.sql").read_text())
    (sql_dir / "migrations" / "001_probe.sql.j2").write_text(
        "CREATE TABLE probe (a int);\nINSERT INTO probe VALUES (1), (1);\n"
    )
    assert migrations.apply(probe, sql_dir) == ["001_probe"]
    with psycopg.connect(probe, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):  # the interrupted build
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY probe_a_key ON probe (a)")
        conn.execute("DELETE FROM probe WHERE ctid = (SELECT min(ctid) FROM probe)")
        assert conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'probe_a_key'::regclass"
        ).fetchone() == (False,)
    (sql_dir / "migrations" / "002_probe_key.sql.j2").write_text(
        "SET LOCAL lock_timeout = '5s';\nCOMMENT ON TABLE probe IS 'probe';\n-- pgmsg:concurrently\n"
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS probe_a_key ON probe (a);\n"
    )
    assert migrations.apply(probe, sql_dir) == ["002_probe_key"]
    with psycopg.connect(probe, autocommit=True) as conn:
        assert conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'probe_a_key'::regclass"
        ).fetchone() == (True,)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO probe VALUES (1)")
        recorded = conn.execute("SELECT checksum FROM pgmsg_migrations WHERE version = 2").fetchone()
    assert recorded == (migrations.load(sql_dir)[1].checksum,)
    assert migrations.apply(probe, sql_dir) == []  # nothing left to do
