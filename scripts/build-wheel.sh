#!/usr/bin/env bash
# Build the pgmsg wheel (the library, the sample services and the SQL of `pgmsg migrate`) into
# DIR and print its path. The services image installs it (roles/pgmsg_services/tasks/build.yml).
#   scripts/build-wheel.sh DIR        # PYTHON (default .venv's) must have the locked setuptools
# Nothing is fetched (--no-index --no-build-isolation: the deploy group pins setuptools), nothing
# is written into the source tree (DIST_EXTRA_CONFIG moves setuptools' build and egg-info
# directories into DIR), and the same source gives the same bytes (SOURCE_DATE_EPOCH): the
# image tag is a hash of its inputs, so an unchanged source must not rebuild the image.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
DIR="$(mkdir -p "${1:?usage: scripts/build-wheel.sh DIR}" && cd "$1" && pwd)"

printf '[build]\nbuild_base = %s/build\n[egg_info]\negg_base = %s\n' "$DIR" "$DIR" >"$DIR/setup.cfg"
rm -rf "$DIR/build" "$DIR/dist"
DIST_EXTRA_CONFIG="$DIR/setup.cfg" SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel --quiet \
    --disable-pip-version-check --no-deps --no-index --no-build-isolation --wheel-dir "$DIR/dist" "$ROOT" >&2
ls "$DIR"/dist/pgmsg-*.whl
