"""A strict, built-in simulator of Salesforce's Enhanced Chat API (Messaging for In-App and Web).

It plays the Salesforce side of the guest (unauthenticated Custom Client) API described in
MESSAGING.md: the 13 endpoints of its section 2.15 under one host, JWT-shaped tokens, the
server-sent event stream, rate limits, scripted agents and fault injection. Operators try
bridged against it, and bridged's tests and load tests run on it over real loopback.

It is an **independent implementation**: it imports nothing of bridged outside
``bridged.simulators`` and keeps its own wire definitions (:mod:`.wire`, :mod:`.entries`,
:mod:`.sse`), so a misreading in bridged's client is caught here instead of being mirrored.
It is as strict as the real service: where MESSAGING.md 8 leaves a point open it takes the
strict reading, behind an option (table below).

Entry points (for ``bridged simulator``, ``bridged demo`` and the load test)
--------------------------------------------------------------------------------

* ``await serve_forever(MessagingOptions(...), host, port)``: serve until cancelled (the
  ``bridged simulator`` command, beside the Live Agent simulator's ``serve_forever``).
* ``async with running_simulator(options, host="127.0.0.1", port=0) as sim``: serve for a
  block; ``sim.base_url`` (``http://127.0.0.1:PORT``) is what bridged's Enhanced Chat
  profile takes as its SCRT URL, with ``org_id`` = ``options.org_id`` and
  ``es_developer_name`` = one of the deployments below (``bridged demo`` profiles, one per
  scripted agent).
* ``sim = Simulator(options); await sim.start(); ...; await sim.stop()``: the same by hand.
* ``sim.watchers.append(watcher)``: ``watcher(conversation_id, entry)`` after each event of
  a conversation, and ``(conversation_id, None)`` once it is created and once it is
  forgotten (the agent console, ``bridged.simulators.console.messaging``, shows the
  ``Sim_Manual`` conversations this way).
* Load tests: ``MessagingOptions(request_log_max=0, record_max=0, ...)`` records nothing;
  raise ``tokens_per_window``/``starts_per_window`` only if the test is not about limits.

The SCRT URL of a real org is ``https://<domain>.my.salesforce-scrt.com``; the simulator is
``http://127.0.0.1:PORT``, so a client that refuses anything but that host must be told to
allow the loopback (as bridged's ``allowed_hosts`` does for Live Agent).

Scripted agents (chosen by the **deployment name**, ``esDeveloperName``)
------------------------------------------------------------------------

``Sim_Echo`` (``echo``), ``Sim_Queue`` (``queue``), ``Sim_Transfer`` (``transfer``),
``Sim_Agent_Ends`` (``agent_ends``), ``Sim_Routing_Fails`` (``routing_fails``),
``Sim_No_Agent`` (``no_agent``), ``Sim_Manual`` (``manual``, driven by the control API), and
``Sim_Web`` (not a Custom Client deployment: 400). ``MessagingOptions.deployments`` maps
more names to these kinds. Event sequences: :mod:`.scripts`.

Strict rules and the switches for MESSAGING.md 8 (default = strict reading)
--------------------------------------------------------------------------

=============================================  ===============================================
rule                                           option
=============================================  ===============================================
``X-Org-Id`` must equal the token's orgId      ``require_org_id_header=True``
``Last-Event-Id`` required on the stream       ``require_last_event_id=True``
a second stream per token is refused (409)     ``second_stream="refuse"|"replace"|"allow"``
replay after ``Last-Event-Id``, bounded        ``replay_depth=100`` (0 = none)
the stream ends after the last close           ``close_stream_on_close=True``
ping interval                                  ``ping_interval_s=15``
token lifetime 6 h, no renewal                 ``token_lifetime_s=21600``
a repeated message id is answered, dropped     ``duplicate_messages="ignore"|"reject"|"accept"``
create answers 201                             ``create_status=201``
``language`` on create is a 400                ``create_accepts_language=False``
undocumented body fields are a 400             ``reject_unknown_fields=True``
message text at most 3000 characters           ``max_text_chars=3000``
calls on a closed conversation: 403            ``closed_conversation_status=403``
visitor close also sends SESSION_STATUS_CHANGED  ``session_status_on_close=True``
file uploads refused (attachments disabled)    ``accept_files=False``
no ``Retry-After`` on a 429                    ``retry_after_s=None``
rate limits 200 tokens/min/org, 3 starts/30 s  ``tokens_per_window``, ``starts_per_window``,
per subject, 22 messages/min/conversation      ``messages_per_window`` and their windows
=============================================  ===============================================

Modules, one concern each
-------------------------

* :mod:`.options`: :class:`MessagingOptions`, the frozen configuration.
* :mod:`.deployments`: deployment names and the script behind each. Pure.
* :mod:`.wire`: paths, request bodies (msgspec Structs), replies, error bodies. Pure.
* :mod:`.tokens`: minting and checking the JWT-shaped tokens. Pure.
* :mod:`.entries`: the conversation entries and their event names. Pure.
* :mod:`.sse`: the bytes of the event stream, event ids. Pure.
* :mod:`.model`: :class:`~.model.Conversation` and its messaging sessions. Pure.
* :mod:`.scripts`: the scripted agents and the agent actions. Pure.
* :mod:`.limits`: sliding-window rate limits. Pure.
* :mod:`.faults`: fault injection, planned and injected. Pure.
* :mod:`.records`: what is recorded of requests and streams. Pure.
* :mod:`.uploads`: the multipart body of a file upload. Pure.
* :mod:`.streams`: open streams (bounded mailboxes) and replay buffers.
* :mod:`.engine`: :class:`~.engine.Engine`, the state and everything that changes it, and
  the Python control API.
* :mod:`.pipeline`: record, check, fault, apply, answer: the path of every request.
* :mod:`.rest`: the REST endpoints and their checks.
* :mod:`.events`: the stream endpoint.
* :mod:`.control`: the control API over HTTP under ``/_sim/`` (loopback only).
* :mod:`.app`: :class:`Simulator` (engine + aiohttp app), :func:`running_simulator`,
  :func:`serve_forever`.

Typical use in a test::

    async with running_simulator(MessagingOptions(routing_delay_s=0.01)) as sim:
        ...  # point the client at sim.base_url; drive a Sim_Manual agent:
        sim.agent_joins(conversation_id); sim.agent_says(conversation_id, "Hi")

Faults, each one call (and one ``/_sim/`` action)::

    sim.fail_next("Stream", 503)                        # the stream answers 503
    sim.reset_next("SendMessage", when="after")         # accepted and echoed, then RST
    sim.delay_next("CreateConversation", 1.5)
    sim.drop_next_streams(after_events=3)               # the next stream is cut after 3
    sim.drop_streams()                                  # every open stream, now
    sim.expire_tokens()                                 # 401 Jwt is expired from now on
    sim.set_replay(False)                               # Last-Event-Id replays nothing

Logs never contain message texts.
"""

