#!/bin/sh
# Reads the connection string from the file named by DATA_SOURCE_NAME_FILE (a
# read-only mount, so the password is not part of the container's configuration)
# and runs the exporter as PID 1. Extra arguments go to the exporter.
set -eu

if [ ! -r "${DATA_SOURCE_NAME_FILE:-}" ]; then
    echo "entrypoint: DATA_SOURCE_NAME_FILE (${DATA_SOURCE_NAME_FILE:-unset}) is not a readable file" >&2
    exit 1
fi
DATA_SOURCE_NAME="$(cat "$DATA_SOURCE_NAME_FILE")"
export DATA_SOURCE_NAME
unset DATA_SOURCE_NAME_FILE

# An IPv6 address needs brackets in host:port.
case "$EXPORTER_LISTEN_ADDRESS" in
    *:*) listen="[${EXPORTER_LISTEN_ADDRESS}]:${EXPORTER_PORT}" ;;
    *) listen="${EXPORTER_LISTEN_ADDRESS}:${EXPORTER_PORT}" ;;
esac

# Built-in collectors only: the pgmsg metrics come from pgmsg-sql-exporter (a second
# container of this image), not from the deprecated --extend.query-path.
exec prometheus-postgres-exporter \
    --web.listen-address="$listen" \
    --config.file=/etc/pgmsg/postgres_exporter.yml \
    "$@"
