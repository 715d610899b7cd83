"""`expire_calls`: connect timeouts, maximum durations, and reconciliation of calls
whose end LiveKit's webhooks never told us."""

from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from calls.lifecycle import EndReason, call_transition
from calls.limits import open_calls_reconcile
from calls.models import (
    NOT_ENDED_STATUSES,
    USER_IDENTITY_PREFIX,
    Call,
    CallChannel,
    CallStatus,
    LiveKitWebhookEvent,
)
from voicecalls import livekit

logger = logging.getLogger(__name__)


@dataclass
class ExpireResult:
    connect_timeouts: int = 0
    dial_timeouts: int = 0
    max_durations: int = 0
    reconciled: int = 0
    livekit_errors: int = 0
    webhook_ids_pruned: int = 0
    open_counters_repaired: int = 0


# LiveKit retries a webhook for well under a minute; ids older than this cannot recur.
WEBHOOK_DEDUP_WINDOW = datetime.timedelta(days=1)


def _room_close(*, call_id: uuid.UUID, room_name: str, result: ExpireResult) -> None:
    """Delete an ended call's room; LiveKit failures are logged, not fatal."""
    try:
        livekit.room_delete(room_name=room_name)
    except livekit.LiveKitError as exc:
        result.livekit_errors += 1
        logger.warning("expire_calls: could not delete the room of call %s: %s", call_id, exc)


def calls_expire(*, now: datetime.datetime | None = None) -> ExpireResult:
    """Apply connect timeouts and max durations, reconcile silent active calls, and
    repair open-call counters that differ from the calls.

    Each call is moved to its terminal state *before* its room is deleted, so the
    room's own webhooks (user left with ROOM_DELETED) find it ended and cannot
    relabel it. Every move is a conditional UPDATE: several runs at once (cron on
    two hosts) end each call once.
    """
    now = now or timezone.now()
    result = ExpireResult()
    _dial_timeouts(now=now, result=result)
    # Calls not yet ended are few (a partial index serves this scan).
    open_calls = Call.objects.filter(status__in=NOT_ENDED_STATUSES).values_list(
        "id",
        "status",
        "created_at",
        "started_at",
        "last_event_at",
        "connect_timeout_seconds",
        "max_duration_seconds",
        "room_name",
        "participant_identity",
    )
    silent: list[SilentCall] = []
    silence = datetime.timedelta(seconds=settings.CALL_RECONCILE_AFTER_SECONDS)
    for (
        call_id,
        status,
        created_at,
        started_at,
        last_event_at,
        connect,
        max_duration,
        room_name,
        participant_identity,
    ) in list(open_calls):
        if status != CallStatus.ACTIVE:
            if now - created_at >= datetime.timedelta(seconds=connect) and call_transition(
                call_id=call_id,
                to_status=CallStatus.TIMEOUT,
                end_reason=EndReason.CONNECT_TIMEOUT,
                at=now,
                only_from={CallStatus.PENDING, CallStatus.CONNECTING},
            ):
                result.connect_timeouts += 1
                _room_close(call_id=call_id, room_name=room_name, result=result)
        elif started_at and now - started_at >= datetime.timedelta(seconds=max_duration):
            if call_transition(
                call_id=call_id,
                to_status=CallStatus.TIMEOUT,
                end_reason=EndReason.MAX_DURATION,
                at=now,
                only_from={CallStatus.ACTIVE},
            ):
                result.max_durations += 1
                _room_close(call_id=call_id, room_name=room_name, result=result)
        elif now - (last_event_at or started_at or created_at) >= silence:
            user = participant_identity or f"{USER_IDENTITY_PREFIX}{call_id}"
            silent.append(SilentCall(call_id, room_name, user))
    if silent:
        _calls_reconcile(calls=silent, now=now, result=result)
    # After the ends above, which released their places: a counter that still differs
    # was moved behind the state machine's back (a staff edit, a restore).
    result.open_counters_repaired = open_calls_reconcile()
    result.webhook_ids_pruned, _ = LiveKitWebhookEvent.objects.filter(
        received_at__lt=now - WEBHOOK_DEDUP_WINDOW
    ).delete()
    return result


def _dial_timeouts(*, now: datetime.datetime, result: ExpireResult) -> None:
    """Phone calls whose dial job never started by their dial deadline (the `dial`
    worker down or behind) fail `dial_timeout`; a job that starts later finds them
    ended and dials nothing."""
    late = Call.objects.filter(
        status=CallStatus.PENDING,
        channel=CallChannel.PHONE,
        dial_attempted_at__isnull=True,
        dial_deadline_at__lt=now,
    ).values_list("id", flat=True)
    for call_id in list(late):
        if call_transition(
            call_id=call_id,
            to_status=CallStatus.FAILED,
            end_reason=EndReason.DIAL_TIMEOUT,
            at=now,
            only_from={CallStatus.PENDING},
        ):
            result.dial_timeouts += 1


@dataclass(frozen=True)
class SilentCall:
    id: uuid.UUID
    room_name: str
    user_identity: str


def _calls_reconcile(
    *, calls: list[SilentCall], now: datetime.datetime, result: ExpireResult
) -> None:
    """End silent active calls whose room or user LiveKit no longer has.

    Webhooks can be lost (LiveKit drops events it cannot deliver within 30 s); a
    call whose end we never heard of would stay `active` forever. One ListRooms
    for all of them, then ListParticipants for the rooms that still exist.
    """
    try:
        rooms = livekit.rooms_existing(room_names=[call.room_name for call in calls])
    except livekit.LiveKitError as exc:
        result.livekit_errors += 1
        logger.warning("expire_calls: cannot reconcile, ListRooms failed: %s", exc)
        return
    for call in calls:
        call_id, room_name = call.id, call.room_name
        identities: set[str] | None = None
        if room_name in rooms:
            try:
                identities = livekit.room_participant_identities(room_name=room_name)
            except livekit.LiveKitError as exc:
                result.livekit_errors += 1
                logger.warning("expire_calls: ListParticipants failed for %s: %s", room_name, exc)
                continue
        if identities is not None and call.user_identity in identities:
            # Still talking, just quiet: look again after another silent stretch.
            Call.objects.filter(pk=call_id, status=CallStatus.ACTIVE).update(last_event_at=now)
            continue
        # We cannot know how it ended, only that it did: `completed`, `reconciled`.
        if call_transition(
            call_id=call_id,
            to_status=CallStatus.COMPLETED,
            end_reason=EndReason.RECONCILED,
            at=now,
            only_from={CallStatus.ACTIVE},
        ):
            result.reconciled += 1
            if identities is not None:  # the room lingers (agent still in it): close it
                _room_close(call_id=call_id, room_name=room_name, result=result)
