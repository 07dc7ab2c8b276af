#!/usr/bin/python
"""Ensure pgmsg's login roles, their groups and client ids in one connection."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pgmsg_connection import CONNECTION_ARGS, connect

DOCUMENTATION = r"""
module: pgmsg_login_roles
short_description: Ensure pgmsg's login roles, their group memberships and client ids.
description:
  - One connection and a few statements for every login role, where a loop of
    community.postgresql.postgresql_user and postgresql_membership took two module calls per role.
  - Each role is a LOGIN, NOSUPERUSER, NOCREATEDB, NOCREATEROLE role with the given password,
    member of its group; each client role is mapped to its client_id in pgmsg_client_roles.
    A password is compared with the stored SCRAM-SHA-256 (or md5) verifier, so an unchanged one
    is not set again.
  - In check mode nothing is written (only catalog and pgmsg_client_roles reads); the result
    lists what would change.
options:
  roles: {description: "Login roles: name, password, group.", type: list, elements: dict, required: true}
  clients: {description: "Client roles: name, client_id.", type: list, elements: dict, default: []}
  login_host: {description: Database host., type: str, default: 127.0.0.1}
  login_port: {description: Database port., type: int, default: 5432}
  login_user: {description: A superuser (creates roles)., type: str, default: postgres}
  login_password: {description: Its password., type: str, default: ""}
  login_db: {description: Database., type: str, default: messaging}
requirements: [psycopg >= 3]
"""

RETURN = r"""
changes: {description: What was changed (or would be in check mode), one sentence each., type: list, returned: always}
"""

ATTRIBUTES = {"rolcanlogin": True, "rolsuper": False, "rolcreatedb": False, "rolcreaterole": False}


def password_matches(stored: str | None, name: str, password: str) -> bool:
    """Whether ``password`` is the one ``stored`` (pg_authid.rolpassword) verifies."""
    if not stored:
        return False
    if stored.startswith("SCRAM-SHA-256$"):
        # SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (RFC 5802, RFC 7677)
        _, params, keys = stored.split("$")
        iterations, salt = params.split(":")
        stored_key, server_key = keys.split(":")
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        return hmac.compare_digest(
            base64.b64encode(hashlib.sha256(client_key).digest()).decode(), stored_key
        ) and hmac.compare_digest(
            base64.b64encode(hmac.digest(salted, b"Server Key", "sha256")).decode(), server_key
        )
    if stored.startswith("md5"):
        return hmac.compare_digest(stored, "md5" + hashlib.md5((password + name).encode()).hexdigest())
    return False


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "roles": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "password": {"type": "str", "required": True, "no_log": True},
                    "group": {"type": "str", "required": True},
                },
            },
            "clients": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "name": {"type": "str", "required": True},
                    "client_id": {"type": "str", "required": True},
                },
            },
            **CONNECTION_ARGS,
        },
        supports_check_mode=True,
    )
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        module.fail_json(
            msg="pgmsg_login_roles needs psycopg 3 on the target (messaging_schema_python_packages)"
        )
    p = module.params
    apply = not module.check_mode
    changes: list[str] = []
    try:
        conn = connect(p, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        module.fail_json(
            msg=f"cannot connect to {p['login_db']} at {p['login_host']}:{p['login_port']}: {exc}"
        )
    with conn, conn.cursor() as cur:
        names = [r["name"] for r in p["roles"]]
        cur.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolpassword,"
            " ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            "       WHERE m.member = a.oid) AS groups"
            " FROM pg_authid a WHERE rolname = ANY(%s)",
            (names,),
        )
        current: dict[str, dict[str, Any]] = {
            row[0]: dict(zip(("name", *ATTRIBUTES, "password", "groups"), row, strict=True))
            for row in cur.fetchall()
        }
        flags = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        for role in p["roles"]:
            name, password, group = role["name"], role["password"], role["group"]
            ident = sql.Identifier(name)
            have = current.get(name)
            if have is None:
                changes.append(f"create login role {name}")
                if apply:
                    cur.execute(
                        sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(ident, flags, sql.Literal(password))
                    )
            else:
                if any(have[k] != v for k, v in ATTRIBUTES.items()):
                    changes.append(
                        f"set the attributes of {name} to LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
                    )
                    if apply:
                        cur.execute(sql.SQL("ALTER ROLE {} {}").format(ident, flags))
                if not password_matches(have["password"], name, password):
                    changes.append(f"set the password of {name}")
                    if apply:
                        cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(password)))
            if have is None or group not in have["groups"]:
                changes.append(f"grant {group} to {name}")
                if apply:
                    cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), ident))
        clients = [(c["name"], c["client_id"]) for c in p["clients"]]
        if clients:
            cur.execute(
                "SELECT role_name, client_id FROM pgmsg_client_roles WHERE role_name = ANY(%s)",
                ([n for n, _ in clients],),
            )
            mapped = dict(cur.fetchall())
            for name, client_id in clients:
                if mapped.get(name) != client_id:
                    changes.append(f"map {name} to client_id {client_id}")
                    if apply:
                        cur.execute(
                            "INSERT INTO pgmsg_client_roles (role_name, client_id) VALUES (%s, %s)"
                            " ON CONFLICT (role_name) DO UPDATE SET client_id = EXCLUDED.client_id",
                            (name, client_id),
                        )
    module.exit_json(
        changed=bool(changes), changes=changes, diff={"prepared": "\n".join(changes)} if changes else {}
    )


if __name__ == "__main__":
    main()
