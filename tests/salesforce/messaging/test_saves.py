"""When the Enhanced Chat actor saves (an event that only moves the last event id waits),
and what a live chat's objects cost.

The actor (with its real session, SSE parser and wire decoders) against the in-process
Salesforce of ``bridged.tools.ecbench`` (the simulator's own entry and frame functions), its
saves recorded: what a process started after ``kill -9`` at that moment would read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from bridged.chats.chat import Chat, ChatRecord
from bridged.chats.policy import RetryPolicy
from bridged.config.file import SalesforceConfig
from bridged.config.webchat import WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env
from bridged.salesforce.messaging.actor import MessagingActor, MessagingBackend
from bridged.salesforce.messaging.protocol import MessagingSnapshot
from bridged.simulators.messaging import entries
from bridged.simulators.messaging.sse import PING_FRAME, envelope, event_frame
from bridged.tools.ecbench import AGENT, CHANNEL, ORG, SCRT, BenchSalesforce
from tests.salesforce.liveagent.test_actor import RecordingLink


class RecordingStore:
    """Keeps the newest snapshot saved; each save is committed in the next turn."""

    def __init__(self) -> None:
        self.saves = 0
        self.snapshot: MessagingSnapshot | None = None

    def save(self, chat_id: str, snapshot: bytes, on_durable: Callable[[], None] | None = None,
             **kwargs: Any) -> None:
        self.saves += 1
        self.snapshot = msgspec.msgpack.decode(ChatRecord.decode(snapshot).state,
                                               type=MessagingSnapshot)
        if on_durable is not None:
            asyncio.get_running_loop().call_soon(on_durable)

    def may_send(self) -> bool:
        return True


async def _until(what: Callable[[], bool]) -> None:
    for _ in range(500):
        if what():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in 5 s")


class Scene:
    """One chat, its agent joined, and a way to put events on its stream."""

    def __init__(self) -> None:
        webchat = resolve_webchat(WebchatFields(
            type="salesforce_messaging", scrt_url=SCRT, organization_id=ORG,
            es_developer_name="Sim_Echo"), None, {}, ["*.my.salesforce-scrt.com"])
        self.chat = Chat("s1", webchat, env.Start(chat="s1"), inbox_size=8, max_held=100)
        self.link = RecordingLink()
        self.chat.bind(self.link, 0)
        self.store = RecordingStore()
        self.salesforce = BenchSalesforce()
        self.backend = MessagingBackend(self.salesforce, SalesforceConfig(), max_pending=10,
                                        store=self.store,  # type: ignore[arg-type]
                                        retry=RetryPolicy(initial_s=0.01, max_delay_s=0.02))
        self.task: asyncio.Task[None] | None = None
        self._n = 0

    async def __aenter__(self) -> Scene:
        self.task = asyncio.create_task(self.backend.run_chat(self.chat))
        await _until(lambda: any(isinstance(e, env.AgentJoined) for e in self.link.events))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.backend.aclose()

    @property
    def actor(self) -> MessagingActor:
        return self.backend._actors[self.chat.id]

    def put(self, entry: entries.Entry) -> str:
        """Salesforce sends ``entry`` on the stream; returns its event id."""
        self._n += 1
        event_id = f"1740000000000-{self._n:04d}"
        [conv] = self.salesforce._by_id.values()
        data = envelope(conversation_id=conv.conversation_id, entry=entry.as_event(),
                        channel_address_id=CHANNEL, platform_key="test")
        conv.chunks.put_nowait(event_frame(event_id, entry.event, data))
        return event_id

    def ack(self, read: bool) -> str:
        return self.put(entries.acknowledgement(
            read=read, message_id="0000", sender=entries.agent_sender(AGENT),
            display_name="Ada", now_ms=1_740_000_000_000 + self._n))

    def says(self, text: str) -> str:
        return self.put(entries.text_message(
            sender=entries.agent_sender(AGENT), display_name="Ada",
            message_id=f"m-{self._n}", text=text, now_ms=1_740_000_000_000 + self._n))

    async def taken(self, event_id: str) -> None:
        """Wait until the actor handed the event to its session, and for a few turns more."""
        await _until(lambda: self.actor.session.last_event_id == event_id)
        for _ in range(5):
            await asyncio.sleep(0)


async def test_acknowledgements_are_not_saved_alone_the_next_save_carries_their_id() -> None:
    async with Scene() as scene:
        told = scene.says("hello")
        await _until(lambda: any(isinstance(e, env.AgentMessage) for e in scene.link.events))
        await scene.taken(told)
        saves = scene.store.saves
        assert scene.store.snapshot is not None
        assert scene.store.snapshot.last_event_id == told
        scene.ack(read=False)
        last_ack = scene.ack(read=True)
        await scene.taken(last_ack)
        assert scene.store.saves == saves  # nothing for OCP, nothing to send: no save
        assert scene.store.snapshot.last_event_id == told
        again = scene.says("and again")
        await _until(lambda: any(isinstance(e, env.AgentMessage) and e.text == "and again"
                                 for e in scene.link.events))
        await scene.taken(again)
        assert scene.store.snapshot.last_event_id == again
        assert scene.store.saves > saves


def _count_turns(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of the actor's turns (``[n]``), from now on."""
    turns = [0]
    take_stream = MessagingActor._take_stream

    def counted(actor: MessagingActor) -> None:
        turns[0] += 1  # once a turn
        take_stream(actor)

    monkeypatch.setattr(MessagingActor, "_take_stream", counted)
    return turns


