#!/usr/bin/python
"""Apply pgmsg's migrations with the project's one runner, on the database host."""

from __future__ import annotations

import json

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pgmsg_migrate
short_description: Apply pgmsg's schema migrations with C(pgmsg migrate).
description:
  - Runs C(pgmsg migrate --json) (src/pgmsg/migrations.py, the runner the CLI uses) in a one-off
    container of an image that has the pgmsg package and its SQL (the services image), on the
    host's network, so the database is reached from the target exactly as the
    community.postgresql modules reach it. The password travels in the environment, never on a
    command line.
  - Changed only when a migration was applied. In check mode, reports what is pending
    (C(pgmsg migrate status)) without applying it.
options:
  image: {description: Image with the pgmsg CLI and its packaged SQL., required: true, type: str}
  login_host: {description: Database host, as seen from the target., type: str, default: 127.0.0.1}
  login_port: {description: Database port., type: int, default: 5432}
  login_user: {description: Role that applies the migrations (the superuser)., type: str, default: postgres}
  login_password: {description: Its password., type: str, default: ""}
  login_db: {description: Database., type: str, default: messaging}
"""

RETURN = r"""
applied: {description: Names of the migrations applied (or pending, in check mode)., type: list, returned: always}
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "image": {"type": "str", "required": True},
            "login_host": {"type": "str", "default": "127.0.0.1"},
            "login_port": {"type": "int", "default": 5432},
            "login_user": {"type": "str", "default": "postgres"},
            "login_password": {"type": "str", "default": "", "no_log": True},
            "login_db": {"type": "str", "default": "messaging"},
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
    module.exit_json(changed=bool(applied), applied=applied)


if __name__ == "__main__":
    main()
