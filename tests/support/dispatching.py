"""A dispatcher running in a thread for the length of a test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pgmsg.workers.dispatcher import Dispatcher


@contextmanager
def running(dsn: str, **options: Any) -> Iterator[Dispatcher]:
    """Dispatcher(dsn, **options) running until the block ends, then stopped and closed."""
    d = Dispatcher(dsn, **options)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=d.run, args=(stop,), kwargs={"ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(10), "the dispatcher did not start"
    try:
        yield d
    finally:
        stop.set()
        thread.join(timeout=20)
        d.close()
