#!/usr/bin/python3
"""pgmsg's SQL exporter: serves the metrics that a collector file defines with SQL, in the
style of sql_exporter's collector files, beside prometheus-postgres-exporter's built-in
collectors (which lost custom queries: --extend.query-path is deprecated).

Why not Debian's prometheus-sql-exporter (justwatchcom 0.4.5): it names every metric
sql_<name> and adds the labels driver, host, database, user, col and sql_job, and knows only
gauges, so the pgmsg_* names, label sets and types that dashboards and alerts use could not
stay. This one keeps them, adds the label server (host:port) as postgres_exporter did, and runs
on Debian's python3-psycopg and python3-prometheus-client.

The collector file (YAML):

    queries:
      - name: deliveries              # required; names the query in logs and error metrics
        cache_seconds: 10             # reuse the result this long (default 0: every scrape)
        query: SELECT ...             # required
        metrics:                      # required, at least one
          - metric_name: pgmsg_deliveries_count   # required
            type: gauge               # gauge (default) or counter (name ends in _total)
            help: Deliveries by ...   # required
            key_labels: [client_id]   # columns that become labels (default none)
            value: count              # required: the numeric column
            sum_rows: false           # true: rows with equal key labels are summed

Environment: DATA_SOURCE_NAME_FILE (a file holding the libpq URI), EXPORTER_LISTEN_ADDRESS,
EXPORTER_PORT, PGMSG_SQL_EXPORTER_CONFIG (default /etc/pgmsg/pgmsg_metrics.yml).

A scrape runs the due queries in one read-only connection of the monitoring role. A query that
fails is logged and counted (pgmsg_sql_exporter_query_errors_total) and its metrics are left
out; pgmsg_sql_exporter_up is 0 while the database cannot be reached.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import yaml
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

LOG = logging.getLogger("pgmsg-sql-exporter")
STATEMENT_TIMEOUT_MS = 10_000


class ConfigError(Exception):
    """The collector file is not usable; the message says what to fix."""


class DatabaseDown(Exception):
    """The database cannot be reached (no connection, or the connection broke)."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str
    help: str
    key_labels: tuple[str, ...]
    value: str
    sum_rows: bool


@dataclass
class QuerySpec:
    name: str
    sql: str
    cache_seconds: float
    metrics: list[MetricSpec]
    rows: list[dict[str, Any]] = field(default_factory=list)
    fetched_at: float = -math.inf


