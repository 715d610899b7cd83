"""Per-organization limits: concurrent calls (429 with `meta`), create throttling
(429 with Retry-After), and `GET /api/v1/usage`."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Organization
from accounts.services import api_key_create
from calls.lifecycle import call_transition
from calls.models import Call, CallStatus
from tests.conftest import bearer_client
from tests.factories import CallFactory, OrganizationFactory
from workflows.models import Workflow, WorkflowVersion

CALLS = "/api/v1/calls"
USAGE = "/api/v1/usage"


def _limit_body(active_calls: int, concurrency_limit: int) -> dict:
    return {
        "type": "client_error",
        "errors": [
            {
                "code": "concurrency_limit_reached",
                "detail": "Your organization has as many calls in progress as it may; end "
                "one or wait for one to end.",
                "attr": None,
            }
        ],
        "meta": {"active_calls": active_calls, "concurrency_limit": concurrency_limit},
    }


# --- Concurrent calls -------------------------------------------------------------------


def test_it_refuses_a_call_over_the_concurrency_limit(api, workflow, settings):
    settings.CALLS_CONCURRENCY_LIMIT = 2
    for _ in range(2):
        assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 201

    response = api.post(CALLS, {"workflow_slug": "daily-call"})

    assert response.status_code == 429
    assert response.json() == _limit_body(active_calls=2, concurrency_limit=2)
    assert response["Retry-After"] == "5"
    assert Call.objects.count() == 2


def test_the_organization_override_replaces_the_default_limit(api, workflow, settings):
    settings.CALLS_CONCURRENCY_LIMIT = 100
    Organization.objects.filter(pk=workflow.organization_id).update(concurrency_limit=1)
    assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 201

    response = api.post(CALLS, {"workflow_slug": "daily-call"})

    assert response.status_code == 429
    assert response.json()["meta"] == {"active_calls": 1, "concurrency_limit": 1}


def test_exempt_organizations_have_no_concurrency_limit(api, workflow, settings):
    settings.CALLS_CONCURRENCY_LIMIT = 1
    settings.CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS = [workflow.organization.slug]

    statuses = [api.post(CALLS, {"workflow_slug": "daily-call"}).status_code for _ in range(3)]

    assert statuses == [201, 201, 201]
    assert Call.objects.count() == 3


@pytest.mark.parametrize("status", [CallStatus.PENDING, CallStatus.CONNECTING, CallStatus.ACTIVE])
def test_every_call_not_yet_ended_counts(api, workflow, settings, status):
    settings.CALLS_CONCURRENCY_LIMIT = 1
    CallFactory(organization=workflow.organization, workflow=workflow, status=status)

    assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 429


def test_ended_calls_and_other_organizations_calls_free_the_slot(
    api, workflow, outsider_workflow, settings
):
    settings.CALLS_CONCURRENCY_LIMIT = 1
    CallFactory(organization=workflow.organization, workflow=workflow, completed=True)
    CallFactory(organization=outsider_workflow.organization, workflow=outsider_workflow)

    assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 201


def test_a_refused_idempotent_request_can_be_retried_with_its_key(api, workflow, settings):
    settings.CALLS_CONCURRENCY_LIMIT = 1
    busy = CallFactory(organization=workflow.organization, workflow=workflow)
    headers = {"HTTP_IDEMPOTENCY_KEY": "retry-me"}
    body = {"workflow_slug": "daily-call"}
    assert api.post(CALLS, body, **headers).status_code == 429

    call_transition(call_id=busy.pk, to_status=CallStatus.COMPLETED, end_reason="user_hangup")

    assert api.post(CALLS, body, **headers).status_code == 201


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_at_the_limit_end_with_exactly_the_limit(
    client_key: str, organization: Organization, settings
) -> None:
    """Without the lock on the organization's row, every request counts the same open
    calls before any commits, and all of them get through."""
    from workflows.services import workflow_demo_load

    workflow_demo_load(organization=organization)
    settings.CALLS_CONCURRENCY_LIMIT = 3
    threads_count = 10
    barrier = threading.Barrier(threads_count)
    statuses: list[int] = []
    bodies: list[dict] = []

    def create() -> None:
        client = APIClient(raise_request_exception=False)  # a 500 is a status here
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {client_key}")
        try:
            barrier.wait(timeout=10)
            response = client.post(CALLS, {"workflow_slug": "daily-call"}, format="json")
            statuses.append(response.status_code)
            bodies.append(response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [201] * 3 + [429] * 7
    assert Call.objects.filter(organization=organization).count() == 3
    refused = [b for b in bodies if b.get("type") == "client_error"]
    assert {b["errors"][0]["code"] for b in refused} == {"concurrency_limit_reached"}
    assert all(b["meta"]["concurrency_limit"] == 3 for b in refused)


# --- Create throttling ------------------------------------------------------------------

PROVIDER_KEY = {"provider_type": "stt", "provider_name": "deepgram", "api_key": "dg_secret_1"}


def _workflow_body(slug: str) -> dict:
    agent = {
        "name": "solo",
        "instructions": "Talk.",
        "stt": {"provider": "deepgram", "model": "nova-3"},
        "llm": {"provider": "openai", "model": "gpt-4o-mini"},
        "tts": {"provider": "cartesia", "model": "sonic-2"},
    }
    return {"slug": slug, "name": slug, "start_agent": "solo", "agents": [agent]}


@pytest.fixture
def two_per_minute(settings):
    settings.API_CREATE_RATE = "2/minute"
    settings.CALLS_CONCURRENCY_LIMIT = 100


@pytest.mark.parametrize(
    ("url", "make_body"),
    [
        (CALLS, lambda i: {"workflow_slug": "daily-call"}),
        ("/api/v1/provider-keys", lambda i: PROVIDER_KEY),
        ("/api/v1/workflows", lambda i: _workflow_body(f"flow-{i}")),
    ],
)
def test_create_requests_over_the_rate_are_429_with_retry_after(
    api, workflow, two_per_minute, url, make_body
):
    for i in range(2):
        assert api.post(url, make_body(i)).status_code == 201

    response = api.post(url, make_body(2))

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    body = response.json()
    assert body["type"] == "client_error"
    assert [(e["code"], e["attr"]) for e in body["errors"]] == [("throttled", None)]


def test_a_retry_of_a_create_that_was_done_gets_its_answer_even_over_the_rate(
    api, workflow, two_per_minute
):
    """It creates nothing: the client lost the first answer and asks again."""
    body = {"workflow_slug": "daily-call"}
    first = api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    api.post(CALLS, body, format="json")

    retry = api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    new_key = api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    assert (retry.status_code, retry.json()) == (201, first.json())
    assert new_key.status_code == 429
    assert Call.objects.count() == 2


def test_a_retry_of_a_create_that_was_done_under_the_rate_uses_up_no_create(
    api, workflow, two_per_minute
):
    """Counted while under the rate, one retry took the slot of the next real call."""
    body = {"workflow_slug": "daily-call"}
    first = api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    retries = [api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1") for _ in range(3)]

    second = api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    third = api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-3")

    assert [(r.status_code, r.json()) for r in retries] == [(201, first.json())] * 3
    assert (second.status_code, third.status_code) == (201, 429)
    assert Call.objects.count() == 2


def test_a_calls_key_lifts_the_rate_off_nothing_else(api, workflow, two_per_minute):
    """Only POST /calls replays: a workflow create, or a call with another body,
    carrying a stored call's key would create something."""
    body = {"workflow_slug": "daily-call"}
    assert api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1").status_code == 201
    assert api.post(CALLS, body, format="json").status_code == 201

    flow = api.post("/api/v1/workflows", _workflow_body("flow"), HTTP_IDEMPOTENCY_KEY="k-1")
    other_body = api.post(
        CALLS, {**body, "user_id": "u-2"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert (flow.status_code, other_body.status_code) == (429, 429)


@pytest.mark.parametrize("key", ["k\x00-1", "k" * 256])
def test_a_create_over_the_rate_with_a_key_the_api_refuses_is_429_not_a_500(
    api, workflow, two_per_minute, key
):
    """The throttle looks a refused request's key up for a stored answer: a NUL in it
    was a 500 on PostgreSQL (text cannot hold it). No answer is stored under a key the
    API refuses, so it replays nothing."""
    body = {"workflow_slug": "daily-call"}
    for _ in range(2):
        assert api.post(CALLS, body, format="json").status_code == 201

    response = api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 429
    assert [e["code"] for e in response.json()["errors"]] == ["throttled"]
    assert Call.objects.count() == 2


def test_a_create_request_counts_against_the_rate_in_one_statement(
    api, workflow, two_per_minute, django_assert_num_queries
):
    # API key, the rate's upsert, workflow, then savepoint, open-call counter, insert,
    # release: nothing grows with the rate or with the calls already made.
    with django_assert_num_queries(7):
        assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 201


def test_the_rate_counts_all_create_endpoints_of_an_organization_together(
    api, workflow, two_per_minute
):
    assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 201
    assert api.post("/api/v1/provider-keys", PROVIDER_KEY).status_code == 201

    assert api.post("/api/v1/workflows", _workflow_body("third")).status_code == 429


def test_reads_and_actions_on_existing_objects_are_not_throttled(api, workflow, two_per_minute):
    for _ in range(2):
        assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 201
    call = Call.objects.first()

    assert api.get(CALLS).status_code == 200
    assert api.get(USAGE).status_code == 200
    assert api.post(f"{CALLS}/{call.pk}/token").status_code == 200


def test_one_organization_at_its_rate_does_not_throttle_another(
    api, outsider_api, workflow, outsider_workflow, two_per_minute
):
    for _ in range(2):
        api.post(CALLS, {"workflow_slug": "daily-call"})
    assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 429

    assert outsider_api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 201


def test_exempt_organizations_are_not_throttled(api, workflow, two_per_minute, settings):
    settings.THROTTLE_EXEMPT_ORGANIZATIONS = [workflow.organization.slug]

    statuses = {api.post(CALLS, {"workflow_slug": "daily-call"}).status_code for _ in range(4)}

    assert statuses == {201}


def test_agent_event_batches_are_not_throttled(agent_api, workflow, two_per_minute):
    call = CallFactory(organization=workflow.organization, workflow=workflow)
    now = timezone.now().isoformat()
    url = f"/api/v1/agent/calls/{call.pk}/events"
    for i in range(4):
        event = {
            "id": f"00000000-0000-4000-8000-00000000000{i}",
            "type": "metrics",
            "timestamp": now,
            "tokens": 1,
        }
        assert agent_api.post(url, {"events": [event]}, format="json").status_code == 200


# --- Workflow writes ----------------------------------------------------------------------
WORKFLOWS = "/api/v1/workflows"


@pytest.fixture
def two_writes_per_minute(settings):
    settings.API_WORKFLOW_WRITE_RATE = "2/minute"


def _workflow_write(api: APIClient, method: str, workflow, i: int):
    """A write that keeps a new version: a create, or a change of the given workflow."""
    if method == "post":
        return api.post(WORKFLOWS, _workflow_body(f"flow-{i}"))
    url = f"{WORKFLOWS}/{workflow.pk}"
    if method == "put":
        return api.put(url, {**_workflow_body("daily-call"), "name": f"Daily {i}"})
    return api.patch(url, {"name": f"Daily {i}"})


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_workflow_writes_over_their_rate_are_429_with_retry_after_and_keep_nothing(
    api, workflow, two_writes_per_minute, method
):
    """Each write keeps a new version of up to 1 MiB: the create rate (600 a minute)
    alone let one key store them without bound."""
    for i in range(2):
        assert _workflow_write(api, method, workflow, i).status_code in (200, 201)
    versions = WorkflowVersion.objects.count()

    response = _workflow_write(api, method, workflow, 2)

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    assert response.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "throttled",
                "detail": response.json()["errors"][0]["detail"],
                "attr": None,
            }
        ],
    }
    assert response.json()["errors"][0]["detail"].startswith("Request was throttled.")
    assert WorkflowVersion.objects.count() == versions


