#!/usr/bin/env bash
# Set up the controller and deploy pgmsg with ansible-playbook site.yml.
#   scripts/deploy.sh                         # local inventory, this machine
#   scripts/deploy.sh production --ask-vault-pass --tags database
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENVIRONMENT="${1:-local}"
[ $# -gt 0 ] && shift
INVENTORY="$ROOT/inventory/$ENVIRONMENT/hosts.yml"
if [ ! -f "$INVENTORY" ]; then
    echo "deploy: no inventory $INVENTORY (choose one of: $(ls "$ROOT/inventory" | tr '\n' ' '))" >&2
    exit 2
fi

"$ROOT/scripts/setup-controller.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/ansible-playbook" -i "$INVENTORY" site.yml "$@"
