"""Fairness between organizations: an organization has at most
ANALYSIS_ORGANIZATION_MAX_RUNNING analyses asking its provider at once, over every worker
(docs/reliability.md, "Fairness between organizations").

An attempt holds a worker for its requests to the organization's provider (up to two of
ANALYSIS_TIMEOUT_SECONDS each): one organization whose provider answered slowly, with a
campaign's calls ending, held every worker, and every other organization's analyses and
webhook deliveries waited behind it. A run due while its organization has that many
running waits instead: pending, looked at again WAIT_SECONDS later (plus up to half as
much again, so a backlog does not come back at once), holding no worker meanwhile. Its
attempts count only the provider's answers, not its waits.
"""

from __future__ import annotations

import datetime
import random
from uuid import UUID

from django.conf import settings

from analysis.models import AnalysisStatus, CallAnalysis
from calls.models import Call

WAIT_SECONDS = 20.0


def organization_full(call_id: UUID | str, *, now: datetime.datetime, stale_seconds: int) -> bool:
    """Whether the call's organization has all the analyses running it may (besides
    this call's; one running longer than `stale_seconds` died with its worker)."""
    cap = settings.ANALYSIS_ORGANIZATION_MAX_RUNNING
    organization_id = Call.objects.filter(pk=call_id).values_list("organization_id", flat=True)
    running = CallAnalysis.objects.filter(
        call__organization_id__in=organization_id,
        status=AnalysisStatus.RUNNING,
        updated_at__gte=now - datetime.timedelta(seconds=stale_seconds),
    ).exclude(call_id=call_id)
    return len(running.values_list("call_id", flat=True)[:cap]) >= cap


def run_wait(call_id: UUID | str, *, run: int, now: datetime.datetime) -> datetime.datetime | None:
    """The run, if due, waits for its organization's running analyses: when it is to be
    looked at again (None: it was not due)."""
    at = now + datetime.timedelta(seconds=WAIT_SECONDS * random.uniform(1.0, 1.5))
    waits = CallAnalysis.objects.filter(
        call_id=call_id, run=run, status=AnalysisStatus.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=at, updated_at=now)
    return at if waits else None
