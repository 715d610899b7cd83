"""Runs nothing else will wake, woken again (`manage.py wake_analyses`): a pending
run whose wake-up was lost (a crash between the end's commit and the enqueue, a failed
enqueue), and a running one whose worker died.
"""

from __future__ import annotations

import datetime
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from analysis.models import OPEN_STATUSES, AnalysisStatus, CallAnalysis
from analysis.services import STALE_RUN_SECONDS, WAKE_GRACE, call_analysis_lock, call_analysis_wake
from analysis.signals import call_analyzed
from voicecalls.task_queue import task_waiting_args


def analyses_wake_overdue(*, now: datetime.datetime | None = None, limit: int = 1000) -> int:
    """Wake the open runs nothing else will: pending ones past their time by more than
    WAKE_GRACE, and running ones claimed over STALE_RUN_SECONDS ago (their worker
    died), pending again or, after their last attempt, failed; of the `limit` most
    overdue (a backlog is woken over several passes). Safe to repeat: a duplicate
    wake-up finds the run claimed or not due. Returns how many it woke."""
    from analysis.tasks import analyse_call

    now = now or timezone.now()
    stale = now - datetime.timedelta(seconds=STALE_RUN_SECONDS)
    # A running run was due before it was claimed: both kinds are past now - grace.
    overdue = CallAnalysis.objects.filter(
        status__in=OPEN_STATUSES, next_attempt_at__lte=now - WAKE_GRACE
    ).filter(Q(status=AnalysisStatus.PENDING) | Q(updated_at__lt=stale))
    runs = list(
        overdue.order_by("next_attempt_at").values_list("call_id", "run", "status", "attempts")[
            :limit
        ]
    )
    # A pending run whose wake-up waits in the queue (the worker is down) is not lost.
    pending = [(str(c), run) for c, run, status, _ in runs if status == AnalysisStatus.PENDING]
    waiting = task_waiting_args(analyse_call, pending)
    runs = [r for r in runs if (str(r[0]), r[1]) not in waiting]
    for call_id, run, status, attempts in runs:
        if status == AnalysisStatus.PENDING:
            with transaction.atomic():
                call_analysis_wake(call_id=call_id, run=run, at=now)
        else:
            _stale_run_take_back(call_id, run=run, last=attempts, stale=stale, now=now)
    return len(runs)


@transaction.atomic
def _stale_run_take_back(
    call_id: UUID, *, run: int, last: int, stale: datetime.datetime, now: datetime.datetime
) -> None:
    """A run whose worker died: pending again, or failed after its last attempt; only
    if it is still that run, still stale (a re-run may have started another)."""
    call_analysis_lock(call_id=call_id)
    dead = CallAnalysis.objects.filter(
        call_id=call_id, run=run, status=AnalysisStatus.RUNNING, updated_at__lt=stale
    )
    if last < settings.ANALYSIS_MAX_ATTEMPTS:
        if dead.update(status=AnalysisStatus.PENDING, next_attempt_at=now, updated_at=now):
            call_analysis_wake(call_id=call_id, run=run, at=now)
        return
    failed = dead.update(
        status=AnalysisStatus.FAILED,
        error="The worker running the analysis stopped.",
        updated_at=now,
        finished_at=now,
    )
    if failed:
        call_analyzed.send(sender=CallAnalysis, call_id=call_id, at=now)
