"""The one exception tree of bridged.

Errors are split by who is at fault: the operator (config), the bot platform (a refused
envelope), Salesforce (a remote protocol error), the network (transport), or bridged
itself (a local protocol error, i.e. a bug). Foreign exceptions (aiohttp, OSError,
msgspec) are translated into this tree at the boundary where they occur and nowhere else.

    BridgedError
    ├── ConfigError (ValueError)         the config file has a wrong, missing or bad key
    ├── Refused                          an envelope from OCP is refused; carries the wire code
    │   ├── BadEnvelope                  bad_envelope
    │   ├── TooLarge                     too_large
    │   ├── UnknownChat                  unknown_chat
    │   ├── ChatExists                   chat_exists
    │   ├── NotAttached                  not_attached
    │   ├── BadWebchatConfig             bad_config
    │   ├── HostNotAllowed               host_not_allowed
    │   ├── AtCapacity                   capacity
    │   └── Busy                         busy
    ├── ProtocolError                    the Salesforce conversation cannot go on
    │   ├── LocalProtocolError           bridged asked for something illegal in this state
    │   └── RemoteProtocolError          Salesforce sent an unexpected status or payload
    ├── TransportError                   a request got no HTTP answer
    │   ├── TransportTimeout (TimeoutError)
    │   └── TransportConnectError (ConnectionError)
    └── MailboxError
        ├── MailboxFull
        └── MailboxClosed
"""

from __future__ import annotations

__all__ = [
    "AtCapacity",
    "BadEnvelope",
    "BadWebchatConfig",
    "BridgedError",
    "Busy",
    "ChatExists",
    "ConfigError",
    "HostNotAllowed",
    "LocalProtocolError",
    "MailboxClosed",
    "MailboxError",
    "MailboxFull",
    "NotAttached",
    "ProtocolError",
    "Refused",
    "RemoteProtocolError",
    "TooLarge",
    "TransportConnectError",
    "TransportError",
    "TransportTimeout",
    "UnknownChat",
    "describe_validation_error",
]

import re
from typing import ClassVar


class BridgedError(Exception):
    """Root of every error bridged raises on purpose."""


class ConfigError(BridgedError, ValueError):
    """The config file cannot be used.

    Attributes:
        key: the dotted key at fault (``server.listen``), or ``""`` for the whole file.
        reason: what is wrong with it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}" if self.key else self.reason


class Refused(BridgedError):
    """An envelope from OCP is refused; the client gets an ``error`` envelope.

    Each kind of refusal is a subclass that names its wire code in the class statement
    (``class Busy(Refused, code="busy")``); :data:`Refused.by_code` maps every code to its
    class, so that the codes of PROTOCOL.md section 2 are listed in one place.

    Attributes:
        code: the wire error code (PROTOCOL.md section 2).
        detail: a sentence for humans; names the offending field where there is one.
        chat: the chat the envelope was about, when it named a valid one.
        ref: the ``id`` or ``type`` of the envelope that caused it.
    """

    code = "refused"
    by_code: ClassVar[dict[str, type[Refused]]] = {}

    def __init_subclass__(cls, *, code: str, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = code
        Refused.by_code[code] = cls

    def __init__(self, detail: str, *, chat: str | None = None, ref: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.chat = chat
        self.ref = ref

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class BadEnvelope(Refused, code="bad_envelope"):
    """A missing required field, a wrong type or an unknown ``type``."""


class TooLarge(Refused, code="too_large"):
    """A field or the envelope is larger than bridged accepts."""


class UnknownChat(Refused, code="unknown_chat"):
    """No live chat has this id."""


class ChatExists(Refused, code="chat_exists"):
    """``start`` for a chat id that is live."""


class NotAttached(Refused, code="not_attached"):
    """The chat is bound to another connection: ``attach`` first."""


class BadWebchatConfig(Refused, code="bad_config"):
    """The webchat configuration is incomplete or invalid after templating."""


class HostNotAllowed(Refused, code="host_not_allowed"):
    """The Salesforce URL names a host outside ``salesforce.allowed_hosts``."""


class AtCapacity(Refused, code="capacity"):
    """bridged is at ``server.max_chats``, or draining for shutdown."""


class Busy(Refused, code="busy"):
    """The chat's queue is full: the message was not accepted; send it again later."""


class ProtocolError(BridgedError):
    """The Salesforce conversation (either backend) cannot go on; the session is poisoned."""


class LocalProtocolError(ProtocolError):
    """bridged asked a Salesforce session for something illegal in its state (a bug)."""


class RemoteProtocolError(ProtocolError):
    """Salesforce answered with a status or a payload that the protocol does not allow.

    Attributes:
        status: the HTTP status of the offending answer, if any.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransportError(BridgedError):
    """A request to Salesforce (or OCP's history service) got no HTTP answer."""


class TransportTimeout(TransportError, TimeoutError):
    """The answer did not come in time."""


class TransportConnectError(TransportError, ConnectionError):
    """The connection could not be made, or broke before the answer."""


class MailboxError(BridgedError):
    """Base of the mailbox errors."""


class MailboxFull(MailboxError):
    """``put_nowait`` on a full mailbox: the item was not accepted."""


class MailboxClosed(MailboxError):
    """The mailbox is closed: nothing more goes in, and a waiting reader is woken."""


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"field `(?P<name>[^`]+)`")


def describe_validation_error(message: str) -> tuple[str, str]:
    """Turn a msgspec validation message into ``(field, reason)``.

    msgspec writes ``Expected `str`, got `int` - at `$.config.language```; operators and bot
    developers want ``config.language``. Missing and unknown fields are named by msgspec
    inside the message, so their name is appended to the path.

    Args:
        message: ``str()`` of a ``msgspec.ValidationError``.

    Returns:
        The dotted path of the field at fault (``""`` for the whole document) and the
        reason, with msgspec's wording kept.
    """
    match = _AT.match(message)
    assert match is not None  # the pattern matches every string
    reason, path = match["msg"], (match["path"] or "").lstrip(".")
    named = _FIELD.search(reason)
    if named and ("missing required field" in reason or "unknown field" in reason):
        path = f"{path}.{named['name']}" if path else named["name"]
    return path, reason
