"""A fresh scratch database migrated by the project's own runner, and its sql/schema area
files (src/pgmsg/schema_files.py): what scripts/schema-dump.py writes and
tests/sql/test_schema_files.py compares with the committed files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pgmsg import migrations, schema_files
from tests.support.scratch import deployed_image, scratch_postgres

DATABASE = "messaging"


@contextmanager
def migrated(variables: dict[str, Any], name: str, port: int, sql_dir: Path | None = None) -> Iterator[str]:
    """A scratch server from the deployed PostgreSQL's image with every migration of ``sql_dir``
    applied, rendered with ``variables`` (an inventory's, as the messaging_schema role renders
    them); yields its superuser dsn. Nothing else is added: no login roles, allowlist or jobs."""
    image = deployed_image(variables.get("postgres_container_name", "postgres-messaging"))
    with scratch_postgres(image, name, port) as dsn:
        migrations.apply(dsn, sql_dir, variables)
        yield dsn


def area_files(name: str, port: int) -> dict[str, str]:
    """Area -> text of sql/schema/<area>.sql for the migrated database of container ``name``."""
    return schema_files.render(
        schema_files.dump(name, port, DATABASE),
        schema_files.migration_level(name, port, DATABASE),
        schema_files.roles(name, port),
    )
