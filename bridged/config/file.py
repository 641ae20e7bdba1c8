"""The daemon's config file: frozen msgspec Structs decoded from TOML, validated once.

The keys of PROTOCOL.md section 5 are fixed; every other key is bridged's own and has a
default. Unknown keys are errors, so that a typo never silently means "use the default".
Each component receives only its own sub-config.
"""

from __future__ import annotations

__all__ = [
    "ClusterConfig",
    "Config",
    "HistoryConfig",
    "LoggingConfig",
    "SalesforceConfig",
    "ServerConfig",
    "StateConfig",
    "load_config",
    "parse_config",
    "split_listen",
]

import os
import re
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Annotated, Any, Literal

import msgspec

from bridged.config.webchat import ProfileFields, check_profile
from bridged.errors import ConfigError, describe_validation_error

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config section: frozen, keyword-only, unknown keys refused."""


class ServerConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[server]``: the WebSocket front and its HTTP endpoints."""

    listen: str = "127.0.0.1:8710"
    tokens: list[str] = []
    # bridged's own: tokens for the admin view (GET /v1/chats); none means it is off.
    admin_tokens: list[str] = []
    # Files holding more tokens, one per line (e.g. "${CREDENTIALS_DIRECTORY}/tokens" with
    # systemd's LoadCredential=), so that secrets need not be in this file.
    tokens_file: str = ""
    admin_tokens_file: str = ""
    max_chats: PositiveInt = 20000
    detach_grace_s: NonNegativeFloat = 120.0
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 65536
    tls_cert: str = ""
    tls_key: str = ""
    # bridged's own keys
    node: str = ""  # this instance's name in ``hello``; empty means the host name
    heartbeat_s: PositiveFloat = 20.0
    mailbox_size: PositiveInt = 64
    max_pending_messages: PositiveInt = 200
    max_held_events: Annotated[int, msgspec.Meta(ge=16)] = 1000
    outbound_queue_size: PositiveInt = 1024
    # Per connection: chats it may hold, envelopes per second it may send (bursts of
    # twice that). Beyond either: "busy"; a connection that keeps sending too fast is
    # closed with 1008.
    max_chats_per_connection: PositiveInt = 20000
    max_envelopes_per_s: PositiveFloat = 2000.0
    # Visitor messages taken in and not yet answered, over all chats: from the high mark
    # until the load falls to the low mark, a connection holding its share of the high mark
    # or more gets "busy" for its messages; every connection is still read.
    overload_high: PositiveInt = 100000
    overload_low: Annotated[int, msgspec.Meta(ge=0)] = 50000
    shutdown_budget_s: PositiveFloat = 8.0
    # When the garbage collector runs (bridged/ops/gcpolicy.py). "growth": its automatic
    # collections are off, and a full collection runs once the heap (Python's allocated
    # memory blocks) is gc_growth times more than its fixed part and the most chats live
    # since the last collection explain (1.0: doubled).
    # "thresholds": CPython's generational collections, with gc_thresholds (generations
    # 0, 1, 2).
    gc_policy: Literal["growth", "thresholds"] = "growth"
    gc_growth: PositiveFloat = 1.0
    gc_thresholds: Annotated[list[PositiveInt], msgspec.Meta(min_length=3, max_length=3)] = (
        msgspec.field(default_factory=lambda: [50_000, 20, 100]))


class SalesforceConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[salesforce]``: how bridged speaks to Salesforce (Live Agent and Enhanced Chat)."""

    # PROTOCOL.md's default names Live Agent's hosts only: Enhanced Chat's SCRT hosts
    # ("*.my.salesforce-scrt.com") are added by the operator, as the example config does.
    allowed_hosts: list[str] = msgspec.field(default_factory=lambda: ["*.salesforceliveagent.com"])
    # bridged's own keys
    api_version: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{2}(\.0)?$")] = "66"
    request_timeout_s: PositiveFloat = 30.0
    max_connections: PositiveInt = 30000
    # Connections for every request but the long polls and event streams, per backend,
    # shared by every chat in turn (a request waits for a free one within its timeout).
    max_request_connections: PositiveInt = 256
    # Seconds an idle connection to Salesforce is kept for the next POST.
    keepalive_s: NonNegativeFloat = 5.0
    # SessionId + ChasitorInit calls in progress at once; a burst of starts waits its turn.
    max_concurrent_starts: PositiveInt = 50
    user_agent: str = "bridged"
    screen_resolution: str = "1920x1080"
    # Enhanced Chat: Salesforce's limits (MESSAGING.md 4.2), kept by bridged. Access tokens
    # per org and visitor messages per conversation per window; lower the token limit if
    # other clients of the org (a website's own chat button) mint tokens too.
    messaging_token_limit: PositiveInt = 200
    messaging_message_limit: PositiveInt = 22
    # Salesforce's window is a minute; only tests shorten it.
    messaging_limit_window_s: PositiveFloat = 60.0
    # An event stream silent this long counts as lost and is reopened (Salesforce's sample
    # client waits 90 s; the server pings well within that).
    messaging_stream_timeout_s: PositiveFloat = 90.0


class HistoryConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[history]``: where OCP's bot history is fetched from (optional)."""

    base_url: str = ""
    personal_access_token: str = ""
    bearer_token: str = ""
    # The same, read from a file (e.g. "${CREDENTIALS_DIRECTORY}/ocp-token").
    personal_access_token_file: str = ""
    bearer_token_file: str = ""
    timeout_s: PositiveFloat = 5.0


class StateConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[state]``: where chats are kept across restarts."""

    dir: str = "/var/lib/bridged"
    # "normal": survives any crash of the process; "full": also of the machine (an fsync
    # per commit).
    synchronous: Literal["normal", "full"] = "normal"
    # Least time between two commits, in ms (a change after a quiet moment commits at
    # once); unset: 0 with "normal", 5 with "full" (bridged/state/sqlite.py).
    commit_interval_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None


class ClusterConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[cluster]``: several nodes sharing their chats through Redis (PROTOCOL.md 7).

    Absent (``node`` empty), bridged is one node on its SQLite store in ``state.dir``.
    """

    node: str = ""  # this node's name, unique in the cluster; hello.node
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Sentinel: "host:port" of each Sentinel, and the name of the primary they watch; when
    # set, redis_url gives only the database number, password and TLS of the primary.
    sentinels: list[str] = []
    sentinel_service: str = "bridged"
    # The node's lease in the store: it lives lease_ttl_ms past its last renewal, renewed
    # every renew_interval_ms; a node that cannot renew stops sending to Salesforce.
    lease_ttl_ms: Annotated[int, msgspec.Meta(ge=200)] = 10000
    renew_interval_ms: Annotated[int, msgspec.Meta(ge=50)] = 2000
    # The lease's local deadline is this much before the store's, for clock rate drift.
    lease_margin_ms: Annotated[int, msgspec.Meta(ge=0)] = 1000
    # How often a node looks for chats whose holder is gone.
    scan_interval_ms: Annotated[int, msgspec.Meta(ge=20)] = 1000
    # After each commit, wait until this many replicas have it (Redis WAIT); a commit not
    # confirmed in wait_timeout_ms is not confirmed, and nothing acts on it.
    min_replicas: Annotated[int, msgspec.Meta(ge=0)] = 0
    wait_timeout_ms: Annotated[int, msgspec.Meta(ge=1)] = 100
    # Seconds a single store call may take before it counts as failed.
    socket_timeout_s: PositiveFloat = 2.0
    # An attach on a node for a chat another live node holds: that node moves the chat at
    # its next safe point (after its held poll returns); the attach waits this long at most.
    move_timeout_ms: Annotated[int, msgspec.Meta(ge=100)] = 60000


class LoggingConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[logging]``: bridged's own section."""

    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole config file."""

    server: ServerConfig = ServerConfig()
    salesforce: SalesforceConfig = SalesforceConfig()
    history: HistoryConfig = HistoryConfig()
    state: StateConfig = StateConfig()
    cluster: ClusterConfig = ClusterConfig()
    logging: LoggingConfig = LoggingConfig()
    profiles: dict[str, ProfileFields] = {}


def split_listen(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:8710`` for IPv6) into its parts.

    Raises:
        ConfigError: naming ``server.listen`` when the value is not ``host:port``.
    """
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    # Port 0 asks the OS for a free port (tests and the demo use it).
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError("server.listen", f"expected host:port, got {listen!r}")
    return host, int(port)


