"""Recordings whose egress webhooks LiveKit could not deliver, made up for by asking
LiveKit (`expire_calls` runs it, as it reconciles calls whose room webhooks were lost)."""

from __future__ import annotations

import datetime
import logging
from uuid import UUID

from django.db import transaction

from calls.models import ENDED_STATUSES
from privacy.keys import ERASED_ROOM_PREFIX
from recordings.deletion import egress_stop_if_recording
from recordings.models import Recording
from recordings.models import RecordingStatus as S
from recordings.services import EGRESS_STATUSES, recording_egress_update
from voicecalls import livekit_egress
from voicecalls.livekit import EgressUpdate, LiveKitError
from voicecalls.task_queue import task_waiting_args

logger = logging.getLogger(__name__)

# LiveKit retries a webhook for well under a minute, and the egress uploads within
# seconds of the room closing: an egress of a call ended longer ago than this whose end
# we never heard of lost its webhooks (DESIGN.md "LiveKit webhooks"), and LiveKit is asked.
RECONCILE_AFTER = datetime.timedelta(minutes=10)
RECONCILE_BATCH = 100
_TERMINAL = {S.COMPLETE, S.FAILED}
# A start (`recording_start`) takes a LiveKit request, seconds at most: a recording
# still `starting`, with no egress, this long after it was created or last claimed lost
# its start (the worker running it was killed, the enqueue after the commit failed).
START_LOST_AFTER = datetime.timedelta(minutes=2)


def recordings_wake_lost_starts(*, now: datetime.datetime) -> tuple[int, int]:
    """Wake the starts nothing will run again (see START_LOST_AFTER); the task starts
    the egress of a call still going and fails the recording of one that ended. Each
    recording is woken by one pass only (a conditional UPDATE: `expire_calls` on two
    hosts), and not while its wake-up waits in the queue. A start that reached LiveKit
    before its worker died left an egress no row names: LiveKit is asked for the room's
    egresses first (ListEgress), and one found is the recording's, not started again.
    (woken or adopted, LiveKit errors); a LiveKit failure stops this pass."""
    from recordings.tasks import recording_start

    # Bounded, and by `recording_unclaimed_unended` (a few in flight).
    lost = list(
        Recording.objects.filter(
            status=S.STARTING,
            egress_id__isnull=True,
            ended_at__isnull=True,  # always, said for the index
            updated_at__lt=now - START_LOST_AFTER,
        )
        .order_by("created_at")
        .values_list("pk", "updated_at", "call__room_name", "object_key")[:RECONCILE_BATCH]
    )
    # A start a worker took lately runs still: woken too, the two runs could both claim
    # the row (the second reading it after the first's claim) and start two egresses.
    waiting = task_waiting_args(
        recording_start, [(str(pk),) for pk, *_ in lost], taken_since=now - START_LOST_AFTER
    )
    woken = 0
    for pk, updated_at, room_name, object_key in lost:
        if (str(pk),) in waiting:
            continue
        mine = Recording.objects.filter(
            pk=pk, status=S.STARTING, egress_id__isnull=True, updated_at=updated_at
        ).update(updated_at=now)
        if not mine:
            continue
        egresses = _egresses_of_key(recording_id=pk, room_name=room_name, object_key=object_key)
        if egresses is None:
            return woken, 1  # not woken: it could start a second egress; asked again next pass
        if egresses:
            _egress_adopt(egresses, recording_id=pk, now=now)
        else:
            recording_start.enqueue(str(pk))
        woken += 1
    return woken, 0


def _egresses_of_key(
    *, recording_id: object, room_name: str, object_key: str
) -> list[EgressUpdate] | None:
    """The room's egresses that write the recording's key and that no recording owns
    (ListEgress); None when LiveKit failed (logged; the room's name is not: an inbound
    call's holds the caller's number)."""
    try:
        egresses = livekit_egress.room_egresses(room_name=room_name)
    except LiveKitError as exc:
        message = "recordings: cannot list the egresses of recording %s: %s"
        logger.warning(message, recording_id, exc)
        return None
    return _unowned(egresses, object_key=object_key)


def _unowned(egresses: list[EgressUpdate], *, object_key: str) -> list[EgressUpdate]:
    """Those that write the recording's key and that no recording owns: one that a
    recording owns is another call's (a room name used again), one writing elsewhere
    or nothing is not ours (another app's, on the same project)."""
    ours = [e for e in egresses if e.filepath == object_key]
    ids = [e.egress_id for e in ours]
    owned = set(Recording.objects.filter(egress_id__in=ids).values_list("egress_id", flat=True))
    return [e for e in ours if e.egress_id not in owned]


