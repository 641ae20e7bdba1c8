"""Several bridged nodes on one Redis, broken on purpose: real processes on 127.0.0.1.

Two ``bridged run`` processes share one real redis-server (started by the test) and the Live
Agent simulator; the test client plays OCP and the load balancer. The oracle is the
simulator's: a second concurrent poll of a session ends it (409), so "not ended" proves no
two nodes ever polled at once; its record holds every visitor message it accepted. And what
OCP received: every agent event once, in order (``seq`` contiguous across nodes).

Timings are scaled down (lease 1 s, scan 0.1 s; the simulator's hold 0.5 s and
clientPollTimeout 5 s), so a takeover takes a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.ocp_client import connect
from tests.ops import test_processes
from tests.ops.test_processes import Conversation, reattach, say
from tests.processes import BridgedProcess, SimulatorProcess
from tests.redis_server import RedisServer


class Followed(Conversation):
    """A conversation that follows its chat when a node lets go of it (``not_attached``).

    As OCP does: it attaches again (any node), then sends again the messages the node did
    not answer, with their ids.
    """

    def __init__(self, chat: str) -> None:
        super().__init__(chat)
        self.texts: dict[str, str] = {}
        self.reattaches = 0

    async def pump(self, until: Any, timeout: float = 30) -> None:
        assert self.client is not None
        resend: list[str] = []
        async with asyncio.timeout(timeout):
            while not until(self):
                frame = await self.client.next(timeout=timeout)
                if frame.get("type") == "error" and frame.get("code") == "not_attached":
                    if frame.get("ref") == "attach":
                        self.reattaches += 1
                        await self.client.send({"type": "attach", "chat": self.chat,
                                                "after": self.last_seq})
                        for message_id in resend:
                            await self.client.send({"type": "message", "chat": self.chat,
                                                    "id": message_id,
                                                    "text": self.texts[message_id]})
                        resend.clear()
                    else:
                        resend.append(frame["ref"])
                    continue
                await self.take(frame)


async def start(bridged: BridgedProcess, http: aiohttp.ClientSession,
                simulator: SimulatorProcess, chat: str) -> Followed:
    started = await test_processes.start(bridged, http, simulator, chat)
    conversation = Followed(chat)
    conversation.client, conversation.session_id = started.client, started.session_id
    conversation.last_seq = started.last_seq
    return conversation


async def visitor(conversation: Conversation, message_id: str, text: str) -> None:
    if isinstance(conversation, Followed):
        conversation.texts[message_id] = text
    await test_processes.visitor(conversation, message_id, text)


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(predicate):
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def nodes(tmp: Path, simulator: SimulatorProcess, *urls: str
                ) -> AsyncIterator[list[BridgedProcess]]:
    """One bridged node per Redis URL, named a, b, ...; all stopped by pid at the end."""
    started: list[BridgedProcess] = []
    try:
        for i, url in enumerate(urls):
            name = "ab"[i]
            started.append(await asyncio.to_thread(
                BridgedProcess, tmp, simulator, name=f"node-{name}", node=name, redis_url=url))
        yield started
    finally:
        for process in started:
            process.stop()


async def talk_then(conversation: Conversation, simulator: SimulatorProcess) -> None:
    """Three visitor and three agent messages, all through, then one more of each in flight."""
    for i in range(3):
        await visitor(conversation, f"v{i}", f"visitor {i}")
        await say(simulator, conversation, f"agent {i}")
    await conversation.pump(lambda c: len(c.agent_texts) == 3 and len(c.delivered) == 3)
    await visitor(conversation, "v3", "visitor 3")
    await say(simulator, conversation, "agent 3")


async def finish_on(conversation: Conversation, node: BridgedProcess,
                    http: aiohttp.ClientSession, simulator: SimulatorProcess) -> None:
    """Re-attach on ``node``; v3 again (same id), v7; the agent's 4..6 all arrive there."""
    await reattach(conversation, node, http)
    await visitor(conversation, "v3", "visitor 3")
    await visitor(conversation, "v7", "visitor 7")
    await conversation.pump(lambda c: len(c.agent_texts) == 7 and {"v3", "v7"} <= set(c.delivered))


async def check_once(conversation: Conversation, simulator: SimulatorProcess) -> None:
    assert conversation.agent_texts == [f"agent {i}" for i in range(7)]
    assert conversation.delivered[:3] == ["v0", "v1", "v2"] and "v3" in conversation.delivered
    record = await asyncio.to_thread(simulator.session, conversation.session_id)
    assert record["visitor_messages"] == [f"visitor {i}" for i in (0, 1, 2, 3, 7)]
    assert not record["ended"], record["end_reason"]  # no second concurrent poll, ever
    assert len(await asyncio.to_thread(simulator.sessions)) == 1  # no new session


