"""What a workflow write refuses, each a 400 naming the field (`validation_error`):
its structure, the agents' graph, tools and their JSON Schemas, providers, template
syntax, settings, and argument names a provider refuses; a refused write changes
nothing, and a body is validated once."""

from __future__ import annotations

import copy
import json
import time
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.test_workflows_api import VOICE, body, errors
from workflows.models import Workflow
from workflows.serializers import WorkflowWriteSerializer


def _agent(index: int, **changes: Any) -> dict:
    data = body()
    data["agents"][index].update(changes)
    return data


def _tool(**changes: Any) -> dict:
    data = body()
    data["agents"][0]["tools"][0].update(changes)
    return data


def _component(kind: str, **changes: Any) -> dict:
    data = body()
    data["agents"][1][kind].update(changes)
    return data


def _without(*path: Any) -> dict:
    data = body()
    target = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return data


SECOND_TRIAGE = body(
    agents=[
        *body()["agents"],
        {"name": "triage", "instructions": "Again.", **copy.deepcopy(VOICE)},
    ]
)


TWO_TOOLS = body()
TWO_TOOLS["agents"][0]["tools"].append(copy.deepcopy(TWO_TOOLS["agents"][0]["tools"][0]))


MANY_AGENTS = body(
    agents=[{"name": f"a{i}", "instructions": "x", **copy.deepcopy(VOICE)} for i in range(21)],
    start_agent="a0",
)


@pytest.mark.parametrize(
    ("data", "attr", "code"),
    [
        # structure
        (_without("slug"), "slug", "required"),
        (body(slug="Not A Slug!"), "slug", "invalid"),
        (body(slug="s" * 101), "slug", "max_length"),
        (body(name="n" * 201), "name", "max_length"),
        (_without("agents"), "agents", "required"),
        (body(agents=[]), "agents", "min_length"),
        (MANY_AGENTS, "agents", "max_length"),
        (body(agents={"name": "x"}), "agents", "not_a_list"),
        (_without("agents", 1, "instructions"), "agents.1.instructions", "required"),
        (_agent(1, name="has space"), "agents.1.name", "invalid"),
        (_agent(1, instructions="x" * 20_001), "agents.1.instructions", "max_length"),
        (_agent(1, greeting="x" * 2_001), "agents.1.greeting", "max_length"),
        (_agent(1, handoffs="billing"), "agents.1.handoffs", "not_a_list"),
        (_without("agents", 1, "llm"), "agents.1.llm", "required"),
        # graph
        (body(start_agent="ghost"), "start_agent", "unknown_agent"),
        (_agent(1, handoffs=["ghost"]), "agents.1.handoffs.0", "unknown_agent"),
        (_agent(0, handoffs=["billing", "ghost"]), "agents.0.handoffs.1", "unknown_agent"),
        (_agent(1, handoffs=["billing"]), "agents.1.handoffs.0", "self_handoff"),
        (_agent(0, handoffs=["billing", "billing"]), "agents.0.handoffs.1", "duplicate"),
        (SECOND_TRIAGE, "agents.2.name", "duplicate"),
        # tools
        (TWO_TOOLS, "agents.0.tools.1.name", "duplicate"),
        (_tool(name="transfer_to_billing"), "agents.0.tools.0.name", "reserved"),
        (_tool(name="bad name"), "agents.0.tools.0.name", "invalid"),
        (_tool(parameters={"type": "objekt"}), "agents.0.tools.0.parameters", "invalid_schema"),
        (
            _tool(parameters={"type": "object", "properties": {"a": {"minLength": -1}}}),
            "agents.0.tools.0.parameters",
            "invalid_schema",
        ),
        (_tool(parameters={"type": "string"}), "agents.0.tools.0.parameters", "not_object_type"),
        (_tool(parameters=["x"]), "agents.0.tools.0.parameters", "not_an_object"),
        (
            _tool(parameters={"type": "object", "description": "x" * 17_000}),
            "agents.0.tools.0.parameters",
            "too_large",
        ),
        (_tool(url="http://example.com/hook"), "agents.0.tools.0.url", "https_required"),
        (_tool(url="not a url"), "agents.0.tools.0.url", "invalid"),
        # A port no connection can use: the worker could never call the tool.
        (_tool(url="https://example.com:99999/hook"), "agents.0.tools.0.url", "invalid"),
        (_tool(description="d" * 1025), "agents.0.tools.0.description", "max_length"),
        # providers
        (_component("stt", provider="elevenlabs"), "agents.1.stt.provider", "invalid_choice"),
        (_component("llm", provider="deepgram"), "agents.1.llm.provider", "invalid_choice"),
        (_component("tts", provider="assemblyai"), "agents.1.tts.provider", "invalid_choice"),
        (_component("tts", model=""), "agents.1.tts.model", "blank"),
        # templates
        (
            _agent(1, instructions="Hello {{ user.name "),
            "agents.1.instructions",
            "template_syntax_error",
        ),
        (_agent(0, greeting="{% if %}"), "agents.0.greeting", "template_syntax_error"),
        (
            _agent(0, greeting="{{ user.name | no_such_filter }}"),
            "agents.0.greeting",
            "template_syntax_error",
        ),
        # settings
        (
            body(settings={"connect_timeout_seconds": 0}),
            "settings.connect_timeout_seconds",
            "min_value",
        ),
        (
            body(settings={"connect_timeout_seconds": 601}),
            "settings.connect_timeout_seconds",
            "max_value",
        ),
        (body(settings={"max_duration_seconds": 29}), "settings.max_duration_seconds", "min_value"),
        (
            body(settings={"max_duration_seconds": 14_401}),
            "settings.max_duration_seconds",
            "max_value",
        ),
        (
            body(settings={"max_duration_seconds": "long"}),
            "settings.max_duration_seconds",
            "invalid",
        ),
    ],
)
def test_invalid_definitions_are_400_naming_the_field(
    api: APIClient, data: dict, attr: str, code: str
) -> None:
    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["type"] == "validation_error"
    assert (attr, code) in errors(response), errors(response)
    assert Workflow.objects.count() == 0


