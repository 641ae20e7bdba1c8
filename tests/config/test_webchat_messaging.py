"""Enhanced Chat webchat configurations (PROTOCOL.md section 6): merge, template, check."""

from __future__ import annotations

import msgspec
import pytest

from bridged.config.file import parse_config
from bridged.config.webchat import (
    MessagingConfig,
    WebchatConfig,
    WebchatFields,
    check_profile,
    resolve_webchat,
)
from bridged.errors import BadWebchatConfig, ConfigError, HostNotAllowed

ALLOWED = ["*.my.salesforce-scrt.com", "127.0.0.1:*"]
BASE = {
    "type": "salesforce_messaging",
    "scrt_url": "https://acme.my.salesforce-scrt.com",
    "organization_id": "00D5g000004Sxyz",
    "es_developer_name": "Bot_Handover",
}


def fields(**over: object) -> WebchatFields:
    return msgspec.convert({**BASE, **over}, WebchatFields)


def resolve(profile: WebchatFields, inline: dict[str, object] | None = None,
            ocpvars: dict[str, str] | None = None) -> MessagingConfig:
    webchat = resolve_webchat(profile, msgspec.convert(inline, WebchatFields) if inline else None,
                              ocpvars or {}, ALLOWED)
    assert isinstance(webchat, MessagingConfig)
    return webchat


def refused(profile: WebchatFields, inline: dict[str, object] | None = None,
            ocpvars: dict[str, str] | None = None) -> str:
    with pytest.raises((BadWebchatConfig, HostNotAllowed)) as caught:
        resolve(profile, inline, ocpvars)
    return str(caught.value.detail)


def test_a_complete_profile_resolves_with_the_documented_defaults() -> None:
    webchat = resolve(fields())
    assert webchat.scrt_url == "https://acme.my.salesforce-scrt.com"
    assert webchat.org_id15 == "00D5g000004Sxyz"
    assert webchat.language == "en-US" and webchat.displayed_username == "Visitor"
    assert webchat.routing_attributes == {} and webchat.agent_wait_timeout_s == 0
    assert webchat.history_routing_attribute == ""
    assert webchat.position_message == "You are in position:"


def test_an_18_character_org_id_is_kept_and_its_15_character_form_goes_in_the_header() -> None:
    webchat = resolve(fields(organization_id="00D5g000004SxyzEAC"))
    assert webchat.organization_id == "00D5g000004SxyzEAC"
    assert webchat.org_id15 == "00D5g000004Sxyz"


@pytest.mark.parametrize("field", ["scrt_url", "organization_id", "es_developer_name"])
def test_a_missing_required_field_is_named(field: str) -> None:
    profile = msgspec.convert({k: v for k, v in BASE.items() if k != field}, WebchatFields)
    assert refused(profile).startswith(f"{field}: required")


@pytest.mark.parametrize(("field", "value"), [
    ("organization_id", "00D5g000004Sx"),        # 13 characters
    ("organization_id", "0015g000004Sxyz"),      # not an org id (00D...)
    ("es_developer_name", "Bot Handover"),
    ("es_developer_name", "1Bot"),
    ("es_developer_name", "Bot__Handover"),
    ("scrt_url", "ftp://acme.my.salesforce-scrt.com"),
    ("scrt_url", "https://acme.my.salesforce-scrt.com/iamessage"),
    ("scrt_url", "https://user@acme.my.salesforce-scrt.com"),
    ("history_routing_attribute", "Bot history"),
])
def test_a_malformed_field_is_named(field: str, value: str) -> None:
    assert refused(fields(**{field: value})).startswith(f"{field}: ")


def test_routing_attribute_names_must_be_api_names() -> None:
    assert refused(fields(routing_attributes={"First Name": "x"})).startswith(
        "routing_attributes: ")


def test_the_scrt_host_is_held_to_the_allowlist_after_templating() -> None:
    profile = fields(scrt_url="https://{{ocpvars:tenant}}.my.salesforce-scrt.com")
    assert resolve(profile, ocpvars={"tenant": "acme"}).scrt_url == (
        "https://acme.my.salesforce-scrt.com")
    detail = refused(profile, ocpvars={"tenant": "evil.example.com/"})
    assert detail.startswith("scrt_url: ")
    assert refused(fields(scrt_url="https://evil.example.com")).startswith(
        "scrt_url: host evil.example.com")


