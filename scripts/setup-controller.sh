#!/usr/bin/env bash
# Create .venv in the repository with the pinned controller tools (Ansible with
# community.docker and community.postgresql, psycopg, click, pytest, testinfra)
# and the pgmsg package itself. Safe to run again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PGMSG_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup-controller: $PYTHON must be Python 3.11 or newer" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup-controller: installing python3-venv" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

# The browser tests use Debian's chromium and its driver (no browser download).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "setup-controller: installing chromium and chromium-driver for the browser tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

stamp="$VENV/.pgmsg-requirements.sha256"
want="$(cat "$ROOT/requirements-controller.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements-controller.txt"
"$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT"
echo "$want" > "$stamp"
echo "setup-controller: $VENV is ready" >&2
