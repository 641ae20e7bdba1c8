"""The webchat configuration: merge, templating, checks and the host allowlist (pure)."""

from __future__ import annotations

import pytest

from bridged.config.webchat import (
    DEFAULT_TEXTS,
    Endpoint,
    PrechatDetail,
    WebchatFields,
    host_allowed,
    parse_endpoint,
    render_template,
    resolve_webchat,
)
from bridged.errors import BadWebchatConfig, HostNotAllowed

ALLOWED = ["*.salesforceliveagent.com", "127.0.0.1:*"]
PROFILE = WebchatFields(
    live_agent_base_url="https://d.la1-c1-fra.salesforceliveagent.com/chat",
    organization_id="00D000000000001",
    deployment_id="572000000000001",
    button_id="573000000000001",
)


def test_defaults_are_exactly_the_documented_ones() -> None:
    webchat = resolve_webchat(PROFILE, None, {}, ALLOWED)
    assert webchat.language == "en-US"
    assert webchat.displayed_username == "Visitor"
    assert webchat.no_agent_available_message == (
        "There is no agent available right now. Please contact us again later.")
    assert webchat.agent_session_ended_message == "The agent has ended the chat."
    assert webchat.chat_request_failed_message == "Chat request failed to Salesforce. Reason:"
    assert webchat.position_message == "You are in position:"
    assert webchat.estimated_time_message == "Estimated wait time:"
    assert webchat.prechat_details == []
    assert webchat.no_agent_available_message == DEFAULT_TEXTS["no_agent_available_message"]


def test_inline_config_wins_field_by_field() -> None:
    inline = WebchatFields(button_id="573000000000002", language="de-DE")
    webchat = resolve_webchat(PROFILE, inline, {}, ALLOWED)
    assert webchat.button_id == "573000000000002"
    assert webchat.language == "de-DE"
    assert webchat.organization_id == "00D000000000001"  # from the profile


def test_ocpvars_fill_every_string_field_including_prechat_details() -> None:
    inline = WebchatFields(
        displayed_username="{{ocpvars:first}} {{ ocpvars:last }}",
        position_message="{{ocpvars:missing}}Position:",
        prechat_details=[PrechatDetail(label="{{ocpvars:label}}", value="{{ocpvars:email}}",
                                       transcript_fields=["{{ocpvars:field}}"])],
    )
    ocpvars = {"first": "Ann", "last": "Lee", "label": "Email", "email": "ann@example.com",
               "field": "Email__c"}
    webchat = resolve_webchat(PROFILE, inline, ocpvars, ALLOWED)
    assert webchat.displayed_username == "Ann Lee"
    assert webchat.position_message == "Position:"
    assert webchat.prechat_details == [PrechatDetail(
        label="Email", value="ann@example.com", transcript_fields=["Email__c"])]


def test_template_values_are_not_templated_again() -> None:
    assert render_template("{{ocpvars:a}}", {"a": "{{ocpvars:b}}", "b": "x"}) == "{{ocpvars:b}}"


def test_visitor_name_overrides_displayed_username() -> None:
    inline = WebchatFields(displayed_username="Configured")
    assert resolve_webchat(PROFILE, inline, {}, ALLOWED, "Ann").displayed_username == "Ann"


@pytest.mark.parametrize("field", ["live_agent_base_url", "deployment_id", "organization_id",
                                   "button_id"])
def test_a_required_field_empty_after_templating_is_bad_config(field: str) -> None:
    inline = WebchatFields(**{field: "{{ocpvars:absent}}"})
    with pytest.raises(BadWebchatConfig) as info:
        resolve_webchat(PROFILE, inline, {}, ALLOWED)
    assert str(info.value.detail).startswith(f"{field}: required")


def test_nothing_at_all_is_bad_config_naming_the_first_field() -> None:
    with pytest.raises(BadWebchatConfig) as info:
        resolve_webchat(None, None, {}, ALLOWED)
    assert info.value.detail.startswith("live_agent_base_url:")


def test_a_malformed_salesforce_id_is_bad_config() -> None:
    with pytest.raises(BadWebchatConfig) as info:
        resolve_webchat(PROFILE, WebchatFields(button_id="573 oops"), {}, ALLOWED)
    assert info.value.detail.startswith("button_id: expected a 15 or 18 character")


@pytest.mark.parametrize("url", [
    "https://d.la1-c1-fra.salesforceliveagent.com/chat",
    "https://d.la1-c1-fra.salesforceliveagent.com/chat/rest",
    "https://d.la1-c1-fra.salesforceliveagent.com/chat/rest/",
    "d.la1-c1-fra.salesforceliveagent.com",
    "https://D.LA1-C1-FRA.salesforceliveagent.com./chat",
])
def test_every_accepted_url_shape_means_the_rest_endpoint(url: str) -> None:
    assert parse_endpoint(url).base_url == (
        "https://d.la1-c1-fra.salesforceliveagent.com/chat/rest/")


@pytest.mark.parametrize(("url", "error"), [
    ("https://user:pw@x.salesforceliveagent.com/chat", BadWebchatConfig),
    ("https://x.salesforceliveagent.com/chat?next=evil.com", BadWebchatConfig),
    ("https://x.salesforceliveagent.com/other", BadWebchatConfig),
    ("ftp://x.salesforceliveagent.com/chat", BadWebchatConfig),
    ("http://x.salesforceliveagent.com/chat", HostNotAllowed),
])
def test_odd_urls_are_refused(url: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_endpoint(url)


def test_plain_http_is_fine_for_loopback() -> None:
    assert parse_endpoint("http://127.0.0.1:8711/chat/rest/") == Endpoint(
        scheme="http", host="127.0.0.1", port=8711)


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://d.la1.salesforceliveagent.com/chat", True),
    ("https://salesforceliveagent.com/chat", False),  # the bare domain is not a subdomain
    ("https://evilsalesforceliveagent.com/chat", False),
    ("https://d.la1.salesforceliveagent.com.evil.com/chat", False),
    ("https://d.la1.salesforceliveagent.com:8443/chat", False),  # odd port
    ("http://127.0.0.1:9999/chat", True),
    ("http://localhost:9999/chat", False),
])
def test_allowlist(url: str, allowed: bool) -> None:
    assert host_allowed(parse_endpoint(url), ALLOWED) is allowed


def test_an_ocpvar_cannot_smuggle_a_host_past_the_allowlist() -> None:
    inline = WebchatFields(live_agent_base_url="https://{{ocpvars:pod}}/chat")
    with pytest.raises(HostNotAllowed) as info:
        resolve_webchat(PROFILE, inline, {"pod": "evil.example.com"}, ALLOWED)
    assert "evil.example.com" in info.value.detail
    with pytest.raises(BadWebchatConfig):
        resolve_webchat(PROFILE, inline, {"pod": "x.salesforceliveagent.com@evil.com"}, ALLOWED)
    webchat = resolve_webchat(PROFILE, inline, {"pod": "d.la9.salesforceliveagent.com"}, ALLOWED)
    assert webchat.live_agent_base_url == "https://d.la9.salesforceliveagent.com/chat/rest/"
