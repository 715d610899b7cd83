"""Pages of a filtered list, however they are read (per-status counts, a started_*
window bounded by creation times), cover every matching call once, newest first."""

from __future__ import annotations

import dataclasses
import datetime
import importlib

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.http import QueryDict
from rest_framework.test import APIClient

from calls.filters import CallFilter
from calls.lifecycle import call_transition
from calls.models import MAX_START_DELAY, Call, CallStatus
from calls.services import call_insert
from telephony.dialing import phone_call_build
from tests.factories import CallFactory, WorkflowFactory
from workflows.selectors import workflow_call_target
from workflows.settings import CONNECT_TIMEOUT_BOUNDS, DIAL_DEADLINE_BOUNDS, RING_TIMEOUT_BOUNDS

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"status": "completed"},
        {"started_after": "2026-01-01T00:00:00Z", "started_before": "2026-01-02T00:00:00Z"},
        {"status": "completed", "started_after": "2026-01-01T00:00:00Z"},
    ],
)
def test_pages_cover_the_matching_calls_once_newest_first(
    api: APIClient, organization, query: dict
) -> None:
    t = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC)
    # Every call starts within its start delay of creation (DESIGN.md "Call lifecycle"),
    # some seconds after it, others never.
    calls = [
        CallFactory(
            organization=organization,
            completed=i % 3 != 0,
            status=CallStatus.COMPLETED if i % 3 != 0 else CallStatus.CONNECTING,
            started_at=t + datetime.timedelta(hours=i // 2) if i % 3 != 0 else None,
            created_at=t + datetime.timedelta(hours=i // 2, seconds=-2 * i),
        )
        for i in range(30)
    ]
    after = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    expected = [
        call
        for call in sorted(calls, key=lambda c: (c.created_at, c.id), reverse=True)
        if ("status" not in query or call.status == query["status"])
        and ("started_after" not in query or (call.started_at and call.started_at >= after))
        and (
            "started_before" not in query
            or (call.started_at and call.started_at < after + datetime.timedelta(days=1))
        )
    ]

    seen = []
    for page in (1, 2, 3, 4):
        body = api.get("/api/v1/calls", {**query, "page": page, "page_size": 4}).json()
        assert body["total"] == len(expected)
        seen += [item["id"] for item in body["items"]]

    assert seen == [str(call.id) for call in expected[:16]]


def test_a_started_window_finds_calls_created_up_to_the_longest_start_delay_before_it(
    api: APIClient, organization
) -> None:
    after = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    before = after + datetime.timedelta(hours=1)
    waited_longest = CallFactory(
        organization=organization,
        completed=True,
        connect_timeout_seconds=int(MAX_START_DELAY.total_seconds()),
        created_at=after - MAX_START_DELAY,
        started_at=after,
    )
    last = CallFactory(
        organization=organization,
        completed=True,
        created_at=before - datetime.timedelta(seconds=1),
        started_at=before - datetime.timedelta(microseconds=1),
    )
    CallFactory(organization=organization, completed=True, created_at=before, started_at=before)

    body = api.get("/api/v1/calls", {"started_after": after, "started_before": before}).json()

    assert [item["id"] for item in body["items"]] == [str(last.id), str(waited_longest.id)]
    assert body["total"] == 2


def test_a_window_started_after_year_one_lists_every_started_call(
    api: APIClient, organization
) -> None:
    """Year 1 less the longest start delay is no date: the window bounds no creation."""
    call = CallFactory(organization=organization, completed=True)

    body = api.get("/api/v1/calls", {"started_after": "0001-01-01T00:00:00Z"}).json()

    assert [item["id"] for item in body["items"]] == [str(call.id)]


def test_a_started_window_finds_a_phone_call_that_started_at_the_end_of_its_longest_wait(
    api: APIClient, organization
) -> None:
    # A phone call may wait its dial deadline, then ring, before it starts: at their
    # largest, longer than a web call's longest connect timeout.
    workflow = WorkflowFactory(organization=organization)
    target = dataclasses.replace(
        workflow_call_target(organization=organization, slug=workflow.slug),
        connect_timeout_seconds=CONNECT_TIMEOUT_BOUNDS[1],
        dial_deadline_seconds=DIAL_DEADLINE_BOUNDS[1],
        ring_timeout_seconds=RING_TIMEOUT_BOUNDS[1],
    )
    call = phone_call_build(
        organization=organization,
        target=target,
        phone_number="+14155550123",
        from_number="+14155550100",
        sip_trunk_id=None,
    )
    call_insert(call=call)
    started = call.created_at + datetime.timedelta(seconds=call.connect_timeout_seconds)
    call_transition(call_id=call.id, to_status=CallStatus.CONNECTING, at=call.created_at)
    assert call_transition(call_id=call.id, to_status=CallStatus.ACTIVE, at=started)

    body = api.get("/api/v1/calls", {"started_after": started}).json()

    assert [item["id"] for item in body["items"]] == [str(call.id)]
    assert call.connect_timeout_seconds <= MAX_START_DELAY.total_seconds()


def test_the_migration_moves_a_start_stamped_before_creation_to_the_creation(organization):
    clamp = importlib.import_module("calls.migrations.0009_started_at_not_before_created_at")
    t = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    skewed = CallFactory(organization=organization, completed=True, created_at=t, started_at=t)
    fine = CallFactory(organization=organization, completed=True, created_at=t, started_at=t)
    Call.objects.filter(pk=skewed.pk).update(started_at=t - datetime.timedelta(seconds=2))
    Call.objects.filter(pk=fine.pk).update(started_at=t + datetime.timedelta(seconds=5))

    clamp.started_at_clamp(django_apps, None)

    assert Call.objects.get(pk=skewed.pk).started_at == t
    assert Call.objects.get(pk=fine.pk).started_at == t + datetime.timedelta(seconds=5)


def test_each_request_filters_with_its_own_copies_of_the_filters() -> None:
    first = CallFilter(QueryDict("status=failed"))
    second = CallFilter(QueryDict("status=completed"))

    for name, base in CallFilter.base_filters.items():
        assert first.filters[name] is not base and second.filters[name] is not first.filters[name]
        assert (first.filters[name].parent, second.filters[name].parent) == (first, second)
        assert getattr(base, "parent", None) is None


@pytest.mark.postgres
def test_on_postgresql_a_list_asked_again_with_other_values_is_prepared_not_planned_again(
    api: APIClient, organization
) -> None:
    """The page and the count are the same statement for every request with the same
    filters, so PostgreSQL prepares them (voicecalls/db.py) instead of planning each;
    but a started_* window is planned for its own times, whose best plan its size sets."""
    for i in range(22):
        CallFactory(organization=organization, user_id="many" if i < 21 else "one")

    for _ in range(6):
        # A full first page of "many" is counted; "one"'s first page is its own total.
        assert api.get("/api/v1/calls", {"user_id": "many"}).json()["total"] == 21
        assert api.get("/api/v1/calls", {"user_id": "one", "page_size": 5}).json()["total"] == 1
        window = {"started_before": "2100-01-01T00:00:00Z", "page_size": 5}
        assert api.get("/api/v1/calls", window).json()["total"] == 0

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    assert any(s.startswith("SELECT count(*) FROM (SELECT") for s in prepared)
    assert any(s.startswith('SELECT "id", "workflow_id"') and "LIMIT $" in s for s in prepared)
    assert not [s for s in prepared if '"calls_call"."started_at" < $' in s]