def test_plain_http_only_for_loopback() -> None:
    assert resolve(fields(scrt_url="http://127.0.0.1:8711")).scrt_url == "http://127.0.0.1:8711"
    assert refused(fields(scrt_url="http://acme.my.salesforce-scrt.com")).startswith("scrt_url: ")


def test_every_string_field_is_templated_routing_attribute_values_included() -> None:
    profile = fields(
        routing_attributes={"Customer_Name": "{{ocpvars:name}}", "Tier": "gold"},
        displayed_username="{{ocpvars:name}}",
        position_message="{{ocpvars:name}}, you are number",
    )
    webchat = resolve(profile, ocpvars={"name": "Ada"})
    assert webchat.routing_attributes == {"Customer_Name": "Ada", "Tier": "gold"}
    assert webchat.displayed_username == "Ada"
    assert webchat.position_message == "Ada, you are number"


def test_the_inline_config_wins_field_by_field() -> None:
    webchat = resolve(fields(language="de-DE"), {"agent_wait_timeout_s": 90,
                                                 "es_developer_name": "Other_Deployment"})
    assert webchat.language == "de-DE"
    assert webchat.agent_wait_timeout_s == 90
    assert webchat.es_developer_name == "Other_Deployment"


def test_live_agent_fields_mean_nothing_to_an_enhanced_chat_config() -> None:
    webchat = resolve(fields(button_id="573000000000001", prechat_details=[
        {"label": "x", "value": "y"}]))
    assert not hasattr(webchat, "button_id")


def test_an_inline_type_switches_the_backend() -> None:
    live_agent = msgspec.convert({
        "live_agent_base_url": "https://d.la1-c1-fra.salesforceliveagent.com/chat",
        "organization_id": "00D000000000001", "deployment_id": "572000000000001",
        "button_id": "573000000000001"}, WebchatFields)
    assert isinstance(resolve_webchat(live_agent, None, {}, ["*.salesforceliveagent.com"]),
                      WebchatConfig)
    assert refused(live_agent, {"type": "salesforce_messaging"}).startswith("scrt_url: required")
    assert refused(fields(), {"type": "salesforce_chat"}).startswith("type: expected")


def test_an_effective_configuration_survives_its_own_encoding() -> None:
    """A kept chat decodes to the same configuration, whichever its type."""
    union = msgspec.json.Decoder(WebchatConfig | MessagingConfig)
    webchat = resolve(fields(routing_attributes={"A": "b"}))
    assert union.decode(msgspec.json.encode(webchat)) == webchat
    assert b'"type":"salesforce_messaging"' in msgspec.json.encode(webchat)


def test_a_profile_is_checked_at_load_time() -> None:
    assert check_profile(fields()) is None
    assert check_profile(fields(type="salesforce_chat"))[0] == "type"  # type: ignore[index]
    assert check_profile(fields(scrt_url="https://acme.example.com/x"))[0] == "scrt_url"  # type: ignore[index]
    text = """
[server]
tokens = ["a-long-enough-token-for-the-check"]
[profiles.enhanced]
type = "salesforce_messaging"
scrt_url = "https://acme.my.salesforce-scrt.com/chat"
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.key == "profiles.enhanced.scrt_url"
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("/chat", "") + "agent_wait_timeout_s = -1\n")
    assert "agent_wait_timeout_s" in str(caught.value)


def test_standard_pre_chat_fields_start_with_an_underscore() -> None:
    """"Salesforce's standard pre-chat fields carry an underscore prefix" (MESSAGING.md 2.4)."""
    webchat = resolve(fields(routing_attributes={"_firstName": "Ada", "_email": "a@b.c"},
                             history_routing_attribute="_BotHistory"))
    assert webchat.routing_attributes == {"_firstName": "Ada", "_email": "a@b.c"}
    assert webchat.history_routing_attribute == "_BotHistory"
    assert refused(fields(routing_attributes={"__x": "y"})).startswith("routing_attributes: ")
