from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Organization
from calls.models import Call
from tests.factories import CallFactory, PhoneNumberFactory, WorkflowFactory
from tests.phone import inbound_trunk
from workflows.models import Workflow, WorkflowVersion
from workflows.serializers import WorkflowWriteSerializer
from workflows.settings import DEFAULT_BUSY_MESSAGE, DEFAULT_ERROR_MESSAGE

ANY_ID = "00000000-0000-4000-8000-000000000000"

# What a workflow saved without `settings` holds: every default.
DEFAULT_SETTINGS = {
    "connect_timeout_seconds": 60,
    "max_duration_seconds": 1800,
    "ring_timeout_seconds": 30,
    "dial_deadline_seconds": 60,
    "language": None,
    "error_message": DEFAULT_ERROR_MESSAGE,
    "allow_interruptions": True,
    "min_endpointing_delay": 0.5,
    "max_endpointing_delay": 3.0,
    "false_interruption_timeout": 2.0,
    "resume_false_interruption": True,
    "silence_timeout_seconds": None,
    "voicemail": {"action": "hang_up", "message": ""},
    "busy_message": DEFAULT_BUSY_MESSAGE,
    "recording": {"enabled": False},
}

VOICE = {
    "stt": {"provider": "deepgram", "model": "nova-3"},
    "llm": {"provider": "openai", "model": "gpt-4.1-mini"},
    "tts": {"provider": "cartesia", "model": "sonic-2", "voice": "v-1"},
}


def body(**overrides: Any) -> dict:
    """A valid two-agent workflow body; overrides replace top-level fields."""
    data = {
        "slug": "support",
        "name": "Support line",
        "start_agent": "triage",
        "agents": [
            {
                "name": "triage",
                "instructions": "Help {{ user.name | default('the caller') }}.",
                "greeting": "Hi {{ user.name | default('there') }}!",
                "tools": [
                    {
                        "name": "lookup_order",
                        "description": "Find an order.",
                        "parameters": {
                            "type": "object",
                            "properties": {"order_id": {"type": "string"}},
                            "required": ["order_id"],
                        },
                        "url": "https://example.com/tools/lookup",
                    }
                ],
                "handoffs": ["billing"],
                **copy.deepcopy(VOICE),
            },
            {
                "name": "billing",
                "instructions": "Answer billing questions.",
                **copy.deepcopy(VOICE),
            },
        ],
    }
    data.update(overrides)
    return data


def expected_agents() -> list[dict]:
    """`body()`'s agents as the API returns them: every default filled in."""
    stt = {"provider": "deepgram", "model": "nova-3", "voice": None, "fallbacks": []}
    llm = {
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "voice": None,
        "fallbacks": [],
        "timeout_seconds": 5.0,
    }
    tts = {"provider": "cartesia", "model": "sonic-2", "voice": "v-1", "fallbacks": []}
    return [
        {
            "name": "triage",
            "instructions": "Help {{ user.name | default('the caller') }}.",
            "greeting": "Hi {{ user.name | default('there') }}!",
            "tools": [
                {
                    "name": "lookup_order",
                    "type": "function",
                    "description": "Find an order.",
                    "parameters": {
                        "type": "object",
                        "properties": {"order_id": {"type": "string"}},
                        "required": ["order_id"],
                    },
                    "url": "https://example.com/tools/lookup",
                    "destinations": [],
                    "message": "",
                }
            ],
            "handoffs": ["billing"],
            "stt": stt,
            "llm": llm,
            "tts": tts,
        },
        {
            "name": "billing",
            "instructions": "Answer billing questions.",
            "greeting": "",
            "tools": [],
            "handoffs": [],
            "stt": stt,
            "llm": llm,
            "tts": tts,
        },
    ]


def expected(workflow: Workflow, **overrides: Any) -> dict:
    workflow.refresh_from_db()
    data = {
        "id": str(workflow.id),
        "slug": "support",
        "name": "Support line",
        "start_agent": "triage",
        "agents": expected_agents(),
        "settings": DEFAULT_SETTINGS,
        "analysis": None,
        "version": 1,
        "created_at": workflow.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": workflow.updated_at.isoformat().replace("+00:00", "Z"),
    }
    data.update(overrides)
    return data


def errors(response: Any) -> list[tuple[str, str]]:
    return [(e["attr"], e["code"]) for e in response.json()["errors"]]


# --- create and read ---------------------------------------------------------