def _egress_adopt(
    egresses: list[EgressUpdate], *, recording_id: UUID, now: datetime.datetime
) -> None:
    """The recording (no egress id) takes the egress of its room that its lost
    start got from LiveKit, as an egress webhook overtaking LiveKit's answer would: a
    running one, else one ended (its file is the recording's). Any other one still
    recording writes the same key: stopped."""
    running = [e for e in egresses if EGRESS_STATUSES.get(e.status) not in _TERMINAL]
    # Ended, one that wrote its file before one that failed (ListEgress has no order).
    complete = [e for e in egresses if EGRESS_STATUSES.get(e.status) == S.COMPLETE]
    chosen = (running or complete or egresses)[0]
    with transaction.atomic():
        recording_egress_update(egress=chosen, at=now)
    logger.warning("recordings: recording %s adopted egress %s", recording_id, chosen.egress_id)
    for other in running[1:]:
        egress_stop_if_recording(other)


def recordings_failed_starts_settle(*, now: datetime.datetime) -> tuple[int, int]:
    """A start LiveKit did not answer in time (`recording_start`) may have started its
    egress all the same: with its webhooks lost too, the recording said `failed` while
    its file was in the bucket. Once the call has ended, LiveKit is asked for the
    room's egresses: one writing the recording's key is adopted, as a lost start's;
    with none, the failure stands (`ended_at`, never asked again). (looked at, LiveKit
    errors); a LiveKit failure stops this pass."""
    # Bounded, and by `recording_unclaimed_unended` (failed starts not yet settled).
    unsettled = Recording.objects.filter(
        status=S.FAILED, egress_id__isnull=True, ended_at__isnull=True
    )
    ended_calls = unsettled.filter(
        call__status__in=ENDED_STATUSES, call__ended_at__lte=now - RECONCILE_AFTER
    )
    found = list(
        ended_calls.order_by("created_at").values_list(
            "pk", "updated_at", "call__room_name", "object_key"
        )[:RECONCILE_BATCH]
    )
    looked = 0
    for pk, updated_at, room_name, object_key in found:
        # Each looked at by one pass (`expire_calls` on two hosts).
        mine = unsettled.filter(pk=pk, updated_at=updated_at)
        if not mine.update(updated_at=now):
            continue
        # Renamed by a retention a day or more after the call: LiveKit never knew that
        # name, and an egress of the room ended with it long before.
        egresses = (
            []
            if room_name.startswith(ERASED_ROOM_PREFIX)
            else _egresses_of_key(recording_id=pk, room_name=room_name, object_key=object_key)
        )
        if egresses is None:
            return looked, 1
        if egresses:
            _egress_adopt(egresses, recording_id=pk, now=now)
        else:
            unsettled.filter(pk=pk).update(ended_at=now)
        looked += 1
    return looked, 0


def recordings_reconcile(*, now: datetime.datetime) -> tuple[int, int]:
    """Apply what LiveKit says now (ListEgress) of the egresses of calls ended before
    RECONCILE_AFTER whose `egress_ended` never came: a recording still `starting`,
    `recording` or `processing`, or one deleted while its egress wrote (its late file
    goes); an egress still running is stopped (StopEgress). (reconciled, LiveKit
    errors); a LiveKit failure stops this pass."""
    from recordings.tasks import recording_file_delete

    open_or_deleted_while_writing = Recording.objects.filter(
        egress_id__isnull=False,
        call__status__in=ENDED_STATUSES,
        call__ended_at__lte=now - RECONCILE_AFTER,
        ended_at__isnull=True,
        # Looked at again every RECONCILE_AFTER at most (each look that changes nothing
        # marks it): a deleted one is `ended` only once its late file is gone (that task
        # marks it), an egress still ending may take a while.
        updated_at__lt=now - RECONCILE_AFTER,
        status__in=[S.STARTING, S.RECORDING, S.PROCESSING, S.DELETED],
    )
    found = list(
        open_or_deleted_while_writing.order_by("created_at").values_list(
            "pk", "egress_id", "status"
        )[:RECONCILE_BATCH]
    )
    # A late file whose deletion is queued (a storage failure's retry, later) is not
    # queued once more.
    deleted = [(str(pk),) for pk, _, status in found if status == S.DELETED]
    queued = task_waiting_args(recording_file_delete, deleted, due_only=False)
    reconciled = 0
    for pk, egress_id, _status in found:
        if (str(pk),) in queued:
            # Looked at: not again before RECONCILE_AFTER, as the others (left unmarked,
            # one organization's queued retries, days of them, filled every batch).
            Recording.objects.filter(pk=pk, ended_at__isnull=True).update(updated_at=now)
            continue
        try:
            egress = livekit_egress.egress_status(egress_id=egress_id)
        except LiveKitError as exc:
            logger.warning("recordings: cannot reconcile egress %s: %s", egress_id, exc)
            return reconciled, 1
        if egress is not None and EGRESS_STATUSES.get(egress.status) not in _TERMINAL:
            # Still running long after its call ended (the room outlived the call): it
            # records nobody it should. The next pass (or its webhook) sees it ended.
            egress_stop_if_recording(egress)
            Recording.objects.filter(pk=pk, ended_at__isnull=True).update(updated_at=now)
            continue
        _egress_ended_apply(egress, pk=pk, egress_id=egress_id, now=now)
        reconciled += 1
    return reconciled, 0


