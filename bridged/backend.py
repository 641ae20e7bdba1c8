"""The small interface every Salesforce backend implements.

Legacy Chat (Live Agent) is the backend today; Salesforce retired it on 2026-02-14 in favour
of Enhanced Chat (Messaging for In-App and Web), which will be a second implementation of
this same interface. Everything above it (connections, envelopes, numbering, replay,
supervision) is shared and knows nothing of either protocol.

A backend serves one chat at a time per call of :meth:`Backend.run_chat`: it reads the
visitor's commands from ``chat.inbox`` (woken through ``chat.waker``), honours
``chat.end_requested``, reports what happens with ``chat.emit(fact)`` (see
:mod:`bridged.facts`), and returns once it has emitted ``facts.Ended``.
"""

from __future__ import annotations

__all__ = ["Backend"]

from typing import Protocol

import msgspec

from bridged.chat import Chat


class Backend(Protocol):
    """A Salesforce chat backend."""

    name: str

    async def run_chat(self, chat: Chat, resume: msgspec.Raw | None = None) -> None:
        """Serve ``chat`` until it is over; the last fact emitted is ``Ended``.

        ``resume`` is the backend's part of the chat's kept record (``ChatRecord.state``)
        when the chat goes on after a restart of bridged; the backend saves that part itself
        whenever it changes, through the state store it was given.
        """
        ...

    async def aclose(self) -> None:
        """Release what the backend holds (connection pools). Idempotent."""
        ...
