"""Every promise of the README's delivery-semantics and security sections, and the tests that
prove it from the outside (another role, a late or repeated caller, a hostile URL, a deleted
row). tests/unit/test_promises.py checks that each bullet of those sections has exactly one entry
here and that every test named exists; scripts/reliability-report.py lists them with their
latest results in docs/reliability.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
# The README headings (### level) whose every bullet is a promise.
SECTIONS = ("Async: claim, lease, ack", "HTTP push", "NOTIFY", "Roles and row-level security")


@dataclass(frozen=True)
class Promise:
    section: str
    lead: str  # how the README bullet begins (markdown as written)
    tests: tuple[str, ...]  # pytest node ids: a function, or a parametrized one without parameters


def readme_bullets(text: str | None = None) -> dict[str, list[str]]:
    """The top-level bullets of each section in SECTIONS, continuation lines joined."""
    text = README.read_text() if text is None else text
    found: dict[str, list[str]] = {}
    section: str | None = None
    for line in text.splitlines():
        heading = re.match(r"^(#+)\s+(.*)$", line)
        if heading:
            section = heading.group(2).strip() if heading.group(2).strip() in SECTIONS else None
            if section:
                found.setdefault(section, [])
            continue
        if section is None:
            continue
        if line.startswith("- "):
            found[section].append(line[2:].strip())
        elif line.startswith("  ") and found[section] and line.strip():
            found[section][-1] += " " + line.strip()
    return found


def bullet_of(promise: Promise, bullets: dict[str, list[str]]) -> list[str]:
    return [b for b in bullets.get(promise.section, []) if b.startswith(promise.lead)]


ASYNC, HTTP, NOTIFY, ROLES = SECTIONS

C = "tests/sql/test_consume.py::"
L = "tests/sql/test_leases.py::"
N = "tests/sql/test_notify_rls.py::"
S = "tests/sql/test_security.py::"
D = "tests/e2e/test_dispatcher.py::"
ORD = "tests/e2e/test_dispatcher_ordering_and_leases.py::"
W = "tests/e2e/test_webhook_policy.py::"

PROMISES: tuple[Promise, ...] = (
    Promise(
        ASYNC,
        "**At-least-once, exactly-once per lease.**",
        (
            C + "test_four_consumers_ten_thousand_deliveries_each_exactly_once",
            C + "test_claimed_delivery_is_invisible_until_its_lease_lapses",
            "tests/reliability/test_consumer_killed.py::test_killed_consumer_batch_is_completed_by_another",
            L + "test_a_late_nack_in_the_old_form_does_not_return_what_b_holds",
        ),
    ),
    Promise(
        ASYNC,
        "**Acks and nacks hold the lease.**",
        (
            L + "test_a_stale_token_is_refused_and_changes_nothing",
            L + "test_a_late_ack_does_not_release_the_next_message_of_an_ordered_key",
            L + "test_an_ack_may_not_name_one_delivery_with_another_deliverys_token",
            L + "test_expired_leases_released_by_the_job_lose_their_token",
            L + "test_consume_reports_a_batch_whose_lease_ran_out",
            L + "test_client_ack_and_nack_need_the_lease",
            L + "test_a_tokenless_ack_completes_only_a_durable_notify_delivery_nobody_claimed",
            L + "test_a_nack_delay_that_is_not_a_sane_number_is_refused_with_a_hint",
        ),
    ),
    Promise(
        ASYNC,
        "**Fast claims, durable acks.**",
        (
            "tests/sql/test_throughput_plans.py::test_claim_waits_for_the_flush_unless_told_not_to",
            "tests/reliability/test_postgres_crash.py::test_sigkill_under_load_loses_nothing",
        ),
    ),
    Promise(
        ASYNC,
        "**Attempts and dead letters.**",
        (
            C + "test_nack_with_delay_then_dead_letter_then_redrive",
            C + "test_expired_lease_on_last_attempt_becomes_dead_letter",
            C + "test_consume_nacks_failures_and_retries_them",
        ),
    ),
    Promise(
        ASYNC,
        "**Waking up.**",
        (
            C + "test_idle_consumer_is_woken_by_listen_not_polling",
            "tests/sql/test_throughput_plans.py::test_publish_wakes_the_dispatcher_only_when_it_is_not_pushing_there",
        ),
    ),
    Promise(
        ASYNC,
        "**Ordering per key.**",
        (
            C + "test_ordering_per_key_holds_back_only_that_key",
            C + "test_ordering_follows_the_fan_out_so_a_deferred_message_takes_its_place_when_it_moves",
            ORD + "test_ordered_http_subscription_holds_a_failing_key_back_and_only_that_key",
            L + "test_a_late_ack_does_not_release_the_next_message_of_an_ordered_key",
        ),
    ),
    Promise(
        ASYNC,
        "**Filters.**",
        (
            "tests/sql/test_fanout.py::test_filters",
            C + "test_payload_filter_is_jsonb_containment",
            "tests/sql/test_fanout.py::test_inactive_subscription_receives_nothing",
        ),
    ),
    Promise(
        ASYNC,
        "**Replay.**",
        (
            C + "test_replay_from_message_id_and_window",
            L + "test_replay_leaves_deliveries_in_flight_to_their_holder",
        ),
    ),
    Promise(
        ASYNC,
        "**Removing a subscription**",
        (
            L + "test_a_removed_subscriptions_backlog_neither_blocks_the_client_nor_stays_pending",
            L + "test_a_delivery_left_pointing_at_a_removed_subscription_does_not_block_the_claim",
            L + "test_truncating_subscriptions_cancels_every_open_delivery",
            L + "test_a_publish_that_commits_while_its_subscription_is_removed_ends_cancelled",
            "tests/cli/test_deliveries_and_retry.py::test_stats_and_list_show_cancelled_deliveries",
        ),
    ),
    Promise(
        HTTP,
        "**Publishing never waits on a webhook.**",
        (
            D + "test_publish_does_not_wait_for_a_hanging_endpoint",
            D + "test_a_slow_endpoint_does_not_delay_others",
            "tests/reliability/test_webhook_outage.py::test_outage_then_bursts_then_recovery",
            ORD + "test_ordered_http_subscription_holds_a_failing_key_back_and_only_that_key",
            ORD + "test_unordered_http_subscription_still_pushes_a_key_concurrently",
        ),
    ),
    Promise(
        HTTP,
        "**A push is recorded only under its lease.**",
        (
            ORD + "test_late_record_after_the_lease_passed_on_changes_nothing",
            ORD + "test_late_record_cannot_raise_a_dead_letter",
            ORD + "test_no_request_starts_after_its_lease_ran_out_waiting_for_a_slot",
            "tests/e2e/test_dispatcher_batches.py::test_recording_retried_after_a_lost_connection_records_once",
        ),
    ),
    Promise(
        HTTP,
        "`push_mode = 'in_transaction'`",
        (
            W + "test_with_in_transaction_push_off_an_in_transaction_subscription_is_refused",
            W
            + "test_with_in_transaction_push_off_nothing_is_sent_for_an_existing_in_transaction_subscription",
            W + "test_no_application_role_or_session_setting_turns_in_transaction_push_on",
            W + "test_with_in_transaction_push_on_a_redirect_is_followed_as_the_readme_says",
            W + "test_session_curl_options_do_not_reach_the_in_transaction_push",
            W + "test_in_transaction_push_signs_with_the_send_time",
            W + "test_retry_job_stops_at_its_batch",
            "tests/e2e/test_message_flow.py::test_receiver_down_then_back_is_delivered_by_retry",
        ),
    ),
    Promise(
        HTTP,
        "**Retries**",
        (
            D + "test_fails_twice_then_succeeds_three_attempts_logged",
            D + "test_client_errors_fail_without_retry_and_410_deactivates",
            D + "test_retry_after_is_honoured_and_attempts_end_in_dead_letter",
        ),
    ),
    Promise(
        HTTP,
        "**Signed requests**",
        (
            D + "test_signed_requests_verify_and_survive_secret_rotation",
            "tests/unit/test_signing.py::test_stale_timestamp_is_rejected_even_if_correctly_signed",
            "tests/unit/test_signing.py::test_tampering_is_rejected",
            "tests/sql/test_policy_parsers.py::test_signing_secret_the_database_takes_is_one_the_signer_can_use",
            "tests/e2e/test_sample_services.py::test_webhook_server_verified_the_signature",
        ),
    ),
    Promise(
        HTTP,
        "**SSRF protection.**",
        (
            S + "test_webhook_targets_outside_the_allowlist_are_refused",
            S + "test_update_cannot_bypass_the_allowlist",
            D + "test_target_removed_from_allowlist_is_refused_at_send_time",
            "tests/unit/test_ssrf.py::test_hostname_resolving_to_private_address_is_refused",
            "tests/unit/test_ssrf.py::test_always_blocked_beats_a_catch_all_allowlist",
            "tests/sql/test_policy_parsers.py::test_allowlist_entry_has_one_meaning",
            "tests/sql/test_policy_parsers.py::test_allowlist_parsers_agree_on_generated_entries",
            "tests/sql/test_policy_parsers.py::test_bad_allowlist_entry_is_refused_with_a_reason_and_changes_nothing",
            W + "test_dispatcher_skips_an_allowlist_row_it_cannot_parse_and_keeps_delivering",
            W + "test_in_transaction_push_to_a_host_name_needs_that_exact_name_in_the_allowlist",
        ),
    ),
    Promise(
        NOTIFY,
        "PostgreSQL has no privilege on `LISTEN`",
        (
            N + "test_another_role_listening_on_a_clients_channel_learns_only_the_ids",
            N + "test_the_owners_listener_reads_the_whole_envelope_through_rls",
            N + "test_the_sample_listener_service_reads_and_counts_as_its_client_role",
        ),
    ),
    Promise(
        NOTIFY,
        "`notify_payload = true`",
        (
            N + "test_opt_in_sends_the_payload_in_the_notification_for_every_role_to_read",
            N + "test_opt_in_is_checked_and_declared_like_the_other_columns",
            "tests/sql/test_fanout.py::test_large_notify_payload_is_sent_as_reference",
        ),
    ),
    Promise(
        NOTIFY,
        "`NOTIFY` has no privilege either",
        (
            N + "test_a_client_cannot_read_another_clients_message_through_the_listener",
            N + "test_a_forged_notification_from_any_role_is_dropped_and_the_listener_goes_on",
        ),
    ),
    Promise(
        NOTIFY,
        "`durable = true`",
        (
            C + "test_durable_notify_listener_catches_up_after_downtime",
            L + "test_a_tokenless_ack_completes_only_a_durable_notify_delivery_nobody_claimed",
        ),
    ),
    Promise(
        ROLES,
        "**PUBLIC gets nothing**",
        (
            "tests/sql/test_privileges.py::test_every_role_holds_exactly_what_the_matrix_says",
            "tests/sql/test_privileges.py::test_every_object_has_an_entry",
            "tests/sql/test_privileges.py::test_functions_created_later_are_not_executable_by_public",
            S + "test_no_login_role_can_schedule_cron_jobs",
            "tests/sql/test_privileges.py::test_no_role_may_create_temporary_or_other_objects_in_the_database",
            "tests/sql/test_privileges.py::test_no_login_role_may_store_large_objects",
        ),
    ),
    Promise(
        ROLES,
        "**HTTP from the database**",
        (S + "test_no_login_role_can_make_http_requests_from_the_database",),
    ),
    Promise(
        ROLES,
        "**Signing secrets**",
        (
            S + "test_signing_secrets_are_hidden_from_monitoring_admins_publishers_and_other_clients",
            S + "test_monitoring_and_admins_still_read_everything_but_the_secrets",
            S + "test_an_administrator_sees_a_secret_once_when_it_is_set",
            "tests/cli/test_subscription_webhooks.py::"
            "test_an_administrator_sends_a_signed_test_event_without_reading_the_secret",
        ),
    ),
    Promise(
        ROLES,
        "**The webhook allowlist**",
        (
            S + "test_only_the_deployment_writes_the_allowlist",
            S + "test_admin_sees_everything_and_roles_cannot_change_the_allowlist",
        ),
    ),
    Promise(
        ROLES,
        "**Ids**",
        (
            S + "test_publishers_cannot_choose_ids_times_or_authors",
            S + "test_a_publisher_gets_delivery_stats_of_its_own_messages_only",
            S + "test_publisher_can_publish_but_not_read",
        ),
    ),
    Promise(
        ROLES,
        "`pgmsg_client_ids_of(role)`",
        (
            S + "test_a_role_learns_only_its_own_client_ids",
            S + "test_client_sees_and_updates_only_its_own_deliveries",
        ),
    ),
    Promise(
        ROLES, "**NOTIFY**", (N + "test_another_role_listening_on_a_clients_channel_learns_only_the_ids",)
    ),
)
