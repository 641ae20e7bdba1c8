"""The sd_notify protocol: a few lines over a Unix datagram socket (standard library only).

systemd passes ``NOTIFY_SOCKET`` to a ``Type=notify`` service; the service sends
``READY=1`` once it serves, ``RELOADING=1`` (with ``MONOTONIC_USEC``) and ``READY=1`` around
a reload, ``STOPPING=1`` when it begins to stop, and ``WATCHDOG=1`` at least every
``WATCHDOG_USEC`` microseconds. bridged sends ``WATCHDOG=1`` from a task on its event loop
at half that period, so that a stuck loop (not a stuck thread elsewhere) stops the pings
and gets the service restarted.

Without ``NOTIFY_SOCKET`` every call does nothing, so bridged runs the same outside systemd.
"""

from __future__ import annotations

__all__ = ["Notifier", "watchdog_pings"]

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

from bridged._log import log_event

log = logging.getLogger("bridged.systemd")


class Notifier:
    """Sends notifications to systemd, if it asked for them.

    Args:
        environ: where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` come from.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An address starting with "@" is in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._failed = False
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2 / 1_000_000

    @property
    def enabled(self) -> bool:
        """Whether systemd gave a notify socket."""
        return bool(self._address)

    def notify(self, *fields: str) -> None:
        """Send ``fields`` (``"READY=1"``, ...) as one datagram; failures are logged once."""
        if not self._address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log_event(log, logging.WARNING, "sd_notify_failed", detail=str(exc))

    def ready(self, status: str = "") -> None:
        """Tell systemd the service is up."""
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        """Tell systemd a reload has begun (with the monotonic time it asks for)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """Tell systemd the service is stopping."""
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        """Set the status line systemd shows."""
        self.notify(f"STATUS={text}")

    def close(self) -> None:
        """Close the notify socket. Idempotent."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def watchdog_pings(notifier: Notifier) -> None:
    """Send ``WATCHDOG=1`` every half watchdog period, from the event loop, until cancelled."""
    interval = notifier.watchdog_interval
    if interval is None:
        return
    while True:
        notifier.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
