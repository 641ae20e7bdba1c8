"""The REST endpoints of MESSAGING.md 2.15 (all but the stream), and their strict rules.

Each endpoint is a *check* (see :mod:`.pipeline`): it finds every reason to refuse the
request, in a fixed order, and otherwise returns the *apply* that carries it out. The order
of the checks, for every endpoint that has them:

1. ``Authorization: Bearer`` with a live token of this simulator (401; ``Jwt is expired``).
2. ``Content-Type: application/json`` and a JSON object body (400).
3. The path's conversation id: a lowercase UUID (400, the observed text).
4. The body's schema, strictly (400, naming the field); ids in it lowercase UUIDs (400).
5. ``esDeveloperName``: known (400 BAD_REQUEST), a Custom Client deployment (400 with
   the observed text), the token's own (400).
6. The conversation: exists (404), was created by the token's subject (403), is open
   (``closed_conversation_status``, 403).
7. State: a duplicate message id (``duplicate_messages``), no messaging session (417).
8. Rate limits (429; only carried-out requests use the budget).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from msgspec import UNSET

from . import entries
from .engine import Engine
from .entries import ENTRY_TYPES
from .limits import SlidingWindow
from .model import Conversation
from .options import MessagingOptions
from .pipeline import Apply, Checked, Pipeline
from .tokens import Token
from .uploads import check_file, parse_form
from .wire import (
    ACCESS_TOKEN_PATH,
    CONTINUATION_PATH,
    CONVERSATION_PATH,
    LIST_PATH,
    WEB_DEPLOYMENT_TEXT,
    AcknowledgeEntries,
    CreateConversation,
    FileEntry,
    Reply,
    SendMessage,
    TokenRequest,
    TypingEntry,
    decode_body,
    decode_json,
    error_reply,
    json_reply,
    long_id,
    uuid_problem,
)

__all__ = ["RestApi"]

_TYPING_TYPES = frozenset({"TypingStartedIndicator", "TypingStoppedIndicator"})
_ACK_TYPES = frozenset({"Delivery", "Read"})
_DEFAULT_LIMIT = 20
_NO_CONTENT = Reply(status=204)


def _wall_ms() -> int:
    return int(time.time() * 1000)


class RestApi:
    """The REST endpoints of one simulator (its :class:`~.engine.Engine` and pipeline)."""

    def __init__(self, engine: Engine, pipeline: Pipeline) -> None:
        self.sim = engine
        self.pipeline = pipeline
        self.token_limit = engine.token_limit
        self.start_limit = engine.start_limit
        self.message_limit = engine.message_limit

    @property
    def options(self) -> MessagingOptions:
        """The simulator's options."""
        return self.sim.options

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the endpoints (``list`` before ``{id}``, which would match it)."""
        one = CONVERSATION_PATH + "/{id}"
        routes: list[tuple[str, str, str, Any]] = [
            ("POST", ACCESS_TOKEN_PATH, "AccessToken", self._check_access_token),
            ("GET", CONTINUATION_PATH, "ContinuationToken", self._check_continuation),
            ("POST", CONVERSATION_PATH, "CreateConversation", self._check_create),
            ("GET", LIST_PATH, "ListConversations", self._check_list),
            ("GET", one, "GetConversation", self._check_get),
            ("DELETE", one, "CloseConversation", self._check_close),
            ("POST", one + "/message", "SendMessage", self._check_send),
            ("POST", one + "/entry", "Typing", self._check_typing),
            ("POST", one + "/acknowledge-entries", "Acknowledge", self._check_acks),
            ("GET", one + "/entries", "ListEntries", self._check_entries),
            ("DELETE", one + "/session", "EndSession", self._check_end_session),
            ("POST", one + "/file", "SendFile", self._check_file),
        ]
        for method, path, resource, check in routes:
            router.add_route(method, path, self._handler(resource, check))

    def _handler(self, resource: str, check: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.pipeline.serve(request, resource, check)

        return handle

    # ------------------------------------------------------------------------------------
    # Shared checks

    def _mono(self) -> float:
        return self.sim.mono()

    def _too_many(self, window: SlidingWindow, key: str, what: str) -> Reply:
        headers: tuple[tuple[str, str], ...] = ()
        if self.options.retry_after_s is not None:
            wait = max(self.options.retry_after_s, int(window.retry_after(key, self._mono())))
            headers = (("Retry-After", str(wait)),)
        return error_reply(429, f"Too many requests: {what}", headers=headers)

    def _deployment(self, name: str, token: Token | None) -> str | Reply:
        """The script behind ``name``, or the 400 for a name this token may not use."""
        kind = self.options.kind_of(name)
        if kind is None:
            return error_reply(400, f"Invalid esDeveloperName: no deployment named {name!r}",
                               "BAD_REQUEST")
        if kind == "web":
            return error_reply(400, WEB_DEPLOYMENT_TEXT, "BAD_REQUEST")
        if token is not None and name != token.deployment:
            return error_reply(400, "The esDeveloperName is not the access token's deployment",
                               "BAD_REQUEST")
        return kind

    def _body(self, request: web.Request, body: bytes, cls: type[Any]) -> Any:
        value = self.pipeline.json_body(request, body)
        if isinstance(value, Reply):
            return value
        return decode_body(cls, value, reject_unknown=self.options.reject_unknown_fields)

    def _owned(self, token: Token, conversation_id: str, *, need_open: bool = True
               ) -> Conversation | Reply:
        """The conversation the token's subject may use, or 404/403/closed."""
        conv = self.sim.conversations.get(conversation_id)
        if conv is None:
            return error_reply(404, "Conversation not found")
        if conv.subject != token.subject:
            return error_reply(403, "Permission denied: the access token has no access to "
                                    "this conversation")
        if need_open and not conv.is_open:
            return error_reply(self.options.closed_conversation_status,
                               "The conversation is closed")
        return conv

    def _authorized(self, request: web.Request) -> tuple[str | None, Token | Reply]:
        """The token, after the path id (if the route has one) is checked too."""
        cid = request.match_info.get("id")
        token = self.pipeline.token(request)
        if isinstance(token, Reply):
            return cid, token
        if cid is not None and (problem := uuid_problem(cid, "conversationId")) is not None:
            return cid, problem
        return cid, token

    # ------------------------------------------------------------------------------------
    # 1, 2: tokens

    def _token_payload(self, token: Token, last_event_id: str) -> dict[str, Any]:
        opts = self.options
        return {
            "accessToken": token.raw,
            "lastEventId": last_event_id,
            "context": {
                "configuration": {
                    "embeddedServiceConfig": {
                        "name": token.deployment,
                        "deploymentType": "API",
                        "embeddedServiceMessagingChannel": {
                            "channelAddressIdentifier": opts.channel_address_id,
                            "authMode": "UnAuth",
                        },
                        "forms": [],
                        "choiceListConfig": {"choiceList": []},
                        "attachments": {"endUserToAgent": opts.accept_files,
                                        "maxFileSize": opts.max_file_bytes},
                        "transcript": {"allowTranscriptDownload": False},
                    },
                    "timestamp": _wall_ms(),
                },
                "deviceId": token.device_id,
                "endUser": {"appType": "iamessage", "role": "EndUser",
                            "subject": token.subject},
            },
        }

    def _check_access_token(self, request: web.Request, body: bytes) -> Checked:
        opts = self.options
        req = self._body(request, body, TokenRequest)
        if isinstance(req, Reply):
            return None, req
        org = req.org_id
        if org not in (opts.org_id, long_id(opts.org_id)):
            return None, error_reply(400, "Invalid orgId", "BAD_REQUEST")
        kind = self._deployment(req.es_developer_name, None)
        if isinstance(kind, Reply):
            return None, kind
        if req.platform != "Web":
            return None, error_reply(400, f"Unsupported platform {req.platform!r}")
        if not req.capabilities_version.strip():
            return None, error_reply(400, "Specify the capabilitiesVersion")
        device_id = req.device_id if req.device_id is not UNSET else None
        if device_id is not None and not device_id.strip():
            return None, error_reply(400, "The deviceId must not be empty")
        now = self._mono()
        if not self.token_limit.allows(opts.org_id, now):
            return None, self._too_many(self.token_limit, opts.org_id, "access tokens")
        if self.sim.tokens.full():
            return None, error_reply(500, "Simulator token limit reached (max_tokens)")

        def apply() -> Reply:
            self.token_limit.hit(opts.org_id, now)
            token = self.sim.tokens.mint(
                deployment=req.es_developer_name, now=time.time(),
                lifetime_s=opts.token_lifetime_s,
                capabilities_version=req.capabilities_version, platform=req.platform,
                device_id=device_id)
            return json_reply(self._token_payload(token, self.sim.next_event_id()))

        return None, apply

    def _check_continuation(self, request: web.Request, body: bytes) -> Checked:
        opts = self.options
        token = self.pipeline.token(request)
        if isinstance(token, Reply):
            return None, token
        now = self._mono()
        if not self.token_limit.allows(opts.org_id, now):
            return None, self._too_many(self.token_limit, opts.org_id, "access tokens")
        if self.sim.tokens.full():
            return None, error_reply(500, "Simulator token limit reached (max_tokens)")

        def apply() -> Reply:
            self.token_limit.hit(opts.org_id, now)
            new = self.sim.tokens.mint(deployment=token.deployment, now=time.time(),
                                       lifetime_s=opts.token_lifetime_s, continues=token)
            last = self.sim.hub.last_id(token.subject) or self.sim.next_event_id()
            return json_reply({"accessToken": new.raw, "lastEventId": last})

        return None, apply

    # ------------------------------------------------------------------------------------
    # 3: create conversation

    def _check_create(self, request: web.Request, body: bytes) -> Checked:
        opts = self.options
        token = self.pipeline.token(request)
        if isinstance(token, Reply):
            return None, token
        req = self._body(request, body, CreateConversation)
        if isinstance(req, Reply):
            return None, req
        cid = req.conversation_id
        if (problem := uuid_problem(cid, "conversationId")) is not None:
            return cid, problem
        if req.language is not UNSET and not opts.create_accepts_language:
            return cid, error_reply(400, "Unrecognized field `$.language`")
        kind = self._deployment(req.es_developer_name, token)
        if isinstance(kind, Reply):
            return cid, kind
        if cid in self.sim.conversations:
            return cid, error_reply(409, "A conversation with this conversationId already "
                                         "exists")
        now = self._mono()
        if not self.start_limit.allows(token.subject, now):
            return cid, self._too_many(self.start_limit, token.subject, "conversation starts")
        if len(self.sim.conversations) >= opts.max_conversations:
            return cid, error_reply(500, "Simulator conversation limit reached")
        attributes = req.routing_attributes if req.routing_attributes is not UNSET else None

        def apply() -> Reply:
            self.start_limit.hit(token.subject, now)
            conv = Conversation(conversation_id=cid, subject=token.subject,
                                deployment=req.es_developer_name, kind=kind,
                                now_ms=_wall_ms(), routing_attributes=attributes,
                                record_max=opts.record_max)
            self.sim.add_conversation(conv)
            return json_reply({"conversationId": cid}, status=opts.create_status)

        return cid, apply

    # ------------------------------------------------------------------------------------
    # 4, 12: send a message, send a file

    def _visitor_message_state(
        self, conv: Conversation, message_id: str, is_new: bool
    ) -> Reply | Apply | None:
        """Duplicate, 417 and rate checks shared by text and file messages.

        Returns:
            None to go on; a refusal; or, for a duplicate the policy drops, the apply that
            answers it as accepted (without a second echo).
        """
        opts = self.options
        if message_id in conv.message_ids:
            if opts.duplicate_messages == "ignore":
                client_ms = conv.message_ids[message_id]

                def dropped() -> Reply:
                    conv.duplicates.append(message_id)
                    return json_reply({"conversationEntries": [
                        {"id": message_id, "clientTimestamp": client_ms}]}, status=202)

                return dropped
            if opts.duplicate_messages == "reject":
                conv.duplicates.append(message_id)
                return error_reply(409, "A message with this id was already sent")
        if not conv.has_session and not is_new:
            return error_reply(417, "No messaging session exists: resend with "
                                    "isNewMessagingSession and routingAttributes")
        if not self.message_limit.allows(conv.id, self._mono()):
            return self._too_many(self.message_limit, conv.id, "messages per conversation")
        return None

    def _accept_message_id(self, conv: Conversation, message_id: str, client_ms: int) -> None:
        if message_id in conv.message_ids:  # the "accept" duplicate policy
            conv.duplicates.append(message_id)
        conv.accept_message_id(message_id, client_ms)

    def _start_new_session_if_asked(self, conv: Conversation, is_new: bool,
                                    attributes: Any) -> bool:
        if is_new and not conv.has_session:
            conv.new_session(attributes if isinstance(attributes, dict) else None)
            return True
        return False

    def _check_send(self, request: web.Request, body: bytes) -> Checked:
        opts = self.options
        cid, token = self._authorized(request)
        if isinstance(token, Reply):
            return cid, token
        assert cid is not None
        req = self._body(request, body, SendMessage)
        if isinstance(req, Reply):
            return cid, req
        message = req.message
        if (problem := uuid_problem(message.id, "message.id")) is not None:
            return cid, problem
        if message.message_type != "StaticContentMessage":
            return cid, error_reply(400, f"Unsupported messageType {message.message_type!r}")
        if message.static_content.format_type != "Text":
            return cid, error_reply(
                400, f"Unsupported formatType {message.static_content.format_type!r}")
        text = message.static_content.text
        if not text.strip():
            return cid, error_reply(400, "The message text must not be empty")
        if len(text) > opts.max_text_chars:
            return cid, error_reply(400, f"The message text is longer than "
                                         f"{opts.max_text_chars} characters")
        reply_to = message.in_reply_to_message_id
        if isinstance(reply_to, str) and (
            problem := uuid_problem(reply_to, "inReplyToMessageId")
        ) is not None:
            return cid, problem
        kind = self._deployment(req.es_developer_name, token)
        if isinstance(kind, Reply):
            return cid, kind
        conv = self._owned(token, cid)
        if isinstance(conv, Reply):
            return cid, conv
        is_new = req.is_new_messaging_session is True
        if (refusal := self._visitor_message_state(conv, message.id, is_new)) is not None:
            return cid, refusal
        client_ms = _wall_ms()

        def apply() -> Reply:
            self.message_limit.hit(conv.id, self._mono())
            started = self._start_new_session_if_asked(conv, is_new, req.routing_attributes)
            self._accept_message_id(conv, message.id, client_ms)
            entry = entries.text_message(
                sender=entries.end_user_sender(token.subject),
                display_name=entries.GUEST_NAME, message_id=message.id, text=text,
                now_ms=_wall_ms(), client_ms=client_ms,
                in_reply_to=reply_to if isinstance(reply_to, str) else None)
            self.sim.emit_entry(conv, entry)
            if started:
                self.sim.start_session_script(conv)
            else:
                self.sim.react_to_message(conv, message.id, text)
            return json_reply({"conversationEntries": [
                {"id": message.id, "clientTimestamp": client_ms}]}, status=202)

        return cid, apply

    def _check_file(self, request: web.Request, body: bytes) -> Checked:
        opts = self.options
        cid, token = self._authorized(request)
        if isinstance(token, Reply):
            return cid, token
        assert cid is not None
        form = parse_form(request.headers.get("Content-Type", ""), body)
        if isinstance(form, Reply):
            return cid, form
        if not opts.accept_files:
            return cid, error_reply(400, "File attachments are not enabled for this "
                                         "deployment", "BAD_REQUEST")
        entry_part, file_part = form.get("messageEntry"), form.get("fileData")
        if entry_part is None or file_part is None:
            return cid, error_reply(400, "A file upload needs the parts messageEntry and "
                                         "fileData")
        value = decode_json(entry_part.data)
        if isinstance(value, Reply):
            return cid, value
        req = decode_body(FileEntry, value, reject_unknown=opts.reject_unknown_fields)
        if isinstance(req, Reply):
            return cid, req
        for field, value in (("message.id", req.message.id),
                             ("message.fileId", req.message.file_id)):
            if (problem := uuid_problem(value, field)) is not None:
                return cid, problem
        kind = self._deployment(req.es_developer_name, token)
        if isinstance(kind, Reply):
            return cid, kind
        checked = check_file(file_part, max_bytes=opts.max_file_bytes,
                             extensions=opts.file_extensions)
        if isinstance(checked, Reply):
            return cid, checked
        name, mime_type = checked
        conv = self._owned(token, cid)
        if isinstance(conv, Reply):
            return cid, conv
        is_new = req.is_new_messaging_session is True
        if (refusal := self._visitor_message_state(conv, req.message.id, is_new)) is not None:
            return cid, refusal
        caption = req.message.text if req.message.text is not UNSET else ""

        def apply() -> Reply:
            now = _wall_ms()
            self.message_limit.hit(conv.id, self._mono())
            started = self._start_new_session_if_asked(conv, is_new, req.routing_attributes)
            self._accept_message_id(conv, req.message.id, now)
            conv.files.append({"fileId": req.message.file_id, "name": name,
                               "size": len(file_part.data), "mimeType": mime_type})
            self.sim.emit_entry(conv, entries.attachment_message(
                sender=entries.end_user_sender(token.subject),
                display_name=entries.GUEST_NAME, message_id=req.message.id,
                file_id=req.message.file_id, file_name=name, mime_type=mime_type,
                text=caption, now_ms=now))
            if started:
                self.sim.start_session_script(conv)
            return json_reply({"conversationEntries": [
                {"id": req.message.id, "clientTimestamp": now}]}, status=202)

        return cid, apply

    # ------------------------------------------------------------------------------------
    # 5, 6: typing and acknowledgements

    def _check_typing(self, request: web.Request, body: bytes) -> Checked:
        cid, token = self._authorized(request)
        if isinstance(token, Reply):
            return cid, token
        assert cid is not None
        req = self._body(request, body, TypingEntry)
        if isinstance(req, Reply):
            return cid, req
        if req.entry_type not in _TYPING_TYPES:
            return cid, error_reply(400, f"Unsupported entryType {req.entry_type!r}")
        if (problem := uuid_problem(req.id, "id")) is not None:
            return cid, problem
        conv = self._owned(token, cid)
        if isinstance(conv, Reply):
            return cid, conv

        def apply() -> Reply:
            self.sim.emit_entry(conv, entries.typing(
                started=req.entry_type == "TypingStartedIndicator",
                sender=entries.end_user_sender(token.subject),
                display_name=entries.GUEST_NAME, now_ms=_wall_ms(), entry_id=req.id))
            return Reply(status=200)

        return cid, apply

    def _check_acks(self, request: web.Request, body: bytes) -> Checked:
        cid, token = self._authorized(request)
        if isinstance(token, Reply):
            return cid, token
        assert cid is not None
        req = self._body(request, body, AcknowledgeEntries)
        if isinstance(req, Reply):
            return cid, req
        if not req.acks:
            return cid, error_reply(400, "Specify at least one acknowledgement")
        conv = self._owned(token, cid)
        if isinstance(conv, Reply):
            return cid, conv
        for index, ack in enumerate(req.acks):
            if (problem := uuid_problem(ack.id, f"acks[{index}].id")) is not None:
                return cid, problem
            if ack.entry_type not in _ACK_TYPES:
                return cid, error_reply(400, f"Unsupported acks[{index}].entryType "
                                             f"{ack.entry_type!r}")
            if not conv.knows_entry(ack.conversation_entry_id):
                return cid, error_reply(400, f"acks[{index}].conversationEntryId names no "
                                             "entry of this conversation")

        def apply() -> Reply:
            for ack in req.acks:
                conv.acks.append({"id": ack.id, "entryType": ack.entry_type,
                                  "conversationEntryId": ack.conversation_entry_id})
            return Reply(status=202)

        return cid, apply

    # ------------------------------------------------------------------------------------
    # 7, 8, 9: reading

    def _limit(self, request: web.Request) -> int | Reply:
        raw = request.query.get("limit")
        if raw is None:
            return _DEFAULT_LIMIT
        if not raw.isdigit() or not 1 <= int(raw) <= self.options.list_limit_max:
            return error_reply(400, f"limit must be an integer from 1 to "
                                    f"{self.options.list_limit_max}")
        return int(raw)

    def _check_list(self, request: web.Request, body: bytes) -> Checked:
        token = self.pipeline.token(request)
        if isinstance(token, Reply):
            return None, token
        include = request.query.get("inclClosedConvs", "false")
        if include not in ("true", "false"):
            return None, error_reply(400, "inclClosedConvs must be true or false")
        limit = self._limit(request)
        if isinstance(limit, Reply):
            return None, limit

        def apply() -> Reply:
            mine = self.sim.of_subject(token.subject)
            open_ = [c for c in mine if c.is_open]
            closed = [c for c in mine if not c.is_open]
            shown = open_ + closed if include == "true" else open_
            shown.sort(key=lambda c: c.started_ms, reverse=True)
            return json_reply({
                "openConversationsFound": len(open_),
                "closedConversationsFound": len(closed),
                "conversations": [c.listed() for c in shown[:limit]],
            })

        return None, apply

    def _check_entries(self, request: web.Request, body: bytes) -> Checked:
        cid, token = self._authorized(request)
        if isinstance(token, Reply):
            return cid, token
        assert cid is not None
        conv = self._owned(token, cid, need_open=False)
        if isinstance(conv, Reply):
            return cid, conv
        query = request.query
        limit = self._limit(request)
        if isinstance(limit, Reply):
            return cid, limit
        bounds: list[int | None] = []
        for name in ("startTimestamp", "endTimestamp"):
            raw = query.get(name)
            if raw is not None and not raw.isdigit():
                return cid, error_reply(400, f"{name} must be epoch milliseconds")
            bounds.append(int(raw) if raw is not None else None)
        direction = query.get("direction", "FromEnd")
        if direction not in ("FromStart", "FromEnd"):
            return cid, error_reply(400, "direction must be FromStart or FromEnd")
        types: frozenset[str] | None = None
        if "entryTypeFilter" in query:
            wanted = frozenset(t.strip() for t in query["entryTypeFilter"].split(","))
            unknown = sorted(wanted - ENTRY_TYPES)
            if unknown:
                return cid, error_reply(400, f"Unknown entryTypeFilter value {unknown[0]!r}")
            types = wanted
        start, end = bounds

        def apply() -> Reply:
            found = [
                e for e in conv.entries
                if (types is None or e.entry_type in types)
                and (start is None or e.transcripted_ms >= start)
                and (end is None or e.transcripted_ms <= end)
            ]
            if direction == "FromEnd":
                found.reverse()
            return json_reply({"conversationEntries": [e.as_listed() for e in found[:limit]]})

        return cid, apply

    def _check_get(self, request: web.Request, body: bytes) -> Checked:
        cid, token = self._authorized(request)
        if isinstance(token, Reply):
            return cid, token
        assert cid is not None
        conv = self._owned(token, cid, need_open=False)
        if isinstance(conv, Reply):
            return cid, conv
        return cid, lambda: json_reply({"conversationId": conv.id,
                                        "routingStatus": conv.routing_status})

    # ------------------------------------------------------------------------------------
    # 10, 11: ending

    def _ending(self, request: web.Request) -> tuple[str | None, Conversation | Reply]:
        cid, token = self._authorized(request)
        if isinstance(token, Reply):
            return cid, token
        assert cid is not None
        name = request.query.get("esDeveloperName")
        if not name:
            return cid, error_reply(400, "Specify the esDeveloperName query parameter")
        kind = self._deployment(name, token)
        if isinstance(kind, Reply):
            return cid, kind
        return cid, self._owned(token, cid)

    def _check_close(self, request: web.Request, body: bytes) -> Checked:
        cid, conv = self._ending(request)
        if isinstance(conv, Reply):
            return cid, conv

        def apply() -> Reply:
            self.sim.close_conversation(conv)
            return _NO_CONTENT

        return cid, apply

    def _check_end_session(self, request: web.Request, body: bytes) -> Checked:
        cid, conv = self._ending(request)
        if isinstance(conv, Reply):
            return cid, conv
        if not conv.has_session:
            return cid, error_reply(417, "No messaging session exists")

        def apply() -> Reply:
            self.sim.visitor_ends_session(conv)
            return _NO_CONTENT

        return cid, apply

