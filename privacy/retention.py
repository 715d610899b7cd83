"""Retention: an organization's transcripts, callers' identities and recordings are kept
for as many days after a call ended as it chose, then removed by `expire_data`, in
batches (recordings through privacy/recordings.py); customer-webhook deliveries for
WEBHOOKS_DELIVERY_RETENTION_DAYS after they ended (webhooks/retention.py).

Each batch is its own transaction and marks what it did on the calls
(`transcript_expired_at`, `user_data_expired_at`), so a pass that dies is continued by
the next, and several passes at once (on PostgreSQL) skip each other's locked rows. A
batch holds at most `batch_size` calls and, but for a single longer call, `batch_lines`
transcript lines: its work (deleting them, rebuilding end-of-call reports that carry
them) grows with the lines, and the calls' rows stay locked meanwhile.
Only ended calls are touched: the clock starts at `ended_at`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization
from calls.models import ENDED_STATUSES, Call
from privacy import scrub
from privacy.recordings import recordings_expire
from webhooks.retention import webhook_history_prune


@dataclass
class RetentionResult:
    transcripts_expired: int = 0
    transcript_lines_deleted: int = 0
    user_data_expired: int = 0
    webhook_events_scrubbed: int = 0
    recordings_deleted: int = 0
    # Organizations whose storage refused a deletion this pass (the next pass retries).
    recording_storages_failed: int = 0
    batches: int = 0
    # Customer-webhook deliveries ended past WEBHOOKS_DELIVERY_RETENTION_DAYS (platform-wide).
    webhook_deliveries_pruned: int = 0
    webhook_events_pruned: int = 0


def retention_apply(
    *,
    now: datetime.datetime | None = None,
    batch_size: int = scrub.BATCH_SIZE,
    batch_lines: int = scrub.BATCH_LINES,
) -> RetentionResult:
    """Expire, in every organization that set a retention, what is past it at `now`."""
    now = now or timezone.now()
    result = RetentionResult()
    steps: list[tuple[str, str, Callable]] = [
        ("transcript_retention_days", "transcript_expired_at", _transcripts_expire),
        ("user_data_retention_days", "user_data_expired_at", _user_data_expire),
    ]
    for setting, marker, expire in steps:
        # Organizations are few next to calls; only those with the setting are read, at
        # once (no server-side cursor: PgBouncer's transaction mode loses it).
        organizations = Organization.objects.filter(**{f"{setting}__isnull": False})
        for organization_id, days in list(organizations.values_list("id", setting)):
            before = scrub.cutoff(now=now, days=days)
            while _batch(
                organization_id=organization_id,
                before=before,
                marker=marker,
                expire=expire,
                now=now,
                batch_size=batch_size,
                batch_lines=batch_lines,
                result=result,
            ):
                pass
    # Files in S3: outside any transaction, after the rows' work.
    result.recordings_deleted, result.recording_storages_failed = recordings_expire(
        now=now, batch_size=batch_size
    )
    # The delivery log's copies of calls (end-of-call reports) go after their own window.
    result.webhook_deliveries_pruned, result.webhook_events_pruned = webhook_history_prune(
        now=now, batch_size=batch_size
    )
    return result


@transaction.atomic
def _batch(
    *,
    organization_id: UUID,
    before: datetime.datetime,
    marker: str,
    expire: Callable,
    now: datetime.datetime,
    batch_size: int,
    batch_lines: int,
    result: RetentionResult,
) -> bool:
    """Expire one batch of the organization's calls ended by `before`; False when none
    was left. The partial indexes call_transcript_retention and
    call_user_data_retention hold exactly the calls not yet expired."""
    due = Call.objects.filter(
        Q(organization_id=organization_id, ended_at__lte=before, status__in=ENDED_STATUSES),
        **{f"{marker}__isnull": True},
    )
    calls = list(
        due.select_for_update(skip_locked=True)
        .order_by("ended_at")
        .values_list("id", "channel", "direction")[:batch_size]
    )
    if not calls:
        return False
    locked = len(calls)
    calls = scrub.within_lines(calls, batch_lines=batch_lines)
    ids = [call_id for call_id, _, _ in calls]
    expire(calls=calls, ids=ids, result=result)
    Call.objects.filter(pk__in=ids).update(**{marker: now})
    scrub.identities_release(call_ids=ids)
    result.webhook_events_scrubbed += scrub.webhook_bodies_scrub(call_ids=ids)
    result.batches += 1
    # The calls locked but left out (over the lines) are the next batch's.
    return len(calls) < locked or locked == batch_size


def _transcripts_expire(*, calls: list, ids: list[UUID], result: RetentionResult) -> None:
    result.transcript_lines_deleted += scrub.transcript_delete(call_ids=ids)
    # The analysis was written from the transcript: its words go with it.
    scrub.analysis_erase(call_ids=ids)
    result.transcripts_expired += len(ids)


def _user_data_expire(*, calls: list, ids: list[UUID], result: RetentionResult) -> None:
    scrub.data_clear(call_ids=ids)
    scrub.identities_retain(call_ids=ids)
    scrub.identity_clear(calls=calls)
    # The analysis may quote the caller's details (its prompt sees user_data).
    scrub.analysis_erase(call_ids=ids)
    result.user_data_expired += len(ids)
