#!/bin/sh
# Healthy means: this member answers on its client URL (ETCDCTL_ENDPOINTS, set
# by the etcd role together with the TLS files etcdctl needs).
set -eu
exec etcdctl endpoint health >/dev/null 2>&1