from __future__ import annotations

from .app import CONTROL_PATH, Simulator, running_simulator, serve_forever
from .deployments import (
    AGENT_ENDS_DEPLOYMENT,
    ECHO_DEPLOYMENT,
    MANUAL_DEPLOYMENT,
    NO_AGENT_DEPLOYMENT,
    QUEUE_DEPLOYMENT,
    ROUTING_FAILS_DEPLOYMENT,
    SCRIPTS,
    TRANSFER_DEPLOYMENT,
    WEB_DEPLOYMENT,
)
from .engine import Engine
from .faults import RESOURCES, InjectedFault
from .model import Conversation, SessionOver, SimulatorError, UnknownConversation
from .options import MessagingOptions
from .records import RequestRecord, StreamRecord
from .scripts import ECHO_PREFIX

__all__ = [
    "AGENT_ENDS_DEPLOYMENT",
    "CONTROL_PATH",
    "ECHO_DEPLOYMENT",
    "ECHO_PREFIX",
    "MANUAL_DEPLOYMENT",
    "NO_AGENT_DEPLOYMENT",
    "QUEUE_DEPLOYMENT",
    "RESOURCES",
    "ROUTING_FAILS_DEPLOYMENT",
    "SCRIPTS",
    "TRANSFER_DEPLOYMENT",
    "WEB_DEPLOYMENT",
    "Conversation",
    "Engine",
    "InjectedFault",
    "MessagingOptions",
    "RequestRecord",
    "SessionOver",
    "Simulator",
    "SimulatorError",
    "StreamRecord",
    "UnknownConversation",
    "running_simulator",
    "serve_forever",
]
