"""`expire_calls`: connect timeouts, maximum durations, and reconciliation of calls
whose end LiveKit's webhooks never told us."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from calls.agent_presence import call_agent_overdue
from calls.lifecycle import EndReason, call_transition
from calls.limits import open_calls_reconcile
from calls.models import (
    NOT_ENDED_STATUSES,
    NOT_STARTED_STATUSES,
    USER_IDENTITY_PREFIX,
    Call,
    CallChannel,
    CallStatus,
    IdempotencyRecord,
    LiveKitWebhookEvent,
    start_bound,
)
from calls.services import call_room_close_later
from recordings.reconcile import (
    recordings_deleted_starts_settle,
    recordings_failed_starts_settle,
    recordings_reconcile,
    recordings_wake_lost_starts,
)
from telephony.models import RefusedTransfer
from voicecalls import livekit

logger = logging.getLogger(__name__)


@dataclass
class ExpireResult:
    connect_timeouts: int = 0
    dial_timeouts: int = 0
    max_durations: int = 0
    reconciled: int = 0
    agents_not_joined: int = 0
    livekit_errors: int = 0
    webhook_ids_pruned: int = 0
    idempotency_records_pruned: int = 0
    refused_transfers_pruned: int = 0
    open_counters_repaired: int = 0
    recordings_reconciled: int = 0


# LiveKit retries a webhook for well under a minute; ids older than this cannot recur.
WEBHOOK_DEDUP_WINDOW = datetime.timedelta(days=1)
# LiveKit delivers a webhook up to 30 s late (then drops it): a join made within the
# connect timeout may still be on its way that long after, and still starts the call.
# So a call nobody joined times out this much later, stamped when its timeout passed.
START_GRACE = datetime.timedelta(seconds=30)


def _room_close(*, call_id: uuid.UUID, room_name: str, result: ExpireResult) -> None:
    """Delete an ended call's room; LiveKit failures are logged, and the close is
    tried again in the task queue (`call_room_close`)."""
    try:
        livekit.room_delete(room_name=room_name)
    except livekit.LiveKitError as exc:
        result.livekit_errors += 1
        logger.warning("expire_calls: could not delete the room of call %s: %s", call_id, exc)
        call_room_close_later(call_id=call_id, after_seconds=60)


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
        *(field.name for field in dataclasses.fields(_OpenCall))
    )
    silent: list[SilentCall] = []
    agentless: list[_OpenCall] = []
    for row in list(open_calls):
        call = _OpenCall(*row)
        if _open_call_expire(call=call, now=now, result=result):
            continue
        if call.agent_overdue(now):
            agentless.append(call)
        elif call.is_silent(now):
            user = call.participant_identity or f"{USER_IDENTITY_PREFIX}{call.id}"
            silent.append(SilentCall(call.id, call.room_name, user, call.heard_at))
    for call in agentless:
        _agent_not_joined(call=call, now=now, result=result)
    if silent:
        _calls_reconcile(calls=silent, now=now, result=result)
    _recordings_reconcile(now=now, result=result)
    # After the ends above, which released their places: a counter that still differs
    # was moved behind the state machine's back (a staff edit, a restore).
    result.open_counters_repaired = open_calls_reconcile()
    result.webhook_ids_pruned, _ = LiveKitWebhookEvent.objects.filter(
        received_at__lt=now - WEBHOOK_DEDUP_WINDOW
    ).delete()
    # Past their 24 hours a key starts over: the stored answers (their tokens name the
    # participant) go, through the records' index on their creation time.
    ttl = datetime.timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
    result.idempotency_records_pruned, _ = IdempotencyRecord.objects.filter(
        created_at__lt=now - ttl
    ).delete()
    # Counted for a UTC day's cap only (telephony.guard).
    result.refused_transfers_pruned, _ = RefusedTransfer.objects.filter(
        attempted_at__lt=now - datetime.timedelta(days=2)
    ).delete()
    return result


def _recordings_reconcile(*, now: datetime.datetime, result: ExpireResult) -> None:
    """Recordings whose egress webhooks were lost, as calls whose room webhooks were."""
    for step in (
        recordings_reconcile,
        recordings_wake_lost_starts,
        recordings_failed_starts_settle,
        recordings_deleted_starts_settle,
    ):
        moved, errors = step(now=now)
        result.recordings_reconciled += moved
        result.livekit_errors += errors


@dataclass(frozen=True)
class _OpenCall:
    """What expiry reads of a call not yet ended (fields named as the model's)."""

    id: uuid.UUID
    status: str
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    last_event_at: datetime.datetime | None
    connect_timeout_seconds: int
    max_duration_seconds: int
    room_name: str
    participant_identity: str | None
    agent_joined_at: datetime.datetime | None
    hangup_requested_at: datetime.datetime | None

    @property
    def heard_at(self) -> datetime.datetime:
        """When we last heard of the call, from LiveKit or its agent."""
        return self.last_event_at or self.started_at or self.created_at

    def agent_overdue(self, now: datetime.datetime) -> bool:
        """Active, no agent known in it `CALL_AGENT_JOIN_TIMEOUT_SECONDS` after the user
        joined, and no end asked for."""
        bound = datetime.timedelta(seconds=settings.CALL_AGENT_JOIN_TIMEOUT_SECONDS)
        return (
            self.status == CallStatus.ACTIVE
            and self.agent_joined_at is None
            and self.hangup_requested_at is None
            and self.started_at is not None
            and now - self.started_at >= bound
        )

    def is_silent(self, now: datetime.datetime) -> bool:
        """Active, and nothing heard of it for `CALL_RECONCILE_AFTER_SECONDS`."""
        silence = datetime.timedelta(seconds=settings.CALL_RECONCILE_AFTER_SECONDS)
        return self.status == CallStatus.ACTIVE and now - self.heard_at >= silence


def _open_call_expire(*, call: _OpenCall, now: datetime.datetime, result: ExpireResult) -> bool:
    """Time `call` out if it never started within its connect timeout or has run past
    its maximum duration; whether either limit was reached."""
    if call.status != CallStatus.ACTIVE:
        timed_out_at = start_bound(call.created_at, call.connect_timeout_seconds)
        if now < timed_out_at + START_GRACE:
            return False
        if _call_time_out(
            call, EndReason.CONNECT_TIMEOUT, NOT_STARTED_STATUSES, at=timed_out_at, result=result
        ):
            result.connect_timeouts += 1
        return True
    max_duration = datetime.timedelta(seconds=call.max_duration_seconds)
    if not call.started_at or now - call.started_at < max_duration:
        return False
    if _call_time_out(call, EndReason.MAX_DURATION, {CallStatus.ACTIVE}, at=now, result=result):
        result.max_durations += 1
    return True


def _call_time_out(
    call: _OpenCall,
    reason: str,
    only_from: Iterable[str],
    *,
    at: datetime.datetime,
    result: ExpireResult,
) -> bool:
    """Move `call` to `timeout` at `at` (unless another run ended it); close its room."""
    ended = call_transition(
        call_id=call.id,
        to_status=CallStatus.TIMEOUT,
        end_reason=reason,
        at=at,
        only_from=only_from,
    )
    if ended:
        _room_close(call_id=call.id, room_name=call.room_name, result=result)
    return ended


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
    heard_at: datetime.datetime


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
                logger.warning(
                    "expire_calls: ListParticipants failed for call %s: %s", call_id, exc
                )
                continue
        if identities is not None and call.user_identity in identities:
            # Still talking, just quiet: look again after another silent stretch.
            Call.objects.filter(pk=call_id, status=CallStatus.ACTIVE).update(last_event_at=now)
            continue
        # We cannot know how it ended, only that it did: `completed`, `reconciled`; and
        # not when, only when it last showed life: it ends then, not billed for silence.
        if call_transition(
            call_id=call_id,
            to_status=CallStatus.COMPLETED,
            end_reason=EndReason.RECONCILED,
            at=call.heard_at,
            only_from={CallStatus.ACTIVE},
        ):
            result.reconciled += 1
            if identities is not None:  # the room lingers (agent still in it): close it
                _room_close(call_id=call_id, room_name=room_name, result=result)


def _agent_not_joined(*, call: _OpenCall, now: datetime.datetime, result: ExpireResult) -> None:
    """Fail a call whose agent is overdue and close its room (the user is not left in
    silence), unless LiveKit has an agent in it (its join's webhook was lost); LiveKit
    failing, the call waits for the next pass."""
    try:
        agent_in_room = livekit.room_has_agent(room_name=call.room_name)
    except livekit.LiveKitError as exc:
        result.livekit_errors += 1
        logger.warning("expire_calls: ListParticipants failed for call %s: %s", call.id, exc)
        return
    if call_agent_overdue(
        call_id=call.id,
        agent_in_room=agent_in_room,
        at=now,
        timeout_seconds=settings.CALL_AGENT_JOIN_TIMEOUT_SECONDS,
    ):
        result.agents_not_joined += 1
        _room_close(call_id=call.id, room_name=call.room_name, result=result)
