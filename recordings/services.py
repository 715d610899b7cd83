"""Writes of call recordings: schedule one when a call of a recording workflow becomes
active, start its egress (a task, outside any transaction), follow LiveKit's egress
webhooks; an organization's own bucket. Deleting a recording and its file:
`recordings.deletion`.

The `Recording` row is created before LiveKit is asked, so an egress webhook that
overtakes LiveKit's answer still finds it (by the call's room), and its status only
moves forward (`models.STATUS_RANK`).
"""

from __future__ import annotations

import datetime
import logging
import secrets
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from calls.models import ENDED_STATUSES, NOT_ENDED_STATUSES, Call, CallStatus
from recordings import storage
from recordings.deletion import (
    egress_stop_if_recording,
    egress_stop_logged,
    recording_file_delete_later,
)
from recordings.models import (
    Recording,
    RecordingStatus,
    RecordingStorage,
    statuses_below,
)
from voicecalls import livekit_egress
from voicecalls.livekit import EgressUpdate, LiveKitError

logger = logging.getLogger(__name__)

S = RecordingStatus
ERROR_MAX_CHARS = 500
# The columns' bounds: `egress_id`, `duration_seconds` (integer), `size_bytes` (bigint).
EGRESS_ID_MAX = Recording._meta.get_field("egress_id").max_length
_DURATION_MAX = 2**31 - 1
_SIZE_MAX = 2**63 - 1

# LiveKit's EgressStatus → ours. A limit reached (the egress's maximum duration) ends the
# file early but writes and uploads it as a stop does, with its file results: complete,
# its `error` saying why it ended before the call (LiveKit's "Session limit reached").
EGRESS_STATUSES = {
    "EGRESS_STARTING": S.STARTING,
    "EGRESS_ACTIVE": S.RECORDING,
    "EGRESS_ENDING": S.PROCESSING,
    "EGRESS_COMPLETE": S.COMPLETE,
    "EGRESS_FAILED": S.FAILED,
    "EGRESS_ABORTED": S.FAILED,
    "EGRESS_LIMIT_REACHED": S.COMPLETE,
}


def call_status_changed_receiver(signal: object, sender: type, **change: Any) -> None:
    """`calls.signals.call_status_changed` → schedule the recording of a call that just
    became active."""
    if change["to_status"] == CallStatus.ACTIVE:
        recording_schedule(call_id=change["call_id"])


def object_key_for(*, organization_id: object, call_id: object) -> str:
    """Per organization and call, ending in a random token: a key cannot be guessed
    from ids a client knows."""
    return f"recordings/{organization_id}/{call_id}/{secrets.token_urlsafe(18)}.ogg"


def recording_schedule(*, call_id: UUID | str) -> Recording | None:
    """Create the recording of a call that became active, if its workflow version
    records calls, and start it once this transaction commits. Called inside the
    transaction that made the call active; never asks LiveKit itself. Without any
    storage nothing is recorded (logged) and the call goes on as usual."""
    row = (
        Call.objects.filter(pk=call_id)
        .values_list(
            "organization_id", "workflow_version__definition__settings__recording", "erased_at"
        )
        .first()
    )
    if row is None or not isinstance(row[1], dict) or row[1].get("enabled") is not True:
        return None
    if row[2] is not None:
        return None  # its user was erased while it connected: nothing of them is kept
    try:
        # A savepoint: whatever goes wrong here must not undo the call's activation.
        with transaction.atomic():
            recording = _recording_create(call_id=call_id, organization_id=row[0])
    except Exception:
        logger.exception("call %s is not recorded: its recording could not be set up", call_id)
        return None
    if recording is None:
        return None
    from recordings.tasks import recording_start as task

    # robust: a failed enqueue must not undo the activation that already committed.
    transaction.on_commit(lambda: task.enqueue(str(recording.pk)), robust=True)
    return recording


def _recording_create(*, call_id: UUID | str, organization_id: object) -> Recording | None:
    try:
        where = storage.target_for_new_recording(organization_id=organization_id)
    except storage.StorageError as exc:
        logger.error("call %s is not recorded: %s", call_id, exc)
        return None
    if where is None:
        logger.warning(
            "call %s is not recorded: its workflow records calls but no recording storage "
            "is configured (RECORDINGS_S3_BUCKET or the organization's own)",
            call_id,
        )
        return None
    kind, target = where
    return Recording.objects.create(
        call_id=call_id,
        organization_id=organization_id,
        storage=kind,
        endpoint=target.endpoint,
        bucket=target.bucket,
        region=target.region,
        object_key=object_key_for(organization_id=organization_id, call_id=call_id),
    )


