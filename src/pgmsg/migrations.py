"""Versioned migrations (sql/migrations/NNN_description.sql.j2): the one runner.

``pgmsg migrate`` and the Ansible role messaging_schema both run this code (the role runs
``pgmsg migrate --json`` in a one-off container of the services image on the database host,
library/pgmsg_migrate.py). Each file is rendered with Jinja2, then handed as a bind parameter
to the database function pgmsg_apply_migration, which runs it and records it in one
transaction. A migration that changed after it was applied is refused before anything runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import psycopg
import psycopg.sql

from pgmsg.errors import InvalidInput, PgmsgError, describe, translated

#: The states :func:`status` gives a migration.
APPLIED, PENDING, MISMATCH, UNKNOWN = "applied", "pending", "CHECKSUM MISMATCH", "not in sql dir"

MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql\.j2$")

# Everything after this line of a migration runs after its transaction has committed,
# one statement at a time: index builds and drops that must not hold a lock on a busy
# table for their whole duration (CREATE INDEX CONCURRENTLY cannot run in a transaction).
CONCURRENTLY_MARKER = "-- pgmsg:concurrently"
# The only statements allowed there: each is idempotent, so a deploy interrupted between
# them finishes the work on its next run.
CONCURRENT_STATEMENT = re.compile(
    r"^(?:CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS|"
    r"DROP\s+INDEX\s+CONCURRENTLY\s+IF\s+EXISTS)\s+([a-z_][a-z0-9_]*)\b",
    re.I,
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> str:
        """What pgmsg_apply_migration runs and records in one transaction."""
        return self.sql.split(CONCURRENTLY_MARKER, 1)[0]

    @property
    def concurrent(self) -> list[tuple[str, str]]:
        """(index name, statement) pairs to run after the commit, in order."""
        _, marker, rest = self.sql.partition(CONCURRENTLY_MARKER)
        if not marker:
            return []
        found = []
        for statement in (s.strip() for s in rest.split(";")):
            body = "\n".join(
                line for line in statement.splitlines() if not line.lstrip().startswith("--")
            ).strip()
            if not body:
                continue
            match = CONCURRENT_STATEMENT.match(body)
            if not match:
                raise InvalidInput(
                    f"{self.name}: after '{CONCURRENTLY_MARKER}' only CREATE [UNIQUE] INDEX "
                    f"CONCURRENTLY IF NOT EXISTS and DROP INDEX CONCURRENTLY IF EXISTS may "
                    f"stand, found: {body[:80]}"
                )
            found.append((match.group(1), body))
        return found


def default_sql_dir() -> Path:
    """The SQL shipped inside the package (a wheel carries sql/ as pgmsg/_sql), else the
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


def status(applied: Iterable[Mapping[str, Any]], sql_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every migration known to the files or to the database, with its state.

    ``applied`` are the rows of pgmsg_migrations (version, name, checksum, applied_at), as
    :meth:`pgmsg.Client.applied_migrations` reads them.
    """
    available = {m.version: m for m in load(sql_dir)}
    recorded = {r["version"]: r for r in applied}
    rows = []
    for version in sorted(available.keys() | recorded.keys()):
        file, row = available.get(version), recorded.get(version)
        if row is None:
            state = PENDING
        elif file is None:
            state = UNKNOWN
        elif row["checksum"] != file.checksum:
            state = MISMATCH
        else:
            state = APPLIED
        rows.append(
            {
                "version": version,
                "name": file.name if file else row["name"],
                "state": state,
                "applied_at": row["applied_at"] if row else None,
                "checksum": file.checksum if file else None,
                "applied_checksum": row["checksum"] if row else None,
            }
        )
    return rows


def apply(conninfo: str, sql_dir: Path | None = None, variables: dict[str, Any] | None = None) -> list[str]:
    """Apply the bookkeeping and every pending migration; return the names applied."""
    directory = sql_dir or default_sql_dir()
    pending = load(directory, variables)
    applied: list[str] = []
    with translated("migrating the messaging database"), psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute((directory / "bootstrap.sql").read_text())
        refuse_edited(
            pending, dict(conn.execute("SELECT version, checksum FROM pgmsg_migrations").fetchall())
        )
        for migration in pending:
            try:
                row = conn.execute(
                    "SELECT pgmsg_apply_migration(%s, %s, %s, %s)",
                    (migration.version, migration.name, migration.checksum, migration.transactional),
                ).fetchone()
                if row and row[0]:
                    applied.append(migration.name)
                for index, statement in migration.concurrent:
                    complete_concurrently(conn, index, statement)
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError) and conn.closed:
                    raise
                # Named, so that a deploy's or an operator's error says which file to look at.
                raise MigrationFailed(
                    f"migration {migration.name} failed "
                    f"(applied before it: {', '.join(applied) or 'none'}): {describe(exc)}"
                ) from exc
    return applied


class MigrationFailed(PgmsgError):
    """A migration's SQL failed; its transaction was rolled back, the ones before it stay."""


def refuse_edited(files: list[Migration], applied: dict[int, str]) -> None:
    """Refuse to run anything when a migration changed after it was applied (``applied``:
    version -> checksum recorded in pgmsg_migrations)."""
    edited = [m.name for m in files if applied.get(m.version, m.checksum) != m.checksum]
    if edited:
        raise InvalidInput(
            f"migration {', '.join(edited)} was changed after it was applied (its checksum "
            "differs from the recorded one); nothing was applied: applied migrations are "
            "immutable, revert the edit and add a new migration"
        )


def complete_concurrently(conn: psycopg.Connection[Any], index: str, statement: str) -> bool:
    """Run one statement of a migration's concurrent section unless its effect is already
    there. A build that was interrupted leaves an invalid index behind: it is dropped and
    built again. Returns whether anything was done."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)", (index,)
    ).fetchone()
    creating = statement.upper().startswith("CREATE")
    if creating and row is not None and row[0]:
        return False
    if not creating and row is None:
        return False
    if creating and row is not None:
        conn.execute(
            psycopg.sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(psycopg.sql.Identifier(index))
        )
    conn.execute(statement)  # type: ignore[arg-type]  # from the project's own migration file
    return True
