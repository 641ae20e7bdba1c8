"""A chat that nothing holds any more is freed by reference counting, without the garbage
collector: a reference cycle would keep it (and everything it holds) until a full
collection, which with thousands of chats is a pause of its own."""

from __future__ import annotations

import gc
import weakref

from bridged.chats import facts
from bridged.chats.chat import Chat
from bridged.config.webchat import WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env


def test_a_chat_that_is_dropped_is_freed_without_the_collector() -> None:
    webchat = resolve_webchat(WebchatFields(
        live_agent_base_url="https://d.la1-c1-fra.salesforceliveagent.com/chat/rest/",
        organization_id="00D000000000001", deployment_id="572000000000001",
        button_id="573000000000001"), None, {}, ["*.salesforceliveagent.com"])
    enabled = gc.isenabled()
    gc.disable()
    try:
        chat = Chat("c1", webchat, env.Start(chat="c1"), inbox_size=8, max_held=100)
        chat.inbox.put_nowait(env.Message(chat="c1", id="m1", text="hello"))
        chat.emit(facts.AgentJoined(agent="Ada"))
        watch = weakref.ref(chat)
        del chat
        assert watch() is None
    finally:
        if enabled:
            gc.enable()
