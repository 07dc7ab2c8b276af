#!/bin/sh
# Healthy means: the exporter serves /metrics and reaches PostgreSQL (the line
# EXPORTER_HEALTH_METRIC, "pg_up 1" by default, "pgmsg_sql_exporter_up 1" for
# pgmsg-sql-exporter), so a wrong password or an unreachable database shows up as unhealthy.
set -eu

case "$EXPORTER_LISTEN_ADDRESS" in
    ""|0.0.0.0) host=127.0.0.1 ;;
    ::) host="[::1]" ;;
    *:*) host="[${EXPORTER_LISTEN_ADDRESS}]" ;;
    *) host="$EXPORTER_LISTEN_ADDRESS" ;;
esac

busybox wget -q -Y off -T 5 -O - "http://${host}:${EXPORTER_PORT}/metrics" | grep -qx "${EXPORTER_HEALTH_METRIC:-pg_up 1}"