async def test_kill_9_of_the_node_holding_a_chat_and_another_node_goes_on(
        tmp_path: Path, simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url, redis_server.url) as (a, b):
        talk = await start(a, http, simulator, "kill-1")
        await talk_then(talk, simulator)
        a.signal(signal.SIGKILL)
        assert a.wait() == -signal.SIGKILL
        for i in range(4, 7):  # the agent goes on talking
            await say(simulator, talk, f"agent {i}")
        await finish_on(talk, b, http, simulator)
    await check_once(talk, simulator)


async def test_a_frozen_node_sends_nothing_for_the_chats_it_lost(
        tmp_path: Path, simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url, redis_server.url) as (a, b):
        talk = await start(a, http, simulator, "frozen-1")
        await talk_then(talk, simulator)
        a.signal(signal.SIGSTOP)  # past its lease: b takes the chat over
        try:
            for i in range(4, 6):
                await say(simulator, talk, f"agent {i}")
            await reattach(talk, b, http)
            await talk.pump(lambda c: len(c.agent_texts) == 6)
        finally:
            a.signal(signal.SIGCONT)
        # a wakes up with its chat's poll due: it must see that it lost the chat first.
        await wait_for(lambda: "cluster_lease_lost" in (tmp_path / "node-a.log").read_text())
        await say(simulator, talk, "agent 6")
        await asyncio.sleep(1.0)  # long enough for a zombie poll to end the session
        await visitor(talk, "v3", "visitor 3")
        await visitor(talk, "v7", "visitor 7")
        await talk.pump(lambda c: len(c.agent_texts) == 7 and "v7" in c.delivered)
        assert a.process.poll() is None
    await check_once(talk, simulator)


class Relay:
    """A TCP relay between one node and Redis, which the test can blackhole."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blackholed = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.blackholed:
            return  # accepted, never answered
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.append(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                if not self.blackholed:  # cut off: bytes vanish, the connection stays
                    sink.write(data)
                    await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()


async def test_a_node_cut_off_from_redis_stops_and_its_chats_go_on_elsewhere(
        tmp_path: Path, simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    relay = Relay(redis_server.port)
    await relay.start()
    try:
        async with aiohttp.ClientSession() as http, nodes(
                tmp_path, simulator, relay.url, redis_server.url) as (a, b):
            talk = await start(a, http, simulator, "cut-off-1")
            await talk_then(talk, simulator)
            relay.blackholed = True
            await wait_for(lambda: status(f"{a.health}/readyz") == 503)
            for i in range(4, 7):
                await say(simulator, talk, f"agent {i}")
            # The load balancer sees a's /readyz: OCP goes to b.
            await finish_on(talk, b, http, simulator)
            assert status(f"{a.health}/readyz") == 503
            assert status(f"{b.health}/readyz") == 200
    finally:
        await relay.aclose()
    await check_once(talk, simulator)


async def test_redis_restarted_with_its_data_and_the_chats_go_on(
        tmp_path: Path, simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url) as (a,):
        talk = await start(a, http, simulator, "restart-1")
        await talk_then(talk, simulator)
        redis_server.stop()
        await asyncio.sleep(1.5)  # past the node's lease: it stops sending meanwhile
        await asyncio.to_thread(redis_server.start)
        for i in range(4, 7):
            await say(simulator, talk, f"agent {i}")
        # The node lost its lease while Redis was away: it takes its chats back, and tells
        # the connection to attach again.
        await finish_on(talk, a, http, simulator)
    await check_once(talk, simulator)


async def test_redis_lost_with_its_data_and_the_chats_end_saying_so(
        tmp_path: Path, simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url) as (a,):
        talk = await start(a, http, simulator, "lost-1")
        await visitor(talk, "v0", "visitor 0")
        await talk.pump(lambda c: c.delivered == ["v0"])
        redis_server.wipe()
        await asyncio.to_thread(redis_server.start)  # a fresh, empty server
        assert talk.client is not None
        ended = await talk.client.expect("ended", timeout=20)
        assert ended["seq"] == talk.last_seq + 1
        assert ended["reason"] == "failed"
        assert "lost its data" in ended["text"]
        # Nothing goes on silently: an attach gets that same end.
        other = await connect(http, a.url, BridgedProcess.TOKEN)
        await other.send({"type": "attach", "chat": "lost-1", "after": talk.last_seq})
        assert (await other.expect("ended", timeout=20))["seq"] == ended["seq"]