def test_create_returns_the_whole_workflow_with_defaults_filled(api: APIClient) -> None:
    response = api.post("/api/v1/workflows", body(), format="json")

    assert response.status_code == 201, response.json()
    workflow = Workflow.objects.get()
    assert response.json() == expected(workflow)
    assert workflow.versions.count() == 1
    assert workflow.current_version.number == 1


def test_retrieve_round_trips_what_create_returned(api: APIClient) -> None:
    created = api.post("/api/v1/workflows", body(), format="json").json()

    response = api.get(f"/api/v1/workflows/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


def test_settings_are_stored_as_given(api: APIClient) -> None:
    settings = {"connect_timeout_seconds": 30, "max_duration_seconds": 600}

    response = api.post("/api/v1/workflows", body(settings=settings), format="json")

    assert response.status_code == 201
    assert response.json()["settings"] == {**DEFAULT_SETTINGS, **settings}
    assert Workflow.objects.get().current_version.max_duration_seconds == 600


def test_list_is_paginated_newest_first(api: APIClient, organization: Organization) -> None:
    older = WorkflowFactory(organization=organization, slug="older")
    newer = WorkflowFactory(organization=organization, slug="newer")

    response = api.get("/api/v1/workflows", {"page_size": 1})

    assert response.status_code == 200
    data = response.json()
    assert [item["id"] for item in data["items"]] == [str(newer.id)]
    assert {k: v for k, v in data.items() if k != "items"} == {
        "total": 2,
        "page": 1,
        "page_size": 1,
        "pages": 2,
    }
    second = api.get("/api/v1/workflows", {"page_size": 1, "page": 2}).json()
    assert [item["id"] for item in second["items"]] == [str(older.id)]


def test_list_items_are_the_detail_shape(api: APIClient) -> None:
    created = api.post("/api/v1/workflows", body(), format="json").json()

    response = api.get("/api/v1/workflows")

    assert response.json() == {
        "items": [created],
        "total": 1,
        "page": 1,
        "page_size": 20,
        "pages": 1,
    }


def test_list_filters_by_slug(api: APIClient, organization: Organization) -> None:
    WorkflowFactory(organization=organization, slug="one")
    two = WorkflowFactory(organization=organization, slug="two")

    response = api.get("/api/v1/workflows", {"slug": "two"})

    assert [item["id"] for item in response.json()["items"]] == [str(two.id)]
    assert api.get("/api/v1/workflows", {"slug": "nope"}).json()["total"] == 0


@pytest.mark.parametrize(
    ("params", "attr"),
    [
        ({"page": 0}, "page"),
        ({"page_size": 101}, "page_size"),
        ({"page": "x"}, "page"),
        ({"slug": "s" * 101}, "slug"),
    ],
)
def test_list_rejects_bad_paging(api: APIClient, params: dict, attr: str) -> None:
    response = api.get("/api/v1/workflows", params)

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == attr


def test_list_query_count_does_not_grow(
    api: APIClient, organization: Organization, django_assert_max_num_queries: Any
) -> None:
    for index in range(3):
        WorkflowFactory(organization=organization, slug=f"w-{index}")
    with django_assert_max_num_queries(4) as few:
        api.get("/api/v1/workflows")
    for index in range(3, 12):
        WorkflowFactory(organization=organization, slug=f"w-{index}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = api.get("/api/v1/workflows")
    assert response.json()["total"] == 12


def test_retrieve_query_count(
    api: APIClient, workflow: Workflow, django_assert_num_queries: Any
) -> None:
    # authentication (key lookup + organization) and one workflow query with its version
    with django_assert_num_queries(2):
        response = api.get(f"/api/v1/workflows/{workflow.id}")
    assert response.status_code == 200


def test_demo_workflow_reads_back_as_load_demo_made_it(api: APIClient, workflow: Workflow) -> None:
    data = api.get(f"/api/v1/workflows/{workflow.id}").json()

    assert data["slug"] == "daily-call"
    assert [agent["name"] for agent in data["agents"]] == [
        "greeter-agent",
        "meal-agent",
        "feedback-agent",
    ]
    assert data["agents"][1]["tools"][0]["name"] == "save_meal"
    assert data["agents"][1]["tools"][0]["url"] is None


# --- update and versions ------------------------------------------------------


def test_put_replaces_the_workflow_and_adds_a_version(api: APIClient) -> None:
    created = api.post("/api/v1/workflows", body(), format="json").json()
    new = body(name="Support v2", start_agent="billing")

    response = api.put(f"/api/v1/workflows/{created['id']}", new, format="json")

    assert response.status_code == 200, response.json()
    workflow = Workflow.objects.get()
    assert response.json() == expected(
        workflow, name="Support v2", start_agent="billing", version=2
    )
    assert response.json()["created_at"] == created["created_at"]
    assert list(workflow.versions.values_list("number", flat=True)) == [2, 1]
    first = workflow.versions.get(number=1)
    assert first.definition["start_agent"] == "triage"


def test_put_needs_the_whole_workflow(api: APIClient, workflow: Workflow) -> None:
    response = api.put(f"/api/v1/workflows/{workflow.id}", {"name": "x"}, format="json")

    assert response.status_code == 400
    assert {attr for attr, _ in errors(response)} == {"slug", "start_agent", "agents"}
    assert workflow.versions.count() == 1


def test_patch_changes_only_the_fields_given(api: APIClient) -> None:
    created = api.post("/api/v1/workflows", body(), format="json").json()

    response = api.patch(
        f"/api/v1/workflows/{created['id']}",
        {"settings": {"max_duration_seconds": 300}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json() == expected(
        Workflow.objects.get(),
        settings={**DEFAULT_SETTINGS, "max_duration_seconds": 300},
        version=2,
    )


def test_patch_of_name_only_keeps_the_version(api: APIClient) -> None:
    created = api.post("/api/v1/workflows", body(), format="json").json()

    response = api.patch(f"/api/v1/workflows/{created['id']}", {"name": "Renamed"}, format="json")

    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"
    assert response.json()["version"] == 1
    assert WorkflowVersion.objects.count() == 1


def test_patch_is_validated_as_a_whole(api: APIClient) -> None:
    created = api.post("/api/v1/workflows", body(), format="json").json()

    response = api.patch(
        f"/api/v1/workflows/{created['id']}", {"start_agent": "ghost"}, format="json"
    )

    assert response.status_code == 400
    assert errors(response) == [("start_agent", "unknown_agent")]
    assert WorkflowVersion.objects.count() == 1


def test_versions_lists_every_version_newest_first(api: APIClient) -> None:
    created = api.post("/api/v1/workflows", body(), format="json").json()
    api.patch(f"/api/v1/workflows/{created['id']}", {"start_agent": "billing"}, format="json")

    response = api.get(f"/api/v1/workflows/{created['id']}/versions")

    assert response.status_code == 200
    data = response.json()
    assert (data["total"], data["pages"]) == (2, 1)
    assert [(v["version"], v["start_agent"]) for v in data["items"]] == [
        (2, "billing"),
        (1, "triage"),
    ]
    assert data["items"][1]["agents"] == expected_agents()


def test_versions_query_count_does_not_grow(
    api: APIClient, workflow: Workflow, django_assert_max_num_queries: Any
) -> None:
    with django_assert_max_num_queries(5) as few:
        api.get(f"/api/v1/workflows/{workflow.id}/versions")
    first = len(few.captured_queries)  # requests below reset Django's query log
    for seconds in range(100, 110):
        api.patch(
            f"/api/v1/workflows/{workflow.id}",
            {"settings": {"max_duration_seconds": seconds}},
            format="json",
        )
    with django_assert_max_num_queries(first):
        response = api.get(f"/api/v1/workflows/{workflow.id}/versions")
    assert response.json()["total"] == 11


def test_an_edit_never_changes_calls_already_made(
    api: APIClient, organization: Organization, workflow: Workflow
) -> None:
    call = CallFactory(organization=organization, workflow=workflow)
    first_version = workflow.current_version

    api.patch(
        f"/api/v1/workflows/{workflow.id}",
        {"settings": {"max_duration_seconds": 60}},
        format="json",
    )

    call.refresh_from_db()
    assert call.workflow_version == first_version
    assert call.workflow_version.definition["settings"]["max_duration_seconds"] == 1800
    workflow.refresh_from_db()
    assert workflow.current_version.number == 2


def test_slug_can_be_renamed(api: APIClient, workflow: Workflow) -> None:
    response = api.patch(f"/api/v1/workflows/{workflow.id}", {"slug": "daily-v2"}, format="json")

    assert response.status_code == 200
    assert response.json()["slug"] == "daily-v2"


def test_slug_clash_on_update_is_400(
    api: APIClient, organization: Organization, workflow: Workflow
) -> None:
    WorkflowFactory(organization=organization, slug="taken")

    response = api.patch(f"/api/v1/workflows/{workflow.id}", {"slug": "taken"}, format="json")

    assert response.status_code == 400
    assert errors(response) == [("slug", "unique")]


# --- delete --------------------------------------------------------------------


def test_delete_is_soft_and_hides_the_workflow(
    api: APIClient, organization: Organization, workflow: Workflow
) -> None:
    call = CallFactory(organization=organization, workflow=workflow)

    response = api.delete(f"/api/v1/workflows/{workflow.id}")

    assert response.status_code == 204
    workflow.refresh_from_db()
    assert workflow.deleted_at is not None
    assert api.get(f"/api/v1/workflows/{workflow.id}").status_code == 404
    assert api.delete(f"/api/v1/workflows/{workflow.id}").status_code == 404
    assert (
        api.patch(f"/api/v1/workflows/{workflow.id}", {"name": "x"}, format="json").status_code
        == 404
    )
    assert api.get("/api/v1/workflows").json()["total"] == 0
    # the call and its version are untouched
    assert Call.objects.get(pk=call.pk).workflow_version_id == workflow.current_version_id


def test_a_deleted_workflows_slug_is_free_again(api: APIClient, workflow: Workflow) -> None:
    api.delete(f"/api/v1/workflows/{workflow.id}")

    response = api.post("/api/v1/workflows", body(slug="daily-call"), format="json")

    assert response.status_code == 201
    assert response.json()["id"] != str(workflow.id)


def test_a_deleted_workflow_cannot_start_calls(api: APIClient, workflow: Workflow) -> None:
    api.delete(f"/api/v1/workflows/{workflow.id}")

    response = api.post("/api/v1/calls", {"workflow_slug": "daily-call"}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "workflow_slug"


def test_a_workflow_an_inbound_number_reaches_is_not_deleted(
    api: APIClient, organization: Organization, workflow: Workflow, fake_livekit
) -> None:
    """Deleted, the number's callers would be dropped while the number still listed the
    slug, even once a new workflow took that slug: the number is moved or deleted first."""
    number = PhoneNumberFactory(trunk=inbound_trunk(organization), workflow=workflow)

    response = api.delete(f"/api/v1/workflows/{workflow.id}")

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "workflow_in_use"
    workflow.refresh_from_db()
    assert workflow.deleted_at is None
    number.delete()
    assert api.delete(f"/api/v1/workflows/{workflow.id}").status_code == 204


# --- tenancy and auth -----------------------------------------------------------


def test_slug_is_unique_per_organization_only(
    api: APIClient, outsider_api: APIClient, workflow: Workflow
) -> None:
    assert api.post("/api/v1/workflows", body(slug="daily-call"), format="json").status_code == 400
    assert (
        outsider_api.post("/api/v1/workflows", body(slug="daily-call"), format="json").status_code
        == 201
    )


def test_duplicate_slug_is_400_naming_slug(api: APIClient, workflow: Workflow) -> None:
    response = api.post("/api/v1/workflows", body(slug="daily-call"), format="json")

    assert response.status_code == 400
    assert errors(response) == [("slug", "unique")]
    assert Workflow.objects.count() == 1


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("put", ""),
        ("patch", ""),
        ("delete", ""),
        ("get", "/versions"),
    ],
)
def test_another_organizations_workflow_is_404(
    api: APIClient, outsider_workflow: Workflow, method: str, suffix: str
) -> None:
    response = getattr(api, method)(
        f"/api/v1/workflows/{outsider_workflow.id}{suffix}", body(), format="json"
    )

    assert response.status_code == 404
    outsider_workflow.refresh_from_db()
    assert outsider_workflow.deleted_at is None
    assert outsider_workflow.versions.count() == 1


def test_another_organizations_workflows_are_not_listed(
    api: APIClient, outsider_workflow: Workflow
) -> None:
    assert api.get("/api/v1/workflows").json()["total"] == 0
    assert api.get("/api/v1/workflows", {"slug": "daily-call"}).json()["total"] == 0


def test_unknown_id_is_404(api: APIClient) -> None:
    assert api.get(f"/api/v1/workflows/{uuid.uuid4()}").status_code == 404
    assert api.get("/api/v1/workflows/not-a-uuid").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/workflows"),
        ("post", "/api/v1/workflows"),
        ("get", f"/api/v1/workflows/{ANY_ID}"),
        ("put", f"/api/v1/workflows/{ANY_ID}"),
        ("patch", f"/api/v1/workflows/{ANY_ID}"),
        ("delete", f"/api/v1/workflows/{ANY_ID}"),
        ("get", f"/api/v1/workflows/{ANY_ID}/versions"),
    ],
)
def test_agent_keys_are_403_and_no_key_is_401(
    agent_api: APIClient, anonymous_api: APIClient, method: str, path: str
) -> None:
    assert getattr(agent_api, method)(path, {}, format="json").status_code == 403
    response = getattr(anonymous_api, method)(path, {}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_trailing_slash_is_not_a_path(api: APIClient) -> None:
    assert api.get("/api/v1/workflows/").status_code == 404


# --- validation -------------------------------------------------------------------


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


# --- concurrency (PostgreSQL) ---------------------------------------------------------


def _race(client_key: str, count: int, request: Any) -> list[int]:
    from django.db import connection

    from tests.conftest import bearer_client

    statuses: list[int] = []
    barrier = threading.Barrier(count)

    def attempt(index: int) -> None:
        client = bearer_client(client_key)
        barrier.wait()
        try:
            statuses.append(request(client, index).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_edits_each_get_their_own_version(client_key: str, workflow: Workflow) -> None:
    def edit(client: APIClient, index: int) -> Any:
        return client.patch(
            f"/api/v1/workflows/{workflow.id}",
            {"settings": {"max_duration_seconds": 100 + index}},
            format="json",
        )

    statuses = _race(client_key, 6, edit)

    assert statuses == [200] * 6
    assert sorted(workflow.versions.values_list("number", flat=True)) == [1, 2, 3, 4, 5, 6, 7]
    workflow.refresh_from_db()
    assert workflow.current_version.number == 7


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_with_one_slug_make_one_workflow(
    client_key: str, organization: Organization
) -> None:
    def create(client: APIClient, index: int) -> Any:
        return client.post("/api/v1/workflows", body(), format="json")

    statuses = _race(client_key, 6, create)

    assert sorted(statuses) == [201] + [400] * 5
    assert Workflow.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_patches_of_different_fields_keep_both(
    client_key: str, workflow: Workflow
) -> None:
    changes = [
        {"name": "Renamed"},
        {"settings": {"max_duration_seconds": 300}},
        {"settings": {"connect_timeout_seconds": 30}},
        {"start_agent": "meal-agent"},
    ]

    def patch(client: APIClient, index: int) -> Any:
        return client.patch(f"/api/v1/workflows/{workflow.id}", changes[index], format="json")

    statuses = _race(client_key, len(changes), patch)

    assert statuses == [200] * len(changes)
    workflow.refresh_from_db()
    assert workflow.name == "Renamed"
    assert workflow.current_version.start_agent == "meal-agent"
    assert workflow.current_version.settings == {
        **DEFAULT_SETTINGS,
        "connect_timeout_seconds": 30,
        "max_duration_seconds": 300,
    }


@pytest.mark.parametrize(
    "instructions",
    [
        "{% macro greet(name, name) %}Hi {{ name }}{% endmacro %}",
        "{{ user.get('name', default='x', default='y') }}",
        "{{ " + "9" * 4500 + " }}",
        "{% for a in [1] %}" * 21 + "x" + "{% endfor %}" * 21,
        "{{ " + "(" * 90 + "1" + ")" * 90 + " }}",
        "{{ user" + ".a" * 300 + " }}",
    ],
    ids=[
        "macro-repeated-argument",
        "repeated-keyword",
        "long-number",
        "nested-for",
        "parens",
        "attrs",
    ],
)
def test_a_template_python_cannot_compile_is_a_400_naming_it(
    api: APIClient, instructions: str
) -> None:
    """Jinja compiles a template to Python: what Python refuses was a 500."""
    data = body()
    data["agents"][0]["instructions"] = instructions
    api.raise_request_exception = False

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == ["agents.0.instructions"]


def test_an_analysis_prompt_python_cannot_compile_is_a_400_naming_it(api: APIClient) -> None:
    data = body(analysis={"summary_prompt": "{% macro s(a, a) %}{% endmacro %}Summarize."})
    api.raise_request_exception = False

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == ["analysis.summary_prompt"]


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


def _every_template(data: dict, template: Callable[[str, int], str]) -> dict:
    """`data` with twenty agents, and each prompt template a workflow has made by
    `template(name, max_length)`: `name` a variable of its own, so no two are alike."""
    agent = data["agents"][1]
    data["agents"] = [
        {
            **copy.deepcopy(agent),
            "name": f"agent-{i}",
            "instructions": template(f"i{i}", 20_000),
            "greeting": template(f"g{i}", 2_000),
        }
        for i in range(20)
    ]
    data["start_agent"] = "agent-0"
    data["analysis"] = {"summary_prompt": template("s", 8_000)}
    data["settings"] = {"voicemail": {"action": "leave_message", "message": template("v", 2_000)}}
    return data


class _TooSlow(BaseException):
    """Raised by the alarm; a BaseException, so no `except Exception` holds it."""


def _within_seconds(seconds: float, request: Any) -> Any:
    import signal

    def too_slow(signum: int, frame: object) -> None:
        raise _TooSlow()

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return request()
    except _TooSlow:
        pytest.fail(f"the request was still running after {seconds} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_workflow_of_templates_too_complex_to_compile_is_a_400_at_once(api: APIClient) -> None:
    """Filter chains a hundred deep, as many as each template's length limit allows,
    compiled for many minutes before anything answered."""

    def chains(name: str, max_length: int) -> str:
        chain = "{{ " + name + "|e" * 100 + " }}"
        return chain * (max_length // len(chain))

    data = _every_template(body(), chains)
    data["agents"] = data["agents"][:4]  # ten templates, each counting 500: the budget

    response = _within_seconds(10, lambda: api.post("/api/v1/workflows", data, format="json"))

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {e["attr"] for e in errors} == {
        *(f"agents.{i}.{field}" for i in range(4) for field in ("instructions", "greeting")),
        "analysis.summary_prompt",
        "settings.voicemail.message",
    }
    assert {e["code"] for e in errors} == {"template_syntax_error"}
    first = next(e for e in errors if e["attr"] == "agents.0.instructions")
    assert first["detail"].startswith(
        "Agent 'agent-0' instructions: Template too complex: more than 500 tokens"
    )
    assert Workflow.objects.count() == 0


def _widest(name: str, max_length: int) -> str:
    """A comparison chain at the token bound (each operand compiles to a costed filter
    call): the slowest valid template found."""
    from workflows.prompts import MAX_TEMPLATE_TOKENS

    source = "{{ " + name + f" < {name}" * ((MAX_TEMPLATE_TOKENS - 3) // 2) + " }}"
    assert len(source) <= max_length
    return source


def _widest_first(count: int) -> Callable[[str, int], str]:
    """The first `count` templates `_every_template` makes at the bound, the rest small."""
    made = iter(range(10_000))

    def template(name: str, max_length: int) -> str:
        return _widest(name, max_length) if next(made) < count else "{{ " + name + " }}"

    return template


def test_the_slowest_workflow_to_compile_that_is_valid_is_saved_in_seconds(
    api: APIClient,
) -> None:
    """As many templates at the token bound as the workflow's budget holds (5,000 tokens:
    nine, with the rest small); the alarm is far above what it takes, and far below
    what templates took before they were bounded."""
    data = _every_template(body(), _widest_first(9))

    response = _within_seconds(10, lambda: api.post("/api/v1/workflows", data, format="json"))

    assert response.status_code == 201, response.json()


def test_templates_past_the_workflows_budget_together_are_a_400_before_any_compiles(
    api: APIClient,
) -> None:
    """Each template within its own bound, forty-two of them compiled for about a
    second on every write: a hostile organization kept a core busy at its write rate."""
    data = _every_template(body(), _widest)

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "attr": "agents",
            "code": "template_syntax_error",
            "detail": "Templates too complex together: more than 5,000 tokens in all (the "
            "agents' instructions and greetings, the voicemail message and the analysis "
            "prompt; each counts as it does against its own bound).",
        }
    ]
    assert Workflow.objects.count() == 0


def test_a_patch_that_takes_the_templates_past_the_budget_is_a_400_and_changes_nothing(
    api: APIClient,
) -> None:
    data = _every_template(body(), _widest_first(9))
    created = api.post("/api/v1/workflows", data, format="json")
    assert created.status_code == 201, created.json()
    workflow_id = created.json()["id"]
    agents = created.json()["agents"]
    agents[19]["instructions"] = _widest("x", 20_000)

    response = api.patch(f"/api/v1/workflows/{workflow_id}", {"agents": agents}, format="json")

    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == ["agents"]
    assert WorkflowVersion.objects.filter(workflow_id=workflow_id).count() == 1


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
