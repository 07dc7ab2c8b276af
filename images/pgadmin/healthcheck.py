"""Docker healthcheck: pgAdmin answers /misc/ping on its listen address."""

import os
import sys
import urllib.request

address = os.environ.get("PGADMIN_LISTEN_ADDRESS", "127.0.0.1")
# A wildcard address is reachable through loopback.
if address in ("0.0.0.0", ""):
    address = "127.0.0.1"
elif address == "::":
    address = "::1"
if ":" in address:
    address = f"[{address}]"
url = f"http://{address}:{os.environ.get('PGADMIN_PORT', '5050')}/misc/ping"

# Straight to pgAdmin, whatever proxy variables the container has.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # any failure is "unhealthy"; say why in docker inspect
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