def recording_start(*, recording_id: UUID | str) -> str:
    """The task's work: ask LiveKit for the egress and keep its id. LiveKit failing
    marks the recording `failed` with the reason; the call is never touched. Not in a
    transaction: a LiveKit request never holds rows locked. Returns what happened."""
    recording = Recording.objects.select_related("call").filter(pk=recording_id).first()
    if recording is None or recording.egress_id or recording.status != S.STARTING:
        return "skipped"
    # Claimed by this run only if the row is as it was read: two wake-ups at once (a
    # lost start woken by `recordings_wake_lost_starts` on two hosts) start one egress.
    claimed = Recording.objects.filter(
        pk=recording.pk,
        status=S.STARTING,
        egress_id__isnull=True,
        updated_at=recording.updated_at,
    ).update(updated_at=timezone.now())
    if not claimed:
        return "skipped"
    call = recording.call
    if call.status in ENDED_STATUSES:
        _fail(recording.pk, "The call ended before the recording could start.")
        return "failed"
    if call.erased_at is not None:
        _fail(recording.pk, "The call's user was erased before the recording could start.")
        return "failed"
    try:
        where = _target_now(recording, organization_id=call.organization_id)
    except storage.StorageError as exc:
        _fail(recording.pk, str(exc))
        return "failed"
    if where is None:
        _fail(recording.pk, "The recording storage is no longer configured.")
        return "failed"
    target = where[1]
    try:
        egress_id = livekit_egress.room_audio_recording_start(
            room_name=call.room_name,
            filepath=recording.object_key,
            endpoint=target.endpoint,
            bucket=target.bucket,
            region=target.region,
            access_key=target.access_key_id,
            secret=target.secret_access_key,
        )
    except LiveKitError as exc:
        logger.warning("could not start recording call %s: %s", call.pk, exc)
        # Not settled: LiveKit may have started it and its answer was lost (a timeout).
        # Should its webhooks be lost too, `recordings_failed_starts_settle` asks LiveKit.
        _fail(recording.pk, f"LiveKit could not start the recording: {exc.summary}", settled=False)
        return "failed"
    return _egress_id_keep(recording.pk, egress_id, where)


def _egress_id_keep(recording_id: UUID, egress_id: str, where: tuple[str, storage.S3Target]) -> str:
    """Keep the id LiveKit gave the start, and where its egress writes (`where`),
    unless the row has another egress or was deleted meanwhile: then this one is
    stopped. Each outcome is one conditional UPDATE: an erasure or a webhook may land
    between any two statements."""
    now = timezone.now()
    unclaimed = Recording.objects.filter(pk=recording_id, egress_id__isnull=True)
    kept = unclaimed.filter(status__in=[S.STARTING, S.DELETED]).update(
        egress_id=egress_id, updated_at=now
    )
    failed = "" if kept else _failed_meanwhile_keep(unclaimed, egress_id=egress_id, now=now)
    mine = Recording.objects.filter(pk=recording_id, egress_id=egress_id)
    if not kept and not failed and not mine.exists():
        # This run was so slow that a wake-up took it for lost, and the start it woke
        # kept its egress first (or an egress webhook did, before LiveKit answered):
        # this one would write the same file. Stopped, it ends before that one.
        egress_stop_logged(egress_id)
        return "duplicate"
    # A start woken meanwhile may have pointed the row at a storage changed since: the
    # file is where this egress writes it (what links, retention and erasure read).
    kind, target = where
    mine.update(storage=kind, endpoint=target.endpoint, bucket=target.bucket, region=target.region)
    if failed in ("deleted", "failed") or (
        (kept or failed) and mine.filter(status=S.DELETED).update(ended_at=None)
    ):
        # Deleted (its user erased) while LiveKit started it, or failed for a call that
        # ended: stopped here (the deletion found no egress id to stop). Not ended, a
        # deleted one is followed until its file goes (`recordings_reconcile`).
        egress_stop_logged(egress_id)
        return "stopped"
    return "started"


