"""Reads over analyses (the admin dashboard)."""

from __future__ import annotations

import datetime

from django.db.models import Count, Q

from analysis.models import CallAnalysis


def success_per_workflow(*, since: datetime.datetime) -> list[tuple[str, int, int]]:
    """(workflow slug, calls with a success verdict, successful ones) for calls created
    since `since`, most judged first."""
    rows = (
        CallAnalysis.objects.filter(call__created_at__gte=since, success__isnull=False)
        .values("call__workflow_slug")
        .annotate(judged=Count("call_id"), succeeded=Count("call_id", filter=Q(success=True)))
        .order_by("-judged", "call__workflow_slug")
    )
    return [(row["call__workflow_slug"], row["judged"], row["succeeded"]) for row in rows]
