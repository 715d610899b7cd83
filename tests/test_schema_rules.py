"""The rules JSON Schema can express are stated in openapi.yaml, so that a client (or
schemathesis) that keeps to the schema is not refused: issue 17's six
`positive_data_acceptance` findings, each pinned by the schema fact and by the server
accepting a value at the schema's edge and refusing one past it."""

from __future__ import annotations

import jsonschema
import pytest
import yaml
from django.conf import settings

from calls.idempotency import MAX_KEY_LENGTH
from providerkeys.catalog import OPENAI_COMPATIBLE_LLM, PROVIDER_CATALOG
from workflows.languages import LANGUAGE_PATTERN


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load((settings.BASE_DIR / "openapi.yaml").read_text())


def _parameter(schema: dict, path: str, method: str, name: str) -> dict:
    operation = schema["paths"][path][method]
    return next(p for p in operation["parameters"] if p["name"] == name)["schema"]


def _resolve(schema: dict, node: dict) -> dict:
    if "allOf" in node:
        node = node["allOf"][0]
    if "$ref" in node:
        return schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_the_workflow_slug_filter_states_that_a_nul_is_refused(schema, api) -> None:
    slug = _parameter(schema, "/api/v1/workflows", "get", "slug")

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("a\x00b", slug)
    jsonschema.validate("x" * slug["maxLength"], slug)
    assert api.get("/api/v1/workflows", {"slug": "x" * slug["maxLength"]}).status_code == 200
    assert api.get("/api/v1/workflows", {"slug": "a\x00b"}).status_code == 400


def test_the_idempotency_key_header_states_the_servers_bounds(schema, api, workflow) -> None:
    header = _parameter(schema, "/api/v1/calls", "post", "Idempotency-Key")
    body = {"workflow_slug": workflow.slug}

    assert (header["minLength"], header["maxLength"]) == (1, MAX_KEY_LENGTH)
    longest = api.post(
        "/api/v1/calls", body, format="json", HTTP_IDEMPOTENCY_KEY="k" * MAX_KEY_LENGTH
    )
    too_long = api.post(
        "/api/v1/calls", body, format="json", HTTP_IDEMPOTENCY_KEY="k" * (MAX_KEY_LENGTH + 1)
    )
    assert (longest.status_code, too_long.status_code) == (201, 400)


def test_provider_names_are_enums_of_the_catalog(schema) -> None:
    components = schema["components"]["schemas"]
    every_provider = sorted(set().union(*PROVIDER_CATALOG.values()))
    create = _resolve(schema, components["ProviderKeyCreateRequest"]["properties"]["provider_name"])

    assert sorted(create["enum"]) == every_provider
    for kind in ("stt", "llm", "tts"):
        enum = components[f"{kind.capitalize()}ProviderEnum"]["enum"]
        assert sorted(enum) == sorted(PROVIDER_CATALOG[kind]), kind


def test_every_workflow_component_names_its_provider_from_the_catalog(schema) -> None:
    text = yaml.safe_dump(schema["components"]["schemas"])
    for kind in ("Stt", "Llm", "Tts"):
        assert f"#/components/schemas/{kind}ProviderEnum" in text, kind


