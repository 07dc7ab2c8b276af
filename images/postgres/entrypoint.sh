#!/bin/sh
# Initialise the cluster on first start, then run PostgreSQL as PID 1.
#
# Environment (set by the postgres role):
#   POSTGRES_PASSWORD_FILE  file holding the superuser password (read on first start only)
#   PGMSG_DATABASE          database created on first start (default: messaging)
#   PGPORT                  port PostgreSQL listens on (also names the unix socket)
#   PGMSG_HBA_CIDRS         space-separated networks allowed to log in with a password
#   PGMSG_HBA_CONNECTION_TYPE  "host" (default) or "hostssl": with hostssl those logins need
#                           TLS and a plain-text TCP connection is rejected (the server then
#                           needs ssl = on and its certificate files among the -c settings)
# Further server settings arrive as "-c name=value" arguments after "postgres".
# "patroni CONFIG" runs a cluster member under Patroni instead.
set -eu

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
PGPORT="${PGPORT:-5432}"
DATABASE="${PGMSG_DATABASE:-messaging}"
HBA_CIDRS="${PGMSG_HBA_CIDRS:-127.0.0.1/32 ::1/128}"
HBA_TYPE="${PGMSG_HBA_CONNECTION_TYPE:-host}"

log() { printf '%s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

# A cluster member: Patroni (as the postgres user) initialises, replicates and
# runs PostgreSQL itself, from the configuration file the patroni role mounts.
if [ "${1:-}" = "patroni" ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
fi

if [ "${1:-}" != "postgres" ]; then
    exec "$@"
fi

case "$HBA_TYPE" in
    host|hostssl) ;;
    *) log "PGMSG_HBA_CONNECTION_TYPE must be host or hostssl, not '$HBA_TYPE'"; exit 1 ;;
esac

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD_FILE:-}" ] || [ ! -s "$POSTGRES_PASSWORD_FILE" ]; then
        log "POSTGRES_PASSWORD_FILE must name a non-empty file on first start; refusing to create a cluster without a password"
        exit 1
    fi
    log "initialising a new cluster in $PGDATA"
    pwfile="$(mktemp)"
    # initdb reads the password as the postgres user; the mounted secret is root-only.
    cat "$POSTGRES_PASSWORD_FILE" > "$pwfile"
    chown postgres "$pwfile"
    chmod 0600 "$pwfile"
    as_postgres initdb --pgdata="$PGDATA" --username=postgres --pwfile="$pwfile" \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=peer --auth-host=scram-sha-256 >&2
    rm -f "$pwfile"

    # Socket-only server to create the database; nobody can connect over TCP yet.
    as_postgres pg_ctl --pgdata="$PGDATA" --wait --options="-c listen_addresses='' -c port=$PGPORT" start >&2
    as_postgres psql --no-psqlrc --set=ON_ERROR_STOP=1 --username=postgres --dbname=postgres \
        --set=db="$DATABASE" <<'SQL' >&2
SELECT format('CREATE DATABASE %I', :'db') \gexec
SQL
    as_postgres pg_ctl --pgdata="$PGDATA" --wait --mode=fast stop >&2
    log "cluster initialised with database $DATABASE"
fi

# Access rules are rewritten on every start so that the inventory stays the
# single source of truth for who may connect.
{
    echo "# Written by entrypoint.sh on every start; edit the inventory, not this file."
    echo "local all all peer map=pgmsg"
    if [ "$HBA_TYPE" = hostssl ]; then
        echo "hostnossl all all all reject"
    fi
    for cidr in $HBA_CIDRS; do
        echo "$HBA_TYPE all all $cidr scram-sha-256"
    done
} > "$PGDATA/pg_hba.conf"
cp /etc/pgmsg/pg_ident.conf "$PGDATA/pg_ident.conf"
chown postgres:postgres "$PGDATA/pg_hba.conf" "$PGDATA/pg_ident.conf"
chmod 0600 "$PGDATA/pg_hba.conf" "$PGDATA/pg_ident.conf"

shift
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    postgres -D "$PGDATA" -c port="$PGPORT" "$@"
