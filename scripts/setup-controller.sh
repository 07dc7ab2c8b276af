#!/usr/bin/env bash
# Create .venv in the repository from the locked, hashed requirements (scripts/lock.sh writes
# them from uv.lock), install the pgmsg package into it (editable), and put the Ansible
# collections of requirements.yml into ./collections. Safe to run again; does nothing when
# nothing changed.
#   scripts/setup-controller.sh          # deploying: ansible-core, psycopg, the pgmsg CLI
#   scripts/setup-controller.sh test     # also pytest, testinfra, selenium... and Debian's chromium
#   scripts/setup-controller.sh lint     # also ruff, ansible-lint, yamllint
# Needs Python 3.11+ with its venv module; apt is used only where it exists (python3-venv, and
# chromium for the tests). PGMSG_COLLECTIONS_SOURCE=galaxy installs the collections with
# ansible-galaxy instead of taking them from the pinned ansible wheel on PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PGMSG_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
GROUP="${1:-deploy}"
case "$GROUP" in
deploy | test | lint) ;;
*) echo "usage: scripts/setup-controller.sh [deploy | test | lint]" >&2; exit 2 ;;
esac
say() { echo "setup-controller: $*" >&2; }
apt_install() { # apt_install PACKAGE... (Debian and derivatives only)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "$PYTHON must be Python 3.11 or newer (set PYTHON=/path/to/python3.11+)"
    exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    if command -v apt-get >/dev/null; then
        say "installing python3-venv"
        apt_install python3-venv
    else
        say "$PYTHON has no venv/ensurepip module: install your system's Python venv package"
        exit 1
    fi
fi

# The browser tests use Debian's chromium and its driver (no browser download).
if [ "$GROUP" = test ] && { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; }; then
    if command -v apt-get >/dev/null; then
        say "installing chromium and chromium-driver for the browser tests"
        apt_install chromium chromium-driver
    else
        say "the browser tests need chromium and chromedriver on PATH"
        exit 1
    fi
fi

pip() { "$VENV/bin/python" -m pip --quiet --disable-pip-version-check "$@"; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

stamp="$VENV/.pgmsg-$GROUP.sha256"
want="$(digest "$ROOT/requirements/$GROUP.txt" "$ROOT/pyproject.toml")"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$PYTHON" -m venv "$VENV"
    # The venv's own pip is used as it is: upgrading it would be an unpinned install.
    pip install --require-hashes --only-binary :all: -r "$ROOT/requirements/$GROUP.txt"
    # Venvs made before the lock carried the whole ansible package (470 MB of collections).
    if "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("ansible")' 2>/dev/null; then
        pip uninstall -y ansible
    fi
    if [ "$GROUP" != lint ]; then
        # Built with the locked setuptools of the requirements, not one fetched for the build.
        pip install --no-deps --no-build-isolation -e "$ROOT"
    fi
    echo "$want" >"$stamp"
    say "$VENV has the $GROUP requirements"
fi

# Only the collections the playbooks use (requirements.yml), not the whole ansible package.
source="${PGMSG_COLLECTIONS_SOURCE:-pypi}"
installed="$ROOT/collections/.pgmsg-installed"
want="$source $(digest "$ROOT/requirements/collections.txt" "$ROOT/requirements.yml")"
if [ "$(cat "$installed" 2>/dev/null)" != "$want" ]; then
    rm -rf "$ROOT/collections"
    if [ "$source" = galaxy ]; then
        "$VENV/bin/ansible-galaxy" collection install -r "$ROOT/requirements.yml" -p "$ROOT/collections"
    else
        wheels="$(mktemp -d)"
        trap 'rm -rf "$wheels"' EXIT
        pip download --no-deps --require-hashes --only-binary :all: -d "$wheels" \
            -r "$ROOT/requirements/collections.txt"
        "$VENV/bin/python" "$ROOT/scripts/unpack-collections.py" "$ROOT/requirements.yml" \
            "$wheels"/ansible-*.whl "$ROOT/collections"
    fi
    echo "$want" >"$installed"
    say "$ROOT/collections has the collections of requirements.yml"
fi
