"""Healthy when the service's HTTP endpoint answers: PGMSG_HEALTH_URL, or its metrics."""

import os
import sys
import urllib.request

url = os.environ.get("PGMSG_HEALTH_URL") or "http://{}:{}/metrics".format(
    os.environ.get("PGMSG_METRICS_ADDRESS", "127.0.0.1"), os.environ.get("PGMSG_METRICS_PORT", "9100")
)
try:
    with urllib.request.urlopen(url, timeout=4) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except OSError as exc:
    print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
