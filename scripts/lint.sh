#!/usr/bin/env bash
# Lint and format checks, all of which must pass (no Docker needed):
#   ruff check, ruff format --check (Python), yamllint . (every YAML file),
#   ansible-lint (production profile, offline; .ansible-lint).
# The tools are installed into the repository's .venv (scripts/setup-controller.sh
# creates it) at the pinned versions below when missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PGMSG_VENV:-$ROOT/.venv}"
cd "$ROOT"

if [ ! -x "$VENV/bin/python" ]; then
    echo "lint: no $VENV; run ./scripts/setup-controller.sh first" >&2
    exit 2
fi

# The lint tools, pinned. Installed only when a version differs, so a second run is quick.
LINT_TOOLS=(ansible-lint==26.10.1 yamllint==1.38.0 ruff==0.17.6)
missing=()
for tool in "${LINT_TOOLS[@]}"; do
    name="${tool%%==*}" version="${tool##*==}"
    have="$("$VENV/bin/python" -m pip show "$name" 2>/dev/null | sed -n "s/^Version: //p" || true)"
    [ "$have" = "$version" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "lint: installing ${missing[*]} into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet "${missing[@]}"
fi

# ansible-lint resolves modules against the collections the ansible package ships in the venv.
ANSIBLE_COLLECTIONS_PATH="$("$VENV/bin/python" -c 'import ansible_collections, os; print(os.path.dirname(list(ansible_collections.__path__)[0]))')"
export ANSIBLE_COLLECTIONS_PATH

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
