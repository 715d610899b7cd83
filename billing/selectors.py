"""Reads: usage per day and workflow, the price table an organization sees, and the
admin dashboard's cost per day."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Max,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Greatest, TruncDate

from accounts.models import Organization
from billing.cost import seconds_exact
from billing.models import CallCost, PriceOverride
from billing.prices import Price, organization_prices
from calls.models import Call

# Never negative: calls ended before calls/lifecycle.py kept `ended_at >= started_at`
# may carry an end another host's clock stamped before the start.
_CALL_SECONDS = Greatest(
    ExpressionWrapper(F("ended_at") - F("started_at"), output_field=DurationField()),
    Value(datetime.timedelta(0), DurationField()),
)


@dataclass
class Usage:
    calls: int = 0
    seconds: Decimal = Decimal(0)  # exact: microseconds summed, never floats
    cost_usd: Decimal = Decimal(0)

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.seconds += other.seconds
        self.cost_usd += other.cost_usd


@dataclass
class WorkflowUsage:
    slug: str  # of the workflow's latest call that day: a rename shows its new name
    latest: datetime.datetime
    usage: Usage = field(default_factory=Usage)


@dataclass
class UsageDay:
    date: datetime.date
    usage: Usage = field(default_factory=Usage)
    # workflow id → its usage, by slug then id.
    workflows: dict = field(default_factory=dict)


def _day_bounds(start: datetime.date, end: datetime.date) -> tuple:
    first = datetime.datetime.combine(start, datetime.time.min, tzinfo=datetime.UTC)
    after = datetime.datetime.combine(end, datetime.time.min, tzinfo=datetime.UTC)
    return first, after + datetime.timedelta(days=1)


def _seconds(duration: datetime.timedelta | None) -> Decimal:
    return Decimal(0) if duration is None else seconds_exact(duration)


def usage_daily(
    *, organization: Organization, start: datetime.date, end: datetime.date
) -> list[UsageDay]:
    """Every day from `start` to `end` (UTC, inclusive), with its calls (by creation),
    their minutes (started to ended) and cost, in total and per workflow: two grouped
    reads, each an index range of this organization's calls or costs."""
    first, after = _day_bounds(start, end)
    calls = (
        Call.objects.filter(organization=organization, created_at__gte=first, created_at__lt=after)
        .annotate(day=TruncDate("created_at"))
        .values("day", "workflow_id", "workflow_slug")
        .annotate(calls=Count("id"), duration=Sum(_CALL_SECONDS), latest=Max("created_at"))
        .order_by()
    )
    costs = (
        CallCost.objects.filter(
            organization=organization,
            call_created_at__gte=first,
            call_created_at__lt=after,
            total_usd__isnull=False,
        )
        .annotate(day=TruncDate("call_created_at"))
        .values("day", "workflow_id")
        .annotate(cost=Sum("total_usd"))
        .order_by()
    )
    cost_of = {(row["day"], row["workflow_id"]): row["cost"] for row in costs}
    days = {
        start + datetime.timedelta(days=i): UsageDay(date=start + datetime.timedelta(days=i))
        for i in range((end - start).days + 1)
    }
    for row in calls:
        usage = Usage(
            calls=row["calls"],
            seconds=_seconds(row["duration"]),
            # Once per day and workflow: a workflow renamed that day has a row per slug.
            cost_usd=cost_of.pop((row["day"], row["workflow_id"]), None) or Decimal(0),
        )
        day = days[row["day"]]
        entry = day.workflows.setdefault(
            row["workflow_id"], WorkflowUsage(slug=row["workflow_slug"], latest=row["latest"])
        )
        if row["latest"] > entry.latest:
            entry.slug, entry.latest = row["workflow_slug"], row["latest"]
        entry.usage.add(usage)
        day.usage.add(usage)
    for day in days.values():
        day.workflows = dict(sorted(day.workflows.items(), key=lambda i: (i[1].slug, str(i[0]))))
    return list(days.values())


def price_table(*, organization: Organization) -> list[Price]:
    prices = organization_prices(organization_id=organization.pk)
    return sorted(prices.values(), key=lambda p: (p.component, p.provider, p.model))


def price_overrides(*, organization: Organization) -> QuerySet[PriceOverride]:
    return PriceOverride.objects.filter(organization=organization)


def cost_per_day(*, since: datetime.datetime) -> dict[datetime.date, Decimal]:
    """Across organizations (the admin dashboard): what the calls created each day cost."""
    rows = (
        CallCost.objects.filter(call_created_at__gte=since, total_usd__isnull=False)
        .annotate(day=TruncDate("call_created_at"))
        .values("day")
        .annotate(cost=Sum("total_usd"))
        .order_by()
    )
    return {row["day"]: row["cost"] for row in rows}
