#!/usr/bin/env bash
# The cluster phase of the tests: replace the single node (scripts/deploy.sh) with the
# three-node Patroni cluster of inventory/local-ha, run tests/ha (failover and switchover under
# load, member and etcd loss, restore drills, the operator's reports) and the parts of the main
# suite that show every client works on the cluster, then go back to the single node.
# Called by scripts/test.sh after the main suite; extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup-controller.sh" test
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
LOCAL=inventory/local/hosts.yml
HA=inventory/local-ha/hosts.yml

say() { printf '\n== %s: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

say "single node -> cluster (teardown keeps the single node's volume)"
ansible-playbook -i "$LOCAL" playbooks/teardown.yml
ansible-playbook -i "$HA" site.yml

say "tests against the cluster"
status=0
PGMSG_TEST_INVENTORY="$ROOT/$HA" python -m pytest \
    --junitxml="$ROOT/artifacts/junit-ha.xml" \
    --hosts="ansible://localhost" --ansible-inventory="$ROOT/$HA" \
    tests/ha \
    tests/e2e/test_message_flow.py tests/e2e/test_sample_services.py tests/e2e/test_pgadmin_browser.py \
    tests/infra/test_exporter.py tests/infra/test_pgadmin.py tests/infra/test_services.py \
    tests/cli/test_health.py \
    tests/infra/test_idempotence.py tests/infra/test_zz_teardown.py \
    "$@" || status=$?

say "cluster -> single node"
ansible-playbook -i "$HA" playbooks/teardown.yml
ansible-playbook -i "$LOCAL" site.yml
exit "$status"
