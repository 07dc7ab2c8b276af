#!/usr/bin/env bash
# Run the benchmark suite: ./bench/run.sh [--smoke] [--rounds N] [--only NAME ...]
# Needs Docker and the deployed pgmsg/postgres image (./scripts/deploy.sh builds it).
# Peers and pgmsg are installed into .venv-bench, apart from the deployment's venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv-bench
stamp="$venv/.requirements.sha256"
want=$(cat bench/requirements.txt requirements/deploy.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    # pgmsg with its own dependencies, pinned like the deployment's (the lock's export,
    # without its hashes: the peers below have none, and pip checks all or nothing).
    constraints=$(mktemp)
    grep -E '^[a-z0-9]' requirements/deploy.txt | sed -E 's/ *\\$//' > "$constraints"
    "$venv/bin/pip" install --quiet -c "$constraints" -r bench/requirements.txt -e . \
        || { rm -f "$constraints"; exit 1; }
    rm -f "$constraints"
    echo "$want" > "$stamp"
fi
exec "$venv/bin/python" -m bench "$@"
