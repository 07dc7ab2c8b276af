"""pgmsg migrate and pgmsg migrate status.

Applying is tested on a scratch database created in the same cluster, with
migrations written here: the deployed database only ever gets the project's
migrations through the deployment, never from a test."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from pgmsg import migrations
from pgmsg.cli import cli

Run = Callable[..., Result]


@pytest.fixture
def scratch_dsn(dsn: str, db: psycopg.Connection[Any], run_id: str) -> Iterator[str]:
    name = f"{run_id}_migrate"
    db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(dsn, dbname=name)
    finally:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def sql_dir(tmp_path: Path) -> Path:
    """bootstrap.sql from the project, and one migration of our own."""
    (tmp_path / "migrations").mkdir()
    shutil.copy(migrations.default_sql_dir() / "bootstrap.sql", tmp_path / "bootstrap.sql")
    (tmp_path / "migrations" / "001_probe_table.sql.j2").write_text("CREATE TABLE probe (id integer);\n")
    return tmp_path


def invoke(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"PGMSG_DSN": dsn}, catch_exceptions=False)


def states(result: Result) -> dict[str, str]:
    return {row["name"]: row["state"] for row in json.loads(result.stdout)}


def test_apply_and_status_on_a_scratch_database(scratch_dsn: str, sql_dir: Path) -> None:
    before = invoke(scratch_dsn, "migrate", "status", "--sql-dir", str(sql_dir), "--json")
    assert before.exit_code == 0, before.output
    assert states(before) == {"001_probe_table": "pending"}  # not even the tracking table yet

    applied = invoke(scratch_dsn, "migrate", "--sql-dir", str(sql_dir))
    assert applied.exit_code == 0, applied.output
    assert applied.output == "applied 001_probe_table\n"
    with psycopg.connect(scratch_dsn) as conn:
        assert conn.execute("SELECT to_regclass('probe') IS NOT NULL").fetchone()[0]

    again = invoke(scratch_dsn, "migrate", "--sql-dir", str(sql_dir))
    assert again.exit_code == 0 and "nothing to apply: all 1 migrations are applied" in again.output

    (sql_dir / "migrations" / "002_probe_column.sql.j2").write_text(
        "ALTER TABLE probe ADD COLUMN note text;\n"
    )
    table = invoke(scratch_dsn, "migrate", "--sql-dir", str(sql_dir), "status")
    assert table.exit_code == 0
    assert [line.split()[:3] for line in table.output.splitlines()[1:]] == [
        ["1", "001_probe_table", "applied"],
        ["2", "002_probe_column", "pending"],
    ]
    second = invoke(scratch_dsn, "--json", "migrate", "--sql-dir", str(sql_dir))
    assert json.loads(second.stdout) == {"applied": ["002_probe_column"]}


def test_edited_migration_is_flagged_and_refused(scratch_dsn: str, sql_dir: Path) -> None:
    assert invoke(scratch_dsn, "migrate", "--sql-dir", str(sql_dir)).exit_code == 0
    (sql_dir / "migrations" / "001_probe_table.sql.j2").write_text("CREATE TABLE probe (id bigint);\n")

    status = invoke(scratch_dsn, "migrate", "status", "--sql-dir", str(sql_dir))
    assert status.exit_code == 1
    assert "CHECKSUM MISMATCH" in status.output
    assert "1 migration(s) changed after they were applied: 001 001_probe_table" in status.output

    refused = invoke(scratch_dsn, "migrate", "--sql-dir", str(sql_dir))
    assert refused.exit_code == 1
    assert "was changed after it was applied" in refused.output and "Traceback" not in refused.output

    (sql_dir / "migrations" / "001_probe_table.sql.j2").unlink()
    gone = invoke(scratch_dsn, "migrate", "status", "--sql-dir", str(sql_dir), "--json")
    assert states(gone) == {"001_probe_table": "not in sql dir"}


def test_bad_sql_dir(dsn: str, tmp_path: Path) -> None:
    empty = invoke(dsn, "migrate", "status", "--sql-dir", str(tmp_path))
    assert empty.exit_code == 1 and "has no bootstrap.sql and migrations/" in empty.output
    missing = invoke(dsn, "migrate", "status", "--sql-dir", str(tmp_path / "nope"))
    assert missing.exit_code == 2


def test_status_of_the_deployed_database(dsn: str, db: psycopg.Connection[Any]) -> None:
    result = invoke(dsn, "migrate", "status", "--json")  # read-only
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    recorded = {r["version"] for r in db.execute("SELECT version FROM pgmsg_migrations")}
    assert {r["version"] for r in rows if r["state"] == "applied"} == recorded
    assert {r["state"] for r in rows} <= {"applied", "pending"}
