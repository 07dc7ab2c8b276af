"""Create pgAdmin's administrator, or bring an existing one up to date.

Email from PGADMIN_SETUP_EMAIL, password from PGADMIN_SETUP_PASSWORD (the
entrypoint reads it from the mounted secret file). This does what `setup.py
add-user` / `update-user` do, with the same pgAdmin functions, but
- the password never appears on a command line (any user of the host can read
  /proc/<pid>/cmdline while a process runs; its environment is private),
- in one application start instead of one per lookup (those commands took
  about 25 s together on a 2-core host),
- and the password is written only when it differs: in server mode pgAdmin
  encrypts saved database passwords with the login password, so an unchanged
  one is left alone,
- and an administrator locked out by failed logins is unlocked.
"""

from __future__ import annotations

import builtins
import os
import sys

APP_DIR = "/opt/pgadmin/app"


def main() -> int:
    email = os.environ["PGADMIN_SETUP_EMAIL"]
    password = os.environ["PGADMIN_SETUP_PASSWORD"]

    sys.path.insert(0, APP_DIR)
    builtins.SERVER_MODE = None  # as setup.py does: config_local.py decides
    import config
    from flask_security.utils import verify_password
    from pgadmin import create_app
    from pgadmin.model import Role, User
    from pgadmin.tools.user_management import create_user, normalise_password, update_user
    from pgadmin.utils.constants import INTERNAL

    app = create_app(config.APP_NAME + "-cli")
    with app.test_request_context():
        admin_role = Role.query.filter_by(name="Administrator").one()
        user = User.query.filter_by(username=email, auth_source=INTERNAL).first()
        wanted = {"role": admin_role.id, "active": True}
        if user is None:
            ok, message = create_user(
                {"email": email, "newPassword": password, "confirmPassword": password, **wanted}
            )
            done = ["created"]
        else:
            changes: dict[str, object] = {}
            done = []
            if not verify_password(normalise_password(password), user.password):
                changes.update(newPassword=password, confirmPassword=password)
                done.append("new password")
            if [r.id for r in user.roles] != [admin_role.id] or not user.active:
                changes.update(wanted)
                done.append("made an active Administrator")
            # Failed logins lock the account (MAX_LOGIN_ATTEMPTS): a restart by
            # whoever holds the deploy secrets lets the administrator in again.
            if user.locked or user.login_attempts:
                changes.update(locked=False)
                done.append("unlocked")
            ok, message = update_user(user.id, changes) if changes else (True, "")
        if not ok:
            print(f"admin_user: could not set up {email}: {message}", file=sys.stderr)
            return 1
    print(f"admin_user: administrator {email}: {', '.join(done) or 'unchanged'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
