from __future__ import annotations

from collections.abc import Mapping

from django.db import connection
from django.db.models import QuerySet, Sum

from accounts.models import Organization
from calls.models import NOT_ENDED_STATUSES, Call, CallCount, TranscriptEntry

# Columns the list and detail answers read; the JSON blobs stay out of lists.
LIST_FIELDS = (
    "id",
    "workflow_id",
    "workflow_slug",
    "user_id",
    "status",
    "direction",
    "end_reason",
    "agent_history",
    "current_agent",
    "started_at",
    "ended_at",
    "created_at",
)
ACTIVE_FIELDS = (
    "id",
    "workflow_id",
    "workflow_slug",
    "user_id",
    "status",
    "direction",
    "current_agent",
    "started_at",
    "created_at",
)
NEWEST_FIRST = ("-created_at", "-id")


def call_queryset(*, organization: Organization) -> QuerySet[Call]:
    """Every call of one organization: the only way views reach calls."""
    return Call.objects.filter(organization=organization)


def call_list(*, organization: Organization) -> QuerySet[Call]:
    return call_queryset(organization=organization).only(*LIST_FIELDS).order_by(*NEWEST_FIRST)


def call_list_total(
    *, organization: Organization, calls: QuerySet[Call], filters: Mapping[str, object]
) -> int:
    """The exact number of `calls` (the organization's calls under `filters`).

    Unfiltered or filtered by status alone (the lists that match the most calls) the
    per-status counters answer from a few rows on PostgreSQL; any other filter
    narrows enough for `count(*)` over its composite index (bench/README.md).
    """
    given = {name for name, value in filters.items() if value not in (None, "", [])}
    if connection.vendor != "postgresql" or not given <= {"status"}:
        return calls.count()
    counts = CallCount.objects.filter(organization=organization)
    if filters.get("status"):
        counts = counts.filter(status__in=set(filters["status"]))
    return counts.aggregate(total=Sum("count"))["total"] or 0


def call_list_page(*, calls: QuerySet[Call], offset: int, limit: int) -> list[dict]:
    """One page of `calls`, newest first, as `LIST_FIELDS` rows.

    The page's ids come first, from the filter's index alone (the ordering columns
    and the id are in every list index), then only those rows are read: a deep page
    skips index entries, not table rows.
    """
    ids = calls.order_by(*NEWEST_FIRST).values("pk")[offset : offset + limit]
    return list(Call.objects.filter(pk__in=ids).order_by(*NEWEST_FIRST).values(*LIST_FIELDS))


def active_calls(*, organization: Organization, limit: int) -> list[dict]:
    """Calls not yet ended, newest first, as `ACTIVE_FIELDS` rows."""
    return list(
        call_queryset(organization=organization)
        .filter(status__in=NOT_ENDED_STATUSES)
        .order_by(*NEWEST_FIRST)
        .values(*ACTIVE_FIELDS)[:limit]
    )


def call_transcript(*, call: Call) -> list[dict]:
    """The transcript as plain dicts, ordered by (timestamp, arrival order)."""
    return list(
        TranscriptEntry.objects.filter(call=call)
        .order_by("timestamp", "id")
        .values("id", "role", "content", "timestamp", "agent_name", "tool_call")
    )


def agent_call_queryset(*, organization: Organization | None) -> QuerySet[Call]:
    """Calls an agent key reaches: any call for a platform key (organization None),
    else only its organization's (another organization's call is simply not found)."""
    if organization is None:
        return Call.objects.all()
    return call_queryset(organization=organization)
