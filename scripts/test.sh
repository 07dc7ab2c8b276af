#!/usr/bin/env bash
# Run the whole test suite against the system deployed with the local inventory
# (scripts/deploy.sh first), then the cluster phase (scripts/test-ha.sh: the same machine as a
# three-node Patroni cluster, then back to the single node). With arguments, only the main
# suite runs, and they go to its pytest (e.g. ./scripts/test.sh tests/sql -k leases).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The test group (pytest, testinfra, selenium...) and Debian's chromium for the browser tests.
"$ROOT/scripts/setup-controller.sh" test
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
# The JUnit report feeds docs/reliability.md (scripts/reliability-report.py).
mkdir -p "$ROOT/artifacts"
status=0
"$ROOT/.venv/bin/python" -m pytest \
    --junitxml="$ROOT/artifacts/junit.xml" \
    --hosts="ansible://messaging_db" \
    --ansible-inventory="$ROOT/inventory/local/hosts.yml" \
    --ignore="$ROOT/tests/ha" \
    "$@" || status=$?
if [ "$#" -eq 0 ]; then
    "$ROOT/scripts/test-ha.sh" || status=$?
fi
exit "$status"
