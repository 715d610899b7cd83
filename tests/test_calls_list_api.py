"""The seed's Calls API, its lists: GET /calls (pages, filters, ordering) and GET
/calls/active; each shows one organization's calls, in constant queries."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from calls.models import CallStatus
from tests.factories import CallFactory, WorkflowFactory
from tests.test_calls_api import CALLS, iso
from workflows.models import Workflow

pytestmark = pytest.mark.django_db


# --- GET /calls ----------------------------------------------------------------------


def test_the_list_answers_the_seed_page_shape_newest_first(api: APIClient, organization) -> None:
    now = timezone.now()
    older = CallFactory(
        organization=organization, completed=True, created_at=now - datetime.timedelta(hours=1)
    )
    newer = CallFactory(organization=organization, created_at=now)

    response = api.get(CALLS)

    assert response.status_code == 200
    body = response.json()
    assert (body["total"], body["page"], body["page_size"], body["pages"]) == (2, 1, 20, 1)
    assert [item["id"] for item in body["items"]] == [str(newer.id), str(older.id)]
    assert body["items"][1] == {
        "id": str(older.id),
        "workflow_id": str(older.workflow_id),
        "workflow_slug": older.workflow_slug,
        "user_id": older.user_id,
        "status": "completed",
        "direction": "inbound",
        "channel": "web",
        "duration_seconds": 180,
        "agent_history": ["greeter-agent", "meal-agent"],
        "current_agent": None,
        "end_reason": "user_hangup",
        "started_at": iso(older.started_at),
        "ended_at": iso(older.ended_at),
        "created_at": iso(older.created_at),
    }


def test_calls_created_in_the_same_instant_are_ordered_by_id(api: APIClient, organization) -> None:
    moment = timezone.now()
    calls = CallFactory.create_batch(3, organization=organization, created_at=moment)

    ids = [item["id"] for item in api.get(CALLS).json()["items"]]

    assert ids == sorted((str(c.id) for c in calls), reverse=True)


def test_the_list_never_shows_another_organizations_calls(
    api: APIClient, organization, outsider_workflow: Workflow
) -> None:
    CallFactory(organization=outsider_workflow.organization, workflow=outsider_workflow)
    mine = CallFactory(organization=organization)

    body = api.get(CALLS).json()

    assert [item["id"] for item in body["items"]] == [str(mine.id)]
    assert body["total"] == 1


@pytest.mark.parametrize(
    ("count", "page", "page_size", "expected_items", "pages"),
    [
        (0, 1, 20, 0, 0),
        (1, 1, 20, 1, 1),
        (20, 1, 20, 20, 1),
        (21, 1, 20, 20, 2),
        (21, 2, 20, 1, 2),
        (21, 3, 20, 0, 2),  # past the end: empty page, true total
        (5, 2, 2, 2, 3),
        (5, 3, 2, 1, 3),
        (7, 1, 100, 7, 1),
        (3, 999999, 1, 0, 3),
    ],
)
def test_pages_follow_ceil_total_over_page_size(
    api: APIClient,
    organization,
    count: int,
    page: int,
    page_size: int,
    expected_items: int,
    pages: int,
) -> None:
    CallFactory.create_batch(count, organization=organization)

    body = api.get(CALLS, {"page": page, "page_size": page_size}).json()

    assert len(body["items"]) == expected_items
    assert (body["total"], body["page"], body["page_size"], body["pages"]) == (
        count,
        page,
        page_size,
        pages,
    )


def test_pages_do_not_overlap_and_cover_every_call(api: APIClient, organization) -> None:
    calls = CallFactory.create_batch(7, organization=organization)

    seen = []
    for page in (1, 2, 3):
        seen += [i["id"] for i in api.get(CALLS, {"page": page, "page_size": 3}).json()["items"]]

    assert sorted(seen) == sorted(str(c.id) for c in calls)


@pytest.mark.parametrize(
    ("params", "attr"),
    [
        ({"page": 0}, "page"),
        ({"page": -1}, "page"),
        ({"page": "one"}, "page"),
        ({"page": "1.5"}, "page"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"page_size": 1000}, "page_size"),
        ({"page_size": "many"}, "page_size"),
        ({"status": "ringing"}, "status"),
        ({"status": "active,ringing"}, "status"),
        ({"workflow_id": "not-a-uuid"}, "workflow_id"),
        ({"started_after": "yesterday"}, "started_after"),
        ({"started_before": "2026-13-45T99:00:00Z"}, "started_before"),
        ({"user_id": "u" * 256}, "user_id"),
    ],
)
def test_invalid_list_parameters_are_400_naming_the_parameter(
    api: APIClient, organization, params: dict, attr: str
) -> None:
    response = api.get(CALLS, params)

    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "validation_error"
    assert [e["attr"] for e in body["errors"]] == [attr]


def test_status_filter_takes_one_value(api: APIClient, organization) -> None:
    active = CallFactory(organization=organization, active=True)
    CallFactory(organization=organization, completed=True)

    body = api.get(CALLS, {"status": "active"}).json()

    assert [i["id"] for i in body["items"]] == [str(active.id)]
    assert body["total"] == 1


def test_status_filter_takes_several_comma_separated(api: APIClient, organization) -> None:
    active = CallFactory(organization=organization, active=True)
    completed = CallFactory(organization=organization, completed=True)
    CallFactory(organization=organization, status=CallStatus.FAILED)

    body = api.get(CALLS, {"status": "active,completed"}).json()

    assert {i["id"] for i in body["items"]} == {str(active.id), str(completed.id)}


def test_workflow_filter_uses_the_stable_workflow_id(
    api: APIClient, organization, workflow
) -> None:
    other = WorkflowFactory(organization=organization)
    mine = CallFactory(organization=organization, workflow=workflow)
    CallFactory(organization=organization, workflow=other)

    body = api.get(CALLS, {"workflow_id": str(workflow.id)}).json()

    assert [i["id"] for i in body["items"]] == [str(mine.id)]


def test_user_filter_matches_exactly(api: APIClient, organization) -> None:
    mine = CallFactory(organization=organization, user_id="user-123")
    CallFactory(organization=organization, user_id="user-1234")

    body = api.get(CALLS, {"user_id": "user-123"}).json()

    assert [i["id"] for i in body["items"]] == [str(mine.id)]


def test_started_after_is_inclusive_and_started_before_exclusive(
    api: APIClient, organization
) -> None:
    t = datetime.datetime(2026, 1, 17, 10, 30, tzinfo=datetime.UTC)

    def started(at: datetime.datetime):
        # A call starts within its start delay of its creation (DESIGN.md).
        return CallFactory(
            organization=organization,
            completed=True,
            created_at=at - datetime.timedelta(seconds=5),
            started_at=at,
        )

    at_start = started(t)
    inside = started(t + datetime.timedelta(minutes=30))
    started(t + datetime.timedelta(hours=1))
    started(t - datetime.timedelta(seconds=1))
    CallFactory(organization=organization, created_at=t)  # never started: outside any range

    body = api.get(
        CALLS,
        {"started_after": "2026-01-17T10:30:00Z", "started_before": "2026-01-17T12:30:00+01:00"},
    ).json()

    assert {i["id"] for i in body["items"]} == {str(at_start.id), str(inside.id)}
    assert body["total"] == 2


def test_filters_combine(api: APIClient, organization, workflow) -> None:
    t = datetime.datetime(2026, 1, 17, 10, 30, tzinfo=datetime.UTC)
    match = CallFactory(
        organization=organization, workflow=workflow, user_id="u1", completed=True, started_at=t
    )
    CallFactory(
        organization=organization, workflow=workflow, user_id="u2", completed=True, started_at=t
    )
    CallFactory(
        organization=organization, workflow=workflow, user_id="u1", active=True, started_at=t
    )
    CallFactory(
        organization=organization,
        workflow=workflow,
        user_id="u1",
        completed=True,
        started_at=t - datetime.timedelta(days=2),
    )

    body = api.get(
        CALLS,
        {
            "status": "completed",
            "workflow_id": str(workflow.id),
            "user_id": "u1",
            "started_after": "2026-01-17T00:00:00Z",
        },
    ).json()

    assert [i["id"] for i in body["items"]] == [str(match.id)]


def test_listing_costs_constant_queries(
    api: APIClient, organization, django_assert_num_queries
) -> None:
    CallFactory.create_batch(25, organization=organization, completed=True)

    with django_assert_num_queries(3):  # API key + count + page
        body = api.get(CALLS, {"page_size": 25}).json()
    assert len(body["items"]) == 25


# --- GET /calls/active ---------------------------------------------------------------


def test_active_lists_calls_not_yet_ended_newest_first(api: APIClient, organization) -> None:
    now = timezone.now()
    pending = CallFactory(organization=organization, status=CallStatus.PENDING, created_at=now)
    active = CallFactory(
        organization=organization,
        active=True,
        current_agent="meal-agent",
        user_id="user-456",
        created_at=now - datetime.timedelta(minutes=1),
    )
    connecting = CallFactory(
        organization=organization, created_at=now - datetime.timedelta(minutes=2)
    )
    for status in ("completed", "failed", "disconnected", "timeout"):
        CallFactory(organization=organization, status=status)

    response = api.get(f"{CALLS}/active")

    assert response.status_code == 200
    body = response.json()
    assert [c["id"] for c in body] == [str(pending.id), str(active.id), str(connecting.id)]
    assert body[1] == {
        "id": str(active.id),
        "workflow_id": str(active.workflow_id),
        "workflow_slug": active.workflow_slug,
        "user_id": "user-456",
        "status": "active",
        "direction": "inbound",
        "channel": "web",
        "current_agent": "meal-agent",
        "started_at": iso(active.started_at),
        "created_at": iso(active.created_at),
    }


def test_active_limit_defaults_to_50(api: APIClient, organization) -> None:
    CallFactory.create_batch(51, organization=organization)

    assert len(api.get(f"{CALLS}/active").json()) == 50


def test_active_limit_caps_the_list(api: APIClient, organization) -> None:
    CallFactory.create_batch(3, organization=organization)

    assert len(api.get(f"{CALLS}/active", {"limit": 2}).json()) == 2


@pytest.mark.parametrize("limit", [0, -5, 101, 1000, "ten"])
def test_active_limit_out_of_bounds_is_400(api: APIClient, limit: object) -> None:
    response = api.get(f"{CALLS}/active", {"limit": limit})

    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == ["limit"]


def test_active_never_shows_another_organizations_calls(
    api: APIClient, outsider_workflow: Workflow
) -> None:
    CallFactory(organization=outsider_workflow.organization, workflow=outsider_workflow)

    assert api.get(f"{CALLS}/active").json() == []


def test_active_costs_constant_queries(
    api: APIClient, organization, django_assert_num_queries
) -> None:
    CallFactory.create_batch(20, organization=organization, active=True)

    with django_assert_num_queries(2):  # API key + calls
        assert len(api.get(f"{CALLS}/active").json()) == 20
