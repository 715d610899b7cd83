"""Deleting a call's recording, for retention and erasure: its file, from whichever
storage holds it, then the row marked `deleted`; a file its egress finished afterwards
(a late file) is deleted by a task, retried while the storage fails."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Sequence
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from recordings import storage
from recordings.models import Recording, RecordingStatus, StorageKind
from recordings.storage import StorageError
from voicecalls import livekit_egress
from voicecalls.livekit import EgressUpdate, LiveKitError

logger = logging.getLogger(__name__)

S = RecordingStatus


def recording_delete(*, call_id: UUID | str) -> bool:
    """Delete a call's recording: see `recording_delete_marking`; True once the
    recording is deleted (now or before), False when the call has none."""
    return recording_delete_marking(call_id=call_id) is not None


def recording_delete_marking(*, call_id: UUID | str) -> bool | None:
    """Delete a call's recording: the file, from whichever storage holds it, then the
    row is marked `deleted` (kept, without anything personal: the call's history shows
    there was one). True when this call marked it; False when it was deleted before (or
    by another run meanwhile: an audit counts it once); None when the call has none.
    Idempotent. Raises `storage.StorageError`, leaving the recording as
    it was, when the storage cannot be reached or its credentials are gone: retry
    later. Call it outside a transaction (it makes a request to the storage)."""
    recording = Recording.objects.select_related("call").filter(call_id=call_id).first()
    if recording is None:
        return None
    if recording.status == S.DELETED:
        return False
    try:
        _file_delete(recording)
    except StorageRemoved as exc:
        # The organization removed or replaced its own bucket's setting: the file is
        # theirs, out of our reach for good (docs/privacy.md). Forgotten here, it holds
        # nothing up.
        logger.warning("recording of call %s left in its bucket: %s", call_id, exc)
    marked, stop = _marked(recording)
    if stop:
        recording_egress_stop(recording.pk)
    return marked


def _marked(recording: Recording) -> tuple[bool, bool]:
    """Mark the recording, its file deleted, `deleted`: (whether this run marked it,
    whether its egress is to be stopped, which the caller does once it committed)."""
    call_id = recording.call_id
    now = timezone.now()
    row = Recording.objects.filter(pk=recording.pk).exclude(status=S.DELETED)
    marked = row.filter(status=recording.status).update(
        status=S.DELETED, deleted_at=now, updated_at=now
    )
    late = not marked and row.update(status=S.DELETED, deleted_at=now, updated_at=now)
    if late:
        # The egress ended while the file went: what it finished may have been written
        # after the deletion, and its webhook saw no deleted recording to delete it.
        recording_file_delete_later(recording.pk)
    # Its egress may still be recording (the call goes on, its user just erased):
    # stopped, it records no more of them; its file goes when it ends (above). Late, it
    # moved since it was read (a slow start revived it): stopped too.
    stop = late or (marked and recording.status in (S.STARTING, S.RECORDING))
    logger.info("recording of call %s deleted", call_id)
    return bool(marked or late), bool(stop)


def recordings_delete_marking(
    recordings: Sequence[Recording], *, counted: Callable[[int], None] | None = None
) -> tuple[int, StorageError | None]:
    """Delete these recordings (read with their call) as `recording_delete_marking`
    does, their files asked of each bucket up to 1,000 in a request: (how many this run
    marked whose file went, the first error of those the storage refused, left as they
    were). One out of reach for good (StorageRemoved) is marked, not counted: its file
    is left in the organization's bucket, and the count is what went from storage.

    The rows are marked in one transaction, in id order (two runs marking the same ones
    wait for each other, never deadlock), with `counted(marked)` in it: a count kept of
    them (an erasure's audit) is written with the marks or, the process killed between,
    neither is (the next run deletes and counts them)."""
    refused = _files_delete(recordings)
    marked = 0
    stopping: list[UUID] = []
    with transaction.atomic():
        for recording in sorted(recordings, key=lambda recording: recording.pk):
            error = refused.get(recording.pk)
            if isinstance(error, StorageRemoved):
                logger.warning(
                    "recording of call %s left in its bucket: %s", recording.call_id, error
                )
            elif error is not None:
                continue
            this, stop = _marked(recording)
            marked += this and error is None
            if stop:
                stopping.append(recording.pk)
        if marked and counted is not None:
            counted(marked)
    for recording_id in stopping:
        recording_egress_stop(recording_id)
    failed = (e for e in refused.values() if not isinstance(e, StorageRemoved))
    return marked, next(failed, None)


def _files_delete(recordings: Sequence[Recording]) -> dict[UUID, StorageError]:
    """Delete the recordings' files, a request per bucket and DELETE_KEYS_MAX of them;
    those left, by recording id, with why (StorageRemoved: out of reach for good)."""
    refused: dict[UUID, StorageError] = {}
    buckets: dict[storage.S3Target, list[Recording]] = {}
    for recording in recordings:
        try:
            target = _target(recording)
        except StorageError as exc:
            refused[recording.pk] = exc
        else:
            buckets.setdefault(target, []).append(recording)
    size = storage.DELETE_KEYS_MAX
    for target, held in buckets.items():
        for chunk in (held[start : start + size] for start in range(0, len(held), size)):
            try:
                errors = storage.objects_delete(target, keys=[r.object_key for r in chunk])
            except StorageError as exc:
                errors = dict.fromkeys((r.object_key for r in chunk), exc)
            for recording in chunk:
                if (error := errors.get(recording.object_key)) is not None:
                    refused[recording.pk] = _refusal(recording, error)
    return refused


def recording_egress_stop(recording_id: UUID) -> None:
    """Stop the recording's egress, if it has one (see `egress_stop_logged`)."""
    egress_id = Recording.objects.filter(pk=recording_id).values_list("egress_id", flat=True)
    egress_id = egress_id.first()
    if egress_id:
        egress_stop_logged(egress_id)


def egress_stop_if_recording(egress: EgressUpdate) -> None:
    """Stop an egress still recording (one ending is finishing its file already)."""
    if egress.status in ("EGRESS_STARTING", "EGRESS_ACTIVE"):
        egress_stop_logged(egress.egress_id)


def egress_stop_logged(egress_id: str) -> None:
    """Stop an egress: it finishes its file and reports it ended. A LiveKit failure is
    logged: it ends with the room (`recordings_reconcile` stops a recording's egress
    that outlives its call)."""
    try:
        livekit_egress.egress_stop(egress_id=egress_id)
    except LiveKitError as exc:
        logger.warning("recordings: could not stop egress %s: %s", egress_id, exc)


def recording_file_delete_later(recording_id: UUID) -> None:
    from recordings.tasks import recording_file_delete

    pk = str(recording_id)
    transaction.on_commit(lambda: recording_file_delete.enqueue(pk), robust=True)


# A late file's deletion meeting a storage failure is tried again after 1, 2, 4, ...
# minutes, at most 6 hours apart, for about two weeks; then it is logged as left.
FILE_DELETE_RETRIES = 64
FILE_DELETE_RETRY_MAX = datetime.timedelta(hours=6)


def recording_file_delete_retry(
    *, recording_id: UUID | str, attempt: int, error: Exception
) -> None:
    from recordings.tasks import recording_file_delete

    if attempt >= FILE_DELETE_RETRIES:
        logger.error("recording %s: its late file is left in storage: %s", recording_id, error)
        return
    delay = min(datetime.timedelta(minutes=2 ** min(attempt, 16)), FILE_DELETE_RETRY_MAX)
    logger.warning(
        "recording %s: deleting its late file failed (%s); retrying", recording_id, error
    )
    task = recording_file_delete.using(run_after=timezone.now() + delay)
    task.enqueue(str(recording_id), attempt + 1)


def recording_file_delete(*, recording_id: UUID | str) -> bool:
    """Delete a deleted recording's file again (the egress finished it afterwards)."""
    recording = Recording.objects.select_related("call").filter(pk=recording_id).first()
    if recording is None or recording.status != S.DELETED:
        return False
    _file_delete(recording)
    late_file_settled(recording.pk)
    return True


def late_file_settled(recording_id: UUID | str) -> None:
    """The late file of a deleted recording is gone (or out of reach for good):
    `recordings_reconcile` no longer looks at it."""
    now = timezone.now()
    Recording.objects.filter(pk=recording_id, status=S.DELETED, ended_at__isnull=True).update(
        ended_at=now, updated_at=now
    )


class StorageRemoved(storage.StorageError):
    """The recording is in the organization's own bucket, whose setting it removed, or
    replaced with credentials that do not reach it."""


def _file_delete(recording: Recording) -> None:
    target = _target(recording)
    try:
        storage.object_delete(target, key=recording.object_key)
    except storage.StorageError as exc:
        raise _refusal(recording, exc) from None


def _target(recording: Recording) -> storage.S3Target:
    """The bucket holding the recording's file; StorageRemoved when the organization
    removed its setting, StorageError when no credentials reach it."""
    target = storage.target_of(recording, organization_id=recording.call.organization_id)
    if target is None and recording.storage == StorageKind.ORGANIZATION:
        raise StorageRemoved("The organization removed the storage of this recording's bucket.")
    if target is None:
        raise storage.StorageError("No credentials reach the platform's bucket any more.")
    return target


def _refusal(recording: Recording, error: StorageError) -> StorageError:
    """Why the storage refused the file's deletion: refused in the bucket the setting
    names now, it is retried (its credentials may be fixed); in one it replaced, it
    would be refused for ever (StorageRemoved)."""
    own = recording.storage == StorageKind.ORGANIZATION
    organization_id = recording.call.organization_id
    if (
        isinstance(error, storage.StorageAccessRefused)
        and own
        and not storage.bucket_is_current(recording, organization_id=organization_id)
    ):
        return StorageRemoved(
            "The organization replaced its storage with credentials that do not reach "
            "this recording's bucket."
        )
    return error
