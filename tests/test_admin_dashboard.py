"""The dashboard's numbers and its server-side SVG charts."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analysis.models import CallAnalysis
from billing.models import CallCost
from calls.dashboard import SUCCESS_RATES_SHOWN, dashboard_context, recent_calls, success_rates
from tests.factories import CallFactory, WorkflowFactory
from voicecalls.charts import bar_chart, horizontal_bars

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 3, 10, 12, 0, tzinfo=datetime.UTC)


def figures(judged: int, succeeded: int, rate: float) -> dict:
    return {"judged": judged, "succeeded": succeeded, "rate": rate}


def test_calls_per_day_counts_each_day_including_empty_ones(organization) -> None:
    day1 = datetime.datetime(2026, 3, 8, 9, 0, tzinfo=datetime.UTC)
    CallFactory.create_batch(2, organization=organization, created_at=day1)
    CallFactory(organization=organization, created_at=day1 + datetime.timedelta(days=2))
    CallFactory(organization=organization, created_at=day1 - datetime.timedelta(days=30))

    recent = recent_calls(since=datetime.datetime(2026, 3, 7, tzinfo=datetime.UTC), days=3)

    assert recent.per_day == [("03-07", 0), ("03-08", 2), ("03-09", 0), ("03-10", 1)]


def test_counts_by_status_and_end_reason_are_largest_first(organization) -> None:
    CallFactory.create_batch(2, organization=organization, completed=True, created_at=NOW)
    CallFactory(
        organization=organization, status="failed", end_reason="agent_error", created_at=NOW
    )
    since = NOW - datetime.timedelta(days=1)

    recent = recent_calls(since=since, days=1)

    assert recent.statuses == [("completed", 2), ("failed", 1)]
    assert recent.end_reasons == [("user_hangup", 2), ("agent_error", 1)]


def test_the_dashboard_counts_calls_not_yet_ended(organization) -> None:
    CallFactory.create_batch(2, organization=organization, active=True, created_at=NOW)
    CallFactory(organization=organization, completed=True, created_at=NOW)

    context = dashboard_context(now=NOW)

    assert context["open_now"] == 2
    assert context["calls_in_window"] == 3


def test_open_calls_are_told_apart_from_active_ones(organization) -> None:
    """Open counts every call not yet ended; active only those the user joined,
    as the status mix counts them."""
    CallFactory(organization=organization, active=True, created_at=NOW)
    CallFactory.create_batch(2, organization=organization, status="connecting", created_at=NOW)
    CallFactory(organization=organization, status="pending", created_at=NOW)
    CallFactory(organization=organization, completed=True, created_at=NOW)

    context = dashboard_context(now=NOW)

    assert context["open_now"] == 4
    assert context["open_now_by_status"] == [("active", 1), ("connecting", 2), ("pending", 1)]
    assert ("active", 1) in context["statuses"]


def test_the_dashboard_costs_a_handful_of_queries(
    organization, django_assert_max_num_queries
) -> None:
    CallFactory.create_batch(10, organization=organization, completed=True)

    with django_assert_max_num_queries(8):
        dashboard_context()


def test_chart_labels_are_escaped() -> None:
    svg = str(horizontal_bars([("<script>x</script>", 3)], title="t"))

    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg


def test_bar_heights_are_proportional_to_values() -> None:
    svg = str(bar_chart([("a", 1), ("b", 2)], title="t", width=100, height=60))

    # plot height = 60 - 16 - 28 = 16: the larger bar is full height, the other half.
    assert 'height="8.0"' in svg and 'height="16.0"' in svg


def test_latency_percentiles_come_from_the_most_recent_samples(organization) -> None:
    from calls.models import MetricSample

    call = CallFactory(organization=organization, active=True)
    for i, value in enumerate([100, 200, 300, 400, 1000]):
        MetricSample.objects.create(
            call=call,
            event_id=f"00000000-0000-4000-8000-{i:012d}",
            stt_latency_ms=value,
            llm_latency_ms=value * 2 if i < 2 else None,
            eou_latency_ms=value + 1 if i == 4 else None,
            e2e_latency_ms=value * 3,
            timestamp=NOW,
        )

    context = dashboard_context(now=NOW)

    assert context["latency"] == [
        {"component": "stt", "label": "STT", "p50": 300, "p95": 1000, "max": 1000, "count": 5},
        {"component": "llm", "label": "LLM", "p50": 200, "p95": 400, "max": 400, "count": 2},
        {"component": "tts", "label": "TTS", "p50": None, "p95": None, "max": None, "count": 0},
        {
            "component": "eou",
            "label": "end of utterance",
            "p50": 1001,
            "p95": 1001,
            "max": 1001,
            "count": 1,
        },
        {
            "component": "e2e",
            "label": "turn, end to end",
            "p50": 900,
            "p95": 3000,
            "max": 3000,
            "count": 5,
        },
    ]
    assert "stt p95" in str(context["latency_chart"])
    assert "eou p95" in str(context["latency_chart"]) and "e2e p50" in str(context["latency_chart"])


def _priced(organization, *, at: datetime.datetime, usd: str) -> None:
    call = CallFactory(organization=organization, completed=True, created_at=at)
    CallCost.objects.create(
        call=call,
        organization=organization,
        workflow_id=call.workflow_id,
        call_created_at=at,
        total_usd=Decimal(usd),
        breakdown=[],
    )


def test_cost_per_day_sums_every_organizations_priced_calls(organization, outsider) -> None:
    _priced(organization, at=NOW, usd="1.25")
    _priced(outsider, at=NOW, usd="0.50")
    _priced(organization, at=NOW - datetime.timedelta(days=2), usd="0.004")
    _priced(organization, at=NOW - datetime.timedelta(days=40), usd="99")

    context = dashboard_context(now=NOW)

    assert context["cost_in_window"] == Decimal("1.75")
    assert "Cost per day (USD)" in str(context["cost_chart"])


def test_success_rate_per_workflow_counts_only_calls_with_a_verdict(organization) -> None:
    greet, remind = (
        WorkflowFactory(organization=organization, slug=s) for s in ("greet", "remind")
    )
    verdicts = [(greet, True), (greet, True), (greet, False), (remind, False), (remind, None)]
    for workflow, success in verdicts:
        call = CallFactory(
            organization=organization, workflow=workflow, completed=True, created_at=NOW
        )
        CallAnalysis.objects.create(call=call, status="completed", success=success)

    rates = success_rates(since=NOW - datetime.timedelta(days=1))

    assert rates == [
        {"organization_slug": "acme", "workflow_slug": "greet", **figures(3, 2, 66.7)},
        {"organization_slug": "acme", "workflow_slug": "remind", **figures(1, 0, 0.0)},
    ]


def test_success_rates_follow_a_changed_verdict_without_reading_the_analyses(
    organization,
) -> None:
    workflow = WorkflowFactory(organization=organization, slug="greet")
    call = CallFactory(organization=organization, workflow=workflow, completed=True, created_at=NOW)
    CallAnalysis.objects.create(call=call, status="completed", success=True)
    CallAnalysis.objects.filter(call=call).update(success=False)

    with CaptureQueriesContext(connection) as queries:
        rates = success_rates(since=NOW - datetime.timedelta(days=1))

    assert rates == [{"organization_slug": "acme", "workflow_slug": "greet", **figures(1, 0, 0.0)}]
    assert not any("analysis_callanalysis" in query["sql"] for query in queries)


def test_success_rates_keep_each_organizations_workflow_apart_and_show_the_most_judged(
    organization, outsider
) -> None:
    ours, theirs = (WorkflowFactory(organization=o, slug="daily") for o in (organization, outsider))
    busier = WorkflowFactory.create_batch(SUCCESS_RATES_SHOWN - 1, organization=outsider)
    verdicts = [(ours, True), (theirs, False), (theirs, False)]
    verdicts += [(workflow, True) for workflow in busier for _ in range(3)]
    for workflow, success in verdicts:
        call = CallFactory(organization=workflow.organization, workflow=workflow, created_at=NOW)
        CallAnalysis.objects.create(call=call, status="completed", success=success)

    rates = success_rates(since=NOW - datetime.timedelta(days=1))

    assert len(rates) == SUCCESS_RATES_SHOWN
    assert all(row["judged"] == 3 for row in rates[:-1])
    assert rates[-1] == {"organization_slug": outsider.slug, "workflow_slug": "daily"} | figures(
        2, 0, 0.0
    )


def test_the_admin_index_shows_cost_and_success_rates(
    client, django_user_model, organization
) -> None:
    client.force_login(django_user_model.objects.create_superuser("boss", password="x" * 12))
    call = CallFactory(organization=organization, completed=True)
    CallAnalysis.objects.create(call=call, status="completed", success=True)

    html = client.get("/admin/").content.decode()

    assert 'id="cost"' in html and "Cost per day (USD" in html
    assert (
        f"<td>{organization.slug}</td><td>{call.workflow_slug}</td><td>100.0 %</td>"
        "<td>1 of 1</td>" in html
    )
