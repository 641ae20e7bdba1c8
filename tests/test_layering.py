"""The package's layers and sides, enforced (docs/architecture.md draws them).

Each module of ``bridged`` has a layer; a module may import only modules of its own layer or
lower ones, never upward, and the pure layer never imports I/O. Two sides stand apart from
the daemon: the simulators (``bridged.simulators``), which import nothing else of bridged, and
the tools (``bridged.tools``), which may use the daemon but which the daemon never imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "bridged"

# Layer 0 is pure (no I/O, no asyncio): protocol cores, wire formats, configuration, facts.
# Layer 1 holds the async primitives of the chats core; layer 2 the I/O adapters (network,
# disk, metrics); layer 3 composes the daemon; layer 4 the tools an operator runs; layer 5
# the command line, which may start any of them.
LAYERS: dict[int, set[str]] = {
    0: {"errors", "_log", "_lists", "config.file", "config.webchat", "ocp.envelopes", "chats.facts",
        "chats.policy", "chats.texts", "history.decoder", "salesforce.liveagent.wire",
        "salesforce.liveagent.protocol"},
    1: {"chats.mailbox", "chats.gate", "chats.chat", "chats.supervisor", "chats.dispatcher",
        "salesforce.backend", "state.store", "chats.wakeup", "chats.fartimers"},
    2: {"salesforce.liveagent.transport", "salesforce.liveagent.actor", "ocp.front",
        "ocp.admin", "ops.metrics", "history.client", "history.handover", "state.sqlite",
        "state.redisstore", "state.redisview", "ops.cluster", "ops.limits", "ops.systemd",
        "ops.logs", "ops.gcpolicy"},
    3: {"ops.daemon"},
    4: set(),  # bridged.tools.*: every module there
    5: {"cli", "__main__"},
}
FORBIDDEN = {
    0: {"asyncio", "aiohttp", "uvloop", "socket", "prometheus_client", "sqlite3", "redis"},
    1: {"aiohttp", "uvloop", "prometheus_client", "sqlite3", "redis"},
    2: {"uvloop"},
    3: set(),
    4: set(),
    5: set(),
}
# The sans-I/O parts of a backend: whatever their module, they stay pure.
PURE_NAMES = {"wire", "protocol", "sse"}


def layer_of(module: str) -> int:
    """The layer of ``bridged.<module>``; every module must have one."""
    for layer, modules in LAYERS.items():
        if module in modules:
            return layer
    if module.startswith("tools."):
        return 4
    if module.startswith("salesforce."):  # a backend: its pure core and its I/O shell
        return 0 if module.rsplit(".", 1)[-1] in PURE_NAMES else 2
    raise AssertionError(f"bridged.{module} has no layer: add it to LAYERS")


def modules() -> list[tuple[str, Path]]:
    """Every module of the daemon and the tools (the simulators are checked apart)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] == "simulators" or parts[-1] == "__init__":
            continue
        out.append((".".join(parts), path))
    return out


def imports(path: Path) -> set[str]:
    """The bridged modules and foreign top-level packages that ``path`` imports."""
    found = set()
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import: resolve it against the module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            folder = PACKAGE.parent / base.replace(".", "/")
            submodules = {f"{base}.{alias.name}" for alias in node.names  # from x import facts
                          if (folder / f"{alias.name}.py").exists()}
            found.update(submodules or {base})
    return found


def is_package(name: str) -> bool:
    """``bridged.x.y`` names a package (a folder), not a module."""
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_layer_rules(module: str, path: Path) -> None:
    layer = layer_of(module)
    for name in imports(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN[layer], f"bridged.{module} (layer {layer}) imports {name}"
        if top != "bridged" or name == "bridged" or is_package(name):
            continue
        target = name.removeprefix("bridged.")
        if target.startswith("simulators"):
            assert layer >= 4, f"only the tools and the CLI may start a simulator: {module}"
            continue
        assert layer_of(target) <= layer, (
            f"bridged.{module} (layer {layer}) imports {name} (layer {layer_of(target)})")


def test_the_daemon_never_imports_the_tools() -> None:
    for module, path in modules():
        if layer_of(module) >= 4:
            continue
        for name in imports(path):
            assert not name.startswith("bridged.tools"), f"bridged.{module} imports {name}"


def test_the_simulators_are_independent_of_the_rest_of_bridged() -> None:
    for path in (PACKAGE / "simulators").rglob("*.py"):
        for name in imports(path):
            assert not name.startswith("bridged.") or name.startswith("bridged.simulators"), (
                f"{path.relative_to(PACKAGE)} imports {name}")


def test_no_import_circles() -> None:
    """Module-level imports between bridged's modules form no cycle."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        graph[name] = {n for n in imports(path) if n.startswith("bridged.") and n != name}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_no_unbounded_queue_anywhere() -> None:
    unbounded = re.compile(
        r"\b(asyncio\.)?(Queue|LifoQueue|PriorityQueue)\(\s*(maxsize\s*=\s*0\s*)?\)"
    )
    for path in PACKAGE.rglob("*.py"):
        assert not unbounded.search(path.read_text()), path
