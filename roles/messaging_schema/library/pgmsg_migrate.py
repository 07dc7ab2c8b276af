#!/usr/bin/python
"""Apply pgmsg's migrations with the project's one runner, on the database host."""

from __future__ import annotations

import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pgmsg_connection import CONNECTION_ARGS, connect

DOCUMENTATION = r"""
module: pgmsg_migrate
short_description: Apply pgmsg's schema migrations with C(pgmsg migrate).
description:
  - Runs C(pgmsg migrate --json) (src/pgmsg/migrations.py, the runner the CLI uses) in a one-off
    container of an image that has the pgmsg package and its SQL (the services image), on the
    host's network, so the database is reached from the target exactly as the
    community.postgresql modules reach it. The password travels in the environment, never on a
    command line.
  - Changed only when a migration was applied. In check mode nothing is executed but reads:
    C(pgmsg migrate status) reports what is pending; when the image is not on the host yet (a
    deploy would build it first), the recorded versions are read from pgmsg_migrations and
    compared with O(migrations); when the database does not answer, every migration is pending.
options:
  image: {description: Image with the pgmsg CLI and its packaged SQL., required: true, type: str}
  migrations:
    description: The migration files' names (NNN_name.sql.j2) the image would carry; check mode only.
    type: list
    elements: str
    default: []
  login_host: {description: Database host, as seen from the target., type: str, default: 127.0.0.1}
  login_port: {description: Database port., type: int, default: 5432}
  login_user: {description: Role that applies the migrations (the superuser)., type: str, default: postgres}
  login_password: {description: Its password., type: str, default: ""}
  login_db: {description: Database., type: str, default: messaging}
"""

RETURN = r"""
applied: {description: Names of the migrations applied (or pending, in check mode)., type: list, returned: always}
msg: {description: What was applied, or would be in check mode., type: str, returned: always}
"""


def describe(names: list[str], verb: str) -> str:
    """ "applied migrations 030, 031 (030_a, 031_b)", or that there was nothing to apply."""
    if not names:
        return "no pending migration"
    return f"{verb} migrations {', '.join(n[:3] for n in names)} ({', '.join(names)})"


def recorded_versions(params: dict) -> set[int] | None:
    """Versions in pgmsg_migrations (empty before the first migration), None when the database
    does not answer. Read-only."""
    import psycopg

    try:
        with connect(params, connect_timeout=5) as conn:
            if conn.execute("SELECT to_regclass('pgmsg_migrations') IS NULL").fetchone()[0]:
                return set()
            return {row[0] for row in conn.execute("SELECT version FROM pgmsg_migrations")}
    except psycopg.OperationalError:
        return None


def check_without_runner(module: AnsibleModule, reason: str) -> None:
    """Check mode when the runner cannot run: compare the file names with the recorded versions."""
    names = sorted(n.removesuffix(".sql.j2") for n in module.params["migrations"])
    recorded = recorded_versions(module.params)
    if recorded is None:
        reason += "; the database does not answer (not deployed yet?)"
        pending = names
    else:
        pending = [n for n in names if int(n[:3]) not in recorded]
    module.exit_json(
        changed=bool(pending), applied=pending, msg=f"{reason}: {describe(pending, 'would apply')}"
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "image": {"type": "str", "required": True},
            "migrations": {"type": "list", "elements": "str", "default": []},
            **CONNECTION_ARGS,
        },
        supports_check_mode=True,
    )
    p = module.params
    env = {
        "PGHOST": p["login_host"],
        "PGPORT": str(p["login_port"]),
        "PGUSER": p["login_user"],
        "PGPASSWORD": p["login_password"],
        "PGDATABASE": p["login_db"],
    }
    if module.check_mode:
        rc, _, _ = module.run_command(["docker", "image", "inspect", "--format", "{{.Id}}", p["image"]])
        if rc != 0:
            check_without_runner(module, f"a deploy builds {p['image']} first")
        if recorded_versions(p) is None:
            check_without_runner(module, "check mode")
    command = ["migrate", "status", "--json"] if module.check_mode else ["migrate", "--json"]
    argv = ["docker", "run", "--rm", "--pull", "never", "--network", "host"]
    for name in env:
        argv += ["-e", name]  # the value comes from this process's environment
    argv += [p["image"], "pgmsg", *command]
    rc, out, err = module.run_command(argv, environ_update=env)
    if rc != 0:
        module.fail_json(
            msg=(err.strip() or out.strip() or f"pgmsg migrate exited with {rc}"),
            rc=rc,
            stdout=out,
            stderr=err,
        )
    result = json.loads(out)
    if module.check_mode:
        applied = [r["name"] for r in result if r["state"] == "pending"]
    else:
        applied = result["applied"]
    module.exit_json(
        changed=bool(applied),
        applied=applied,
        msg=describe(applied, "would apply" if module.check_mode else "applied"),
    )


if __name__ == "__main__":
    main()
