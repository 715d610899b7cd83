from __future__ import annotations

import copy
import threading
import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Organization
from calls.models import Call
from tests.factories import CallFactory, PhoneNumberFactory, WorkflowFactory
from tests.phone import inbound_trunk
from workflows.models import Workflow, WorkflowVersion
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
