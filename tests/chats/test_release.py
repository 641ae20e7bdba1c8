"""A chat let go of at its actor's safe point: not ended, and only at a safe point."""

from __future__ import annotations

import asyncio

from bridged.chats.chat import Chat, released
from bridged.chats.supervisor import ChatSupervisor
from bridged.config.webchat import WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env


def make_chat() -> Chat:
    webchat = resolve_webchat(WebchatFields(
        live_agent_base_url="https://d.la1-c1-fra.salesforceliveagent.com/chat",
        organization_id="00D000000000001", deployment_id="572000000000001",
        button_id="573000000000001"), None, {}, ["*.salesforceliveagent.com"])
    return Chat("c1", webchat, env.Start(chat="c1"), inbox_size=8, max_held=100)


class Actor:
    """An actor's loop shape: it stops at a safe point (no request in flight) if asked."""

    def __init__(self) -> None:
        self.in_flight = True
        self.turns = 0
        self.wake = asyncio.Event()

    async def run(self, chat: Chat, _resume: object) -> None:
        chat.waker = self.wake.set
        while True:
            self.wake.clear()
            self.turns += 1
            if chat.release_wanted and not self.in_flight:
                released(chat)
                return
            await self.wake.wait()


async def test_a_release_waits_for_the_safe_point_and_ends_nothing() -> None:
    actor = Actor()
    supervisor = ChatSupervisor(actor.run)
    chat = make_chat()
    supervisor.spawn(chat)
    await asyncio.sleep(0)
    # A request in flight: not within the timeout; the actor goes on as before.
    assert not await supervisor.release(chat, 0.05)
    assert not chat.release_wanted and len(supervisor) == 1
    turns = actor.turns
    # The request returned: the next release stops it there.
    actor.in_flight = False
    assert await supervisor.release(chat, 5)
    assert actor.turns > turns
    assert chat.released and not chat.finished and chat.next_seq == 1  # no ended
    assert len(supervisor) == 0


async def test_a_finished_chat_has_nothing_to_stop() -> None:
    supervisor = ChatSupervisor(Actor().run)
    chat = make_chat()
    assert not await supervisor.release(chat, 0.01)  # live, with no actor: not safe
    chat.finished = True
    assert await supervisor.release(chat, 0.01)