def _failed_meanwhile_keep(unclaimed: QuerySet, *, egress_id: str, now: datetime.datetime) -> str:
    """Keep the egress on a recording that the start a wake-up ran, taking this slow
    one for lost, failed (LiveKit refused it, the call ended, its user was erased): a
    call going on and not erased is recorded by it after all ("revived", as an egress
    webhook's claim would have it); an erased call's recording is deleted ("deleted");
    otherwise it stays failed ("failed"). "" if the row was not failed."""
    failed = unclaimed.filter(status=S.FAILED)
    going = failed.filter(call__erased_at__isnull=True, call__status__in=NOT_ENDED_STATUSES)
    keep = {"egress_id": egress_id, "updated_at": now}
    if going.update(**keep, status=S.STARTING, error="", ended_at=None):
        return "revived"
    erased = failed.filter(call__erased_at__isnull=False)
    if erased.update(**keep, status=S.DELETED, deleted_at=now, ended_at=None):
        return "deleted"
    return "failed" if failed.update(**keep) else ""


def _target_now(
    recording: Recording, *, organization_id: object
) -> tuple[str, storage.S3Target] | None:
    """Where a recording not started yet goes: where new ones go now (the organization
    may have changed its storage since the call began: a bucket is never paired with
    another's key), the row following. StorageError for an endpoint the egress must not
    be sent to."""
    where = storage.target_for_new_recording(organization_id=organization_id)
    if where is None:
        return None
    kind, target = where
    storage.target_reachable_check(target)
    Recording.objects.filter(pk=recording.pk, status=S.STARTING, egress_id__isnull=True).update(
        storage=kind, endpoint=target.endpoint, bucket=target.bucket, region=target.region
    )
    return where


def _fail(recording_id: UUID, error: str, *, settled: bool = True) -> bool:
    """Fail a recording no egress has claimed: one whose webhook came while LiveKit's
    answer was lost is running, whatever our request says. Not `settled` (no
    `ended_at`): LiveKit is asked about it once its call ended."""
    now = timezone.now()
    unclaimed = Recording.objects.filter(
        pk=recording_id, egress_id__isnull=True, status__in=statuses_below(S.FAILED)
    )
    return bool(
        unclaimed.update(
            status=S.FAILED,
            error=error[:ERROR_MAX_CHARS],
            ended_at=now if settled else None,
            updated_at=now,
        )
    )


def _recording_of_egress(*, egress_id: str, filepath: str) -> tuple[Recording | None, bool]:
    """The recording an egress writes: by its id, or — when its webhook overtook
    LiveKit's answer to the start request, or that answer was lost — the one whose key
    it writes (unique, and random: an egress of another app in the room, a stream or a
    file of its own, is not the recording's), claimed for it (then True)."""
    if len(egress_id) > EGRESS_ID_MAX:  # no egress of ours (LiveKit's are ~15)
        logger.warning("egress webhook with an id of %d characters ignored", len(egress_id))
        return None, False
    recording = Recording.objects.filter(egress_id=egress_id).first()
    if recording is not None or not filepath or not egress_id:
        return recording, False
    # By the key, not the room: an erasure may have renamed the room since.
    unclaimed = Recording.objects.filter(object_key=filepath, egress_id__isnull=True)
    pk = unclaimed.values_list("pk", flat=True).first()
    if pk is None:
        return None, False
    # Claimed by this event only if this UPDATE did it: another event of the same egress
    # that claimed it meanwhile (its lock waited for) may have moved it to a final status.
    claimed = Recording.objects.filter(pk=pk, egress_id__isnull=True).update(egress_id=egress_id)
    return Recording.objects.filter(egress_id=egress_id).first(), bool(claimed)


