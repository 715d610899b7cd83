"""Numbers for the admin dashboard: a handful of aggregate queries over recent calls.

Each query reads a bounded window (the last 30 days of calls through the
`call_created` index, the not-ended calls through their partial index, the most
recent latency samples), so the page stays fast at millions of calls.
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.selectors import cost_per_day
from calls.models import NOT_ENDED_STATUSES, Call
from calls.selectors import recent_latency
from voicecalls import charts
from workflows.models import Workflow

DAYS = 30
LATENCY_WINDOW = 10_000
SUCCESS_RATES_SHOWN = 20
# What the caller feels (end of utterance, whole turn) after the three providers.
LATENCY_ROWS = (
    ("stt", "STT"),
    ("llm", "LLM"),
    ("tts", "TTS"),
    ("eou", "end of utterance"),
    ("e2e", "turn, end to end"),
)


@dataclass(frozen=True)
class RecentCalls:
    """Calls created since a moment: per day (oldest first, empty days included), and
    per status and per end reason (largest first)."""

    per_day: list[tuple[str, int]]
    statuses: list[tuple[str, int]]
    end_reasons: list[tuple[str, int]]


def _days(since: datetime.datetime, days: int) -> list[datetime.date]:
    return [since.date() + datetime.timedelta(days=i) for i in range(days + 1)]


def recent_calls(*, since: datetime.datetime, days: int) -> RecentCalls:
    """One pass over the window, grouped by (day, status, end reason) — at most a few
    hundred groups — instead of one query per chart: an index-only scan of
    `call_created`, which carries status and end_reason (bench/README.md)."""
    rows = (
        Call.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day", "status", "end_reason")
        .annotate(n=Count("id"))
        .order_by()
    )
    by_day: Counter = Counter()
    by_status: Counter = Counter()
    by_reason: Counter = Counter()
    for row in rows:
        by_day[row["day"]] += row["n"]
        by_status[row["status"]] += row["n"]
        by_reason[row["end_reason"] or "—"] += row["n"]
    per_day = [(day.strftime("%m-%d"), by_day[day]) for day in _days(since, days)]
    return RecentCalls(
        per_day=per_day, statuses=_largest_first(by_status), end_reasons=_largest_first(by_reason)
    )


def _largest_first(counts: Counter) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def open_calls() -> list[tuple[str, int]]:
    """Calls not yet ended, per status (active, connecting, pending; zeros included):
    one grouped read of their partial index. "Open" is all three; "active" only calls
    the user has joined, as in the status mix."""
    counts = dict(
        Call.objects.filter(status__in=NOT_ENDED_STATUSES)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return [(status, counts.get(status, 0)) for status in reversed(NOT_ENDED_STATUSES)]


def success_rates(*, since: datetime.datetime) -> list[dict]:
    """Per workflow (each organization's own): the calls created since `since` whose
    analysis gave a success verdict, and the share of them that succeeded (percent, one
    decimal); the SUCCESS_RATES_SHOWN most judged. Reads the call's copy of the verdict
    (analysis migration 0002), so the window's calls come from `call_created` with no
    join; the shown workflows' names are read apart."""
    rows = list(
        Call.objects.filter(created_at__gte=since, analysis_success__isnull=False)
        .values("workflow_id")
        .annotate(judged=Count("id"), succeeded=Count("id", filter=Q(analysis_success=True)))
        .order_by("-judged", "workflow_id")[:SUCCESS_RATES_SHOWN]
    )
    names = {
        pk: (organization_slug, slug)
        for pk, organization_slug, slug in Workflow.objects.filter(
            pk__in=[row["workflow_id"] for row in rows]
        ).values_list("pk", "organization__slug", "slug")
    }
    return [
        {
            "organization_slug": names[row["workflow_id"]][0],
            "workflow_slug": names[row["workflow_id"]][1],
            "judged": row["judged"],
            "succeeded": row["succeeded"],
            "rate": round(100 * row["succeeded"] / row["judged"], 1),
        }
        for row in rows
    ]


def _cost_context(*, since: datetime.datetime) -> dict:
    costs = cost_per_day(since=since)
    per_day = [(day.strftime("%m-%d"), float(costs.get(day, 0))) for day in _days(since, DAYS)]
    rates = success_rates(since=since)
    return {
        "cost_in_window": sum(costs.values(), Decimal(0)).quantize(Decimal("0.01")),
        "cost_chart": charts.bar_chart(per_day, title="Cost per day (USD)", label_every=5),
        "success_rates": rates,
        "success_rates_shown": SUCCESS_RATES_SHOWN,
        "success_chart": charts.horizontal_bars(
            [
                (f"{row['organization_slug']} / {row['workflow_slug']}", row["rate"])
                for row in rates
            ],
            title="Success rate per workflow (%)",
            unit=" %",
        ),
    }


def dashboard_context(*, now: datetime.datetime | None = None) -> dict:
    now = now or timezone.now()
    since = (now - datetime.timedelta(days=DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    recent = recent_calls(since=since, days=DAYS)
    per_day, statuses, end_reasons = recent.per_day, recent.statuses, recent.end_reasons
    latency = recent_latency(samples=LATENCY_WINDOW)
    open_now = open_calls()
    latency_rows = [
        {"component": component, "label": label, **latency[component]}
        for component, label in LATENCY_ROWS
    ]
    return {
        "days": DAYS,
        "latency": latency_rows,
        "latency_window": LATENCY_WINDOW,
        "latency_chart": charts.horizontal_bars(
            [
                (f"{row['component']} {label}", row[key] or 0)
                for row in latency_rows
                for label, key in (("p50", "p50"), ("p95", "p95"))
            ],
            title="Latency p50/p95 (ms)",
            unit=" ms",
        ),
        "open_now": sum(n for _, n in open_now),
        "open_now_by_status": open_now,
        "calls_in_window": sum(n for _, n in per_day),
        "per_day_chart": charts.bar_chart(per_day, title="Calls per day", label_every=5),
        "status_chart": charts.horizontal_bars(statuses, title="Status mix"),
        "end_reason_chart": charts.horizontal_bars(end_reasons, title="End reasons"),
        "statuses": statuses,
        "end_reasons": end_reasons,
        **_cost_context(since=since),
    }