def test_workflow_reads_and_deletes_are_not_counted_as_writes(api, workflow, settings):
    settings.API_WORKFLOW_WRITE_RATE = "1/minute"
    url = f"{WORKFLOWS}/{workflow.pk}"
    for _ in range(3):
        assert api.get(WORKFLOWS).status_code == 200
        assert api.get(url).status_code == 200
        assert api.get(f"{url}/versions").status_code == 200
    assert api.post(WORKFLOWS, _workflow_body("spare")).status_code == 201
    spare = Workflow.objects.get(slug="spare")

    assert api.delete(f"{WORKFLOWS}/{spare.pk}").status_code == 204
    assert api.patch(url, {"name": "Daily"}).status_code == 429


def test_one_organizations_workflow_writes_do_not_throttle_anothers(
    api, outsider_api, workflow, outsider_workflow, settings
):
    settings.API_WORKFLOW_WRITE_RATE = "1/minute"
    assert api.post(WORKFLOWS, _workflow_body("mine")).status_code == 201
    assert api.post(WORKFLOWS, _workflow_body("mine-too")).status_code == 429

    assert outsider_api.post(WORKFLOWS, _workflow_body("theirs")).status_code == 201


def test_exempt_organizations_workflow_writes_are_not_throttled(api, workflow, settings):
    settings.API_WORKFLOW_WRITE_RATE = "1/minute"
    settings.THROTTLE_EXEMPT_ORGANIZATIONS = [workflow.organization.slug]

    statuses = {
        api.patch(f"{WORKFLOWS}/{workflow.pk}", {"name": f"D{i}"}).status_code for i in range(3)
    }

    assert statuses == {200}


