"""GET /api/v1/usage/daily: calls, minutes and cost per day (UTC) and per workflow."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from billing.models import CallCost
from calls.models import Call
from tests.factories import CallFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/usage/daily"
DAY = datetime.datetime(2026, 3, 10, 9, 0, tzinfo=datetime.UTC)


def ended(workflow, *, at: datetime.datetime, seconds: int, cost: str | None = None):
    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        completed=True,
        created_at=at,
        started_at=at,
        ended_at=at + datetime.timedelta(seconds=seconds),
    )
    if cost is not None:
        CallCost.objects.create(
            call=call,
            organization=call.organization,
            workflow_id=call.workflow_id,
            call_created_at=call.created_at,
            total_usd=Decimal(cost),
            breakdown=[],
        )
    return call


def figures(calls: int, minutes: str, cost: str) -> dict:
    return {"calls": calls, "minutes": minutes, "cost_usd": cost}


def test_each_day_of_the_range_shows_its_calls_minutes_and_cost_per_workflow(
    api, organization, workflow
) -> None:
    other = WorkflowFactory(organization=organization, slug="a-reminder")
    ended(workflow, at=DAY, seconds=90, cost="0.100000")
    ended(workflow, at=DAY + datetime.timedelta(hours=14, minutes=59), seconds=30, cost="0.05")
    ended(other, at=DAY, seconds=60)  # not priced (yet): counted, costs nothing so far
    CallFactory(organization=organization, workflow=workflow, created_at=DAY)  # never started
    ended(workflow, at=DAY + datetime.timedelta(days=2), seconds=600, cost="1.234567")

    response = api.get(URL, {"from": "2026-03-10", "to": "2026-03-12"})

    assert response.status_code == 200
    wf = {"workflow_id": str(workflow.id), "workflow_slug": workflow.slug}
    assert response.json() == {
        "from": "2026-03-10",
        "to": "2026-03-12",
        "days": [
            {
                "date": "2026-03-10",
                **figures(4, "3.00", "0.150000"),
                "workflows": [
                    {"workflow_id": str(other.id), "workflow_slug": "a-reminder"}
                    | figures(1, "1.00", "0.000000"),
                    wf | figures(3, "2.00", "0.150000"),
                ],
            },
            {"date": "2026-03-11", **figures(0, "0.00", "0.000000"), "workflows": []},
            {
                "date": "2026-03-12",
                **figures(1, "10.00", "1.234567"),
                "workflows": [wf | figures(1, "10.00", "1.234567")],
            },
        ],
        "total": figures(5, "13.00", "1.384567"),
    }


def test_a_workflow_renamed_during_the_day_is_one_entry_under_its_new_slug(api, workflow) -> None:
    """Each call's cost counted once; the slug its latest call had, whichever sorts first."""
    before = ended(workflow, at=DAY, seconds=60, cost="0.100000")
    Call.objects.filter(pk=before.pk).update(workflow_slug="a-before-rename")
    ended(workflow, at=DAY + datetime.timedelta(hours=1), seconds=60, cost="0.200000")

    body = api.get(URL, {"from": "2026-03-10", "to": "2026-03-10"}).json()

    assert body["days"][0]["workflows"] == [
        {"workflow_id": str(workflow.id), "workflow_slug": workflow.slug}
        | figures(2, "2.00", "0.300000")
    ]
    assert body["total"] == figures(2, "2.00", "0.300000")


def test_an_end_stamped_before_the_start_counts_no_minutes(api, workflow) -> None:
    ended(workflow, at=DAY, seconds=60)
    skewed = ended(workflow, at=DAY, seconds=60)
    Call.objects.filter(pk=skewed.pk).update(ended_at=DAY - datetime.timedelta(seconds=30))

    body = api.get(URL, {"from": "2026-03-10", "to": "2026-03-10"}).json()

    assert body["total"] == figures(2, "1.00", "0.000000")


def test_days_are_utc_days(api, workflow) -> None:
    ended(workflow, at=datetime.datetime(2026, 3, 10, 23, 59, 59, tzinfo=datetime.UTC), seconds=60)
    ended(workflow, at=datetime.datetime(2026, 3, 11, 0, 0, 0, tzinfo=datetime.UTC), seconds=60)

    days = api.get(URL, {"from": "2026-03-10", "to": "2026-03-11"}).json()["days"]

    assert [(d["date"], d["calls"]) for d in days] == [("2026-03-10", 1), ("2026-03-11", 1)]


def test_another_organizations_calls_and_costs_are_not_counted(api, workflow, outsider) -> None:
    ended(WorkflowFactory(organization=outsider), at=DAY, seconds=60, cost="9")

    body = api.get(URL, {"from": "2026-03-10", "to": "2026-03-10"}).json()

    assert body["total"] == figures(0, "0.00", "0.000000")


def test_by_default_the_last_thirty_days_up_to_today(api, organization) -> None:
    body = api.get(URL).json()

    today = datetime.datetime.now(datetime.UTC).date()
    assert body["to"] == today.isoformat()
    assert body["from"] == (today - datetime.timedelta(days=29)).isoformat()
    assert len(body["days"]) == 30


def test_only_from_runs_to_today(api, organization) -> None:
    today = datetime.datetime.now(datetime.UTC).date()
    start = today - datetime.timedelta(days=2)

    body = api.get(URL, {"from": start.isoformat()}).json()

    assert [d["date"] for d in body["days"]][-1] == today.isoformat()
    assert len(body["days"]) == 3


@pytest.mark.parametrize(
    ("params", "attr"),
    [
        ({"from": "2026-13-01", "to": "2026-12-01"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-02-30"}, "to"),
        ({"to": ""}, "to"),
        ({"from": "2026-03-12", "to": "2026-03-10"}, "from"),
        ({"from": "2025-01-01", "to": "2026-01-02"}, "from"),
        ({"to": "9999-12-31"}, "to"),
        ({"to": "0001-01-05"}, "to"),
        ({"from": "0001-01-01", "to": "0001-01-05"}, None),
    ],
)
def test_a_bad_range_is_a_400_naming_the_parameter(
    api, organization, params: dict, attr: str | None
) -> None:
    response = api.get(URL, params)

    if attr is None:
        assert response.status_code == 200
        return
    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == [attr]


def test_a_full_year_is_allowed(api, organization) -> None:
    response = api.get(URL, {"from": "2025-01-02", "to": "2026-01-02"})

    assert response.status_code == 200
    assert len(response.json()["days"]) == 366


def test_usage_daily_reads_the_database_a_fixed_number_of_times(
    api, workflow, django_assert_num_queries
) -> None:
    for day in range(5):
        ended(workflow, at=DAY + datetime.timedelta(days=day), seconds=60, cost="0.01")

    # The key lookup, then calls per (day, workflow), then costs per (day, workflow).
    with django_assert_num_queries(3):
        response = api.get(URL, {"from": "2026-03-01", "to": "2026-03-31"})

    assert response.json()["total"] == figures(5, "5.00", "0.050000")


def test_usage_needs_a_client_key(anonymous_api, agent_api) -> None:
    assert anonymous_api.get(URL).status_code == 401
    assert agent_api.get(URL).status_code == 403


def test_the_answer_is_what_the_schema_says(api, workflow) -> None:
    from tests.test_representations import assert_described

    ended(workflow, at=DAY, seconds=61, cost="0.0123456")

    assert_described(api.get(URL, {"from": "2026-03-09", "to": "2026-03-10"}).json(), "UsageDaily")
