#!/usr/bin/env bash
# Lint and format checks, all of which must pass (no Docker needed):
#   ruff check, ruff format --check (Python), yamllint . (every YAML file),
#   ansible-lint (production profile, offline; .ansible-lint).
# The tools come from the lock's lint group, installed into the repository's .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PGMSG_VENV:-$ROOT/.venv}"
cd "$ROOT"

# The lint group of the lock (requirements/lint.txt) and the collections ansible-lint resolves
# modules against (./collections, ansible.cfg's collections_path).
"$ROOT/scripts/setup-controller.sh" lint

status=0
run() {
    echo "lint: $*" >&2
    "$@" || status=1
}
run "$VENV/bin/ruff" check .
run "$VENV/bin/ruff" format --check .
run "$VENV/bin/yamllint" --strict .
run "$VENV/bin/ansible-lint" --offline
if [ $status -ne 0 ]; then
    echo "lint: FAILED (see the findings above)" >&2
fi
exit $status
