"""The connection options the role's modules share (the play's module_defaults set them) and
a psycopg connection from them."""

from __future__ import annotations

from typing import Any

CONNECTION_ARGS: dict[str, dict[str, Any]] = {
    "login_host": {"type": "str", "default": "127.0.0.1"},
    "login_port": {"type": "int", "default": 5432},
    "login_user": {"type": "str", "default": "postgres"},
    "login_password": {"type": "str", "default": "", "no_log": True},
    "login_db": {"type": "str", "default": "messaging"},
}


def connect(params: dict[str, Any], **options: Any) -> Any:
    """A psycopg 3 connection with the module's login_* options (psycopg is imported here, so a
    module that does not connect does not need it)."""
    import psycopg

    return psycopg.connect(
        host=params["login_host"],
        port=params["login_port"],
        user=params["login_user"],
        password=params["login_password"],
        dbname=params["login_db"],
        **options,
    )