async def test_a_commit_that_nothing_waits_for_wakes_no_turn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's message is saved, and the commit of that save hands it to OCP by itself:
    the actor takes no turn for it (it would have nothing to do)."""
    async with Scene() as scene:
        turns = _count_turns(monkeypatch)
        told = scene.says("hello")
        await _until(lambda: any(isinstance(e, env.AgentMessage) and e.text == "hello"
                                 for e in scene.link.events))
        await scene.taken(told)
        assert turns[0] == 1  # the stream's chunk; not the commit


async def test_salesforces_keepalives_wake_no_turn_and_save_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A ping every 15 s of silence, in every conversation: the reader keeps it from the
    actor. Not even OCP's acknowledgement, which a turn would save, makes it a save."""
    async with Scene() as scene:
        told = scene.says("hello")
        await _until(lambda: any(isinstance(e, env.AgentMessage) for e in scene.link.events))
        await scene.taken(told)
        scene.chat.ack(scene.chat.next_seq - 1)  # OCP has it all: the chat's held list empties
        saves, turns = scene.store.saves, _count_turns(monkeypatch)
        [conv] = scene.salesforce._by_id.values()
        for _ in range(3):
            conv.chunks.put_nowait(PING_FRAME)
        await _until(conv.chunks.empty)
        for _ in range(10):
            await asyncio.sleep(0)
        assert (turns[0], scene.store.saves) == (0, saves)
        again = scene.says("and again")  # an event still wakes the actor, as ever
        await scene.taken(again)
        assert turns[0] >= 1 and scene.store.saves > saves


async def test_a_keepalive_that_carries_a_new_event_id_is_handed_on() -> None:
    async with Scene() as scene:
        told = scene.says("hello")
        await scene.taken(told)
        [conv] = scene.salesforce._by_id.values()
        conv.chunks.put_nowait(b"id: 1740000000000-9999\n" + PING_FRAME)
        await scene.taken("1740000000000-9999")  # the session reads on from it


async def test_a_stream_past_the_parsers_bound_ends_its_chat_failed_naming_the_stream(
        ) -> None:
    """The reader parses; what it cannot parse still ends the chat in the actor's turn."""
    async with Scene() as scene:
        [conv] = scene.salesforce._by_id.values()
        conv.chunks.put_nowait(b"data: " + b"x" * (2 << 20))  # a line past 1 MiB
        await _until(lambda: any(isinstance(e, env.Ended) for e in scene.link.events))
        [ended] = [e for e in scene.link.events if isinstance(e, env.Ended)]
        assert ended.reason == "failed"
        assert "event stream is not as documented" in str(ended.detail)


