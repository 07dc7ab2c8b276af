"""The migration files themselves: names, order, rendering."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from pgmsg import migrations
from pgmsg.errors import InvalidInput


def test_migrations_are_numbered_without_gaps() -> None:
    loaded = migrations.load()
    assert [m.version for m in loaded] == list(range(1, len(loaded) + 1))


def test_every_migration_renders_to_sql() -> None:
    for migration in migrations.load():
        assert migration.sql.strip(), migration.name
        assert "{{" not in migration.sql and "{%" not in migration.sql, migration.name


def test_badly_named_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "7_missing_padding.sql.j2").write_text("SELECT 1;")
    with pytest.raises(InvalidInput, match="NNN_description.sql.j2"):
        migrations.load(tmp_path)


def test_duplicate_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "001_a.sql.j2").write_text("SELECT 1;")
    (tmp_path / "migrations" / "001_b.sql.j2").write_text("SELECT 2;")
    with pytest.raises(InvalidInput, match="version 1 is used twice"):
        migrations.load(tmp_path)


# -- upgrades that do not stop the system ---------------------------------------
# Migrations up to 015 were written before these rules and are immutable; from 016 on,
# an upgrade of a running system must not queue publishers behind a lock for long.
FIRST_CHECKED = 16


def checked() -> list[migrations.Migration]:
    return [m for m in migrations.load() if m.version >= FIRST_CHECKED]


def without_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def created_tables(sql: str) -> set[str]:
    return {t.lower() for t in re.findall(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", sql, re.I)}


def test_every_new_migration_bounds_its_lock_waits() -> None:
    for migration in checked():
        assert re.search(
            r"SET\s+LOCAL\s+lock_timeout\s*=", without_comments(migration.transactional), re.I
        ), (
            f"{migration.name}: start with SET LOCAL lock_timeout = '5s' (a migration must not wait "
            "behind a long transaction while every publisher waits behind it)"
        )


def test_new_indexes_on_existing_tables_are_built_concurrently() -> None:
    for migration in checked():
        sql = without_comments(migration.transactional)
        fresh = created_tables(sql)
        for table in re.findall(r"CREATE\s+(?:UNIQUE\s+)?INDEX\b[^;]*?\bON\s+(?:ONLY\s+)?(\w+)", sql, re.I):
            assert table.lower() in fresh, (
                f"{migration.name}: an index on the existing table {table} locks out writers while it is "
                f"built; put it after '{migrations.CONCURRENTLY_MARKER}' as CREATE INDEX CONCURRENTLY IF NOT EXISTS"
            )
        assert not re.search(r"\bREINDEX\b", sql, re.I), f"{migration.name}: REINDEX locks out writers"


def test_new_constraints_on_existing_tables_are_validated_apart() -> None:
    for migration in checked():
        sql = without_comments(migration.transactional)
        fresh = created_tables(sql)
        for table, body in re.findall(r"ALTER\s+TABLE\s+(?:ONLY\s+)?(\w+)(.*?);", sql, re.I | re.S):
            if table.lower() in fresh:
                continue
            for constraint in re.findall(
                r"ADD\s+CONSTRAINT\s+\w+\s+((?:CHECK|FOREIGN\s+KEY).*?)(?=,\s*ADD\s|,\s*DROP\s|$)",
                body,
                re.I | re.S,
            ):
                assert re.search(r"NOT\s+VALID\s*$", constraint.strip(), re.I), (
                    f"{migration.name}: a constraint added to {table} is checked against every row under "
                    "ACCESS EXCLUSIVE; add it NOT VALID and VALIDATE CONSTRAINT in a separate statement"
                )


def test_the_concurrent_section_takes_only_idempotent_index_statements(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    good = (
        "CREATE TABLE t (a int);\n-- pgmsg:concurrently\n"
        "-- a comment\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_a_idx ON t (a);\n"
        "DROP INDEX CONCURRENTLY IF EXISTS t_old_idx;\n"
    )
    (tmp_path / "migrations" / "001_good.sql.j2").write_text(good)
    (loaded,) = migrations.load(tmp_path)
    assert loaded.transactional == "CREATE TABLE t (a int);\n"
    assert [name for name, _ in loaded.concurrent] == ["t_a_idx", "t_old_idx"]
    assert loaded.checksum == hashlib.sha256(good.encode()).hexdigest()  # the whole file counts
    (tmp_path / "migrations" / "002_bad.sql.j2").write_text(
        "-- pgmsg:concurrently\nCREATE INDEX CONCURRENTLY t_b ON t (a);\n"
    )
    with pytest.raises(InvalidInput, match="only CREATE"):
        _ = migrations.load(tmp_path)[1].concurrent
