"""The config file: defaults, validation, clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize(("section", "key"), [
    ('node = "a b"', "cluster.node"),
    ('node = "a"\nredis_url = "http://x"', "cluster.redis_url"),
    ('node = "a"\nsentinels = ["nohost"]', "cluster.sentinels[0]"),
    ('node = "a"\nlease_ttl_ms = 1000\nrenew_interval_ms = 900', "cluster.renew_interval_ms"),
    ('node = "a"\nlease_ttl = 5', "cluster.lease_ttl"),
])
def test_a_bad_cluster_section_is_refused_naming_the_key(section: str, key: str) -> None:
    from bridged.errors import ConfigError
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + "[cluster]\n" + section + "\n")
    assert key in str(caught.value)


def test_the_cluster_password_is_redacted() -> None:
    config = parse_config(MINIMAL + '[cluster]\nnode = "a"\n'
                          'redis_url = "redis://bridged:s3cret@10.0.0.1:6379/0"\n')
    assert "s3cret" not in str(redacted(config))
    assert config.cluster.node == "a"