def recording_egress_update(*, egress: EgressUpdate, at: datetime.datetime) -> bool:
    """Apply an egress webhook to the recording it is about; False when it is about no
    recording of ours. The status only moves forward, so a replayed or late event
    (an `egress_started` after `egress_ended`) changes nothing."""
    recording, claimed = _recording_of_egress(egress_id=egress.egress_id, filepath=egress.filepath)
    if recording is None:
        return _egress_writing_a_kept_key(egress)
    status = EGRESS_STATUSES.get(egress.status)
    if status is None:
        return True
    # A late webhook is timed by its whole-second stamp (or LiveKit's clock is behind
    # ours): never before the recording existed, so `created_at <= ended_at` holds.
    at = max(at, recording.created_at)
    changes: dict[str, object] = {"status": status, "updated_at": at}
    from_statuses = statuses_below(status)
    if claimed:
        # Failed with no egress id: LiveKit's answer to the start was lost (a timeout),
        # a guess LiveKit's own word on the room's egress now replaces.
        from_statuses.append(S.FAILED)
        changes.update(error="", ended_at=None)
    if status == S.COMPLETE:
        changes["ended_at"] = at
        # What the columns hold: LiveKit's int64s may be anything (-1, 2^63 - 1).
        # Whole seconds, rounded down (DESIGN.md), in integers: a float loses nanoseconds.
        duration = None if egress.duration_ns is None else egress.duration_ns // 1_000_000_000
        if duration is not None and 0 <= duration <= _DURATION_MAX:
            changes["duration_seconds"] = duration
        if egress.size_bytes is not None and 0 <= egress.size_bytes <= _SIZE_MAX:
            changes["size_bytes"] = egress.size_bytes
        if egress.status == "EGRESS_LIMIT_REACHED":  # cut short: said so
            changes["error"] = (egress.error or egress.status)[:ERROR_MAX_CHARS]
    elif status == S.FAILED:
        changes["ended_at"] = at
        changes["error"] = (egress.error or egress.status)[:ERROR_MAX_CHARS]
    moved = Recording.objects.filter(pk=recording.pk, status__in=from_statuses).update(**changes)
    # As it is now, not as read before the update: a deletion may have marked it since,
    # after its own file deletion found nothing yet.
    if not moved and Recording.objects.filter(pk=recording.pk, status=S.DELETED).exists():
        _egress_of_deleted(recording.pk, egress, status)
    return True


def _egress_writing_a_kept_key(egress: EgressUpdate) -> bool:
    """An egress writing the key of a recording that kept another egress: a start's
    that another start of the same recording beat (`_egress_id_keep`). Still
    recording, it is stopped (it would write over the file, or record an erased user);
    ended, what it wrote goes if the recording was deleted. False for no key of ours."""
    if not egress.filepath:
        return False
    kept = Recording.objects.filter(object_key=egress.filepath, egress_id__isnull=False)
    row = kept.exclude(egress_id=egress.egress_id).values_list("pk", "status").first()
    if row is None:
        return False
    if EGRESS_STATUSES.get(egress.status) in (S.COMPLETE, S.FAILED):
        if row[1] == S.DELETED:
            recording_file_delete_later(row[0])
    else:
        transaction.on_commit(lambda: egress_stop_if_recording(egress), robust=True)
    return True


def _egress_of_deleted(recording_id: UUID, egress: EgressUpdate, status: str) -> None:
    """An egress of a recording deleted while it wrote: the file it ended goes too (one
    a failure ended early may be a file as well; none: a no-op). One still recording is
    stopped: the deletion looked before the egress was the recording's (its start's
    answer, or this webhook, came later), so it records the erased user no more."""
    if status in (S.COMPLETE, S.FAILED):
        recording_file_delete_later(recording_id)
    else:  # after the commit: a LiveKit request never holds the row locked
        transaction.on_commit(lambda: egress_stop_if_recording(egress), robust=True)


def recording_storage_set(
    *,
    organization_id: object,
    endpoint: str,
    bucket: str,
    region: str,
    access_key_id: str,
    secret_access_key: str,
) -> RecordingStorage:
    """Set (or replace) the organization's own bucket: its calls' next recordings go
    there. Recordings already made stay where they are."""
    now = timezone.now()
    values = {
        "endpoint": endpoint,
        "bucket": bucket,
        "region": region,
        "access_key_id": access_key_id,
        "secret_access_key": secret_access_key,
        "access_key_id_last4": access_key_id[-4:],
        "updated_at": now,
    }
    # A new row is created and updated at one time, not `updated_at` first. The old
    # credentials are not read: ones no configured key opens are replaced all the same.
    storages = RecordingStorage.objects.defer(*RecordingStorage.SECRET_FIELDS)
    storage_row, _ = storages.update_or_create(
        organization_id=organization_id,
        defaults=values,
        create_defaults={**values, "created_at": now},
    )
    logger.info("recording storage of organization %s set to bucket %s", organization_id, bucket)
    return storage_row


def recording_storage_delete(*, organization_id: object) -> bool:
    """Remove the organization's own bucket: later recordings go to the platform's (if
    any). Files already in its bucket stay there, out of our reach."""
    deleted, _ = RecordingStorage.objects.filter(organization_id=organization_id).delete()
    return bool(deleted)
