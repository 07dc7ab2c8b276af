#!/bin/sh
# Healthy means: the mounted configuration is valid (a broken one after a
# change shows here rather than at the next restart).
set -eu
exec haproxy -c -q -f /etc/haproxy/haproxy.cfg
