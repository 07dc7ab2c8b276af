"""What the cluster's synchronous replication costs a publisher, against a single node, in one run.

    .venv/bin/python -m bench.cluster [--seconds 10] [--rounds 3]

Needs the cluster of inventory/local-ha deployed (HAProxy on 127.0.0.1:5432). Starts a single
node of the same image on 127.0.0.1:25445 (removed afterwards), migrated like the deployment.
On both, in alternating rounds: one connection publishing one message per transaction to three
async subscriptions (the default, in-transaction fan-out), and the raw INSERT of the same
payload into a plain table (the reference every figure of docs/benchmarks.md is a ratio to).
Prints JSON: rates per round and medians, publish/raw on each, and cluster/single.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import psycopg

from pgmsg import migrations
from tests.support.cluster import ROOT, Cluster
from tests.support.scratch import scratch_postgres

SINGLE_PORT = 25445
PAYLOAD = '{"order_id": 1234, "amount": 99.5, "currency": "EUR", "items": [1, 2, 3]}'


def rate(dsn: str, statement: str, seconds: float) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        done, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            conn.execute(statement, (PAYLOAD,))
            done += 1
    return done / seconds


def prepare(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (id bigserial PRIMARY KEY, payload jsonb, "
            "created_at timestamptz DEFAULT now())"
        )
        for i in range(3):
            conn.execute(
                "INSERT INTO subscriptions (client_id, delivery_mode, message_type) "
                "SELECT %s, 'async', 'benchc.*' WHERE NOT EXISTS "
                "(SELECT 1 FROM subscriptions WHERE client_id = %s)",
                (f"benchc-{i}", f"benchc-{i}"),
            )


def clean(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw")
        conn.execute("DELETE FROM subscriptions WHERE client_id LIKE 'benchc-%'")
        conn.execute("DELETE FROM messages WHERE message_type = 'benchc.event'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cluster = Cluster(ROOT / "inventory" / "local-ha" / "hosts.yml")
    cluster.wait_healthy()
    password = cluster.vars["postgres_superuser_password"]
    cluster_dsn = f"host=127.0.0.1 port=5432 user=postgres password={password} dbname=messaging"
    image = json.loads(
        __import__("subprocess")
        .run(
            ["docker", "inspect", "--format", "{{json .Config.Image}}", cluster.members[0].container],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout
    )
    figures: dict[str, dict[str, list[float]]] = {
        t: {"publish": [], "raw": []} for t in ("single", "cluster")
    }
    with scratch_postgres(image, "pgmsg-bench-single", SINGLE_PORT) as single_dsn:
        migrations.apply(single_dsn)
        targets = {"single": single_dsn, "cluster": cluster_dsn}
        for dsn in targets.values():
            prepare(dsn)
        try:
            for _ in range(args.rounds):
                for name, dsn in targets.items():
                    figures[name]["raw"].append(
                        rate(dsn, "INSERT INTO bench_raw (payload) VALUES (%s)", args.seconds)
                    )
                    figures[name]["publish"].append(
                        rate(
                            dsn,
                            "INSERT INTO messages (message_type, payload) VALUES ('benchc.event', %s)",
                            args.seconds,
                        )
                    )
        finally:
            for dsn in targets.values():
                clean(dsn)
    median: dict[str, Any] = {
        t: {k: round(statistics.median(v), 1) for k, v in f.items()} for t, f in figures.items()
    }
    report = {
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rates": figures,
        "median": median,
        "publish_to_raw": {t: round(m["publish"] / m["raw"], 2) for t, m in median.items()},
        "cluster_to_single": {
            k: round(median["cluster"][k] / median["single"][k], 2) for k in ("publish", "raw")
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
