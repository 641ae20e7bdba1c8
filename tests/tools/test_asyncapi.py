"""docs/asyncapi.yaml is what the envelope Structs say, is AsyncAPI 3, and covers PROTOCOL.md 2."""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridged.ocp import envelopes as env
from bridged.tools import asyncapi
from tests.processes import ROOT

# PROTOCOL.md section 2, written out: each envelope's fields ("?" marks an optional one).
COMMANDS = {
    "start": "chat profile? config? ocpvars? visitor_name? history_session? history_token?",
    "message": "chat id text",
    "typing": "chat active text?",
    "end": "chat",
    "attach": "chat after",
    "ack": "chat seq",
}
EVENTS = {
    "hello": "version node max_frame_bytes",
    "queued": "chat seq position wait_s text",
    "agent_joined": "chat seq agent",
    "agent_message": "chat seq agent text",
    "agent_typing": "chat seq active",
    "transferred": "chat seq agent",
    "delivered": "chat seq id",
    "ended": "chat seq reason text detail?",
    "error": "code detail chat? ref?",
}
ERROR_CODES = ["bad_envelope", "too_large", "unknown_chat", "chat_exists", "not_attached",
               "bad_config", "host_not_allowed", "capacity", "busy"]
END_REASONS = ["agent", "client", "no_agent", "failed", "detached"]


def stored() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(asyncapi.DOCUMENT_PATH.read_text(encoding="utf-8"))
    return loaded


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    """Every ``$ref`` under ``node``."""
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_the_stored_document_is_the_one_the_structs_make() -> None:
    diff = list(difflib.unified_diff(
        asyncapi.DOCUMENT_PATH.read_text(encoding="utf-8").splitlines(),
        asyncapi.render().splitlines(), "docs/asyncapi.yaml", "from the Structs", lineterm=""))
    assert not diff, (
        "docs/asyncapi.yaml differs from the envelope Structs (bridged/ocp/envelopes.py): "
        "regenerate it with `python -m bridged.tools.asyncapi` and commit it\n"
        + "\n".join(diff[:60]))


def test_the_yaml_reads_back_as_the_document() -> None:
    assert stored() == json.loads(json.dumps(asyncapi.document()))


def test_it_has_the_essentials_of_asyncapi_3() -> None:
    document = stored()
    assert document["asyncapi"] == "3.0.0"
    assert isinstance(document["info"]["title"], str)
    assert isinstance(document["info"]["version"], str)
    for server in document["servers"].values():
        assert server["protocol"] in ("ws", "wss")
        assert set(server["variables"]) == {"host", "port"}
    chat = document["channels"]["chat"]
    assert chat["address"] == "/v1/chat"
    assert chat["bindings"]["ws"]["headers"]["properties"]["Sec-WebSocket-Protocol"]["enum"] \
        == ["bridged.v1+json", "bridged.v1+msgpack"]
    assert set(chat["x-subprotocols"]) == {"bridged.v1+json", "bridged.v1+msgpack"}
    actions = {op["action"]: op for op in document["operations"].values()}
    assert set(actions) == {"send", "receive"}
    for operation in actions.values():
        assert operation["channel"] == {"$ref": "#/channels/chat"}
        for message in operation["messages"]:  # a subset of the channel's messages
            assert message["$ref"].startswith("#/channels/chat/messages/")
    components = document["components"]
    assert set(components) >= {"messages", "schemas"}
    for name, message in components["messages"].items():
        assert message["name"] == name
        assert message["payload"]["$ref"].startswith("#/components/schemas/")
    for ref in refs(document):
        resolve(document, ref)


def messages_of(document: dict[str, Any], action: str) -> dict[str, dict[str, Any]]:
    """The payload schemas of an operation's messages, by message name."""
    (operation,) = [op for op in document["operations"].values() if op["action"] == action]
    out = {}
    for ref in operation["messages"]:
        message = resolve(document, resolve(document, ref["$ref"])["$ref"])
        out[message["name"]] = resolve(document, message["payload"]["$ref"])
    return out


