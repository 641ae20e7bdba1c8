"""Logging setup: one JSON object per line on stderr (journald keeps them as they are).

Each line has ``ts``, ``level``, ``event`` and the event's fields (``chat``, ``link``, ...).
Fields that hold secrets are already redacted by :func:`bridged._log.log_event`.
"""

from __future__ import annotations

__all__ = ["JsonFormatter", "setup_logging"]

import logging
import sys
import time
from typing import Any, TextIO

import msgspec

_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object: time, level, event and the event's fields."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(out).decode()


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """Send every ``bridged`` log line, as JSON, to ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("bridged").setLevel(level.upper())
