"""The config file: defaults, validation, clear errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from bridged.config.file import Config, ServerConfig, load_config, parse_config, redacted

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "bridged.example.toml"
MINIMAL = '[server]\ntokens = ["0123456789"]\n'


def test_the_example_config_decodes_and_lists_every_key_with_its_default() -> None:
    config = load_config(EXAMPLE)
    defaults = Config(server=ServerConfig(tokens=config.server.tokens))
    for section in ("server", "salesforce", "history", "state", "logging"):
        assert getattr(config, section) == getattr(defaults, section), section
    assert "default" in config.profiles


def test_the_example_lists_every_cluster_key_with_its_default() -> None:
    from bridged.config.file import ClusterConfig
    text = EXAMPLE.read_text(encoding="utf-8")
    block = text[text.index("# [cluster]\n"):text.index("\n[logging]")]
    # The section's keys, commented out (# key = value), each with a comment line above it.
    lines = block.splitlines()
    keys = {}
    for index, line in enumerate(lines):
        if match := re.fullmatch(r"# (\w+) = (.+)", line):
            keys[match[1]] = match[2]
            assert re.fullmatch(r"# [^=]+", lines[index - 1]), f"{match[1]} has no line"
    section = msgspec.toml.decode("\n".join(f"{k} = {v}" for k, v in keys.items()),
                                  type=ClusterConfig)
    assert set(keys) == set(ClusterConfig.__struct_fields__)
    examples = {"node", "sentinels"}  # shown with an example value: their default is empty
    assert msgspec.structs.replace(section, node="", sentinels=[]) == ClusterConfig()
    assert all(getattr(ClusterConfig(), key) in ("", []) for key in examples)
    # Uncommented, it is a valid section (a node of a Sentinel cluster).
    assert parse_config(MINIMAL + "[cluster]\n" + "\n".join(
        f"{k} = {v}" for k, v in keys.items()) + "\n").cluster == section


def test_the_fixed_keys_have_the_documented_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.server.listen == "127.0.0.1:8710"
    assert config.server.max_chats == 20000
    assert config.server.detach_grace_s == 120
    assert config.server.max_frame_bytes == 65536
    assert config.salesforce.allowed_hosts == ["*.salesforceliveagent.com"]
    assert config.state.dir == "/var/lib/bridged"


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nlisten = 8710\n", "server.listen: Expected `str`, got `int`"),
    ('[server]\nlisten = "nowhere"\n' + 'tokens = ["0123456789"]\n',
     "server.listen: expected host:port, got 'nowhere'"),
    ('[server]\ntokens = ["0123456789"]\nmax_chatz = 5\n', "server.max_chatz: unknown key"),
    ('[server]\ntokens = ["0123456789"]\ngc_policy = "never"\n',
     "server.gc_policy: Invalid enum value 'never'"),
    ('[servr]\n', "servr: unknown key"),
    ('[server]\ntokens = []\n', "server.tokens: at least one token is required"),
    ('[server]\ntokens = ["short"]\n',
     "server.tokens[0]: a token needs at least 8 characters and no spaces"),
    ('[server]\ntokens = ["0123456789"]\nmax_chats = 0\n', "server.max_chats: Expected `int` >= 1"),
    (MINIMAL + '[profiles.sales]\nbuton_id = "x"\n', "profiles.sales.buton_id: unknown key"),
    (MINIMAL + '[profiles.sales]\nlive_agent_base_url = "https://u@x.com/chat"\n',
     "profiles.sales.live_agent_base_url: must not carry user information"),
    (MINIMAL + '[server.x\n', "not valid TOML: "),
])
def test_a_bad_key_is_one_clear_line_naming_it(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_config(text)
    assert str(info.value).startswith(message)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_config(tmp_path / "absent.toml")
    assert str(info.value).startswith(f"cannot read {tmp_path / 'absent.toml'}")


def test_redacted_hides_tokens() -> None:
    text = MINIMAL + '[history]\nbearer_token = "secret-jwt"\n'
    data = redacted(parse_config(text))
    assert data["server"]["tokens"] == ["<redacted>"]
    assert data["history"]["bearer_token"] == "<redacted>"
    assert "0123456789" not in repr(data) and "secret-jwt" not in repr(data)


def test_tokens_can_come_from_credential_files(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("file-token-0001\nfile-token-0002\n")
    (tmp_path / "pat").write_text("ocp-pat-secret\n")
    text = ('[server]\ntokens = []\ntokens_file = "${CREDENTIALS_DIRECTORY}/tokens"\n'
            '[history]\npersonal_access_token_file = "${CREDENTIALS_DIRECTORY}/pat"\n')
    config = parse_config(text, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.server.tokens == ["file-token-0001", "file-token-0002"]
    assert config.history.personal_access_token == "ocp-pat-secret"
    with pytest.raises(ValueError) as info:
        parse_config(text, {})
    assert str(info.value).startswith("server.tokens_file: '${CREDENTIALS_DIRECTORY}/tokens'"
                                      " names an unset environment variable")


@pytest.mark.parametrize(("section", "error"), [
    # One case per rule of [cluster] (bridged check prints the same line).
    ('redis_url = "redis://10.0.0.1:6379/0"',
     "cluster.node: required when [cluster] sets other keys"),
    ('node = "a/b"', "cluster.node: 1 to 64 characters"),
    ('node = "a b"', "cluster.node: 1 to 64 characters"),
    ('node = "' + "n" * 65 + '"', "cluster.node: 1 to 64 characters"),
    ('node = "a"\nredis_url = "http://10.0.0.1:6379"', "cluster.redis_url: expected redis://"),
    ('node = "a"\nredis_url = "10.0.0.1:6379"', "cluster.redis_url: expected redis://"),
    ('node = "a"\nredis_url = "redis:///0"', "cluster.redis_url: names no host"),
    ('node = "a"\nredis_url = "redis://h:70000/0"', "cluster.redis_url: bad port '70000'"),
    ('node = "a"\nredis_url = "redis://h:6379/zero"',
     "cluster.redis_url: the database must be a number"),
    ('node = "a"\nredis_url = "unix://redis.sock"', "cluster.redis_url: expected unix:///"),
    ('node = "a"\nsentinels = ["10.0.0.1"]', "cluster.sentinels[0]: expected host:port"),
    ('node = "a"\nsentinels = ["10.0.0.1:26379", ":26379"]',
     "cluster.sentinels[1]: expected host:port"),
    ('node = "a"\nsentinels = ["h:0"]', "cluster.sentinels[0]: expected host:port"),
    ('node = "a"\nsentinels = ["h:26379", "h:26379"]', "cluster.sentinels[1]: 'h:26379' is listed"),
    ('node = "a"\nsentinels = "h:26379"', "cluster.sentinels: Expected `array`"),
    ('node = "a"\nsentinels = ["h:26379"]\nsentinel_service = ""',
     "cluster.sentinel_service: the name of the primary"),
    ('node = "a"\nlease_ttl_ms = 1000\nlease_margin_ms = 1000',
     "cluster.lease_margin_ms: must be less than lease_ttl_ms"),
    ('node = "a"\nlease_ttl_ms = 1000\nlease_margin_ms = 100\nrenew_interval_ms = 500',
     "cluster.renew_interval_ms: must allow two renewals"),
    ('node = "a"\nlease_ttl_ms = 3000\nlease_margin_ms = 500\nrenew_interval_ms = 1000\n'
     'socket_timeout_s = 2.5',
     "cluster.socket_timeout_s: must be less than lease_ttl_ms - lease_margin_ms"),
    ('node = "a"\nmin_replicas = 1\nwait_timeout_ms = 2000',
     "cluster.wait_timeout_ms: must be less than socket_timeout_s"),
    ('node = "a"\nmin_replicas = -1', "cluster.min_replicas: Expected `int` >= 0"),
    ('node = "a"\nlease_ttl_ms = 100', "cluster.lease_ttl_ms: Expected `int` >= 200"),
    ('node = "a"\nscan_interval_ms = 0', "cluster.scan_interval_ms: Expected `int` >= 20"),
    ('node = "a"\nnode_name = "b"', "cluster.node_name: unknown key"),
])
def test_each_cluster_rule_names_its_field(section: str, error: str) -> None:
    from bridged.errors import ConfigError
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + "[cluster]\n" + section + "\n")
    assert str(caught.value).startswith(error), str(caught.value)


@pytest.mark.parametrize("section", [
    'node = "a"',
    'node = "node-1.dc_2"\nredis_url = "rediss://bridged:pw@[::1]:6380/3"',
    'node = "a"\nredis_url = "unix:///run/redis/redis.sock?db=1"',
    'node = "a"\nsentinels = ["10.0.0.1:26379", "[fd00::2]:26379"]\nsentinel_service = "b"\n'
    'min_replicas = 1',
])
def test_a_good_cluster_section_passes(section: str) -> None:
    assert parse_config(MINIMAL + "[cluster]\n" + section + "\n").cluster.node


def test_the_cluster_password_is_redacted() -> None:
    config = parse_config(MINIMAL + '[cluster]\nnode = "a"\n'
                          'redis_url = "redis://bridged:s3cret@10.0.0.1:6379/0"\n')
    assert "s3cret" not in str(redacted(config))
    assert config.cluster.node == "a"