def check_fields(schemas: dict[str, dict[str, Any]], table: dict[str, str]) -> None:
    assert set(schemas) == set(table)
    for name, fields in table.items():
        schema = schemas[name]
        required = {"type"} | {f for f in fields.split() if not f.endswith("?")}
        everything = {"type"} | {f.rstrip("?") for f in fields.split()}
        assert set(schema["properties"]) == everything, name
        assert set(schema["required"]) == required, name
        assert schema["properties"]["type"] == {"enum": [name]}


def test_every_envelope_of_protocol_section_2_is_there_with_its_fields() -> None:
    document = stored()
    check_fields(messages_of(document, "receive"), COMMANDS)  # bridged receives commands
    check_fields(messages_of(document, "send"), EVENTS)
    schemas = document["components"]["schemas"]
    assert schemas["Error"]["properties"]["code"]["enum"] == ERROR_CODES
    assert sorted(schemas["Ended"]["properties"]["reason"]["enum"]) == sorted(END_REASONS)
    assert schemas["Message"]["properties"]["text"]["maxLength"] == 10000
    assert schemas["Message"]["properties"]["id"]["maxLength"] == 64
    assert schemas["Start"]["properties"]["chat"]["pattern"] == "^[A-Za-z0-9._:-]{1,128}$"


def test_every_example_is_what_bridged_decodes_or_encodes() -> None:
    document = stored()
    inbound = messages_of(document, "receive")
    for name, message in document["components"]["messages"].items():
        (example,) = message["examples"]
        payload = example["payload"]
        if name in inbound:
            for fmt, encoded in ((env.JSON, msgspec.json.encode(payload)),
                                 (env.MSGPACK, msgspec.msgpack.encode(payload))):
                assert env.decode_inbound(encoded, fmt).__struct_config__.tag == name
        else:
            decoded = msgspec.json.decode(json.dumps(payload), type=env.Outbound)
            assert msgspec.json.decode(env.encode(decoded, env.JSON)) == payload


def test_check_says_when_the_file_is_stale_and_how_to_regenerate(tmp_path: Path) -> None:
    target = tmp_path / "asyncapi.yaml"
    command = [sys.executable, "-m", "bridged.tools.asyncapi", "--output", str(target)]
    stale = subprocess.run([*command, "--check"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert stale.returncode == 1
    assert "python -m bridged.tools.asyncapi" in stale.stderr
    assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=60).returncode == 0
    assert target.read_text(encoding="utf-8") == asyncapi.render()
    fresh = subprocess.run([*command, "--check"], cwd=ROOT, capture_output=True, timeout=60)
    assert fresh.returncode == 0


# Plain data of every shape the emitter may meet, read back by a real YAML parser.
_scalars = (st.none() | st.booleans() | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
_data = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=20), inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=20), _data, max_size=5))
def test_the_yaml_emitter_writes_what_a_yaml_parser_reads_back(data: dict[str, Any]) -> None:
    assert yaml.safe_load(asyncapi.to_yaml(data)) == (data or None)


def test_tricky_strings_survive_the_emitter() -> None:
    words = ["", " ", "yes", "No", "on", "null", "~", "1", "0x1f", "1e3", ".inf", "a: b",
             "a #b", "#a", "-a", "- a", "? a", "'a'", '"a"', "a\nb", "a\n", "\na", " a\nb",
             "a\n\nb", "a \n b", "tab\there", "\x85", "a\u2028b", "\x7f", "é ü", "@a", "`a`",
             "{a}", "[a]", "*a", "&a", "!a", "%a", "|", ">", "a:", "=", "<<"]
    data = {word: [word, {word: word}] for word in words}
    assert yaml.safe_load(asyncapi.to_yaml(data)) == data
