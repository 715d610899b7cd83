from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Organization
from calls.models import NOT_ENDED_STATUSES, Call, TranscriptEntry

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


def call_queryset(*, organization: Organization) -> QuerySet[Call]:
    """Every call of one organization: the only way views reach calls."""
    return Call.objects.filter(organization=organization)


def call_list(*, organization: Organization) -> QuerySet[Call]:
    return (
        call_queryset(organization=organization).only(*LIST_FIELDS).order_by("-created_at", "-id")
    )


def active_calls(*, organization: Organization, limit: int) -> list[Call]:
    return list(
        call_queryset(organization=organization)
        .filter(status__in=NOT_ENDED_STATUSES)
        .only(*LIST_FIELDS)
        .order_by("-created_at", "-id")[:limit]
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
