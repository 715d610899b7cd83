"""Numbers for the admin dashboard: a handful of aggregate queries over recent calls.

Each query reads a bounded window (the last 30 days of calls through the
`created_at` index, the not-ended calls through their partial index, the most
recent latency samples), so the page stays fast at millions of calls.
"""

from __future__ import annotations

import datetime

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from calls.models import NOT_ENDED_STATUSES, Call
from calls.selectors import recent_latency
from voicecalls import charts

DAYS = 30
LATENCY_WINDOW = 10_000


def calls_per_day(*, since: datetime.datetime, days: int) -> list[tuple[str, int]]:
    rows = (
        Call.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("id"))
        .order_by("day")
    )
    by_day = {row["day"]: row["n"] for row in rows}
    first = since.date()
    return [
        (
            (first + datetime.timedelta(days=i)).strftime("%m-%d"),
            by_day.get(first + datetime.timedelta(days=i), 0),
        )
        for i in range(days + 1)
    ]


def counts_by(field: str, *, since: datetime.datetime) -> list[tuple[str, int]]:
    rows = (
        Call.objects.filter(created_at__gte=since)
        .values(field)
        .annotate(n=Count("id"))
        .order_by("-n", field)
    )
    return [(row[field] or "—", row["n"]) for row in rows]


def dashboard_context(*, now: datetime.datetime | None = None) -> dict:
    now = now or timezone.now()
    since = (now - datetime.timedelta(days=DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    per_day = calls_per_day(since=since, days=DAYS)
    statuses = counts_by("status", since=since)
    end_reasons = counts_by("end_reason", since=since)
    latency = recent_latency(samples=LATENCY_WINDOW)
    latency_rows = [
        {"component": component, **latency[component]} for component in ("stt", "llm", "tts")
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
        "active_now": Call.objects.filter(status__in=NOT_ENDED_STATUSES).count(),
        "calls_in_window": sum(n for _, n in per_day),
        "per_day_chart": charts.bar_chart(per_day, title="Calls per day", label_every=5),
        "status_chart": charts.horizontal_bars(statuses, title="Status mix"),
        "end_reason_chart": charts.horizontal_bars(end_reasons, title="End reasons"),
        "statuses": statuses,
        "end_reasons": end_reasons,
    }
