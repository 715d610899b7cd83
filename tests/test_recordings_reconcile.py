"""`expire_calls`' passes over recordings whose egress webhooks were lost, under their
batch limit (recordings/reconcile.py): one organization's recordings must not fill every
pass's batch."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from calls.models import Call
from recordings import reconcile
from recordings.models import Recording
from recordings.tasks import recording_file_delete
from tests.factories import OrganizationFactory, RecordingFactory


def ended_an_hour_ago(status: str, *, now: datetime.datetime) -> Recording:
    """A recording of another organization's call ended an hour ago, its egress's end
    never heard of (its webhooks lost)."""
    hour_ago = now - datetime.timedelta(hours=1)
    recording = RecordingFactory(
        call__organization=OrganizationFactory(), status=status, created_at=hour_ago
    )
    Call.objects.filter(pk=recording.call_id).update(ended_at=hour_ago)
    Recording.objects.filter(pk=recording.pk).update(updated_at=hour_ago, ended_at=None)
    return recording


@pytest.mark.django_db
def test_late_files_whose_deletion_waits_in_the_queue_do_not_fill_every_pass(
    fake_livekit, monkeypatch
) -> None:
    """An organization whose bucket refused deletions had its deleted recordings' late
    files queued for retries (for days): skipped but never marked as looked at, the
    oldest of them filled each pass's batch (100) for good, and no other organization's
    recording was reconciled again (left `recording`, its egress never asked about)."""
    monkeypatch.setattr(reconcile, "RECONCILE_BATCH", 1)
    now = timezone.now()
    theirs = ended_an_hour_ago("deleted", now=now)
    recording_file_delete.using(run_after=now + datetime.timedelta(hours=1)).enqueue(
        str(theirs.pk), 1
    )
    mine = ended_an_hour_ago("recording", now=now)

    for minute in range(3):
        reconcile.recordings_reconcile(now=now + datetime.timedelta(minutes=minute))

    mine.refresh_from_db()
    assert mine.ended_at is not None  # LiveKit no longer knows its egress: settled
    assert Recording.objects.get(pk=theirs.pk).ended_at is None  # its deletion still due


@pytest.mark.django_db
def test_deleted_starts_whose_deletion_waits_in_the_queue_do_not_fill_every_pass(
    fake_livekit, monkeypatch
) -> None:
    """The same for recordings deleted while they were starting (no egress id): those of
    an organization whose late-file deletions wait in the queue held the batch, and no
    other organization's was settled (its key deleted once more) again."""
    monkeypatch.setattr(reconcile, "RECONCILE_BATCH", 1)
    now = timezone.now()
    theirs = ended_an_hour_ago("deleted", now=now)
    mine = ended_an_hour_ago("deleted", now=now)
    Recording.objects.filter(pk__in=[theirs.pk, mine.pk]).update(egress_id=None)
    later = now + datetime.timedelta(hours=1)
    recording_file_delete.using(run_after=later).enqueue(str(theirs.pk), 1)

    settled = [
        reconcile.recordings_deleted_starts_settle(now=now + datetime.timedelta(minutes=minute))
        for minute in range(3)
    ]

    assert sum(count for count, _errors in settled) == 1  # mine: its key deleted once more
