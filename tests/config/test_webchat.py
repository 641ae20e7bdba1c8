"""The webchat configuration: merge, templating, checks and the host allowlist (pure)."""

from __future__ import annotations

import msgspec
import pytest

from bridged.config.file import parse_config
from bridged.config.webchat import (
    DEFAULT_TEXTS,
    FIELD_LIMITS,
    NAME_LIMIT,
    TEXT_LIMIT,
    TOTAL_LIMIT,
    VALUE_LIMIT,
    Endpoint,
    EntityFieldMap,
    PrechatDetail,
    PrechatEntity,
    WebchatFields,
    host_allowed,
    parse_endpoint,
    render_fields,
    render_template,
    resolve_webchat,
)
from bridged.errors import BadWebchatConfig, ConfigError, HostNotAllowed

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


# --- bounds after templating --------------------------------------------------------------

LONG = "x" * 30_000  # an ocpvar as long as a frame allows, referenced over and over
AMPLIFIER = "{{ocpvars:v}}" * 2_400  # 31 KB of template that asks for 72 MB


class CountingVars(dict[str, str]):
    """ocpvars that count how many values the renderer took from them."""

    taken = 0

    def get(self, key: str, default: object = None) -> str:  # type: ignore[override]
        self.taken += 1
        return super().get(key, "")


def test_the_renderer_stops_at_the_bound_instead_of_building_the_string() -> None:
    ocpvars = CountingVars(v=LONG)
    assert render_template(AMPLIFIER, ocpvars, limit=100_000) is None
    # Four values cross 100,000 characters: the other 2,396 references are never looked at.
    assert ocpvars.taken == 4
    assert render_template("{{ocpvars:v}}" * 3, {"v": "ab"}, limit=6) == "ababab"
    assert render_template("{{ocpvars:v}}" * 3 + "!", {"v": "ab"}, limit=6) is None
    assert render_template("plain", {}, limit=4) is None
    assert render_template(AMPLIFIER[:26], {"v": "ab"}) == "abab"  # no limit: as before


def test_names_keep_their_whitespace_rules() -> None:
    ocpvars = {"a": "1", " a": "2"}
    assert render_template("{{ocpvars:a  }}|{{  ocpvars:a}}|{{ocpvars: a}}", ocpvars) == "1|1|2"
    unclosed = "{{ocpvars:" + " " * 1000 + "}"
    assert render_template(unclosed, ocpvars) == unclosed


def test_an_amplifying_start_is_bad_config_naming_the_field() -> None:
    with pytest.raises(BadWebchatConfig) as info:
        resolve_webchat(PROFILE, WebchatFields(position_message=AMPLIFIER), {"v": LONG}, ALLOWED)
    assert info.value.detail == (
        f"position_message: longer than {TEXT_LIMIT} characters after templating")


def test_a_prechat_value_over_its_bound_is_named_with_its_index() -> None:
    details = [PrechatDetail(label="a", value="ok"),
               PrechatDetail(label="b", value="{{ocpvars:v}}{{ocpvars:v}}")]
    with pytest.raises(BadWebchatConfig) as info:
        resolve_webchat(PROFILE, WebchatFields(prechat_details=details), {"v": LONG}, ALLOWED)
    assert info.value.detail == (
        f"prechat_details[1].value: longer than {VALUE_LIMIT} characters after templating")


