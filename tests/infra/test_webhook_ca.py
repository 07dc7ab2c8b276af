"""The deployed http-dispatcher trusts the inventory's webhook CA bundle (a private CA)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgmsg import Client, signing
from pgmsg.webhook_receiver import WebhookReceiver
from tests.support.tls import make_certificates
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DISPATCHER = "http-dispatcher"


def _deploy_services(extra_vars: dict[str, Any]) -> None:
    playbook = Path(sys.executable).with_name("ansible-playbook")
    run = subprocess.run(
        [
            str(playbook),
            "-i",
            str(ROOT / "inventory" / "local" / "hosts.yml"),
            "site.yml",
            "--tags",
            "services",
            "-e",
            json.dumps(extra_vars),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]


def _dispatcher(host: Any) -> tuple[dict[str, str], list[dict[str, Any]]]:
    info = host.docker(DISPATCHER).inspect()
    env = dict(entry.split("=", 1) for entry in info["Config"]["Env"])
    return env, info["Mounts"]


@pytest.mark.deploy
def test_dispatcher_pushes_to_an_endpoint_of_the_inventory_ca(
    host: Any, client: Client, run_id: str, tmp_path: Path, inventory_vars: dict[str, Any]
) -> None:
    """Without the bundle the push fails certificate verification (one attempt: a dead
    letter, so no retries run out while site.yml runs); with pgmsg_services_webhook_ca_bundle
    set, site.yml mounts it into the dispatcher and the redriven delivery arrives; without
    it again, site.yml takes it away."""
    assert DISPATCHER in inventory_vars["pgmsg_services_enabled"]
    certs = make_certificates(tmp_path)
    secret = signing.generate_secret()
    receiver = WebhookReceiver(
        [secret], "127.0.0.1", 0, tls_cert=f"{certs['localhost']}.pem", tls_key=f"{certs['localhost']}.key"
    )
    ca_on_host = inventory_vars.get(
        "pgmsg_services_webhook_ca_host_path", "/etc/pgmsg/services/webhook-ca.pem"
    )
    with receiver:
        client.subscribe(
            run_id + "-tls",
            "http",
            message_type=run_id + ".*",
            signing_secret=secret,
            webhook_url=f"https://localhost:{receiver.port}/webhook",
            max_attempts=1,
        )
        message_id = client.publish(run_id + ".created", {"order": 1})
        (dead,) = wait_until(
            lambda: client.dead_letters(run_id + "-tls"),
            timeout=60,
            message="the push to the private-CA endpoint failing",
        )
        assert "CERTIFICATE_VERIFY_FAILED" in dead["last_error"], dead["last_error"]
        assert receiver.accepted == []

        try:
            _deploy_services({"pgmsg_services_webhook_ca_bundle": str(certs["ca"])})
            env, mounts = _dispatcher(host)
            target = env["PGMSG_WEBHOOK_CA_FILE"]
            (mount,) = [m for m in mounts if m["Destination"] == target]
            assert mount["RW"] is False and mount["Source"] == ca_on_host
            assert host.file(ca_on_host).content_string == certs["ca"].read_text()
            assert client.redrive(run_id + "-tls") == 1
            wait_until(lambda: receiver.accepted, timeout=90, message="the webhook delivered through the CA")
            # The receiver counts the request before it answers; the dispatcher records the
            # answer in a transaction of its own after it.
            (delivery,) = wait_until(
                lambda: [d for d in client.deliveries(message_id) if d["status"] != "processing"],
                timeout=30,
                message="the dispatcher recording the push",
            )
            assert delivery["status"] == "delivered" and delivery["push_status_code"] == 200
            assert [a["webhook_id"] for a in receiver.accepted] == [f"dlv_{delivery['id']}"]
        finally:
            _deploy_services({})
    env, mounts = _dispatcher(host)
    assert "PGMSG_WEBHOOK_CA_FILE" not in env
    assert not [m for m in mounts if m["Source"] == ca_on_host]
    assert not host.file(ca_on_host).exists