def test_a_workflow_create_refused_by_the_write_rate_keeps_no_create_slot(api, workflow, settings):
    """Both rates count a workflow create; the one that refuses it leaves the other as
    it was, so the next call of the minute is not a 429."""
    settings.API_CREATE_RATE = "2/minute"
    settings.API_WORKFLOW_WRITE_RATE = "1/minute"
    assert api.post(WORKFLOWS, _workflow_body("first")).status_code == 201
    assert api.post(WORKFLOWS, _workflow_body("second")).status_code == 429

    assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 201
    assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 429


def test_a_workflow_create_refused_by_the_create_rate_is_not_counted_as_a_write(
    api, workflow, settings
):
    settings.API_CREATE_RATE = "1/minute"
    settings.API_WORKFLOW_WRITE_RATE = "2/minute"
    assert api.post(CALLS, {"workflow_slug": "daily-call"}).status_code == 201
    assert api.post(WORKFLOWS, _workflow_body("refused")).status_code == 429

    url = f"{WORKFLOWS}/{workflow.pk}"
    assert [api.patch(url, {"name": f"D{i}"}).status_code for i in range(3)] == [200, 200, 429]


def test_a_workflow_write_counts_against_its_rate_in_one_statement(api, workflow, settings):
    """The write rate's upsert is the only statement it adds to a PATCH."""
    url = f"{WORKFLOWS}/{workflow.pk}"
    settings.THROTTLE_EXEMPT_ORGANIZATIONS = [workflow.organization.slug]
    api.patch(url, {"name": "Warm"})  # (what the first request loads once)
    with CaptureQueriesContext(connection) as exempt:
        assert api.patch(url, {"name": "Exempt"}).status_code == 200
    settings.THROTTLE_EXEMPT_ORGANIZATIONS = []

    with CaptureQueriesContext(connection) as counted:
        assert api.patch(url, {"name": "Counted"}).status_code == 200

    assert len(counted.captured_queries) == len(exempt.captured_queries) + 1


