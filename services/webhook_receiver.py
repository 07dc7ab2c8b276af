"""pgmsg-webhook-receiver: a webhook endpoint that verifies Standard Webhooks signatures.

Run it with ``PGMSG_WEBHOOK_SECRETS="whsec_... [whsec_...]" pgmsg-webhook-receiver --port 8080``
and point an http subscription at http://HOST:PORT/webhook. It refuses unsigned,
tampered and stale requests with 401 and acknowledges a repeated webhook-id
without processing it twice (pgmsg.webhook_receiver.WebhookReceiver).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pgmsg import runtime, signing
from pgmsg.errors import InvalidInput
from pgmsg.webhook_receiver import SECRETS_VARIABLE, WebhookReceiver


def main(argv: Sequence[str] | None = None) -> int:
    """Receive webhooks until SIGTERM/SIGINT; the secrets come from PGMSG_WEBHOOK_SECRETS."""
    parser = runtime.parser("pgmsg-webhook-receiver", __doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument(
        "--tolerance",
        type=int,
        default=signing.DEFAULT_TOLERANCE_SECONDS,
        help="seconds a signature's timestamp may be off (default 300)",
    )
    parser.add_argument("--tls-cert", help="serve https with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM), unless it is in --tls-cert")
    args = parser.parse_args(argv)
    # Secrets are read from the environment because command lines are visible to every user.
    secrets = os.environ.get(SECRETS_VARIABLE, "").split()
    if not secrets:
        parser.error(f"set {SECRETS_VARIABLE} to one or more space-separated webhook secrets")
    try:
        config = runtime.settings(
            needs_client=False, metrics_port=args.metrics_port, metrics_flag="--metrics-port"
        )
        receiver = WebhookReceiver(
            secrets,
            args.host,
            args.port,
            tolerance_seconds=args.tolerance,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except InvalidInput as exc:
        parser.error(str(exc))
    stop = runtime.start("webhook_receiver", config)
    receiver.start()
    stop.wait()
    receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
