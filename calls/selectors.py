from __future__ import annotations

import math
from collections.abc import Iterable

from django.db.models import QuerySet

from accounts.models import Organization
from calls.models import NOT_ENDED_STATUSES, Call, MetricSample, TranscriptEntry

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


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted samples: a value that was actually measured."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


LATENCY_COMPONENTS = ("stt", "llm", "tts", "e2e")
LATENCY_COLUMNS = tuple(f"{component}_latency_ms" for component in LATENCY_COMPONENTS)


def latency_summary(rows: Iterable[tuple[float | None, ...]]) -> dict[str, dict]:
    """Per component (stt, llm, tts, e2e) of LATENCY_COLUMNS rows: p50, p95, max (ms,
    rounded) and count."""
    samples: dict[str, list[float]] = {component: [] for component in LATENCY_COMPONENTS}
    for row in rows:
        for component, value in zip(LATENCY_COMPONENTS, row, strict=True):
            if value is not None:
                samples[component].append(value)
    latency = {}
    for component, values in samples.items():
        values.sort()
        latency[component] = {
            "p50": round(_percentile(values, 0.50)) if values else None,
            "p95": round(_percentile(values, 0.95)) if values else None,
            "max": round(values[-1]) if values else None,
            "count": len(values),
        }
    return latency


def call_latency(*, call: Call) -> dict[str, dict]:
    """Per component (stt, llm, tts, e2e): p50, p95, max (ms, rounded) and count."""
    return latency_summary(MetricSample.objects.filter(call=call).values_list(*LATENCY_COLUMNS))


def recent_latency(*, samples: int) -> dict[str, dict]:
    """Latency percentiles over the platform's most recent metric samples (bounded)."""
    rows = MetricSample.objects.order_by("-id").values_list(*LATENCY_COLUMNS)[:samples]
    return latency_summary(rows)


def call_metrics(*, call: Call) -> dict:
    """The seed's metrics (means over samples, tokens summed, handoffs) and `latency`."""
    return {**call.metrics(), "latency": call_latency(call=call)}
