"""Recordings in retention and erasure: each deleted through
`recordings.deletion.recording_delete`, which asks the storage to delete the file, so
always outside a transaction (never while calls' rows are locked).

A storage that cannot be reached (or whose credentials are gone) stops the work for that
organization in this pass; the next pass (retention) or run (erasure) tries again from
where it stopped, since only recordings not yet `deleted` are looked for.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Sequence
from uuid import UUID

from django.db.models import OuterRef, Subquery

from accounts.models import Organization
from calls.models import ENDED_STATUSES, Call
from privacy import scrub
from recordings.deletion import recordings_delete_marking
from recordings.models import Recording, RecordingStatus
from recordings.storage import StorageError

logger = logging.getLogger(__name__)


class RecordingsDeleteFailed(StorageError):
    """The storage refused some of them; `deleted` went (before or beside them)."""

    def __init__(self, error: StorageError, *, deleted: int) -> None:
        super().__init__(str(error))
        self.deleted = deleted


def recordings_delete(
    *, call_ids: Sequence[UUID], counted: Callable[[int], None] | None = None
) -> int:
    """Delete these calls' recordings (those they have), their files a request per
    bucket; how many this run deleted (one another run marked meanwhile is its to
    count), given to `counted` in the transaction marking them. Raises
    RecordingsDeleteFailed when the storage refused any (they stay; the others went)."""
    pending = Recording.objects.filter(call_id__in=call_ids).exclude(status=RecordingStatus.DELETED)
    recordings = list(pending.select_related("call"))
    deleted, error = recordings_delete_marking(recordings, counted=counted)
    if error is not None:
        raise RecordingsDeleteFailed(error, deleted=deleted)
    return deleted


def recordings_expire(*, now: datetime.datetime, batch_size: int) -> tuple[int, int]:
    """Delete the recordings of calls ended before each organization's
    `recording_retention_days`; (deleted, organizations whose storage failed)."""
    deleted = failed = 0
    _organizations_fill()
    organizations = Organization.objects.filter(recording_retention_days__isnull=False)
    for organization_id, days in organizations.values_list("id", "recording_retention_days"):
        cutoff = scrub.cutoff(now=now, days=days)
        # A recording starts before its call ends: only those started before the cutoff
        # are read (`recording_org_live`), not all the organization kept or deleted.
        due = Recording.objects.filter(
            organization_id=organization_id,
            created_at__lte=cutoff,
            call__ended_at__lte=cutoff,
            call__status__in=ENDED_STATUSES,
        ).exclude(status=RecordingStatus.DELETED)
        try:
            while ids := list(
                due.order_by("created_at").values_list("call_id", flat=True)[:batch_size]
            ):
                try:
                    deleted += recordings_delete(call_ids=ids)
                finally:
                    # Those deleted before a failure are never looked at again.
                    scrub.identities_release(call_ids=ids)
        except RecordingsDeleteFailed as exc:
            deleted += exc.deleted
            failed += 1
            logger.warning(
                "recordings of organization %s past retention not deleted: %s",
                organization_id,
                exc,
            )
    return deleted, failed


def _organizations_fill() -> int:
    """Give their call's organization to recordings not yet deleted that have none: rows
    the release before migration recordings 0005 wrote while it still ran (README
    "Upgrading"), which retention, reading by organization, would never find. Read
    through `recording_org_live` (NULL first): none, once those are mended."""
    organization = Subquery(Call.objects.filter(pk=OuterRef("call_id")).values("organization_id"))
    return (
        Recording.objects.filter(organization__isnull=True)
        .exclude(status=RecordingStatus.DELETED)
        .update(organization=organization)
    )
