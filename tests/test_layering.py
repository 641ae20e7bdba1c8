"""The package's layers, enforced: pure code never imports I/O, nothing imports upward."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "bridged"

LAYERS = {
    0: {"errors", "config", "webchat", "envelopes", "facts", "policy", "texts", "_log",
        "history", "liveagent.wire", "liveagent.protocol"},
    1: {"mailbox", "gate", "chat", "supervisor", "dispatcher", "backend"},
    2: {"liveagent.transport", "liveagent.actor", "front", "metrics", "chatclient", "admin",
        "historyclient", "handover", "state"},
    3: {"daemon", "cli", "logs", "demo", "__main__", "_systemd", "statebench", "limits"},
}
FORBIDDEN = {
    0: {"asyncio", "aiohttp", "uvloop", "socket", "prometheus_client"},
    1: {"aiohttp", "uvloop", "prometheus_client"},
    2: {"uvloop"},
    3: set(),
}


def layer_of(module: str) -> int:
    if module.startswith("loadtest") or module == "nullbridge":
        return 3  # tools that start processes and measure: composition
    for layer, modules in LAYERS.items():
        if module in modules:
            return layer
    raise AssertionError(f"bridged.{module} has no layer: add it to LAYERS")


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        parts = relative.parts
        if parts[0] == "simulator" or parts[-1] == "__init__":
            continue
        out.append((".".join(parts), path))
    return out


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "bridged":  # from bridged import facts: the module facts
                found.update(f"bridged.{alias.name}" for alias in node.names
                             if (PACKAGE / f"{alias.name}.py").exists())
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_layer_rules(module: str, path: Path) -> None:
    layer = layer_of(module)
    for name in imports(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN[layer], f"bridged.{module} (layer {layer}) imports {name}"
        if top == "bridged" and name not in ("bridged", "bridged.liveagent"):
            target = name.removeprefix("bridged.")
            if target.startswith("simulator"):
                assert layer == 3, f"only composition may use the simulator: {module}"
                continue
            assert layer_of(target) <= layer, (
                f"bridged.{module} (layer {layer}) imports {name} (layer {layer_of(target)})")


def test_the_simulator_is_independent_of_the_rest_of_bridged() -> None:
    for path in (PACKAGE / "simulator").rglob("*.py"):
        for name in imports(path):
            assert not name.startswith("bridged.") or name.startswith("bridged.simulator"), (
                f"{path.name} imports {name}")


def test_no_unbounded_queue_anywhere() -> None:
    unbounded = re.compile(
        r"\b(asyncio\.)?(Queue|LifoQueue|PriorityQueue)\(\s*(maxsize\s*=\s*0\s*)?\)"
    )
    for path in PACKAGE.rglob("*.py"):
        assert not unbounded.search(path.read_text()), path
