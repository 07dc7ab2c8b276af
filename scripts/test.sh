#!/usr/bin/env bash
# Run the whole test suite against the system deployed with the local inventory
# (scripts/deploy.sh first). Extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup-controller.sh"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
# The JUnit report feeds docs/reliability.md (scripts/reliability-report.py).
mkdir -p "$ROOT/artifacts"
exec "$ROOT/.venv/bin/python" -m pytest \
    --junitxml="$ROOT/artifacts/junit.xml" \
    --hosts="ansible://messaging_db" \
    --ansible-inventory="$ROOT/inventory/local/hosts.yml" \
    "$@"
