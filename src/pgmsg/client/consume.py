"""Async consumption: claim deliveries under a lease, ack or nack them, consume in a loop."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable

from psycopg.rows import tuple_row

from pgmsg.client.connection import RECONNECT_PAUSE_SECONDS
from pgmsg.client.listener import ListenMixin
from pgmsg.client.models import Acked, ConsumeResult, Delivery, DeliveryRef
from pgmsg.errors import ConnectionFailed, InvalidInput, LeaseLost, shown, translated

log = logging.getLogger("pgmsg.client")

#: Claim due deliveries under a lease, in id order (publish order; UPDATE ... RETURNING has
#: none of its own); the columns in the order of Delivery's fields.
CLAIM = (
    "SELECT delivery_id, message_id, client_id, message_type, namespace, payload, created_at, "
    "attempts, delivery_mode, message_key, lease_expires_at, lease_token "
    "FROM pgmsg_claim(%s, %s, %s, %s, false) ORDER BY delivery_id"
)

#: Complete deliveries, each under its lease; ids and tokens as array literals.
ACK = "SELECT acked, not_acked FROM pgmsg_ack(%s::bigint[], %s::uuid[])"

#: Give one delivery back under its lease, claimable again after a delay.
NACK = "SELECT pgmsg_nack(%s, %s::uuid, %s, %s) AS status"


def _ids_and_tokens(deliveries: Iterable[DeliveryRef]) -> tuple[list[int], list[str]]:
    """Delivery ids and their lease tokens as array-literal elements ("NULL" for none)."""
    ids: list[int] = []
    tokens: list[str] = []
    for ref in deliveries:
        if isinstance(ref, Delivery):
            delivery_id, token = ref.id, ref.lease_token
        elif isinstance(ref, tuple) and len(ref) == 2:
            delivery_id, token = ref
        else:
            raise InvalidInput(
                f"an ack or nack names each delivery with its lease token, not {shown(ref)}: "
                "pass the Delivery objects claim returned, or (id, lease_token) pairs "
                "((id, None) for a durable NOTIFY delivery a listener received)"
            )
        # Checked, not cast: a float would be rounded to another delivery's id.
        if not isinstance(delivery_id, int) or isinstance(delivery_id, bool):
            raise InvalidInput(
                f"delivery ids are integers, not {shown(delivery_id)}: pass Delivery.id values"
            )
        if token is None:
            tokens.append("NULL")
        else:
            try:
                tokens.append(str(token if isinstance(token, uuid.UUID) else uuid.UUID(str(token))))
            except ValueError:
                raise InvalidInput(
                    f"{shown(token)} is not a lease token (a UUID) of delivery {delivery_id}"
                ) from None
        ids.append(int(delivery_id))
    return ids, tokens


class ConsumeMixin(ListenMixin):
    """Claim, ack, nack; consume a batch with a handler, or run a consumer until stopped."""

    def claim(
        self,
        client_id: str,
        limit: int = 10,
        *,
        consumer: str | None = None,
        lease_seconds: int | None = None,
    ) -> list[Delivery]:
        """Claim up to ``limit`` due deliveries for ``lease_seconds`` (default: the subscription's).

        Until :meth:`ack` or :meth:`nack`, or until the lease expires, no one
        else can claim them; after expiry they are claimable again.

        The claim commits without waiting for the WAL flush (``p_durable =>
        false``): a claim lost in a crash just after it only means the delivery
        is delivered again, as at-least-once allows; :meth:`ack` is durable.
        """
        # In id order, i.e. publish order (UPDATE ... RETURNING has none of its own).
        # Tuples, not the pool's dicts: a claim of a hundred builds a hundred rows.
        with (
            translated(f"claiming deliveries of {client_id!r}"),
            self._connection() as conn,
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            rows = cur.execute(CLAIM, (client_id, limit, consumer, lease_seconds)).fetchall()
        return [Delivery(*row) for row in rows]

    def ack(self, deliveries: Iterable[DeliveryRef]) -> Acked:
        """Mark claimed deliveries delivered, each under the lease it was claimed with.

        Takes :class:`Delivery` objects from :meth:`claim`, or ``(id, lease_token)`` pairs
        (``(id, None)`` for a durable NOTIFY delivery a listener received and nobody claimed).
        Returns how many were acknowledged (an ``int``); ``.not_acked`` lists the others: their
        lease lapsed and passed on, or they were completed, released or cancelled meanwhile.
        Those are left as they are.
        """
        ids, tokens = _ids_and_tokens(deliveries)
        if not ids:
            return Acked(0)
        # As array literals: psycopg's list dumper spends about 4 us of Python per element,
        # more than the ack's share of the server's work.
        with translated("acknowledging deliveries"), self._connection() as conn:
            row = conn.execute(
                ACK, ("{" + ",".join(map(str, ids)) + "}", "{" + ",".join(tokens) + "}")
            ).fetchone()
        assert row is not None
        return Acked(row["acked"], row["not_acked"])

    def nack(self, delivery: DeliveryRef, *, delay_seconds: float = 0.0, error: str | None = None) -> str:
        """Give a claimed delivery back, claimable again after ``delay_seconds``.

        Returns the new status: ``pending``, or ``dead`` once the subscription's
        max_attempts are used up. Raises :class:`~pgmsg.LeaseLost` (nothing changed) when
        the delivery is no longer held under its lease.
        """
        [delivery_id], [token] = _ids_and_tokens([delivery])
        if token == "NULL":
            raise InvalidInput(f"a nack of delivery {delivery_id} needs the lease token its claim returned")
        with translated(f"rejecting delivery {delivery_id}"), self._connection() as conn:
            row = conn.execute(NACK, (delivery_id, token, delay_seconds, error)).fetchone()
        assert row is not None
        return str(row["status"])

    def consume(
        self,
        client_id: str,
        handler: Callable[[Delivery], object],
        *,
        batch_size: int = 10,
        consumer: str | None = None,
        retry_delay: Callable[[Delivery], float] | None = None,
    ) -> ConsumeResult:
        """Claim a batch, hand each delivery to ``handler``, ack or nack it.

        A delivery whose handler raises is nacked with the error, to be retried
        after ``retry_delay(delivery)`` seconds (default: 2 ** attempts, at most
        300), or becomes a dead letter when its attempts are used up.
        """
        if batch_size < 1:
            raise InvalidInput("batch_size must be at least 1")
        handled: list[Delivery] = []
        failed: list[int] = []
        stale: list[int] = []
        for delivery in self.claim(client_id, batch_size, consumer=consumer):
            try:
                handler(delivery)
            except Exception as exc:  # the handler's failure is data: recorded on the delivery
                delay = retry_delay(delivery) if retry_delay else min(300.0, 2.0**delivery.attempts)
                try:
                    self.nack(delivery, delay_seconds=delay, error=f"{type(exc).__name__}: {exc}"[:2000])
                except LeaseLost:
                    stale.append(delivery.id)
                else:
                    failed.append(delivery.id)
            else:
                handled.append(delivery)
        acked = self.ack(handled)
        stale += acked.not_acked
        if stale:
            # Not an error of this consumer's code, but work that will be done twice: the
            # handler took longer than the lease (or the subscription was removed).
            log.warning(
                "%d deliveries of %s were handled after their lease ran out and not "
                "acknowledged (%s); their next holder delivers them again: give the "
                "subscription a longer lease_seconds than the handler takes",
                len(stale),
                client_id,
                ", ".join(map(str, sorted(stale))),
            )
        lost = set(acked.not_acked)
        return ConsumeResult(
            delivered=[d.id for d in handled if d.id not in lost], failed=failed, stale=sorted(stale)
        )

    def run_consumer(
        self,
        client_id: str,
        handler: Callable[[Delivery], object],
        *,
        stop: threading.Event,
        batch_size: int = 10,
        consumer: str | None = None,
        idle_poll_seconds: float = 1.0,
    ) -> int:
        """Consume until ``stop`` is set; returns how many deliveries were completed.

        An idle consumer sleeps on LISTEN pgmsg_deliveries and wakes within
        milliseconds of a commit that gives it work; ``idle_poll_seconds`` only
        bounds how late it notices nack delays and lapsed leases.

        A lost connection (the database restarting) does not end it: it pauses
        RECONNECT_PAUSE_SECONDS and goes on with new connections. Deliveries it
        had claimed but not acked come back when their lease lapses.
        """
        done = 0
        with self.listener("pgmsg_deliveries") as wake:
            while not stop.is_set():
                try:
                    result = self.consume(client_id, handler, batch_size=batch_size, consumer=consumer)
                except ConnectionFailed as exc:
                    # The pool replaces broken connections, the listener reconnects by itself.
                    log.warning("consumer of %s lost the database (%s); retrying", client_id, exc)
                    stop.wait(RECONNECT_PAUSE_SECONDS)
                    continue
                done += len(result.delivered)
                if result.delivered or result.failed:
                    continue
                for note in wake.notifications(timeout=idle_poll_seconds, raw=True):
                    if note.payload == client_id or stop.is_set():
                        break
        return done
