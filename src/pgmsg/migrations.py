"""Versioned migrations (sql/migrations/NNN_description.sql.j2) applied from Python.

The Ansible role messaging_schema applies the same files the same way: each is
rendered with Jinja2, then handed as a bind parameter to the database function
pgmsg_apply_migration, which runs it and records it in one transaction and
refuses a migration that changed after it was applied.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import psycopg

from pgmsg.errors import InvalidInput, translated

MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql\.j2$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def default_sql_dir() -> Path:
    """The SQL shipped inside the package (images copy it to pgmsg/_sql), else the
    repository's sql/ directory next to src/ (a development checkout)."""
    packaged = Path(__file__).resolve().parent / "_sql"
    if (packaged / "migrations").is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sql"


def load(sql_dir: Path | None = None, variables: dict[str, Any] | None = None) -> list[Migration]:
    """Render every migration in version order; refuse badly named or duplicate versions."""
    directory = (sql_dir or default_sql_dir()) / "migrations"
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        match = MIGRATION_NAME.match(path.name)
        if not match:
            raise InvalidInput(f"{path.name}: migrations are named NNN_description.sql.j2")
        version = int(match.group(1))
        if version in found:
            raise InvalidInput(f"{path.name}: version {version} is used twice")
        text = env.from_string(path.read_text()).render(**(variables or {}))
        found[version] = Migration(version, path.name.removesuffix(".sql.j2"), text)
    return [found[v] for v in sorted(found)]


def apply(conninfo: str, sql_dir: Path | None = None,
          variables: dict[str, Any] | None = None) -> list[str]:
    """Apply the bookkeeping and every pending migration; return the names applied."""
    directory = sql_dir or default_sql_dir()
    applied: list[str] = []
    with translated("migrating the messaging database"), psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute((directory / "bootstrap.sql").read_text())
        for migration in load(directory, variables):
            row = conn.execute(
                "SELECT pgmsg_apply_migration(%s, %s, %s, %s)",
                (migration.version, migration.name, migration.checksum, migration.sql),
            ).fetchone()
            if row and row[0]:
                applied.append(migration.name)
    return applied