# --- Usage ------------------------------------------------------------------------------


def test_usage_reports_open_calls_the_limit_and_todays_calls(
    api, workflow, outsider_workflow, settings, django_assert_num_queries
):
    settings.CALLS_CONCURRENCY_LIMIT = 7
    organization = workflow.organization
    CallFactory(organization=organization, workflow=workflow)  # connecting
    CallFactory(organization=organization, workflow=workflow, active=True)
    CallFactory(organization=organization, workflow=workflow, completed=True)
    yesterday = CallFactory(organization=organization, workflow=workflow, completed=True)
    Call.objects.filter(pk=yesterday.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=1, hours=1)
    )
    CallFactory(organization=outsider_workflow.organization, workflow=outsider_workflow)

    with django_assert_num_queries(3):  # the key, then two counts
        response = api.get(USAGE)

    assert response.status_code == 200
    assert response.json() == {"active_calls": 2, "concurrency_limit": 7, "calls_today": 3}


def test_usage_shows_the_organizations_own_limit(api, organization):
    Organization.objects.filter(pk=organization.pk).update(concurrency_limit=3)

    assert api.get(USAGE).json() == {"active_calls": 0, "concurrency_limit": 3, "calls_today": 0}


def test_usage_needs_a_client_key(anonymous_api, agent_api):
    assert anonymous_api.get(USAGE).status_code == 401
    assert agent_api.get(USAGE).status_code == 403


def test_a_new_organization_gets_the_platform_default(db, settings):
    settings.CALLS_CONCURRENCY_LIMIT = 42
    organization = OrganizationFactory()
    _, key = api_key_create(name="k", organization=organization)

    assert bearer_client(key).get(USAGE).json()["concurrency_limit"] == 42


@pytest.mark.parametrize("value", ["60", "60/", "sixty/minute", "60/week"])
@pytest.mark.parametrize("name", ["API_CREATE_RATE", "API_WORKFLOW_WRITE_RATE"])
def test_a_rate_setting_drf_cannot_read_stops_the_start_not_every_request(
    settings: object, name: str, value: str
) -> None:
    setattr(settings, name, value)

    with pytest.raises(ImproperlyConfigured, match=f"{name} must be"):
        apps.get_app_config("voicecalls").ready()
