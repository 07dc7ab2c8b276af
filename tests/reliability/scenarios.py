"""The reliability and security scenarios of docs/reliability.md, and the tests that prove each.

Test references are pytest node ids (a function, or a parametrized function without its
parameters). tests/unit/test_reliability_report.py checks that every reference names a test
that exists, so the page cannot promise what no test checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FAULTS = "Faults survived"
INPUT = "Bad input and security"


@dataclass(frozen=True)
class Scenario:
    section: str
    title: str
    checks: str
    tests: tuple[str, ...]

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        FAULTS,
        "PostgreSQL killed with SIGKILL, then restarted",
        """
Publishers, async consumers, a NOTIFY listener and the HTTP dispatcher run while the
postmaster in the `postgres-messaging` container is killed with SIGKILL; the container is
started again. Every message whose publish returned (committed) is present afterwards with a
delivery for every subscription; no delivery acknowledged before the crash is handed out
again; every delivery is completed in the end; publishers, consumers, the listener and the
dispatcher carry on by themselves, without being restarted.
""",
        ("tests/reliability/test_postgres_crash.py::test_sigkill_under_load_loses_nothing",),
    ),
    Scenario(
        FAULTS,
        "Webhook endpoint down, then failing in bursts, then healthy",
        """
A webhook subscriber's endpoint refuses connections for a while, then answers 503 in bursts,
then recovers, while the real dispatcher pushes. Every delivery arrives, the receiver
recognises each exactly once by its `webhook-id` (retries carry the same id), and the recorded
attempts follow the subscription's backoff schedule (each wait at least the computed delay).
""",
        ("tests/reliability/test_webhook_outage.py::test_outage_then_bursts_then_recovery",),
    ),
    Scenario(
        FAULTS,
        "A consumer killed in the middle of a batch",
        """
A consumer process claims a batch with a short lease and is killed with SIGKILL before it
acknowledges anything. Another consumer receives exactly those deliveries once the lease has
lapsed (not before), completes them, and each counts one extra attempt.
""",
        ("tests/reliability/test_consumer_killed.py::test_killed_consumer_batch_is_completed_by_another",),
    ),
    Scenario(
        FAULTS,
        "The fan-out worker killed while deferred messages stream in",
        """
A publisher publishes deferred messages (`message_inbox`) in batches to two async subscribers
while the `pgmsg-fan-out` process in the `fan-out` container is killed with SIGKILL. Docker
restarts it; publishing goes on throughout. Every message whose publish returned is moved into
`messages` and has exactly one delivery per subscription (none lost, none doubled by a move
interrupted halfway), and a consumer receives every one of them.
""",
        ("tests/reliability/test_fan_out_killed.py::test_killed_fan_out_worker_loses_and_repeats_nothing",),
    ),
    Scenario(
        FAULTS,
        "A session idle in a transaction, and a long REPEATABLE READ reader",
        """
One session sits idle inside an open transaction and another holds a REPEATABLE READ snapshot
open, both longer than the health thresholds. Publishing and consuming go on, `pgmsg health`
warns about both (naming the sessions) and the exporter reports them
(`pgmsg_transactions_oldest_seconds`, `pgmsg_transactions_idle_in_transaction`); once they end,
both clear.
""",
        (
            "tests/reliability/test_long_transactions.py::test_system_works_and_reports_long_transactions",
            "tests/reliability/test_long_transactions.py::test_reports_clear_once_the_sessions_end",
        ),
    ),
    Scenario(
        FAULTS,
        "The whole stack restarted through site.yml",
        """
Every container is stopped; `ansible-playbook site.yml` brings the stack back. Every message,
delivery, attempt and subscription from before is still there, and a message published
afterwards flows through to the sample services.
""",
        ("tests/reliability/test_stack_restart.py::test_stack_restart_through_site_yml_keeps_everything",),
    ),
    Scenario(
        INPUT,
        "Malformed, huge, deeply nested, unicode and NUL input (property-based)",
        """
Hypothesis generates payloads, message types, namespaces, client ids, URLs and CLI arguments:
malformed JSON, values that JSON cannot carry, very large and very deeply nested documents,
any unicode including NUL. Publish, batch publish, subscribe and the CLI either accept the
input and store it exactly, or refuse it with a clear error (`InvalidInput`; the CLI exits 1
when pgmsg or the database refuses the input, 2 for a usage error, with one `Error:` line),
never a traceback; a refused publish or batch leaves no row behind.
""",
        ("tests/reliability/test_properties.py",),
    ),
    Scenario(
        INPUT,
        "SQL injection through every CLI argument and filter",
        """