@transaction.atomic
def _egress_ended_apply(
    egress: EgressUpdate | None,
    *,
    pk: UUID,
    egress_id: str,
    now: datetime.datetime,
) -> None:
    """What LiveKit says of an egress that ended (None: it forgot it), as its lost
    `egress_ended` would have said it; the recording is then not looked at again."""
    if egress is None:
        # LiveKit forgot it: whatever it wrote is past knowing; a deleted
        # recording's key is deleted once more all the same.
        egress = EgressUpdate(
            egress_id=egress_id,
            status="EGRESS_FAILED",
            error="LiveKit no longer knows this recording's egress.",
        )
    recording_egress_update(egress=egress, at=now)
    unended = Recording.objects.filter(pk=pk, ended_at__isnull=True)
    # A deleted one keeps no status of the egress. Its late file's deletion is
    # queued (above): done, it marks it ended; lost with a worker killed, the
    # next look queues it again.
    unended.filter(status=S.DELETED).update(updated_at=now)
    unended.exclude(status=S.DELETED).update(ended_at=now)


def recordings_deleted_starts_settle(*, now: datetime.datetime) -> tuple[int, int]:
    """A recording deleted while it was starting (its user erased mid-call) has no
    egress id. A start that reached LiveKit before its worker died left an egress no
    row names, whose file nobody deletes when its webhook is lost too. Once the call
    has ended (its room closed, the egress with it), its key, which is the call's, is
    deleted once more: the file-deletion task then marks it ended. An egress of the room
    still recording is stopped first, and the next pass looks again. (queued, LiveKit
    errors); a LiveKit failure stops this pass."""
    from recordings.tasks import recording_file_delete

    deleted_while_starting = Recording.objects.filter(
        status=S.DELETED,
        egress_id__isnull=True,
        ended_at__isnull=True,
        call__status__in=ENDED_STATUSES,
        call__ended_at__lte=now - RECONCILE_AFTER,
        updated_at__lt=now - RECONCILE_AFTER,
    )
    found = list(
        deleted_while_starting.order_by("created_at").values_list(
            "pk", "updated_at", "call__room_name", "object_key"
        )[:RECONCILE_BATCH]
    )
    queued = task_waiting_args(
        recording_file_delete, [(str(pk),) for pk, *_ in found], due_only=False
    )
    settled = 0
    active: list[EgressUpdate] | None = None
    for pk, updated_at, room_name, object_key in found:
        if (str(pk),) in queued:
            # Looked at, as in `recordings_reconcile`: not filling the next batches.
            Recording.objects.filter(pk=pk, ended_at__isnull=True).update(updated_at=now)
            continue
        # Each looked at by one pass (`expire_calls` on two hosts), once a RECONCILE_AFTER.
        mine = Recording.objects.filter(pk=pk, ended_at__isnull=True, updated_at=updated_at)
        if not mine.update(updated_at=now):
            continue
        try:
            if room_name.startswith(ERASED_ROOM_PREFIX):
                # Renamed by the erasure: LiveKit never knew this name. The egresses
                # running anywhere (listed once a pass), by the key they write.
                active = livekit_egress.active_egresses() if active is None else active
                egresses = [e for e in active if e.filepath == object_key]
            else:
                room = livekit_egress.room_egresses(room_name=room_name)
                egresses = _unowned(room, object_key=object_key)
        except LiveKitError as exc:
            logger.warning("recordings: cannot list the egresses of recording %s: %s", pk, exc)
            return settled, 1
        running = [e for e in egresses if EGRESS_STATUSES.get(e.status) not in _TERMINAL]
        for egress in running:
            egress_stop_if_recording(egress)
        if not running:
            recording_file_delete.enqueue(str(pk))
            settled += 1
    return settled, 0
