"""What a load test run is told: one frozen value, and the two named profiles."""

from __future__ import annotations

__all__ = ["BACKENDS", "PROFILES", "TARGETS", "LoadTestOptions", "Topology", "node_of"]

import msgspec

SIM_ORG = "00D000000000001"
SIM_DEPLOYMENT = "572000000000001"
SIM_ECHO_BUTTON = "573ECHO00000000"
# The Enhanced Chat simulator's echoing deployment (bridged.simulators.messaging).
SIM_ECHO_DEPLOYMENT = "Sim_Echo"

# Which Salesforce API the chats are handed over through: legacy Live Agent REST (a long
# poll per chat) or Enhanced Chat (Messaging for In-App and Web: an event stream per chat).
BACKENDS = ("liveagent", "messaging")

# What a run can load: bridged as one node on SQLite (the usual), bridged as one node on a
# Redis store (the store's cost, isolated), N bridged nodes sharing one Redis (the cluster,
# --nodes), and the null bridge (the floor).
TARGETS = ("bridged", "redis", "cluster", "null")
BRIDGED_TARGETS = ("bridged", "redis", "cluster")


def node_of(connection: int, nodes: int) -> int:
    """The node (0-based) that WebSocket connection ``connection`` goes to: round-robin."""
    return connection % nodes


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    """N chats over M WebSocket connections."""

    chats: int
    connections: int

    @property
    def label(self) -> str:
        """A label for the report: one connection per chat, or shared."""
        if self.connections >= self.chats:
            return f"{self.chats} chats, one connection each"
        return f"{self.chats} chats over {self.connections} connections"

    @property
    def key(self) -> str:
        """The topology as ``CHATSxCONNECTIONS``."""
        return f"{self.chats}x{self.connections}"


class LoadTestOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a run needs; see ``bridged loadtest --help`` for each one."""

    topologies: tuple[Topology, ...]
    backend: str = "liveagent"
    targets: tuple[str, ...] = ("bridged", "null")
    # The cluster target's bridged processes, sharing one redis-server of the run's.
    nodes: int = 1
    redis_server: str | None = None  # its binary (default: found, see bridged.tools.redisproc)
    start_rate: float = 500.0
    rate: float | None = None
    saturate: bool = True
    saturate_s: float = 15.0
    warmup_s: float = 3.0
    window: int = 1
    duration_s: float = 30.0
    idle_s: float = 10.0
    settle_s: float = 2.0
    timeout_s: float = 1800.0
    drain_timeout_s: float = 30.0
    hold_s: float = 30.0
    join_delay_s: float = 0.5
    reply_delay_s: float = 0.0
    msg_bytes: int = 64
    fmt: str = "bridged.v1+json"
    live_agent_url: str | None = None
    scrt_url: str | None = None
    bridged_url: str | None = None
    token: str | None = None
    bridged_pid: int | None = None
    organization_id: str = SIM_ORG
    deployment_id: str = SIM_DEPLOYMENT
    button_id: str = SIM_ECHO_BUTTON
    es_developer_name: str = SIM_ECHO_DEPLOYMENT
    routing_delay_s: float = 0.05
    probe: bool = True
    null_gc: str = "off"
    # bridged's config, changed: "SECTION.KEY=TOML value" (e.g. "state.commit_interval_ms=2").
    bridged_settings: tuple[str, ...] = ()
    py_spy: str | None = None
    probe_interval_s: float = 0.5
    bridged_log_level: str = "info"
    json_path: str | None = None
    plot_path: str | None = None
    workdir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.topologies:
            raise ValueError("at least one topology is needed")
        for t in self.topologies:
            if t.chats < 1 or t.connections < 1:
                raise ValueError(f"chats and connections must be >= 1, got {t.key}")
        for name in ("start_rate", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.rate is not None and self.rate < 0:
            raise ValueError("rate must be >= 0")
        if not 0 <= self.msg_bytes <= 9000:
            raise ValueError("msg_bytes must be from 0 to 9000 (a message is 10000 at most)")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, "
                             f"got {self.backend!r}")
        if self.live_agent_url and self.backend != "liveagent":
            raise ValueError("--live-agent-url needs --backend liveagent")
        if self.scrt_url and self.backend != "messaging":
            raise ValueError("--scrt-url needs --backend messaging")
        for setting in self.bridged_settings:
            key, eq, _value = setting.partition("=")
            section, dot, name = key.strip().partition(".")
            if not eq or not dot or not section or not name:
                raise ValueError(f"--bridged-set wants SECTION.KEY=VALUE, got {setting!r}")
        if self.bridged_url and not self.token:
            raise ValueError("--bridged-url needs --token")
        unknown = set(self.targets) - set(TARGETS)
        if unknown or not self.targets:
            raise ValueError(f"targets are {', '.join(TARGETS)}, got {sorted(self.targets)}")
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")
        if "cluster" in self.targets and self.nodes < 2:
            raise ValueError("the cluster target needs --nodes 2 or more")
        if self.nodes > 1 and "cluster" not in self.targets:
            raise ValueError(f"--nodes {self.nodes} runs the cluster target: add cluster to "
                             "--targets")
        if self.bridged_url and {"redis", "cluster"} & set(self.targets):
            raise ValueError("--bridged-url loads a running bridged: the redis and cluster "
                             "targets start their own")
        if "cluster" in self.targets:
            for t in self.topologies:
                if min(t.connections, t.chats) < self.nodes:
                    raise ValueError(f"--nodes {self.nodes} needs at least {self.nodes} "
                                     f"connections (and chats) per topology, got {t.key}")


# "--profile small": 2,000 chats, about 60 s held per run (10 s idle, 15 s saturation,
# 30 s at half load), both topologies. "--profile full": 10,000 chats over 10 connections
# and 5,000 chats over one connection each (the machine allows 20,000 open files per
# process), held 2 minutes and more; about 17 minutes in all (16.6 for Live Agent, 16.6
# for Enhanced Chat, measured 2026-12-01: each saturation step waits for a window to come
# back, up to a minute at this size). "--profile max": 19,000
# chats over 10 connections, within those 20,000 open files (a descriptor per chat for its
# poll or stream, the capped request pool); about 16 minutes (its 19,000 chats take one
# to two minutes to start, in each of the two servers).
PROFILES: dict[str, dict[str, object]] = {
    "small": {
        "topologies": (Topology(chats=2000, connections=10),
                       Topology(chats=2000, connections=2000)),
        "idle_s": 10.0, "saturate_s": 15.0, "duration_s": 30.0, "timeout_s": 1800.0,
    },
    "full": {
        "topologies": (Topology(chats=10000, connections=10),
                       Topology(chats=5000, connections=5000)),
        "idle_s": 15.0, "saturate_s": 30.0, "duration_s": 90.0, "timeout_s": 3600.0,
    },
    "max": {
        "topologies": (Topology(chats=19000, connections=10),),
        "idle_s": 15.0, "saturate_s": 30.0, "duration_s": 60.0, "timeout_s": 3600.0,
    },
}
