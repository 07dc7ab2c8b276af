#!/bin/sh
# Runs Prometheus as PID 1 on PROMETHEUS_LISTEN_ADDRESS:PROMETHEUS_PORT with the
# mounted /etc/prometheus/prometheus.yml; SIGHUP reloads it (roles/prometheus).
# Extra arguments go to Prometheus.
set -eu

case "$PROMETHEUS_LISTEN_ADDRESS" in
    *:*) listen="[${PROMETHEUS_LISTEN_ADDRESS}]:${PROMETHEUS_PORT}" ;;
    *) listen="${PROMETHEUS_LISTEN_ADDRESS}:${PROMETHEUS_PORT}" ;;
esac

exec prometheus \
    --config.file=/etc/prometheus/prometheus.yml \
    --storage.tsdb.path=/var/lib/prometheus/data \
    --storage.tsdb.retention.time="$PROMETHEUS_RETENTION" \
    --web.listen-address="$listen" \
    --web.console.libraries=/usr/share/prometheus/console_libraries \
    --web.console.templates=/usr/share/prometheus/consoles \
    "$@"