Classic injection strings (quote breaking, stacked statements, comments, `pg_sleep`, casts)
are passed through every argument and filter of every `pgmsg` command. Each is treated as
data: a clear refusal or an empty result, no statement from the string runs, and the tables
are unchanged.
""",
        ("tests/reliability/test_sql_injection.py",),
    ),
    Scenario(
        INPUT,
        "Row-level security between clients and roles",
        """
A client role sees and changes only its own deliveries (another client's are invisible to
SELECT and untouched by UPDATE and by `pgmsg_ack`); the publisher role can publish but not
read deliveries or messages; administrators see everything; no application role can change
the webhook allowlist.
""",
        (
            "tests/sql/test_security.py::test_client_sees_and_updates_only_its_own_deliveries",
            "tests/sql/test_security.py::test_publisher_can_publish_but_not_read",
            "tests/sql/test_security.py::test_admin_sees_everything_and_roles_cannot_change_the_allowlist",
        ),
    ),
    Scenario(
        INPUT,
        "SSRF: webhook targets outside the allowlist",
        """
Private, loopback outside the allowlist, link-local, cloud metadata, IPv6-mapped and
decimal-, octal- or hex-encoded addresses, and hostnames that resolve to any of them, are
refused: when a subscription is created or changed (in the database) and again by the
dispatcher at send time, which connects to the address it checked (no DNS rebinding).
""",
        (
            "tests/unit/test_ssrf.py::test_refused_ip_literals",
            "tests/unit/test_ssrf.py::test_normalise_ip_recognises_every_spelling",
            "tests/unit/test_ssrf.py::test_hostname_resolving_to_private_address_is_refused",
            "tests/unit/test_ssrf.py::test_resolved_ipv4_mapped_addresses_are_checked_as_ipv4",
            "tests/unit/test_ssrf.py::test_host_pattern_resolving_to_metadata_is_still_refused",
            "tests/unit/test_ssrf.py::test_always_blocked_beats_a_catch_all_allowlist",
            "tests/sql/test_security.py::test_webhook_targets_outside_the_allowlist_are_refused",
            "tests/sql/test_security.py::test_update_cannot_bypass_the_allowlist",
        ),
    ),
    Scenario(
        INPUT,
        "Webhook signatures: tampered, replayed and stale requests",
        """
The sample receiver refuses a request whose body or signature was altered, one without a
signature, and one whose timestamp is outside the tolerance (401); a replayed request is
answered as a duplicate and not handled twice.
""",
        (
            "tests/unit/test_webhook_receiver.py::test_tampered_body_is_refused",
            "tests/unit/test_webhook_receiver.py::test_missing_signature_is_refused",
            "tests/unit/test_webhook_receiver.py::test_stale_timestamp_is_refused",
            "tests/unit/test_webhook_receiver.py::test_replay_is_answered_as_duplicate_and_handled_once",
            "tests/unit/test_signing.py::test_tampering_is_rejected",
            "tests/unit/test_signing.py::test_future_timestamp_is_rejected",
        ),
    ),
    Scenario(
        INPUT,
        "No secret in clear text; default passwords refused outside the local inventory",
        """
The staging and production inventories hold no secret in clear text (only vault references,
the vault files encrypted); deploying without the vault password, with the example secrets,
or with a weak or well-known password for PostgreSQL, pgAdmin or a login role is refused
before anything changes.
""",
        (
            "tests/unit/test_inventories.py::test_no_clear_text_secret_in_shared_inventories",
            "tests/unit/test_inventories.py::test_example_vault_is_encrypted_and_covers_every_vault_variable",
            "tests/unit/test_inventories.py::test_deploy_without_the_vault_password_is_refused",
            "tests/unit/test_inventories.py::test_deploy_with_the_example_secrets_is_refused",
            "tests/unit/test_inventories.py::test_weak_or_local_password_is_refused_outside_local",
            "tests/unit/test_inventories.py::test_weak_login_role_password_is_refused_and_named",
            "tests/unit/test_inventories.py::test_weak_pgadmin_password_is_refused_outside_local",
        ),
    ),
)
