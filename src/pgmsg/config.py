"""Connection settings from the environment, with one prefix: PGMSG_."""

from __future__ import annotations

import os

#: Environment variable holding a libpq connection string or URI.
DSN_VARIABLE = "PGMSG_DSN"


def conninfo_from_env(environ: dict[str, str] | None = None) -> str:
    """PGMSG_DSN when set; otherwise "", which lets libpq read PGHOST, PGPORT, PGUSER...

    The database defaults to ``messaging`` when neither PGMSG_DSN nor PGDATABASE names one.
    """
    env = os.environ if environ is None else environ
    dsn = env.get(DSN_VARIABLE, "").strip()
    if dsn:
        return dsn
    if not env.get("PGDATABASE"):
        return "dbname=messaging"
    return ""