async def test_the_stream_reader_holds_no_chunk_or_event_while_it_waits() -> None:
    """Between two chunks (minutes, in an idle conversation) the reader's frame keeps
    neither the last chunk nor what it parsed from it: memory per live chat."""
    async with Scene() as scene:
        told = scene.says("hello")
        await scene.taken(told)
        task = scene.actor._stream_task
        assert task is not None and not task.done()
        waiting = task.get_coro().cr_frame.f_locals  # type: ignore[union-attr]
        assert not {"chunk", "events"} & set(waiting)


async def test_a_reopened_streams_reader_does_not_hold_the_reader_before_it() -> None:
    """A reconnect's reader waits for the old one to finish, then lets it go: it is not
    kept (with its frame's last state) for the new stream's whole life."""
    async with Scene() as scene:
        first = scene.actor._stream_task
        assert first is not None
        [conv] = scene.salesforce._by_id.values()
        conv.chunks.put_nowait(b"")  # the server ends the stream: it is opened again
        await _until(lambda: scene.actor._stream_task not in (None, first))
        second = scene.actor._stream_task
        assert second is not None
        await _until(lambda: first.done() and scene.actor.stream_open)
        told = scene.says("still there")
        await scene.taken(told)  # the new reader reads
        waiting = second.get_coro().cr_frame.f_locals  # type: ignore[union-attr]
        assert waiting.get("previous") is None


async def test_a_release_saves_the_last_event_id_first() -> None:
    """A move's next holder reads on from the id committed: the newest one taken, even if
    only acknowledgements came after the last save (docs/cluster.md, the safe point)."""
    async with Scene() as scene:
        told = scene.says("hello")
        await scene.taken(told)
        last_ack = scene.ack(read=True)
        await scene.taken(last_ack)
        assert scene.store.snapshot is not None
        assert scene.store.snapshot.last_event_id == told
        scene.chat.request_release()
        assert scene.task is not None
        await asyncio.wait_for(asyncio.shield(scene.task), 5)
        assert scene.chat.released
        assert scene.store.snapshot.last_event_id == last_ack


async def test_the_objects_a_live_chat_keeps_have_no_instance_dict() -> None:
    """One of each per chat: slots, not a dict of attributes (a few hundred bytes each)."""
    async with Scene() as scene:
        actor = scene.actor
        kept = [actor, actor.session, actor.session._seen, actor._parser, actor._wake,
                actor._stream_room, scene.chat, scene.chat.inbox]
        assert [type(o).__name__ for o in kept if hasattr(o, "__dict__")] == []


async def test_a_chat_between_two_messages_holds_no_empty_list_for_its_queues() -> None:
    """Between two messages (most of a chat's life) its queues are empty: the REST
    requests to send, in flight and answered, the stream's items, the parser's line and
    data, the events held while reconciling, the facts and notices for the shell, the inbox
    and its waiting writers, the ids delivered since the last save. Each is then the
    shared (), not an empty list of its own (64 bytes a queue, a chat: memory per chat)."""
    async with Scene() as scene:
        scene.chat.inbox.put_nowait(env.Message(chat="s1", id="v1", text="hello"))
        await _until(lambda: any(isinstance(e, env.Delivered) for e in scene.link.events))
        told = scene.says("hi")
        await _until(lambda: any(isinstance(e, env.AgentMessage) for e in scene.link.events))
        await scene.taken(told)
        await _until(lambda: not scene.actor._requests)
        for _ in range(5):
            await asyncio.sleep(0)
        actor, session = scene.actor, scene.actor.session
        queues = {
            "outgoing": actor._outgoing, "answers": actor._answers,
            "stream items": actor._stream_items, "outbox": session._outbox,
            "in flight": session._in_flight, "held": session._held,
            "reconcile entries": session._reconcile_entries,
            "parser line": actor._parser._partial, "parser data": actor._parser._data,
            "facts": session._facts, "notices": session._notices,
            "inbox": scene.chat.inbox._items, "inbox writers": scene.chat.inbox._writers,
            "pending dropped": scene.chat._pending_dropped,
            "new delivered": scene.chat.new_delivered,
        }
        assert {name: q for name, q in queues.items() if q != ()} == {}  # [] != ()
