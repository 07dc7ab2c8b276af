"""Structured logging: one JSON object per line, for Loki, ELK and friends."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so log shippers need no parsing rules.

    Extra fields travel in ``extra={"fields": {...}}``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # default=str: a field that is not JSON must not cost the log line.
        return json.dumps(entry, default=str)


def configure_logging(
    logger: logging.Logger | None = None, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Send ``logger``'s records (the root logger's by default) to ``stream`` as JSON lines; idempotent."""
    target = logger or logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in target.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    target.addHandler(handler)
    target.setLevel(level)