def load_config(path: str) -> list[QuerySpec]:
    """The queries of the collector file at path; ConfigError says what is wrong and where."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("queries"), list) or not data["queries"]:
        raise ConfigError(f"{path}: needs a non-empty list 'queries'")
    queries, names = [], set()
    for i, q in enumerate(data["queries"]):
        where = f"{path}: queries[{i}]"
        if not isinstance(q, dict) or not q.get("name") or not q.get("query") or not q.get("metrics"):
            raise ConfigError(f"{where}: needs name, query and a non-empty list metrics")
        metrics = []
        for j, m in enumerate(q["metrics"]):
            at = f"{where} ({q['name']}).metrics[{j}]"
            if not isinstance(m, dict) or not all(m.get(k) for k in ("metric_name", "help", "value")):
                raise ConfigError(f"{at}: needs metric_name, help and value")
            kind = m.get("type", "gauge")
            if kind not in ("gauge", "counter"):
                raise ConfigError(f"{at}: type must be gauge or counter, not {kind!r}")
            if kind == "counter" and not m["metric_name"].endswith("_total"):
                raise ConfigError(f"{at}: a counter's metric_name ends in _total")
            if m["metric_name"] in names:
                raise ConfigError(f"{at}: metric {m['metric_name']} is defined twice")
            names.add(m["metric_name"])
            labels = tuple(m.get("key_labels") or ())
            if "server" in labels:
                raise ConfigError(f"{at}: the label server is added by the exporter")
            metrics.append(
                MetricSpec(
                    m["metric_name"], kind, m["help"], labels, m["value"], bool(m.get("sum_rows", False))
                )
            )
        queries.append(QuerySpec(q["name"], q["query"], float(q.get("cache_seconds", 0)), metrics))
    return queries


def server_label(dsn: str) -> str:
    """host:port of the DSN, the label postgres_exporter gave its samples."""
    params = conninfo_to_dict(dsn)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"


class SqlCollector(Collector):
    """Runs the due queries at each scrape and turns their rows into metric families."""

    def __init__(self, dsn: str, queries: list[QuerySpec]) -> None:
        self.dsn = dsn
        self.queries = queries
        self.server = server_label(dsn)
        self.errors = {q.name: 0 for q in queries}
        self.conn: psycopg.Connection[Any] | None = None
        self.lock = threading.Lock()

    def connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=5,
                application_name="pgmsg-sql-exporter",
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c default_transaction_read_only=on",
            )
        return self.conn

    def refresh(self, query: QuerySpec, now: float) -> None:
        if now - query.fetched_at < query.cache_seconds:
            return
        try:
            conn = self.connection()
        except psycopg.Error as exc:
            raise DatabaseDown(str(exc).strip()) from exc
        try:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(query.sql)
                query.rows = cur.fetchall()
            query.fetched_at = now
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise DatabaseDown(str(exc).strip()) from exc
            # A failed or cancelled (statement_timeout) query: the others still count.
            self.errors[query.name] += 1
            query.rows, query.fetched_at = [], -math.inf
            LOG.error("query %s failed: %s", query.name, str(exc).strip())

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            up = 1
            now = time.monotonic()
            try:
                for query in self.queries:
                    self.refresh(query, now)
            except DatabaseDown as exc:
                up = 0
                LOG.error("cannot query the database: %s", exc)
                if self.conn is not None:
                    self.conn.close()
            yield GaugeMetricFamily(
                "pgmsg_sql_exporter_up", "1 when the last scrape reached the database, else 0.", value=up
            )
            errors = CounterMetricFamily(
                "pgmsg_sql_exporter_query_errors",
                "Queries of the collector file that failed.",
                labels=["query"],
            )
            for name, count in self.errors.items():
                errors.add_metric([name], count)
            yield errors
            if not up:
                return
            for query in self.queries:
                for spec in query.metrics:
                    yield self.family(spec, query.rows)

    def family(self, spec: MetricSpec, rows: list[dict[str, Any]]) -> Metric:
        labels = [*spec.key_labels, "server"]
        if spec.kind == "counter":
            family: Metric = CounterMetricFamily(spec.name.removesuffix("_total"), spec.help, labels=labels)
        else:
            family = GaugeMetricFamily(spec.name, spec.help, labels=labels)
        values: dict[tuple[str, ...], float] = {}
        for row in rows:
            key = tuple("" if row[label] is None else str(row[label]) for label in spec.key_labels)
            value = float(row[spec.value]) if row[spec.value] is not None else math.nan
            if key in values and not spec.sum_rows:
                LOG.warning("%s: more than one row for labels %s; the last one counts", spec.name, key)
            values[key] = values.get(key, 0.0) + value if spec.sum_rows else value
        for key, value in values.items():
            family.add_metric([*key, self.server], value)
        return family


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    dsn_file = os.environ.get("DATA_SOURCE_NAME_FILE", "")
    config = os.environ.get("PGMSG_SQL_EXPORTER_CONFIG", "/etc/pgmsg/pgmsg_metrics.yml")
    address = os.environ.get("EXPORTER_LISTEN_ADDRESS", "127.0.0.1")
    port = int(os.environ.get("EXPORTER_PORT", "9188"))
    try:
        with open(dsn_file, encoding="utf-8") as f:
            dsn = f.read().strip()
        queries = load_config(config)
    except OSError as exc:
        print(f"pgmsg-sql-exporter: DATA_SOURCE_NAME_FILE ({dsn_file or 'unset'}): {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"pgmsg-sql-exporter: {exc}", file=sys.stderr)
        return 1
    REGISTRY.register(SqlCollector(dsn, queries))
    start_http_server(port, addr=address)
    LOG.info("serving %d queries on %s port %d", len(queries), address, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