def _check(config: Config) -> None:
    """Cross-field rules that a type alone cannot say."""
    split_listen(config.server.listen)
    if not config.server.tokens:
        raise ConfigError("server.tokens", "at least one token is required")
    for i, token in enumerate(config.server.tokens):
        if len(token) < 8 or token != token.strip():
            raise ConfigError(
                f"server.tokens[{i}]", "a token needs at least 8 characters and no spaces"
            )
    for i, token in enumerate(config.server.admin_tokens):
        if len(token) < 8 or token != token.strip():
            raise ConfigError(
                f"server.admin_tokens[{i}]", "a token needs at least 8 characters and no spaces"
            )
    if config.server.overload_low >= config.server.overload_high:
        raise ConfigError("server.overload_low", "must be below server.overload_high")
    if bool(config.server.tls_cert) != bool(config.server.tls_key):
        raise ConfigError("server.tls_cert", "set both tls_cert and tls_key, or neither")
    if config.history.personal_access_token and config.history.bearer_token:
        raise ConfigError(
            "history.bearer_token", "set personal_access_token or bearer_token, not both"
        )
    _check_cluster(config)
    for name, fields in config.profiles.items():
        problem = check_profile(fields)
        if problem is not None:
            field, reason = problem
            raise ConfigError(f"profiles.{name}.{field}", reason)


_NODE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _check_cluster(config: Config) -> None:
    """``[cluster]``: a usable node name, store address and lease timings."""
    cluster = config.cluster
    if not cluster.node:
        if cluster != ClusterConfig():
            raise ConfigError("cluster.node", "required when [cluster] sets other keys"
                                              " (without it bridged is one node on SQLite)")
        return
    if not _NODE_NAME.match(cluster.node):
        raise ConfigError("cluster.node", "1 to 64 characters of A-Z a-z 0-9 . _ -")
    if config.server.node and config.server.node != cluster.node:
        raise ConfigError("server.node", "set cluster.node only (it is the node's name)")
    _check_redis_url(cluster.redis_url, sentinels=bool(cluster.sentinels))
    for i, address in enumerate(cluster.sentinels):
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"cluster.sentinels[{i}]", f"expected host:port, got {address!r}")
        if address in cluster.sentinels[:i]:
            raise ConfigError(f"cluster.sentinels[{i}]", f"{address!r} is listed twice")
    if cluster.sentinels and not _NODE_NAME.match(cluster.sentinel_service):
        raise ConfigError("cluster.sentinel_service",
                          "the name of the primary the Sentinels watch (sentinel monitor NAME):"
                          " 1 to 64 characters of A-Z a-z 0-9 . _ -")
    if cluster.lease_margin_ms >= cluster.lease_ttl_ms:
        raise ConfigError("cluster.lease_margin_ms", "must be less than lease_ttl_ms")
    if cluster.renew_interval_ms * 2 > cluster.lease_ttl_ms - cluster.lease_margin_ms:
        raise ConfigError("cluster.renew_interval_ms",
                          "must allow two renewals within lease_ttl_ms - lease_margin_ms")
    if cluster.socket_timeout_s * 1000 >= cluster.lease_ttl_ms - cluster.lease_margin_ms:
        raise ConfigError("cluster.socket_timeout_s",
                          "must be less than lease_ttl_ms - lease_margin_ms: one slow call"
                          " must not outlast the lease")
    if cluster.min_replicas and cluster.wait_timeout_ms >= cluster.socket_timeout_s * 1000:
        raise ConfigError("cluster.wait_timeout_ms",
                          "must be less than socket_timeout_s (WAIT blocks that long)")


