"""Structured log events: one event name and its fields per line.

Every module logs through :func:`log_event`, so that the JSON formatter (``bridged.ops.logs``)
can write one object per line with the chat id and connection id as fields. Fields whose
name says they hold a secret are redacted here, before any handler sees them.
"""

from __future__ import annotations

__all__ = ["SECRET_FIELDS", "log_event"]

import logging
from typing import Any

SECRET_FIELDS = frozenset({"token", "key", "session_key", "authorization", "password", "jwt"})


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log ``event`` with ``fields`` (``chat=...``, ``link=...``, ...) at ``level``."""
    if not logger.isEnabledFor(level):
        return
    for name in SECRET_FIELDS.intersection(fields):
        fields[name] = "<redacted>"
    logger.log(level, event, extra={"fields": fields})
