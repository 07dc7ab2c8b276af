#!/bin/sh
# Healthy means: the exporter serves /metrics and reaches PostgreSQL (pg_up 1),
# so a wrong password or an unreachable database shows up as unhealthy.
set -eu

case "$EXPORTER_LISTEN_ADDRESS" in
    ""|0.0.0.0) host=127.0.0.1 ;;
    ::) host="[::1]" ;;
    *:*) host="[${EXPORTER_LISTEN_ADDRESS}]" ;;
    *) host="$EXPORTER_LISTEN_ADDRESS" ;;
esac

busybox wget -q -Y off -T 5 -O - "http://${host}:${EXPORTER_PORT}/metrics" | grep -qx 'pg_up 1'
