#!/usr/bin/env python3
"""Regenerate sql/schema/<area>.sql from a freshly migrated database.

    .venv/bin/python scripts/schema-dump.py

starts a scratch PostgreSQL from the deployed image on 127.0.0.1:PORT, applies sql/bootstrap.sql
and every migration with the project's runner (rendered with inventory/local's variables), dumps
its schema (pg_dump inside the container), writes one file per area and removes the server.
Run it after adding a migration and commit the result; tests/sql/test_schema_files.py fails
until the files match the migrations. Areas: AREAS in src/pgmsg/schema_files.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgmsg import schema_files
from tests.support import schemadump
from tests.support.deployment import ROOT as REPO_ROOT
from tests.support.deployment import inventory_vars


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=25709, help="port of the scratch server, below 32768")
    parser.add_argument("--out", type=Path, default=ROOT / "sql" / "schema", help="directory to write")
    args = parser.parse_args()
    name = f"pgmsg-schema-dump-{args.port}"
    with schemadump.migrated(
        inventory_vars(REPO_ROOT / "inventory/local/hosts.yml"), name, args.port, ROOT / "sql"
    ):
        files = schemadump.area_files(name, args.port)
    for path in schema_files.write(files, args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
