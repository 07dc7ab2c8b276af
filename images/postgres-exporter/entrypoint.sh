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

# --extend.query-path is deprecated in 0.17 but is the only way to add SQL-defined metrics.
exec prometheus-postgres-exporter \
    --web.listen-address="$listen" \
    --config.file=/etc/pgmsg/postgres_exporter.yml \
    --extend.query-path=/etc/pgmsg/queries.yaml \
    "$@"
