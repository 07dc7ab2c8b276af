#!/bin/sh
# Healthy means: Prometheus answers /-/ready (it has loaded its configuration and rules).
set -eu

case "$PROMETHEUS_LISTEN_ADDRESS" in
    ""|0.0.0.0) host=127.0.0.1 ;;
    ::) host="[::1]" ;;
    *:*) host="[${PROMETHEUS_LISTEN_ADDRESS}]" ;;
    *) host="$PROMETHEUS_LISTEN_ADDRESS" ;;
esac

busybox wget -q -Y off -T 5 -O /dev/null "http://${host}:${PROMETHEUS_PORT}/-/ready"