def test_invalid_update_writes_nothing(api: APIClient, workflow: Workflow) -> None:
    before = workflow.updated_at

    response = api.put(
        f"/api/v1/workflows/{workflow.id}", _agent(0, handoffs=["ghost"]), format="json"
    )

    assert response.status_code == 400
    workflow.refresh_from_db()
    assert workflow.updated_at == before
    assert workflow.versions.count() == 1


def test_template_errors_name_the_agent_and_field(api: APIClient) -> None:
    response = api.post(
        "/api/v1/workflows", _agent(1, instructions="Hi {{ user.name "), format="json"
    )

    detail = response.json()["errors"][0]["detail"]
    assert "'billing'" in detail and "instructions" in detail and "line 1" in detail


def test_unknown_provider_error_lists_the_allowed_ones(api: APIClient) -> None:
    response = api.post("/api/v1/workflows", _component("stt", provider="nope"), format="json")

    assert "deepgram" in response.json()["errors"][0]["detail"]


def test_non_object_body_is_400(api: APIClient) -> None:
    response = api.post("/api/v1/workflows", [1, 2], format="json")

    assert response.status_code == 400
    assert timezone.now()  # nothing else to check: no 500


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            [1, 2],
            {
                "attr": "non_field_errors",
                "code": "invalid",
                "detail": "Invalid data. Expected a dictionary, but got list.",
            },
        ),
        (None, {"attr": "non_field_errors", "code": "null", "detail": "No data provided"}),
        (
            "x",
            {
                "attr": "non_field_errors",
                "code": "invalid",
                "detail": "Invalid data. Expected a dictionary, but got str.",
            },
        ),
        (
            _without("slug"),
            {"attr": "slug", "code": "required", "detail": "This field is required."},
        ),
        (
            body(name=None),
            {"attr": "name", "code": "null", "detail": "This field may not be null."},
        ),
    ],
)
@pytest.mark.parametrize("method", ["post", "put"])
def test_a_body_without_an_object_slug_or_name_is_400_as_the_serializer_words_it(
    api: APIClient, workflow: Workflow, method: str, data: Any, error: dict
) -> None:
    path = "/api/v1/workflows" + (f"/{workflow.id}" if method == "put" else "")

    response = getattr(api, method)(path, json.dumps(data), content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"type": "validation_error", "errors": [error]}
    assert Workflow.objects.count() == 1 and workflow.versions.count() == 1


@pytest.mark.parametrize("method", ["post", "put"])
def test_a_workflow_body_is_validated_once(api: APIClient, workflow: Workflow, method: str) -> None:
    """Validation compiles every template, the costly part of a write: the view leaves
    it to the service rather than running it first as well."""
    path = "/api/v1/workflows" + (f"/{workflow.id}" if method == "put" else "")
    is_valid = WorkflowWriteSerializer.is_valid
    with mock.patch.object(
        WorkflowWriteSerializer, "is_valid", autospec=True, side_effect=is_valid
    ) as spy:
        response = getattr(api, method)(path, body(), format="json")

    assert response.status_code in (200, 201), response.json()
    assert spy.call_count == 1


def body_with_schema(where: str, schema: object) -> tuple[dict, str]:
    """A workflow body with `schema` as a tool's parameters or the analysis's structured
    data schema, and the error attr naming it."""
    data = body()
    if where == "tool":
        data["agents"][0]["tools"][0]["parameters"] = schema
        return data, "agents.0.tools.0.parameters"
    data["analysis"] = {"structured_data_schema": schema}
    return data, "analysis.structured_data_schema"


@pytest.mark.parametrize("where", ["tool", "analysis"])
def test_a_json_schema_whose_dollar_schema_is_not_a_string_is_a_400(
    api: APIClient, where: str
) -> None:
    schema = {"type": "object", "$schema": 5}
    data, attr = body_with_schema(where, schema)
    api.raise_request_exception = False

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == [attr]