def _check_redis_url(url: str, *, sentinels: bool) -> None:
    """``redis://[user:password@]host[:port][/db]``, ``rediss://`` or ``unix:///path``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("cluster.redis_url", "expected redis://, rediss:// or unix://")
    if scheme == "unix":
        if not rest.partition("?")[0].startswith("/"):
            raise ConfigError("cluster.redis_url", "expected unix:///path/to/redis.sock")
        return
    where, _, path = rest.partition("?")[0].rpartition("@")[2].partition("/")
    host, colon, port = where.rpartition(":") if not where.endswith("]") else (where, "", "")
    if not colon:
        host = where
    if not host and not sentinels:
        raise ConfigError("cluster.redis_url", "names no host (redis://HOST:PORT/DB)")
    if colon and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ConfigError("cluster.redis_url", f"bad port {port!r}")
    if path and not path.isdigit():
        raise ConfigError("cluster.redis_url", f"the database must be a number, got {path!r}")


def parse_config(text: str | bytes, environ: Mapping[str, str] | None = None) -> Config:
    """Decode and validate a config file's TOML text.

    ``environ`` (``os.environ`` by default) expands ``${VAR}`` in the ``*_file`` keys.

    Raises:
        ConfigError: naming the first key at fault.
    """
    environ = os.environ if environ is None else environ
    try:
        config = msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        key, reason = describe_validation_error(str(exc))
        if key.startswith("profiles[...]"):
            key, reason = _locate_profile_error(text)
        if "unknown field" in reason:
            reason = "unknown key"
        raise ConfigError(key, reason) from None
    except msgspec.DecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}") from None
    config = _read_secret_files(config, environ)
    _check(config)
    return config


def _read_secret(key: str, path: str, environ: Mapping[str, str]) -> str:
    """A secret file's text; ``${VAR}`` in the path comes from ``environ``."""
    expanded = Template(path).safe_substitute(environ)
    if "${" in expanded or "$" in expanded.replace("$$", ""):
        raise ConfigError(key, f"{path!r} names an unset environment variable")
    try:
        return Path(expanded).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(key, f"cannot read {expanded}: {exc.strerror or exc}") from None


def _read_secret_files(config: Config, environ: Mapping[str, str]) -> Config:
    """Fold the ``*_file`` keys into the values they stand for."""
    server, history = config.server, config.history
    if server.tokens_file:
        extra = _read_secret("server.tokens_file", server.tokens_file, environ).split()
        server = msgspec.structs.replace(server, tokens=[*server.tokens, *extra])
    if server.admin_tokens_file:
        extra = _read_secret("server.admin_tokens_file", server.admin_tokens_file,
                             environ).split()
        server = msgspec.structs.replace(server, admin_tokens=[*server.admin_tokens, *extra])
    for name in ("personal_access_token", "bearer_token"):
        path = getattr(history, f"{name}_file")
        if path:
            value = _read_secret(f"history.{name}_file", path, environ).strip()
            history = msgspec.structs.replace(history, **{name: value})
    return msgspec.structs.replace(config, server=server, history=history)


def _locate_profile_error(text: str | bytes) -> tuple[str, str]:
    """msgspec cannot name a dict key in its error path; find the profile at fault."""
    profiles = msgspec.toml.decode(text).get("profiles", {})
    for name, fields in profiles.items():
        try:
            msgspec.convert(fields, ProfileFields)
        except msgspec.ValidationError as exc:
            key, reason = describe_validation_error(str(exc))
            return f"profiles.{name}.{key}" if key else f"profiles.{name}", reason
    return "profiles", "invalid"


def load_config(path: str | Path) -> Config:
    """Read, decode and validate the config file at ``path``.

    Raises:
        ConfigError: the file cannot be read, or a key is wrong, missing or bad.
    """
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_config(text)


def redacted(config: Config) -> dict[str, Any]:
    """The config as plain data with every secret replaced, for ``bridged check`` and logs."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    data["server"]["tokens"] = ["<redacted>"] * len(config.server.tokens)
    data["server"]["admin_tokens"] = ["<redacted>"] * len(config.server.admin_tokens)
    url = data["cluster"]["redis_url"]
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:  # redis://user:password@host: the password goes
        credentials, _, host = rest.rpartition("@")
        user = credentials.partition(":")[0]
        data["cluster"]["redis_url"] = f"{scheme}://{user}:<redacted>@{host}"
    for key in ("personal_access_token", "bearer_token"):
        if data["history"].get(key):
            data["history"][key] = "<redacted>"
    return data
