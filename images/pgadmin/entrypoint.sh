#!/bin/sh
# pgAdmin entrypoint. On every start: prepare the configuration database, create
# or update the administrator from PGADMIN_EMAIL and the password file, replace
# the server list with /etc/pgadmin/servers.json, then serve pgAdmin with
# gunicorn. It starts as root only to read the root-only password file and to
# own the data directory; everything of pgAdmin's runs as the user pgadmin.
set -eu

APP=/opt/pgadmin/app
PYTHON=/opt/pgadmin/bin/python
DATA=/var/lib/pgadmin

die() { echo "entrypoint: $*" >&2; exit 1; }

: "${PGADMIN_EMAIL:?PGADMIN_EMAIL must name the administrator (an email address)}"
: "${PGADMIN_PASSWORD_FILE:?PGADMIN_PASSWORD_FILE must name the mounted password file}"
[ -r "$PGADMIN_PASSWORD_FILE" ] || die "cannot read the password file $PGADMIN_PASSWORD_FILE"

if [ "$(id -u)" = 0 ]; then
    # A volume or bind mount may come with other owners; pgAdmin needs its own.
    find "$DATA" ! -user pgadmin -exec chown pgadmin:pgadmin {} +
    AS_PGADMIN="setpriv --reuid=pgadmin --regid=pgadmin --init-groups --"
else
    AS_PGADMIN=""
fi
export HOME="$DATA"

# In the environment (readable by this user and root only), never on a command line.
PGADMIN_SETUP_EMAIL="$PGADMIN_EMAIL"
PGADMIN_SETUP_PASSWORD="$(cat "$PGADMIN_PASSWORD_FILE")"
[ -n "$PGADMIN_SETUP_PASSWORD" ] || die "the password file $PGADMIN_PASSWORD_FILE is empty"
export PGADMIN_SETUP_EMAIL PGADMIN_SETUP_PASSWORD

cd "$APP"
# Creates the database (and, the first time, the administrator from the two
# variables above) or migrates it to this pgAdmin version.
$AS_PGADMIN "$PYTHON" setup.py setup-db
$AS_PGADMIN "$PYTHON" /usr/local/bin/admin_user.py

if [ -r "$PGADMIN_SERVERS_FILE" ]; then
    # --replace: the file is the whole list, so a restart never duplicates it.
    # setup.py reports errors on stdout and exits 0, so read what it says.
    output="$($AS_PGADMIN "$PYTHON" setup.py load-servers "$PGADMIN_SERVERS_FILE" \
        --user "$PGADMIN_EMAIL" --replace 2>&1)" || die "load-servers failed: $output"
    echo "$output"
    case "$output" in
        *"Server(s)."*) ;;
        *) die "loading $PGADMIN_SERVERS_FILE failed" ;;
    esac
    case "$output" in
        *rror*|*"not found"*|*"Invalid"*) die "loading $PGADMIN_SERVERS_FILE failed" ;;
    esac
fi

unset PGADMIN_SETUP_EMAIL PGADMIN_SETUP_PASSWORD

case "$PGADMIN_LISTEN_ADDRESS" in
    *:*) BIND="[$PGADMIN_LISTEN_ADDRESS]:$PGADMIN_PORT" ;;
    *) BIND="$PGADMIN_LISTEN_ADDRESS:$PGADMIN_PORT" ;;
esac

# One worker: pgAdmin keeps connections and tool state in its process; threads
# serve the browser's concurrent requests. Long timeout for long queries.
exec $AS_PGADMIN /opt/pgadmin/bin/gunicorn \
    --chdir "$APP" \
    --bind "$BIND" \
    --workers 1 \
    --threads "$PGADMIN_THREADS" \
    --timeout 86400 \
    --limit-request-line 0 \
    --access-logfile - \
    pgAdmin4:app
