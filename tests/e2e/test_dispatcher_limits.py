"""The deployed http-dispatcher's requests in flight per subscription: its default, or the
subscription's own max_in_flight (migration 032), seen by a slow endpoint that counts the
requests it holds at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pgmsg import Client
from tests.support.deployment import Deployment
from tests.support.receiver import Received, Receiver, Reply
from tests.support.waiting import wait_until

#: How long the endpoint holds each request: long enough for every slot to fill.
HOLD_SECONDS = 0.4


class Concurrency:
    """A ``respond`` for the receiver: holds each request a while, counting those held at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __call__(self, _request: Received) -> Reply:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(HOLD_SECONDS)  # the slow endpoint itself, not a wait for a condition
        finally:
            with self.lock:
                self.now -= 1
        return Reply(200)


def delivered(client: Client, ids: list[int]) -> bool:
    return all(d["status"] == "delivered" for i in ids for d in client.deliveries(i))


@pytest.mark.parametrize("max_in_flight", [None, 8, 2])
def test_the_deployed_dispatcher_keeps_each_subscription_to_its_limit(
    client: Client, deployment: Deployment, receiver: Receiver, run_id: str, max_in_flight: Any
) -> None:
    default = int(deployment.value("pgmsg_services_dispatcher_per_subscription"))
    workers = int(deployment.value("pgmsg_services_dispatcher_workers"))
    limit = max_in_flight or default
    assert limit <= workers, "the deployment's workers must allow the limit under test"
    seen = Concurrency()
    receiver.respond = seen
    client.subscribe(
        run_id + "-slow",
        "http",
        message_type=run_id + ".*",
        webhook_url=receiver.url,
        max_in_flight=max_in_flight,
    )
    ids = client.publish_many([(run_id + ".x", {"n": n}, "default") for n in range(limit * 6)])
    wait_until(lambda: delivered(client, ids), timeout=60, message="every webhook delivered")
    assert seen.most == limit
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == len(ids)
