"""Reads of recordings: what a client may see of one, and its download link."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone

from calls.models import Call
from recordings import storage
from recordings.models import Recording, RecordingStatus, RecordingStorage


def call_recording(*, call: Call) -> Recording | None:
    """The call's recording, or None when it was not recorded; through the reverse
    relation, so a call read with `select_related("recording")` costs no query."""
    try:
        return call.recording
    except ObjectDoesNotExist:
        return None


@dataclass(frozen=True)
class RecordingLink:
    url: str | None
    expires_at: datetime.datetime | None


def recording_link(
    *, recording: Recording, call: Call, retention_days: int | None
) -> RecordingLink:
    """A presigned download link of a complete recording, valid RECORDINGS_URL_TTL_SECONDS
    (at most 15 minutes) and never past the organization's recording retention, signed
    locally; no link before the file is complete, after it was deleted or its retention
    ran out (a retention pass that met a storage failure deletes it later), or when no
    credentials (or no usable endpoint) reach its bucket any more."""
    if recording.status != RecordingStatus.COMPLETE:
        return RecordingLink(None, None)
    now = timezone.now()
    ttl = datetime.timedelta(seconds=settings.RECORDINGS_URL_TTL_SECONDS)
    if retention_days is not None and call.ended_at is not None:
        ttl = min(ttl, call.ended_at + datetime.timedelta(days=retention_days) - now)
    seconds = int(ttl.total_seconds())
    if seconds <= 0:
        return RecordingLink(None, None)
    try:
        target = storage.target_of(recording, organization_id=call.organization_id)
        if target is None:
            return RecordingLink(None, None)
        url = storage.presigned_get_url(target, key=recording.object_key, expires_in=seconds)
    except storage.StorageError:
        return RecordingLink(None, None)
    return RecordingLink(url, now + datetime.timedelta(seconds=seconds))


def recording_storage_of(*, organization_id: object) -> RecordingStorage | None:
    storages = RecordingStorage.objects.defer(*RecordingStorage.SECRET_FIELDS)
    return storages.filter(organization_id=organization_id).first()
