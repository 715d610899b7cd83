"""Per-status call counts kept by a PostgreSQL trigger answer the list's `total`;
they must equal `count(*)` after any write, however it is made."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Organization
from calls.models import Call, CallCount, CallStatus
from tests.factories import CallFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def counted(organization: Organization) -> dict[str, int]:
    rows = (
        CallCount.objects.filter(organization=organization)
        .values("status")
        .annotate(n=Sum("count"))
        .values_list("status", "n")
    )
    return {status: n for status, n in rows if n}


def actual(organization: Organization) -> dict[str, int]:
    rows = Call.objects.filter(organization=organization).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def test_counts_follow_inserts_status_changes_and_deletes(organization, outsider) -> None:
    CallFactory.create_batch(3, organization=organization)
    CallFactory(organization=organization, completed=True)
    CallFactory(organization=outsider, active=True)

    Call.objects.filter(organization=organization, status=CallStatus.CONNECTING).update(
        status=CallStatus.ACTIVE
    )
    first = Call.objects.filter(organization=organization, status=CallStatus.ACTIVE).first()
    first.status = CallStatus.FAILED
    first.save()
    Call.objects.filter(organization=organization).update(last_event_at=timezone.now())
    Call.objects.filter(organization=organization, status=CallStatus.COMPLETED).delete()

    assert counted(organization) == actual(organization) == {"active": 2, "failed": 1}
    assert counted(outsider) == actual(outsider) == {"active": 1}


def test_a_rolled_back_change_leaves_the_counts_alone(organization) -> None:
    CallFactory(organization=organization)

    with pytest.raises(RuntimeError), transaction.atomic():
        Call.objects.update(status=CallStatus.COMPLETED)
        CallFactory(organization=organization)
        raise RuntimeError

    assert counted(organization) == actual(organization) == {"connecting": 1}


@pytest.mark.parametrize(
    ("query", "total"), [({}, 4), ({"status": "active"}, 2), ({"status": "active,failed"}, 3)]
)
def test_the_list_total_comes_from_the_counts(
    api: APIClient, organization, query: dict, total: int, django_assert_num_queries
) -> None:
    CallFactory.create_batch(2, organization=organization, active=True)
    CallFactory(organization=organization, status=CallStatus.FAILED)
    CallFactory(organization=organization, completed=True)

    # A full first page (one call a page), so the total is counted.
    with django_assert_num_queries(3) as captured:  # API key + page + counts
        body = api.get("/api/v1/calls", {**query, "page_size": 1}).json()

    assert (body["total"], len(body["items"])) == (total, 1)
    assert "calls_callcount" in captured.captured_queries[2]["sql"]
