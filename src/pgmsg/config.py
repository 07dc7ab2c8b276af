"""Connection settings from the environment, with one prefix: PGMSG_."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable holding a libpq connection string or URI.
DSN_VARIABLE = "PGMSG_DSN"

#: The libpq service the deploy writes for the operator on the database hosts
#: (roles/operator_access): ``service=pgmsg`` in the service file, its password in pgpass.
OPERATOR_SERVICE = "pgmsg"

#: libpq variables that say where to connect: when one is set, it decides, not the service.
_WHERE_VARIABLES = ("PGSERVICE", "PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE")


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


def operator_conninfo(environ: dict[str, str] | None = None) -> str:
    """The CLI's connection: PGMSG_DSN, else libpq's PG* variables, else the ``pgmsg`` service
    of the user's service file when it has one (what the deploy writes for root on the
    database hosts), else :func:`conninfo_from_env`'s default."""
    env = os.environ if environ is None else environ
    if env.get(DSN_VARIABLE, "").strip() or any(env.get(name) for name in _WHERE_VARIABLES):
        return conninfo_from_env(env)
    if has_service(OPERATOR_SERVICE, service_file(env)):
        return f"service={OPERATOR_SERVICE}"
    return conninfo_from_env(env)


def service_file(environ: dict[str, str] | None = None) -> Path:
    """The per-user service file libpq reads: PGSERVICEFILE, else ~/.pg_service.conf."""
    env = os.environ if environ is None else environ
    if env.get("PGSERVICEFILE"):
        return Path(env["PGSERVICEFILE"])
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".pg_service.conf"


def has_service(name: str, path: Path) -> bool:
    """Whether ``path`` defines ``[name]`` (unreadable or missing: no)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return any(line.strip() == f"[{name}]" for line in lines)
