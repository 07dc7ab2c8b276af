"""sql/schema/<area>.sql say what the migrations make: a reader may trust them.

A scratch server from the deployed image gets sql/bootstrap.sql and every migration through
the project's runner (pgmsg.migrations, rendered with inventory/local's variables, as the
committed files are). Two checks:

- regenerating the area files from it gives exactly the committed ones, so a migration added
  or edited without regenerating fails here with the diff;
- the committed files, applied in area order to the empty database of a second scratch server
  (with the group roles of the first: roles are cluster-wide and no dump holds them), give the
  same schema as the migrations, compared as normalised dumps (the area files of both, CHECK
  constraints without their parentheses: see without_check_parentheses). The
  second database is on a server of its own rather than beside the first because pg_cron
  installs only into the database named by cron.database_name, which the first one is.

Neither needs the deployed stack beyond its PostgreSQL image.
"""

from __future__ import annotations

import difflib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgmsg import schema_files
from tests.support import schemadump
from tests.support.deployment import ROOT as REPO_ROOT
from tests.support.deployment import inventory_vars
from tests.support.scratch import deployed_image, scratch_postgres

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "sql" / "schema"
REGENERATE = ".venv/bin/python scripts/schema-dump.py"
MIGRATED, MIGRATED_PORT = "pgmsg-test-schema-migrated", 25710
APPLIED, APPLIED_PORT = "pgmsg-test-schema-applied", 25711


def without_check_parentheses(files: dict[str, str]) -> dict[str, str]:
    """The files with the parentheses of CHECK constraints removed. PostgreSQL prints a CHECK
    written ``(a AND b) AND c`` nested and, parsed again from that text, flat: the same
    constraint, printed differently after one round trip."""
    return {
        area: re.sub(
            r"(?m)^(\s*CONSTRAINT \w+ CHECK )(.*)$",
            lambda m: m.group(1) + re.sub(r"[()]", "", m.group(2)),
            text,
        )
        for area, text in files.items()
    }


def differences(want: dict[str, str], have: dict[str, str], want_label: str, have_label: str) -> str:
    """A unified diff per area file that differs, or ''."""
    out = []
    for area in sorted(set(want) | set(have)):
        out.extend(
            difflib.unified_diff(
                want.get(area, "").splitlines(keepends=True),
                have.get(area, "").splitlines(keepends=True),
                f"{want_label}/{area}.sql",
                f"{have_label}/{area}.sql",
            )
        )
    return "".join(out)


@pytest.fixture(scope="module")
def variables() -> dict:
    """inventory/local's variables, whatever inventory the rest of the suite runs against:
    the committed files are rendered for it."""
    return inventory_vars(REPO_ROOT / "inventory/local/hosts.yml")


@pytest.fixture(scope="module")
def migrated(variables: dict) -> Iterator[dict[str, str]]:
    """The area files of a freshly migrated database, whose server stays up for the module."""
    with schemadump.migrated(variables, MIGRATED, MIGRATED_PORT, ROOT / "sql"):
        yield schemadump.area_files(MIGRATED, MIGRATED_PORT)


def test_committed_schema_files_are_what_the_migrations_make(
    migrated: dict[str, str], tmp_path: Path
) -> None:
    schema_files.write(migrated, tmp_path)
    regenerated = {p.stem: p.read_text() for p in tmp_path.glob("*.sql")}
    committed = {p.stem: p.read_text() for p in COMMITTED.glob("*.sql")}
    diff = differences(committed, regenerated, "committed", "migrated")
    assert not diff, (
        f"sql/schema differs from what the migrations make: regenerate it with `{REGENERATE}` "
        f"and commit the result (never edit the files by hand).\n{diff}"
    )


def test_committed_schema_files_applied_to_an_empty_database_make_the_same_schema(
    migrated: dict[str, str], variables: dict
) -> None:
    level = schema_files.migration_level(MIGRATED, MIGRATED_PORT, schemadump.DATABASE)
    roles = schema_files.roles(MIGRATED, MIGRATED_PORT)
    image = deployed_image(variables.get("postgres_container_name", "postgres-messaging"))
    # As pg_dump's own output does: function bodies refer to objects of later files.
    script = (
        "SET check_function_bodies = false;\n"
        + "\n".join(roles)
        + "\n"
        + "".join((COMMITTED / f"{area}.sql").read_text() for area in schema_files.AREAS)
    )
    with scratch_postgres(image, APPLIED, APPLIED_PORT):
        result = subprocess.run(
            [
                "docker",
                "exec",
                "-i",
                APPLIED,
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-p",
                str(APPLIED_PORT),
                "-U",
                "postgres",
                "-d",
                schemadump.DATABASE,
                "-f",
                "-",
            ],
            input=script,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, (
            "the committed sql/schema files, applied in area order "
            f"({', '.join(schema_files.AREAS)}), fail:\n{result.stderr}"
        )
        applied = schema_files.render(
            schema_files.dump(APPLIED, APPLIED_PORT, schemadump.DATABASE), level, roles
        )
    diff = differences(
        without_check_parentheses(migrated),
        without_check_parentheses(applied),
        "migrated",
        "from-schema-files",
    )
    assert not diff, f"the schema files make a different schema than the migrations:\n{diff}"