@pytest.mark.parametrize("where", ["tool", "analysis"])
@pytest.mark.parametrize("number", ["1e20", "-1e19", "1e308"])
def test_a_json_schema_float_beyond_64_bits_is_a_400_naming_the_field(
    api: APIClient, where: str, number: str
) -> None:
    """PostgreSQL's jsonb answers 1e20 as 100000000000000000000, a number this API's own
    parser refuses: the workflow read back could not be saved again (PUT is a 400)."""
    schema = '{"type": "object", "properties": {"n": {"type": "number", "maximum": NUMBER}}}'
    data, attr = body_with_schema(where, "SCHEMA")
    raw = json.dumps(data).replace('"SCHEMA"', schema.replace("NUMBER", number))

    response = api.post("/api/v1/workflows", raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert errors(response) == [(attr, "number_too_large")]
    assert Workflow.objects.count() == 0


@pytest.mark.parametrize("where", ["tool", "analysis"])
def test_json_schema_floats_count_toward_the_size_as_they_are_stored_in_full(
    api: APIClient, where: str
) -> None:
    """jsonb prints 1e-300 as 0.000…1: a 16 KiB schema of them came back as ~800 KiB on
    every read of the workflow, its versions and each call's agent session."""
    schema = {"type": "object", "examples": [1e-300] * 2000}
    assert len(json.dumps(schema, separators=(",", ":"))) < 16 * 1024
    data, attr = body_with_schema(where, schema)

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400, response.content
    assert errors(response) == [(attr, "too_large")]
    assert Workflow.objects.count() == 0


@pytest.mark.postgres
def test_a_workflow_read_back_can_be_saved_again(api: APIClient) -> None:
    data = body()
    data["agents"][0]["tools"][0]["parameters"]["properties"]["order_id"] = {
        "type": "number",
        "maximum": 1e18,
        "multipleOf": 1.5e-7,
    }
    created = api.post("/api/v1/workflows", data, format="json")
    answered = api.get(f"/api/v1/workflows/{created.json()['id']}").json()

    again = api.put(f"/api/v1/workflows/{answered['id']}", answered, format="json")

    assert again.status_code == 200, again.content
    assert again.json()["version"] == 1


def test_a_body_of_many_large_tool_schemas_is_validated_in_seconds(api: APIClient) -> None:
    """Each tool's schema is checked against its meta-schema: in pure Python that cost
    ~0.2 ms per subschema, so a body under 1 MiB of 16 KiB schemas of `{}`s held a sync
    worker for a minute and more, past gunicorn's 30 s timeout (the worker killed, the
    client answered 502); a few such requests at once took the service down."""
    schema = {"type": "object", "anyOf": [{}] * 5_000}
    assert len(json.dumps(schema, separators=(",", ":"))) < 16 * 1024
    data = body()
    for agent in data["agents"]:
        agent["tools"] = [{"name": f"t{n}", "parameters": schema} for n in range(30)]
    raw = json.dumps(data, separators=(",", ":"))
    assert len(raw) < 1024 * 1024

    started = time.monotonic()
    response = api.post("/api/v1/workflows", raw, content_type="application/json")

    assert time.monotonic() - started < 10
    assert response.status_code in (201, 400), response.content


def _tool_for(llm: dict, parameters: dict) -> dict:
    data = body()
    data["agents"][0]["llm"] = llm
    data["agents"][0]["tools"][0]["parameters"] = parameters
    return data


CLAUDE = {"provider": "anthropic", "model": "claude-sonnet-4-5"}


GPT_THEN_CLAUDE = {"provider": "openai", "model": "gpt-4.1-mini", "fallbacks": [CLAUDE]}


@pytest.mark.parametrize("llm", [CLAUDE, GPT_THEN_CLAUDE])
@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "object", "properties": {"prénom": {"type": "string"}}},
        {"type": "object", "properties": {"first name": {"type": "string"}}},
        {"type": "object", "properties": {"filter[id]": {"type": "string"}}},
        {"type": "object", "properties": {"x" * 65: {"type": "string"}}},
        # The worker offers what the top level's branches name as properties.
        {"type": "object", "anyOf": [{"properties": {"e-mail?": {"type": "string"}}}]},
    ],
)
def test_property_names_anthropic_refuses_are_a_400_on_its_agents(
    api: APIClient, llm: dict, parameters: dict
) -> None:
    """Anthropic refuses every request offering a tool whose argument names do not
    match ^[a-zA-Z0-9_.-]{1,64}$: the agent could not say a word."""
    response = api.post("/api/v1/workflows", _tool_for(llm, parameters), format="json")

    assert response.status_code == 400, response.json()
    assert ("agents.0.tools.0.parameters", "unsupported_property_name") in errors(response)
    assert Workflow.objects.count() == 0


def test_other_llms_take_any_property_name(api: APIClient) -> None:
    parameters = {"type": "object", "properties": {"prénom": {"type": "string"}, "a.b-c_1": {}}}
    ok = _tool_for(CLAUDE, {"type": "object", "properties": {"a.b-c_1": {}}})

    assert (
        api.post(
            "/api/v1/workflows", _tool_for(VOICE["llm"], parameters), format="json"
        ).status_code
        == 201
    )
    assert api.post("/api/v1/workflows", {**ok, "slug": "claude"}, format="json").status_code == 201
