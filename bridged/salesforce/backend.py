"""The small interface every Salesforce backend implements.

Two implement it: legacy Chat (Live Agent), which Salesforce retired on 2026-02-14, and
Enhanced Chat (Messaging for In-App and Web), its successor. Both serve at once: each chat
goes to the backend its webchat configuration's ``type`` names (:class:`Backends`), and a
kept chat back to the one named in its record. Everything above them (connections,
envelopes, numbering, replay, supervision) is shared and knows nothing of either protocol.

A backend serves one chat at a time per call of :meth:`Backend.run_chat`: it reads the
visitor's commands from ``chat.inbox`` (woken through ``chat.waker``), honours
``chat.end_requested``, reports what happens with ``chat.emit(fact)`` (see
:mod:`bridged.chats.facts`), and returns once it has emitted ``facts.Ended``.
"""

from __future__ import annotations

__all__ = ["Backend", "Backends", "backend_name", "backend_name_of"]

from collections.abc import Coroutine, Iterator
from typing import Any, Protocol

from bridged.chats.chat import Chat, KeptLists
from bridged.config.file import SalesforceConfig
from bridged.config.webchat import AnyWebchat


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


def backend_name(webchat: AnyWebchat) -> str:
    """The name of the backend that serves a chat of this configuration (its ``type``)."""
    return backend_name_of(type(webchat))


def backend_name_of(kind: type[AnyWebchat]) -> str:
    """The name of the backend that serves chats of this configuration type."""
    tag = kind.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


class Backends:
    """The backends bridged serves, by name; a chat goes to the one its ``type`` names.

    Args:
        backends: one per webchat type (``"salesforce"``, ``"salesforce_messaging"``).
    """

    def __init__(self, *backends: Backend) -> None:
        self._by_name: dict[str, Backend] = {b.name: b for b in backends}

    def __iter__(self) -> Iterator[Backend]:
        return iter(self._by_name.values())

    def get(self, name: str) -> Backend:
        """The backend called ``name``.

        Raises:
            KeyError: no such backend (a kept chat of a backend this bridged lacks).
        """
        return self._by_name[name]

    def for_chat(self, chat: Chat) -> Backend:
        """The backend that serves ``chat``."""
        return self._by_name[backend_name(chat.webchat)]

    def run_chat(self, chat: Chat, resume: Any = None) -> Coroutine[Any, Any, None]:
        """Serve ``chat`` with its backend (see :meth:`Backend.run_chat`).

        The backend's own coroutine, not one awaiting it: a frame less held per live chat.
        """
        return self.for_chat(chat).run_chat(chat, resume)

    def reconfigure(self, salesforce: SalesforceConfig) -> None:
        """Hand new ``[salesforce]`` settings to every backend that takes them (SIGHUP)."""
        for backend in self:
            reconfigure = getattr(backend, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(salesforce)

    async def aclose(self) -> None:
        """Close every backend. Idempotent."""
        for backend in self:
            await backend.aclose()