def test_webhook_urls_state_their_length(schema, api) -> None:
    write = schema["components"]["schemas"]["WebhookEndpointWriteRequest"]["properties"]["url"]
    too_long = "https://" + "a" * write["maxLength"] + ".example.com/h"

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(too_long, write)
    response = api.post("/api/v1/webhook-endpoints", {"url": too_long}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "url"


def test_a_regex_field_states_its_own_pattern_not_only_the_blank_rule(schema) -> None:
    request = schema["components"]["schemas"]["WorkflowSettingsRequest"]["properties"]

    assert request["language"]["pattern"] == LANGUAGE_PATTERN
    jsonschema.validate("es-MX", request["language"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("0", request["language"])


def test_the_analysis_provider_is_an_enum_of_the_openai_compatible_providers(schema) -> None:
    settings_ = schema["components"]["schemas"]["AnalysisSettingsRequest"]["properties"]

    assert _resolve(schema, settings_["provider"])["enum"] == list(OPENAI_COMPATIBLE_LLM)


# ECMA-262's \s, which JSON Schema validators and clients apply to a `pattern`: it has
# U+FEFF and lacks U+001C-U+001F and U+0085, which Python's str.strip() treats otherwise.
# Written without brackets: the pattern uses it inside a class (`[^\s\u0000]`).
_ECMA_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


@pytest.mark.parametrize("user_id", ["\ufeff", "\x1c", "\x85"])
def test_the_not_blank_pattern_read_as_a_client_reads_it_accepts_what_the_api_accepts(
    schema, api, workflow, user_id: str
) -> None:
    """Every request text field that may not be blank gets `_NOT_BLANK` (voicecalls/
    schema.py), written with `\\s`; the server's rule is DRF's `str.strip()`. Read as
    ECMA-262 (as the JSON Schema spec and every JS/TS SDK read it), the schema refuses a
    user id the API takes (U+FEFF) and takes ones the API refuses as blank (U+001C, U+0085)."""
    import re

    field = schema["components"]["schemas"]["CallCreateRequest"]["properties"]["user_id"]
    as_ecma = field["pattern"].replace(r"\s", _ECMA_SPACE)

    response = api.post(
        "/api/v1/calls", {"workflow_slug": workflow.slug, "user_id": user_id}, format="json"
    )

    assert (response.status_code == 201) == bool(re.fullmatch(as_ecma, user_id)), response.content


def _declared_defaults(schema: dict, component: str) -> dict:
    """What a generated client (openapi-python-client) sends for each property it was not
    given a value for: the `default` the schema declares."""
    properties = schema["components"]["schemas"][component]["properties"]
    return {name: prop["default"] for name, prop in properties.items() if "default" in prop}


def test_a_settings_patch_as_a_generated_client_sends_it_keeps_the_other_settings(
    schema, api, workflow
) -> None:
    """`settings` merges key by key: a PATCH of one setting through the Python SDK must
    not put back the defaults of those it did not name."""
    url = f"/api/v1/workflows/{workflow.id}"
    customized = {"connect_timeout_seconds": 120, "allow_interruptions": False}
    assert api.patch(url, {"settings": customized}, format="json").status_code == 200

    sent = {**_declared_defaults(schema, "WorkflowSettingsRequest"), "max_duration_seconds": 900}
    response = api.patch(url, {"settings": sent}, format="json")

    assert response.status_code == 200, response.content
    assert {k: response.json()["settings"][k] for k in [*customized, "max_duration_seconds"]} == {
        **customized,
        "max_duration_seconds": 900,
    }


def test_a_webhook_endpoint_patch_as_a_generated_client_sends_it_keeps_it_disabled(
    schema, api
) -> None:
    """A PATCH of the description through the Python SDK must not re-enable it."""
    created = api.post(
        "/api/v1/webhook-endpoints", {"url": "https://example.com/hooks"}, format="json"
    ).json()
    url = f"/api/v1/webhook-endpoints/{created['id']}"
    assert api.patch(url, {"enabled": False}, format="json").json()["enabled"] is False

    sent = {
        **_declared_defaults(schema, "PatchedWebhookEndpointWriteRequest"),
        "description": "CRM",
    }
    response = api.patch(url, sent, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["description"], response.json()["enabled"]) == ("CRM", False)


def test_a_phone_call_as_a_generated_client_sends_it_is_created_outbound(
    schema, api, organization, workflow, fake_livekit
) -> None:
    """`direction` left out is `outbound` with `phone_number`: the schema declares no
    static default a client would send in its place (it was `inbound`, a 400)."""
    from tests.phone import CALLEE, phone_ready

    phone_ready(organization)
    sent = {
        **_declared_defaults(schema, "CallCreateRequest"),
        "workflow_slug": workflow.slug,
        "phone_number": CALLEE,
    }

    response = api.post("/api/v1/calls", sent, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["channel"] == "phone"
