#!/usr/bin/env bash
# Set up the controller (scripts/setup-controller.sh: the deploy group only) and deploy
# pgmsg with ansible-playbook site.yml. The controller needs Python 3.11+ and SSH to the
# inventory's hosts; it need not be Debian (the local inventory's target is this machine).
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

# Only what deploying needs (the deploy group of the lock and the collections of requirements.yml).
"$ROOT/scripts/setup-controller.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/ansible-playbook" -i "$INVENTORY" site.yml "$@"
