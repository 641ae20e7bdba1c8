"""The agent console's adapter for the Live Agent simulator (:mod:`..liveagent`).

The console shows the chats on the button whose scripted agent waits for a person
(``CONSOLE_BUTTON``); every other button has a scripted agent of its own. Its actions are
the simulator's agent actions (``agent_joins``, ``agent_says``, ``agent_typing``,
``agent_transfers``, ``agent_ends``), so the visitor sees exactly what the control API would
send. The visitor's side is read from the session: its transcript for the messages, its
visitor events for typing.

Typing is tracked here, from the simulator's watcher call after each change: a session
changes one request at a time, so what is new in its records since the last call says what
the visitor just did (typing on, typing off, or a message, which ends their typing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from ..liveagent import CONSOLE_BUTTON, Phase, Session, Simulator, SimulatorError
from ..liveagent.app import BASE_PATH
from .backend import ACTIVE, ENDED, WAITING, ActionRefused, Conversation, Line, agent_user_id
from .server import CONSOLE_PATH

__all__ = ["LINES_MAX", "LiveAgentConsole", "console_url"]

# Most messages a conversation shows (the latest).
LINES_MAX = 500

# Session.end_reason -> what the console says.
_ENDED = {
    "client": "the visitor ended the chat",
    "deleted": "the visitor left",
    "agent": "the agent ended the chat",
    "timeout": "the visitor stopped polling",
    "duplicate_poll": "the visitor polled twice at once",
    "shutdown": "the simulator stopped",
}


class _Tracked:
    """What the adapter knows of one console session beyond its records."""

    __slots__ = ("agent_typing", "events_seen", "messages_seen", "since", "visitor_typing")

    def __init__(self, since: float) -> None:
        self.since = since
        self.events_seen = 0
        self.messages_seen = 0
        self.visitor_typing = False
        self.agent_typing = False


class LiveAgentConsole:
    """The Live Agent simulator as a :class:`~.backend.ConsoleBackend`."""

    key = "liveagent"
    title = "Live Agent"

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self._tracked: dict[str, _Tracked] = {}
        self._listeners: list[Callable[[str], None]] = []
        simulator.watchers.append(self._changed)

    # ----------------------------------------------------------------------------------
    # Reading

    def conversations(self) -> Iterator[Conversation]:
        """Every console session the simulator still keeps."""
        for session in list(self.simulator.sessions.values()):
            if session.button_id == CONSOLE_BUTTON:
                yield self._view(session)

    def conversation(self, id: str) -> Conversation | None:
        """One console session, or None."""
        session = self.simulator.sessions.get(id)
        if session is None or session.button_id != CONSOLE_BUTTON:
            return None
        return self._view(session)

    def _view(self, session: Session) -> Conversation:
        tracked = self._track(session)
        init = session.init_body
        if session.is_over or session.closing:
            state, ended = ENDED, self._ended(session)
        elif session.agent_name is None and session.phase is Phase.ROUTING:
            state, ended = WAITING, None
        else:
            state, ended = ACTIVE, None
        lines = tuple(
            Line(side="visitor" if entry["type"] == "Chasitor" else "agent",
                 name=str(entry["name"]), text=str(entry["content"]))
            for entry in session.transcript[-LINES_MAX:]
        )
        return Conversation(
            id=session.id,
            state=state,
            visitor=init.visitor_name if init is not None else "",
            since=tracked.since,
            agent=session.agent_name if state != WAITING else None,
            lines=lines,
            visitor_typing=tracked.visitor_typing and state == ACTIVE,
            agent_typing=tracked.agent_typing and state == ACTIVE,
            ended=ended,
            details=tuple((d.label, d.value) for d in init.prechat_details) if init else (),
        )

    @staticmethod
    def _ended(session: Session) -> str:
        reason = session.end_reason
        if reason is None:  # closing: the final message waits for the visitor's next poll
            return "the agent ended the chat"
        if reason.startswith("request_failed"):
            return "the chat request failed"
        return _ENDED.get(reason, reason)

    # ----------------------------------------------------------------------------------
    # Watching

    def watch(self, changed: Callable[[str], None]) -> None:
        """Call ``changed(session_id)`` after each change to a console session."""
        self._listeners.append(changed)

    def _track(self, session: Session) -> _Tracked:
        tracked = self._tracked.get(session.id)
        if tracked is None:
            # Seen first when ChasitorInit was applied: the visitor asks for an agent now.
            tracked = self._tracked[session.id] = _Tracked(time.time())
        return tracked

    def _changed(self, session_id: str) -> None:
        session = self.simulator.sessions.get(session_id)
        if session is None:  # forgotten by the simulator
            if self._tracked.pop(session_id, None) is not None:
                self._tell(session_id)
            return
        if session.button_id != CONSOLE_BUTTON:
            return
        tracked = self._track(session)
        events = session.visitor_events
        for event in events[tracked.events_seen:]:
            if event.get("type") == "ChasitorTyping":
                tracked.visitor_typing = True
            elif event.get("type") == "ChasitorNotTyping":
                tracked.visitor_typing = False
        tracked.events_seen = len(events)
        if len(session.visitor_messages) > tracked.messages_seen:
            tracked.messages_seen = len(session.visitor_messages)
            tracked.visitor_typing = False
        self._tell(session_id)

    def _tell(self, session_id: str) -> None:
        for listener in self._listeners:
            listener(session_id)

    # ----------------------------------------------------------------------------------
    # Acting (the console checked the conversation's state first)

    def accept(self, id: str, agent: str) -> None:
        """ChatEstablished from ``agent``."""
        self._act(lambda: self.simulator.agent_joins(id, agent, agent_user_id(agent)))

    def say(self, id: str, text: str) -> None:
        """An agent ChatMessage, then AgentNotTyping if the agent was typing."""
        tracked = self._tracked.get(id)
        self._act(lambda: self.simulator.agent_says(id, text))
        if tracked is not None and tracked.agent_typing:
            self.typing(id, False)

    def typing(self, id: str, active: bool) -> None:
        """AgentTyping or AgentNotTyping."""
        self._act(lambda: self.simulator.agent_typing(id, active))
        tracked = self._tracked.get(id)
        if tracked is not None:
            tracked.agent_typing = active
            self._tell(id)

    def transfer(self, id: str, agent: str) -> None:
        """ChatTransferred to ``agent``."""
        tracked = self._tracked.get(id)
        if tracked is not None and tracked.agent_typing:
            self.typing(id, False)  # the agent who leaves stops typing
        self._act(lambda: self.simulator.agent_transfers(id, agent, agent_user_id(agent)))

    def end(self, id: str) -> None:
        """ChatEnded ``{"reason": "agent"}``."""
        self._act(lambda: self.simulator.agent_ends(id))

    @staticmethod
    def _act(action: Callable[[], object]) -> None:
        try:
            action()
        except SimulatorError as exc:  # unknown session (404), over (409), outbox full
            raise ActionRefused(str(exc), 404 if isinstance(exc, KeyError) else 409) from None


def console_url(simulator: Simulator, prefix: str = CONSOLE_PATH) -> str:
    """The URL of the console mounted (under ``prefix``) on a served Live Agent simulator."""
    if simulator.base_url is None:
        raise ValueError("the simulator is not served yet (running_simulator sets base_url)")
    return simulator.base_url.removesuffix(BASE_PATH) + prefix