@pytest.mark.parametrize(("fields", "field", "limit"), [
    ({"position_message": "{{ocpvars:v}}"}, "position_message", TEXT_LIMIT),
    ({"displayed_username": "{{ocpvars:v}}"}, "displayed_username", NAME_LIMIT),
    ({"button_id": "{{ocpvars:v}}"}, "button_id", FIELD_LIMITS["button_id"]),
    ({"live_agent_base_url": "{{ocpvars:v}}"}, "live_agent_base_url",
     FIELD_LIMITS["live_agent_base_url"]),
    ({"prechat_details": [{"label": "a", "value": "b", "transcript_fields": ["{{ocpvars:v}}"]}]},
     "prechat_details[0].transcript_fields[0]", NAME_LIMIT),
    ({"prechat_entities": [{"entity_name": "Contact", "entity_fields_maps": [
        {"field_name": "{{ocpvars:v}}", "label": "a"}]}]},
     "prechat_entities[0].entity_fields_maps[0].field_name", NAME_LIMIT),
    ({"routing_attributes": {"Subject": "{{ocpvars:v}}"}}, "routing_attributes.Subject",
     VALUE_LIMIT),
    ({"some_future_field": "{{ocpvars:v}}"}, "some_future_field", TEXT_LIMIT),
])
def test_every_string_field_is_bounded_exactly_at_its_limit(
        fields: dict[str, object], field: str, limit: int) -> None:
    assert render_fields(fields, {"v": "x" * limit})  # exactly the bound: fine
    with pytest.raises(BadWebchatConfig) as info:
        render_fields(fields, {"v": "x" * (limit + 1)})
    assert info.value.detail == f"{field}: longer than {limit} characters after templating"


def test_a_routing_attribute_key_is_bounded_too() -> None:
    with pytest.raises(BadWebchatConfig) as info:
        render_fields({"routing_attributes": {"k" * (NAME_LIMIT + 1): "v"}}, {})
    assert info.value.detail.startswith("routing_attributes (a key): longer than 255")


def test_the_whole_configuration_is_bounded_naming_the_field_that_crossed_it() -> None:
    count = TOTAL_LIMIT // 30_000 + 1  # each value within its bound, together over the total
    details = [PrechatDetail(label=f"d{i}", value="{{ocpvars:v}}") for i in range(count)]
    with pytest.raises(BadWebchatConfig) as info:
        resolve_webchat(PROFILE, WebchatFields(prechat_details=details), {"v": LONG}, ALLOWED)
    assert info.value.detail == (
        f"prechat_details[{count - 1}].value: the webchat configuration is longer than"
        f" {TOTAL_LIMIT} characters after templating")
    fewer = WebchatFields(prechat_details=details[:count - 1])
    assert len(resolve_webchat(PROFILE, fewer, {"v": LONG}, ALLOWED).prechat_details) == count - 1


def test_visitor_name_is_bounded_but_not_templated() -> None:
    webchat = resolve_webchat(PROFILE, None, {"v": "x"}, ALLOWED, "{{ocpvars:v}}")
    assert webchat.displayed_username == "{{ocpvars:v}}"
    with pytest.raises(BadWebchatConfig) as info:
        resolve_webchat(PROFILE, None, {}, ALLOWED, "n" * (NAME_LIMIT + 1))
    assert info.value.detail.startswith("displayed_username: longer than 255 characters")


def test_a_profile_field_too_long_for_any_chat_is_a_config_error() -> None:
    text = ('[server]\ntokens = ["0123456789"]\n[profiles.p]\n'
            f'position_message = "{{{{ocpvars:a}}}}{"x" * (TEXT_LIMIT + 1)}"\n')
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert str(info.value).startswith("profiles.p.position_message: longer than 2000")


def _string_paths(struct: type[msgspec.Struct], prefix: str = "") -> list[str]:
    """The paths of every string field of ``struct`` (as FIELD_LIMITS names them)."""
    nested = {"prechat_details": PrechatDetail, "prechat_entities": PrechatEntity,
              "entity_fields_maps": EntityFieldMap}
    paths = []
    for field in msgspec.structs.fields(struct):
        if field.name in nested:
            paths += _string_paths(nested[field.name], f"{prefix}{field.name}.")
        elif "str" in str(field.type):
            paths.append(prefix + field.name)
    return paths


def test_every_string_field_of_the_configuration_has_a_bound_chosen_for_it() -> None:
    assert sorted(set(_string_paths(WebchatFields)) - set(FIELD_LIMITS)) == []
