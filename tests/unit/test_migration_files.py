"""The migration files themselves: names, order, rendering."""

from __future__ import annotations

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
