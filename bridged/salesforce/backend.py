"""The small interface every Salesforce backend implements.

Legacy Chat (Live Agent) is the backend today; Salesforce retired it on 2026-02-14 in favour
of Enhanced Chat (Messaging for In-App and Web), which will be a second implementation of
this same interface. Everything above it (connections, envelopes, numbering, replay,
supervision) is shared and knows nothing of either protocol.

A backend serves one chat at a time per call of :meth:`Backend.run_chat`: it reads the
visitor's commands from ``chat.inbox`` (woken through ``chat.waker``), honours
``chat.end_requested``, reports what happens with ``chat.emit(fact)`` (see
:mod:`bridged.chats.facts`), and returns once it has emitted ``facts.Ended``.
"""

from __future__ import annotations

__all__ = ["Backend"]

from typing import Any, Protocol

from bridged.chats.chat import Chat, KeptLists


class Backend(Protocol):
    """A Salesforce chat backend."""

    name: str

    async def run_chat(self, chat: Chat, resume: Any = None) -> None:
        """Serve ``chat`` until it is over; the last fact emitted is ``Ended``.

        ``resume`` is what :meth:`resume_from` made of the chat's kept record when the chat
        goes on after a restart of bridged; the backend saves its part itself whenever it
        changes, through the state store it was given.
        """
        ...

    def resume_from(self, backend_static: bytes, state: bytes, poll_sent_at: float,
                    lists: KeptLists | None = None) -> Any:
        """Decode the backend's parts of a kept chat (raises ``msgspec.DecodeError``).

        ``lists`` are the chat's kept lists; the backend's own are numbered from
        ``BACKEND_LISTS`` up (see :mod:`bridged.chats.chat`).
        """
        ...

    async def aclose(self) -> None:
        """Release what the backend holds (connection pools). Idempotent."""
        ...
