"""OCP's Salesforce webchat configuration (PROTOCOL.md section 3): merge, template, check.

A chat's effective configuration is built in four steps, each pure:

1. merge: the named profile's fields, then the inline ``config`` of ``start`` over them,
   field by field (a list such as ``prechat_details`` is replaced whole);
2. template: ``{{ocpvars:NAME}}`` in every string, however deep, becomes ``ocpvars[NAME]``
   (the empty string for a name that is not given), within bounds: every string field has a
   most characters it may hold after templating (:data:`FIELD_LIMITS`), and the whole
   configuration :data:`TOTAL_LIMIT`. The renderer stops as soon as a field would outgrow its
   bound, so a small ``start`` that references a long ocpvar thousands of times costs no more
   than the bound (``bad_config`` naming the field), never the string it asked for;
3. check: required fields present and non-empty, every value of the right shape
   (``bad_config`` naming the field);
4. the Live Agent base URL is normalised to its REST endpoint and checked against
   ``salesforce.allowed_hosts`` (``host_not_allowed``) only *after* templating, so that no
   ocpvar can smuggle a host past the allowlist.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_TEXTS",
    "FIELD_LIMITS",
    "ID_LIMIT",
    "NAME_LIMIT",
    "TEXT_LIMIT",
    "TOTAL_LIMIT",
    "TYPES",
    "URL_LIMIT",
    "VALUE_LIMIT",
    "AnyWebchat",
    "Endpoint",
    "EntityFieldMap",
    "MessagingConfig",
    "PrechatDetail",
    "PrechatEntity",
    "ProfileFields",
    "WebchatConfig",
    "WebchatFields",
    "check_profile",
    "host_allowed",
    "parse_endpoint",
    "render_fields",
    "render_template",
    "resolve_webchat",
]

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeAlias, TypeVar
from urllib.parse import urlsplit

import msgspec

from bridged.errors import BadWebchatConfig, HostNotAllowed, describe_validation_error

DEFAULT_TEXTS = {
    "no_agent_available_message": (
        "There is no agent available right now. Please contact us again later."
    ),
    "agent_session_ended_message": "The agent has ended the chat.",
    "chat_request_failed_message": "Chat request failed to Salesforce. Reason:",
    "position_message": "You are in position:",
    "estimated_time_message": "Estimated wait time:",
}


class PrechatDetail(msgspec.Struct, frozen=True, kw_only=True):
    """One prechat detail, sent to Salesforce as a ``CustomDetail``."""

    label: str
    value: str
    display_to_agent: bool = True
    transcript_fields: list[str] = []


class EntityFieldMap(msgspec.Struct, frozen=True, kw_only=True):
    """How one prechat detail (by ``label``) finds or fills a field of a record."""

    field_name: str
    label: str
    do_find: bool = False
    is_exact_match: bool = False
    do_create: bool = False


class PrechatEntity(msgspec.Struct, frozen=True, kw_only=True):
    """A record Salesforce finds or creates from the prechat details (``prechatEntities``)."""

    entity_name: str
    entity_fields_maps: list[EntityFieldMap]
    show_on_create: bool = False
    link_to_entity_name: str = ""
    link_to_entity_field: str = ""
    save_to_transcript: str = ""


class WebchatFields(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A partial webchat configuration: a profile, or the inline ``config`` of ``start``.

    Every field is optional here; the merge of profile and inline fields must be complete.
    """

    type: str | msgspec.UnsetType = msgspec.UNSET
    live_agent_base_url: str | msgspec.UnsetType = msgspec.UNSET
    deployment_id: str | msgspec.UnsetType = msgspec.UNSET
    organization_id: str | msgspec.UnsetType = msgspec.UNSET
    button_id: str | msgspec.UnsetType = msgspec.UNSET
    language: str | msgspec.UnsetType = msgspec.UNSET
    displayed_username: str | msgspec.UnsetType = msgspec.UNSET
    no_agent_available_message: str | msgspec.UnsetType = msgspec.UNSET
    agent_session_ended_message: str | msgspec.UnsetType = msgspec.UNSET
    chat_request_failed_message: str | msgspec.UnsetType = msgspec.UNSET
    position_message: str | msgspec.UnsetType = msgspec.UNSET
    estimated_time_message: str | msgspec.UnsetType = msgspec.UNSET
    prechat_details: list[PrechatDetail] | msgspec.UnsetType = msgspec.UNSET
    # bridged's own fields (PROTOCOL.md leaves them to the project), each with a default.
    prechat_entities: list[PrechatEntity] | msgspec.UnsetType = msgspec.UNSET
    check_availability: bool | msgspec.UnsetType = msgspec.UNSET
    history_prechat: bool | msgspec.UnsetType = msgspec.UNSET
    history_prechat_label: str | msgspec.UnsetType = msgspec.UNSET
    history_transcript_field: str | msgspec.UnsetType = msgspec.UNSET
    history_messages: bool | msgspec.UnsetType = msgspec.UNSET
    history_header: str | msgspec.UnsetType = msgspec.UNSET
    history_unavailable_message: str | msgspec.UnsetType = msgspec.UNSET
    # Enhanced Chat (type "salesforce_messaging", PROTOCOL.md section 6).
    scrt_url: str | msgspec.UnsetType = msgspec.UNSET
    es_developer_name: str | msgspec.UnsetType = msgspec.UNSET
    routing_attributes: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    agent_wait_timeout_s: (Annotated[float, msgspec.Meta(ge=0)]
                           | msgspec.UnsetType) = msgspec.UNSET
    history_routing_attribute: str | msgspec.UnsetType = msgspec.UNSET


