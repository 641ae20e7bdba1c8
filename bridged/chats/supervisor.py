"""Supervision of the per-chat actors: one task per chat, isolated from every other.

``ChatSupervisor`` is an isolating scope in the style of aiojobs: it keeps a strong
reference to each chat's task (named ``chat:<id>``), and a crash inside one chat ends
that chat, and only that chat: each of its messages not yet answered gets an ``error``,
then the chat ``ended`` reason ``failed`` (the backend's actor, before it goes, ends the
chat at Salesforce as best it can). A failure of the supervisor itself is not caught here:
it goes up to the daemon's TaskGroup and the process exits non-zero, for systemd to
restart it.

Tasks are kept per :class:`Chat`, not per chat id: an id is free again the moment its
``ended`` went out, while the old actor may still be winding down (cancelling its
requests), so for a while two actors of one id may run, the old one only finishing.
"""

from __future__ import annotations

__all__ = ["ChatSupervisor"]

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bridged._log import log_event
from bridged.chats import facts
from bridged.chats.chat import Chat

log = logging.getLogger("bridged.chats.supervisor")


class ChatSupervisor:
    """Runs one actor task per chat.

    Args:
        run_chat: the backend's coroutine function that serves a chat until it ends.
    """

    def __init__(self, run_chat: Callable[[Chat, Any], Awaitable[None]],
                 on_crashed: Callable[[Chat], None] | None = None) -> None:
        self._run_chat = run_chat
        # Keeps the chat (its ``ended`` event) since its actor, which would have, is gone.
        self._on_crashed = on_crashed
        self._tasks: dict[Chat, asyncio.Task[None]] = {}
        self._closing = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, chat: Chat, resume: Any = None) -> None:
        """Start serving ``chat`` (from its kept backend state ``resume`` after a restart).

        Raises:
            RuntimeError: the supervisor is closing, or this chat already has a task.
        """
        if self._closing:
            raise RuntimeError("the supervisor is closing")
        if chat in self._tasks:
            raise RuntimeError(f"chat {chat.id} already has an actor")
        task = asyncio.create_task(self._guard(chat, resume), name=f"chat:{chat.id}")
        self._tasks[chat] = task

    async def _guard(self, chat: Chat, resume: Any) -> None:
        try:
            await self._run_chat(chat, resume)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one chat must not reach any other
            log.exception("chat_crashed", extra={"fields": {"chat": chat.id}})
            self._fail(chat, f"internal error in bridged ({type(exc).__name__})")
        else:
            if not chat.finished and not chat.released:
                log_event(log, logging.ERROR, "chat_stopped_without_end", chat=chat.id)
                self._fail(chat, "internal error in bridged")
        finally:
            del self._tasks[chat]

    async def cancel(self, chat: Chat) -> None:
        """Stop ``chat``'s actor without ending it anywhere (another node goes on with it)."""
        task = self._tasks.get(chat)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def release(self, chat: Chat, timeout: float) -> bool:
        """Have ``chat``'s actor stop at its next safe point (see :meth:`Chat.request_release`).

        ``True`` once it has stopped there (or has no actor: the chat is finished);
        ``False`` if it has not within ``timeout`` seconds: it then goes on as before.
        """
        task = self._tasks.get(chat)
        if task is None:
            return chat.finished or chat.released
        chat.request_release()
        await asyncio.wait([task], timeout=timeout)
        if chat.released:
            await asyncio.gather(task, return_exceptions=True)
            return True
        if task.done():
            return chat.finished
        chat.cancel_release()
        return False

    def fail(self, chat: Chat, detail: str) -> None:
        """End ``chat`` toward OCP (its actor is gone): messages unanswered, then ended."""
        self._fail(chat, detail)

    def _fail(self, chat: Chat, detail: str) -> None:
        """End ``chat`` toward OCP for its gone actor: every message unanswered, then ended."""
        for message_id in list(chat.pending_ids):
            chat.emit(facts.Undelivered(
                id=message_id, detail="the chat failed before Salesforce confirmed the message"))
        chat.emit(facts.Ended(reason="failed", detail=detail))
        if self._on_crashed is not None:
            self._on_crashed(chat)

    async def aclose(self, budget: float) -> None:
        """Stop every actor: cancel, then wait up to ``budget`` seconds. Idempotent.

        Cancelling does not end a chat toward Salesforce: a chat that is still alive there
        is left for the next process to resume.
        """
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=budget)
            if pending:
                log_event(log, logging.WARNING, "actors_not_stopped", count=len(pending))
