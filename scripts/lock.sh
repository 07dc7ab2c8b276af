#!/usr/bin/env bash
# Lock the Python dependencies and export the files pip installs with --require-hashes.
# pyproject.toml ([project].dependencies, [dependency-groups]) -> uv.lock -> requirements/*.txt.
# Run it after changing a dependency and commit all three; tests/unit/test_lock.py fails when
# uv.lock or requirements/ are out of date.
#   scripts/lock.sh                   # lock (keeping today's pins where still allowed), export
#   scripts/lock.sh --upgrade         # lock with the newest allowed versions, export
#   scripts/lock.sh --export-to DIR   # only export uv.lock as it is into DIR (what the test does)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PGMSG_VENV:-$ROOT/.venv}"
cd "$ROOT"

# uv (only locking and exporting; pip installs) comes from PyPI at the version the test group pins.
uv_pin="$(sed -n 's/^ *"\(uv==[^"]*\)",*$/\1/p' pyproject.toml)"
if [ ! -x "$VENV/bin/uv" ] || [ "uv $("$VENV/bin/uv" --version | cut -d' ' -f2)" != "${uv_pin/==/ }" ]; then
    "$ROOT/scripts/setup-controller.sh"
    "$VENV/bin/python" -m pip install --quiet "$uv_pin"
fi
uv() { "$VENV/bin/uv" "$@"; }

# One file per installation: each is complete (pip installs one of them with --require-hashes).
write() { # write FILE PURPOSE UV-EXPORT-ARGS...
    local file="$1" purpose="$2"
    shift 2
    {
        printf '# %s\n# Generated from uv.lock by scripts/lock.sh: do not edit.\n' "$purpose"
        uv export --quiet --frozen --no-header --no-default-groups --format requirements.txt "$@"
    } >"$file"
}

export_to() {
    local dir="$1"
    mkdir -p "$dir"
    write "$dir/runtime.txt" "The library's dependencies: the services image installs these and the pgmsg wheel." \
        --no-emit-project
    write "$dir/deploy.txt" "The controller for scripts/deploy.sh: the library's dependencies and the deploy group." \
        --no-emit-project --group deploy
    write "$dir/test.txt" "The controller for scripts/test.sh: the library's dependencies and the test group." \
        --no-emit-project --group test
    write "$dir/lint.txt" "The linters of scripts/lint.sh (the lint group alone)." \
        --no-emit-project --only-group lint
    write "$dir/collections.txt" "The ansible wheel scripts/setup-controller.sh takes the collections of requirements.yml from." \
        --no-emit-project --only-group collections --prune ansible-core
}

case "${1:-}" in
--export-to)
    export_to "${2:?scripts/lock.sh --export-to DIR}"
    ;;
--upgrade | "")
    uv lock --quiet ${1:+--upgrade}
    export_to "$ROOT/requirements"
    echo "lock: uv.lock and requirements/*.txt are current; commit them" >&2
    ;;
*)
    echo "usage: scripts/lock.sh [--upgrade | --export-to DIR]" >&2
    exit 2
    ;;
esac