class ProfileFields(WebchatFields, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A ``[profiles.NAME]`` section: as :class:`WebchatFields`, but a typo is an error.

    (Inline configs from OCP ignore unknown fields, as every envelope does: OCP may send its
    whole webchat configuration object, with fields bridged has no use for.)
    """


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A Live Agent REST endpoint: ``{scheme}://{host}:{port}/chat/rest/``."""

    scheme: Literal["https", "http"]
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """The REST endpoint; every resource is relative to it."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = host if self.port == default else f"{host}:{self.port}"
        return f"{self.scheme}://{netloc}/chat/rest/"

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``: the base of Enhanced Chat's paths (the SCRT URL)."""
        return self.base_url.removesuffix("/chat/rest/")


NonEmpty = msgspec.Meta(min_length=1)


class _Effective(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """What every backend's effective configuration has: the visitor's name, the texts
    OCP shows, and how the bot history reaches the agent as messages. ``type`` is the tag."""

    language: str = "en-US"
    displayed_username: str = "Visitor"
    no_agent_available_message: str = DEFAULT_TEXTS["no_agent_available_message"]
    agent_session_ended_message: str = DEFAULT_TEXTS["agent_session_ended_message"]
    chat_request_failed_message: str = DEFAULT_TEXTS["chat_request_failed_message"]
    position_message: str = DEFAULT_TEXTS["position_message"]
    estimated_time_message: str = DEFAULT_TEXTS["estimated_time_message"]
    history_messages: bool = True
    history_header: str = "Conversation with the bot before this chat:"
    history_unavailable_message: str = "The conversation with the bot is not available."


class WebchatConfig(_Effective, frozen=True, kw_only=True, tag="salesforce"):
    """A legacy Chat (Live Agent) chat's effective, complete and checked configuration."""

    live_agent_base_url: str
    endpoint: Endpoint
    deployment_id: str
    organization_id: str
    button_id: str
    prechat_details: list[PrechatDetail] = []
    prechat_entities: list[PrechatEntity] = []
    check_availability: bool = False
    history_prechat: bool = True
    history_prechat_label: str = "Bot conversation"
    history_transcript_field: str = ""


class MessagingConfig(_Effective, frozen=True, kw_only=True, tag="salesforce_messaging"):
    """An Enhanced Chat chat's effective, complete and checked configuration."""

    scrt_url: str  # normalised: https://NAME.my.salesforce-scrt.com
    endpoint: Endpoint
    organization_id: str
    es_developer_name: str
    routing_attributes: dict[str, str] = {}
    agent_wait_timeout_s: float = 0.0
    history_routing_attribute: str = ""

    @property
    def org_id15(self) -> str:
        """The 15-character form of the org id, which Salesforce wants in ``X-Org-Id``."""
        return self.organization_id[:15]


AnyWebchat: TypeAlias = WebchatConfig | MessagingConfig
_Config = TypeVar("_Config", WebchatConfig, MessagingConfig)
"""A chat's effective configuration, whichever backend serves it (tagged by ``type``)."""

TYPES = ("salesforce", "salesforce_messaging")


_REQUIRED = ("live_agent_base_url", "deployment_id", "organization_id", "button_id")
_REQUIRED_MESSAGING = ("scrt_url", "organization_id", "es_developer_name")
# An org id is 15 or 18 characters and starts with 00D (the sample client checks the same).
_ORG_ID = re.compile(r"^00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$")
# A deployment's API name: a letter, then letters, digits and single underscores.
_API_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|_(?!_))*(?<!_)$")
# A pre-chat field's API name: the same, or a standard field's, which starts with one
# underscore ("_firstName", "_lastName", "_email": MESSAGING.md 2.4).
_PRECHAT_NAME = re.compile(r"^_?[A-Za-z](?:[A-Za-z0-9]|_(?!_))*(?<!_)$")
_ORIGIN_PATHS = {"", "/"}
# The name is taken up to the closing braces and its trailing whitespace dropped in code: a
# lazy name followed by ``\s*`` made the regex backtrack quadratically on a long run of
# spaces (a 64 KiB ``start`` held the event loop for seconds).
_TEMPLATE = re.compile(r"\{\{\s*ocpvars:([^{}]*)\}\}")
# Salesforce record ids are 15 or 18 base-62 characters.
_SF_ID = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_REST_PATHS = {"", "/", "/chat", "/chat/", "/chat/rest", "/chat/rest/"}

# --- bounds after templating ----------------------------------------------------------------
# Characters (Python ``len``), counted after templating. Each is what Salesforce itself takes
# for such a value, or more; none is a figure a real webchat configuration comes near.

# A Salesforce id is 15 or 18 characters (checked after templating); room for the spaces
# around it, which are stripped.
ID_LIMIT = 64
# Salesforce's Text field holds at most 255 characters, and API names (entities, fields,
# hidden pre-chat fields, deployments) are shorter: labels, names, the language tag, the
# visitor's displayed name.
NAME_LIMIT = 255
# A host name is at most 253 characters (RFC 1035), so a Live Agent or SCRT URL is under 300;
# 2,048 is the usual ceiling for a URL anywhere (browsers, proxies).
URL_LIMIT = 2048
# The texts shown to the visitor (``queued``, ``ended``) or sent to the agent as a chat
# message: as long as a chat message bridged sends (history.decoder.MAX_CHAT_MESSAGE).
TEXT_LIMIT = 2000
# A prechat detail's value (or a routing attribute's) may be copied into a transcript field;
# Salesforce's Long Text Area holds 32,768 characters by default.
VALUE_LIMIT = 32768
# The whole configuration, every string counted (dict keys too): twice a full 64 KiB frame.
TOTAL_LIMIT = 131072

# The bound of each string field, by its path without list indexes ("prechat_details.value").
# A field not named here gets TEXT_LIMIT. Enhanced Chat's fields (PROTOCOL.md section 6) are
# named already, so that they are bounded the same way when they arrive.
FIELD_LIMITS: dict[str, int] = {
    "type": NAME_LIMIT,
    "live_agent_base_url": URL_LIMIT,
    "scrt_url": URL_LIMIT,
    "organization_id": ID_LIMIT,
    "deployment_id": ID_LIMIT,
    "button_id": ID_LIMIT,
    "es_developer_name": NAME_LIMIT,
    "language": NAME_LIMIT,
    "displayed_username": NAME_LIMIT,
    "no_agent_available_message": TEXT_LIMIT,
    "agent_session_ended_message": TEXT_LIMIT,
    "chat_request_failed_message": TEXT_LIMIT,
    "position_message": TEXT_LIMIT,
    "estimated_time_message": TEXT_LIMIT,
    "prechat_details.label": NAME_LIMIT,
    "prechat_details.value": VALUE_LIMIT,
    "prechat_details.transcript_fields": NAME_LIMIT,
    "prechat_entities.entity_name": NAME_LIMIT,
    "prechat_entities.link_to_entity_name": NAME_LIMIT,
    "prechat_entities.link_to_entity_field": NAME_LIMIT,
    "prechat_entities.save_to_transcript": NAME_LIMIT,
    "prechat_entities.entity_fields_maps.field_name": NAME_LIMIT,
    "prechat_entities.entity_fields_maps.label": NAME_LIMIT,
    "history_prechat_label": NAME_LIMIT,
    "history_transcript_field": NAME_LIMIT,
    "history_header": TEXT_LIMIT,
    "history_unavailable_message": TEXT_LIMIT,
    "routing_attributes": VALUE_LIMIT,  # each value; each key is a name (NAME_LIMIT)
    "history_routing_attribute": NAME_LIMIT,
}
# Fields that are maps with free keys (not structs): the bound above is each value's.
_MAP_FIELDS = frozenset({"routing_attributes"})


def render_template(text: str, ocpvars: Mapping[str, str], limit: int | None = None
                    ) -> str | None:
    """Replace every ``{{ocpvars:NAME}}`` with ``ocpvars[NAME]`` (``""`` when not given).

    The replacement is not scanned again, so an ocpvar cannot inject another template.

    Returns:
        The text, or ``None`` when it would be longer than ``limit`` characters. The
        output is never built past ``limit``: rendering stops at the piece that crosses it.
    """
    if "{{" not in text:
        return text if limit is None or len(text) <= limit else None
    parts: list[str] = []
    size = 0
    pos = 0
    for match in _TEMPLATE.finditer(text):
        literal = text[pos:match.start()]
        value = ocpvars.get(match.group(1).rstrip(), "")
        size += len(literal) + len(value)
        if limit is not None and size > limit:
            return None
        parts.append(literal)
        parts.append(value)
        pos = match.end()
    tail = text[pos:]
    size += len(tail)
    if limit is not None and size > limit:
        return None
    parts.append(tail)
    return "".join(parts)


class _Renderer:
    """Templates the strings of one configuration, field by field, within the bounds."""

    def __init__(self, ocpvars: Mapping[str, str], total: int) -> None:
        self.ocpvars = ocpvars
        self.total = total
        self.left = total

    def text(self, text: str, where: str, limit: int, *, template: bool = True) -> str:
        """``text`` rendered (or taken as it is), counted against ``limit`` and the total."""
        room = min(limit, self.left)
        if template:
            out = render_template(text, self.ocpvars, room)
        else:
            out = text if len(text) <= room else None
        if out is None:
            if room < limit:
                raise BadWebchatConfig(f"{where}: the webchat configuration is longer than"
                                       f" {self.total} characters after templating")
            raise BadWebchatConfig(f"{where}: longer than {limit} characters after templating")
        self.left -= len(out)
        return out

    def value(self, value: Any, where: str, key: str) -> Any:
        """Every string in a tree of dicts and lists, rendered; ``key`` finds the bound."""
        if isinstance(value, str):
            return self.text(value, where, FIELD_LIMITS.get(key, TEXT_LIMIT))
        if isinstance(value, list):
            return [self.value(item, f"{where}[{i}]", key) for i, item in enumerate(value)]
        if isinstance(value, dict):
            if key in _MAP_FIELDS:  # free keys, each a name; the field's bound is each value's
                out = {}
                for name, item in value.items():
                    name = self.text(str(name), f"{where} (a key)", NAME_LIMIT, template=False)
                    out[name] = self.value(item, f"{where}.{name}", key)
                return out
            return {name: self.value(item, f"{where}.{name}", f"{key}.{name}")
                    for name, item in value.items()}
        return value


def render_fields(fields: Mapping[str, Any], ocpvars: Mapping[str, str],
                  total: int = TOTAL_LIMIT, literal: Mapping[str, str] | None = None
                  ) -> dict[str, Any]:
    """Template every string of a merged configuration (builtins), within the bounds.

    Args:
        fields: field name -> value (strings, lists and dicts of them, other scalars).
        ocpvars: values for ``{{ocpvars:NAME}}``.
        total: the most characters every string together may hold.
        literal: fields set as they are, not templated, but bounded all the same
            (``visitor_name`` as ``displayed_username``).

    Raises:
        BadWebchatConfig: a field, or the whole, outgrows its bound; names the field.
    """
    renderer = _Renderer(ocpvars, total)
    literal = literal or {}
    out = {name: renderer.value(value, name, name) for name, value in fields.items()
           if name not in literal}
    for name, text in literal.items():
        out[name] = renderer.text(text, name, FIELD_LIMITS.get(name, TEXT_LIMIT),
                                  template=False)
    return out


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_endpoint(url: str, field: str = "live_agent_base_url") -> Endpoint:
    """Normalise a ``live_agent_base_url`` to its REST endpoint (or a ``scrt_url``).

    ``https://HOST/chat`` (the deployment snippet's ``liveagent.init`` URL), ``HOST`` alone,
    and ``https://HOST/chat/rest[/]`` all mean ``https://HOST/chat/rest/``. For ``field =
    "scrt_url"`` (Enhanced Chat) the same rules hold, but the only path is ``/`` or none:
    ``https://NAME.my.salesforce-scrt.com``.

    Raises:
        BadWebchatConfig: the URL is not one of those shapes (userinfo, query, fragment,
            another path or scheme).
        HostNotAllowed: plain http to a host that is not loopback.
    """
    text = url.strip()
    paths = _REST_PATHS if field == "live_agent_base_url" else _ORIGIN_PATHS
    expected = "https://HOST/chat" if field == "live_agent_base_url" else "https://HOST"
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise BadWebchatConfig(f"{field}: not a URL ({exc})") from None
    if parts.scheme not in ("https", "http"):
        raise BadWebchatConfig(f"{field}: the scheme must be https, got {parts.scheme!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise BadWebchatConfig(f"{field}: must not carry user information")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise BadWebchatConfig(f"{field}: must not carry a query or a fragment")
    if parts.path not in paths:
        raise BadWebchatConfig(f"{field}: expected {expected}, got path {parts.path!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise BadWebchatConfig(f"{field}: has no host")
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        if not _HOSTNAME.match(host):
            raise BadWebchatConfig(f"{field}: {host!r} is not a valid host name") from None
    if parts.scheme == "http" and not _is_loopback(host):
        raise HostNotAllowed(f"{field}: plain http is allowed only for loopback hosts, not {host}")
    default = 443 if parts.scheme == "https" else 80
    return Endpoint(scheme=parts.scheme, host=host, port=port or default)  # type: ignore[arg-type]


def host_allowed(endpoint: Endpoint, allowed_hosts: Sequence[str]) -> bool:
    """Whether ``endpoint`` is named by an ``allowed_hosts`` entry.

    An entry is ``HOST``, ``HOST:PORT`` or ``HOST:*``; ``HOST`` may start with ``*.`` to mean
    any subdomain (at any depth, never the bare domain). Without a port an entry allows only
    the scheme's default port, so an odd port cannot slip through.
    """
    default = 443 if endpoint.scheme == "https" else 80
    for entry in allowed_hosts:
        pattern = entry.strip().lower()
        port_text = ""
        if pattern.startswith("["):  # [::1]:port
            pattern, _, rest = pattern[1:].partition("]")
            port_text = rest.lstrip(":")
        elif pattern.count(":") == 1:
            pattern, port_text = pattern.split(":")
        if port_text == "*":
            port_ok = True
        elif port_text:
            port_ok = port_text.isdigit() and int(port_text) == endpoint.port
        else:
            port_ok = endpoint.port == default
        if not port_ok:
            continue
        if pattern.startswith("*."):
            if endpoint.host.endswith(pattern[1:]) and len(endpoint.host) > len(pattern) - 1:
                return True
        elif endpoint.host == pattern:
            return True
    return False


def check_profile(fields: WebchatFields) -> tuple[str, str] | None:
    """Check what can be checked in a profile on its own (before ocpvars are known).

    Returns:
        ``(field, reason)`` for the first problem, or ``None``.
    """
    if fields.type is not msgspec.UNSET and fields.type not in TYPES:
        return "type", f"expected 'salesforce' or 'salesforce_messaging', got {fields.type!r}"
    try:
        # With no ocpvars every string is as short as it can ever render: a field too long
        # here is too long for every chat.
        render_fields(msgspec.to_builtins(fields), {})
    except BadWebchatConfig as exc:
        field, _, reason = exc.detail.partition(": ")
        return field, reason
    for field in ("live_agent_base_url", "scrt_url"):
        url = getattr(fields, field)
        if url is not msgspec.UNSET and "{{" not in url:
            try:
                parse_endpoint(url, field)
            except (BadWebchatConfig, HostNotAllowed) as exc:
                name, _, reason = exc.detail.partition(": ")
                return name, reason
    return None


def resolve_webchat(
    profile: WebchatFields | None,
    inline: WebchatFields | None,
    ocpvars: Mapping[str, str],
    allowed_hosts: Sequence[str],
    visitor_name: str | None = None,
) -> AnyWebchat:
    """Build a chat's effective webchat configuration (merge, template, check).

    Args:
        profile: the fields of the ``[profiles.NAME]`` named by ``start``, if any.
        inline: the ``config`` of ``start``, if any; wins field by field.
        ocpvars: values for ``{{ocpvars:NAME}}``.
        allowed_hosts: ``salesforce.allowed_hosts``.
        visitor_name: ``start.visitor_name``; overrides ``displayed_username``.

    Raises:
        BadWebchatConfig: a field is missing, empty, invalid or longer than its bound
            after templating (:data:`FIELD_LIMITS`, :data:`TOTAL_LIMIT`).
        HostNotAllowed: the Salesforce host is not in ``allowed_hosts``.
    """
    merged: dict[str, Any] = {}
    for part in (profile, inline):
        if part is not None:
            merged.update(msgspec.to_builtins(part))
    literal = {"displayed_username": visitor_name} if visitor_name is not None else None
    merged = render_fields(merged, ocpvars, literal=literal)
    kind = merged.get("type", "salesforce")
    if kind == "salesforce_messaging":
        return _resolve_messaging(merged, allowed_hosts)
    if kind != "salesforce":
        raise BadWebchatConfig(
            f"type: expected 'salesforce' or 'salesforce_messaging', got {kind!r}")
    for field in _REQUIRED:
        if not str(merged.get(field, "")).strip():
            raise BadWebchatConfig(f"{field}: required, and missing or empty after templating")
    for field in ("organization_id", "deployment_id", "button_id"):
        merged[field] = merged[field].strip()
        if not _SF_ID.match(merged[field]):
            raise BadWebchatConfig(
                f"{field}: expected a 15 or 18 character Salesforce id, got {merged[field]!r}"
            )
    endpoint = _allowed_endpoint(merged, "live_agent_base_url", allowed_hosts)
    merged["endpoint"] = msgspec.to_builtins(endpoint)
    merged["live_agent_base_url"] = endpoint.base_url
    webchat = _convert(merged, WebchatConfig)
    _check_entities(webchat)
    return webchat


def _resolve_messaging(merged: dict[str, Any], allowed_hosts: Sequence[str]) -> MessagingConfig:
    """The checks of an Enhanced Chat configuration (PROTOCOL.md section 6), after templating.

    Live Agent's own fields (button, deployment id, prechat details) mean nothing here and
    are ignored, as any unknown field of an inline configuration is.
    """
    for field in _REQUIRED_MESSAGING:
        if not str(merged.get(field, "")).strip():
            raise BadWebchatConfig(f"{field}: required, and missing or empty after templating")
    org = merged["organization_id"] = merged["organization_id"].strip()
    if not _ORG_ID.match(org):
        raise BadWebchatConfig(
            f"organization_id: expected a 15 or 18 character org id starting with 00D, got {org!r}")
    name = merged["es_developer_name"] = merged["es_developer_name"].strip()
    if not _API_NAME.match(name):
        raise BadWebchatConfig(
            f"es_developer_name: expected the deployment's API name (letters, digits and"
            f" single underscores, starting with a letter), got {name!r}")
    for key in merged.get("routing_attributes") or {}:
        if not _PRECHAT_NAME.match(key):
            raise BadWebchatConfig(
                f"routing_attributes: {key!r} is not a pre-chat field's API name")
    hidden = merged["history_routing_attribute"] = merged.get(
        "history_routing_attribute", "").strip()
    if hidden and not _PRECHAT_NAME.match(hidden):
        raise BadWebchatConfig(
            f"history_routing_attribute: {hidden!r} is not a pre-chat field's API name")
    endpoint = _allowed_endpoint(merged, "scrt_url", allowed_hosts)
    merged["endpoint"] = msgspec.to_builtins(endpoint)
    merged["scrt_url"] = endpoint.origin
    return _convert(merged, MessagingConfig)


def _allowed_endpoint(merged: dict[str, Any], field: str, allowed_hosts: Sequence[str]
                      ) -> Endpoint:
    """Parse the URL ``field`` and hold it to ``salesforce.allowed_hosts``."""
    endpoint = parse_endpoint(merged[field], field)
    if not host_allowed(endpoint, allowed_hosts):
        raise HostNotAllowed(
            f"{field}: host {endpoint.host} (port {endpoint.port}) is not in"
            " salesforce.allowed_hosts"
        )
    return endpoint


def _convert(merged: dict[str, Any], kind: type[_Config]) -> _Config:
    """The effective configuration as ``kind``; a wrong shape is ``bad_config`` naming it."""
    try:
        return msgspec.convert(merged, kind)
    except msgspec.ValidationError as exc:
        field, reason = describe_validation_error(str(exc))
        raise BadWebchatConfig(f"{field}: {reason}") from None


def _check_entities(webchat: WebchatConfig) -> None:
    """Prechat entities must name a record type and map only prechat details that exist.

    D-TYPES: an EntityFieldsMaps ``label`` "must equal the ``label`` of a prechatDetails
    item"; entity and field names are case-sensitive and may not be empty.
    """
    labels = {detail.label for detail in webchat.prechat_details}
    for i, entity in enumerate(webchat.prechat_entities):
        where = f"prechat_entities[{i}]"
        if not entity.entity_name.strip():
            raise BadWebchatConfig(f"{where}.entity_name: required, and empty")
        if not entity.entity_fields_maps:
            raise BadWebchatConfig(f"{where}.entity_fields_maps: at least one field map")
        for j, field_map in enumerate(entity.entity_fields_maps):
            if not field_map.field_name.strip():
                raise BadWebchatConfig(
                    f"{where}.entity_fields_maps[{j}].field_name: required, and empty")
            if field_map.label not in labels:
                raise BadWebchatConfig(
                    f"{where}.entity_fields_maps[{j}].label: {field_map.label!r} is not the"
                    " label of a prechat detail")
