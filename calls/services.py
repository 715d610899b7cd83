"""Writes that start and end calls: create (with the user's join token) and hang up."""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization
from calls.lifecycle import EndReason, call_transition
from calls.limits import open_call_reserve
from calls.models import (
    MONITOR_IDENTITY_PREFIX,
    NOT_ENDED_STATUSES,
    NOT_STARTED_STATUSES,
    Call,
    CallChannel,
    CallDirection,
    CallStatus,
    start_bound,
)
from calls.sql import insert_instance
from voicecalls import livekit
from voicecalls.errors import Conflict
from workflows.selectors import CallTarget
from workflows.settings import RING_TIMEOUT_BOUNDS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallJoinInfo:
    """A call and its end user's join token."""

    call: Call
    token: str


def call_participant_token(*, call: Call) -> str:
    """A fresh LiveKit token for the call's end user (identity `user-<call_id>`); for a
    phone call, whose user is the callee, a listen-only token (`monitor-<call_id>`)."""
    if call.is_phone:
        return livekit.monitor_token(room_name=call.room_name, identity=call.monitor_identity)
    name = call.user_data.get("name") if isinstance(call.user_data, dict) else None
    # Only text is a display name: an object or list printed would carry other user
    # data into a token every participant can read.
    return livekit.participant_token(
        room_name=call.room_name,
        identity=call.user_identity,
        name=name if isinstance(name, str) and name else None,
        call_id=str(call.id),
    )


def call_create(
    *,
    organization: Organization,
    target: CallTarget,
    user_id: str | None = None,
    user_data: dict | None = None,
    metadata: dict | None = None,
    direction: str = CallDirection.INBOUND,
) -> CallJoinInfo:
    """Create a call on the workflow's current version and mint the user's token.

    No LiveKit server call: LiveKit creates the room and dispatches the agent when
    the user joins with this token, so creating calls works with LiveKit down.
    Raises ConcurrencyLimitReached when the organization has as many open calls as
    it may: its open-call counter moves in the transaction that inserts the call.
    """
    call = Call(
        organization=organization,
        workflow_id=target.workflow_id,
        workflow_version_id=target.version_id,
        workflow_slug=target.workflow_slug,
        user_id=user_id,
        user_data=user_data or {},
        metadata=metadata or {},
        direction=direction,
        status=CallStatus.CONNECTING,
        connect_timeout_seconds=target.connect_timeout_seconds,
        max_duration_seconds=target.max_duration_seconds,
    )
    with call_inserting(call=call):
        # Before the commit: a call whose token could not be made is not left counted.
        token = call_participant_token(call=call)
    return CallJoinInfo(call=call, token=token)


@contextmanager
def call_inserting(*, call: Call) -> Iterator[None]:
    """Insert a new call, counting it against its organization's concurrency limit in
    the same transaction (raises ConcurrencyLimitReached, and nothing is inserted); the
    block runs in that transaction too, so its failure inserts nothing either.

    The insert comes first: its trigger locks the call's status counter, and the
    reservation the organization's row, the order in which ending a call takes them
    (the counters with the call's update, the organization's row releasing its place).
    The other order deadlocked with an end on the same counter shard.
    """
    with transaction.atomic():
        insert_instance(call)
        open_call_reserve(organization=call.organization)
        yield


def call_insert(*, call: Call) -> None:
    """Insert a new call (call_inserting, with nothing more in its transaction)."""
    with call_inserting(call=call):
        pass


# The longest a transfer waits for LiveKit: the longest ring, its margin, and room to spare.
TRANSFER_LEFT_AFTER = datetime.timedelta(seconds=RING_TIMEOUT_BOUNDS[1] + 60)


def call_transfer_in_flight(end_reason: str | None, requested_at: datetime.datetime | None) -> bool:
    """A transfer recorded and still waiting for LiveKit's answer, which decides how
    the call ends: transferred, or (it failed) as what was heard meanwhile says."""
    return (
        end_reason == EndReason.TRANSFERRED
        and requested_at is not None
        and requested_at >= timezone.now() - TRANSFER_LEFT_AFTER
    )


class CallTransferring(Conflict):
    default_detail = "The call is being transferred; it ends when the transfer does."
    default_code = "call_transferring"


def call_end(*, call: Call) -> Call:
    """Hang up: record the request, delete the LiveKit room, then mark `completed`.

    Not one transaction on purpose: the request is committed before LiveKit is asked,
    so the room's own webhooks (user left with ROOM_DELETED, room_finished) are
    attributed to it. An ended call is returned as it is, without asking LiveKit.
    If LiveKit fails, the request is withdrawn and `LiveKitError` raised; the call
    stays as it was (one that ended meanwhile, by the user's hang-up, is returned).
    CallTransferring (409) while a transfer of the call is in flight.
    """
    requested_at: datetime.datetime | None = timezone.now()
    open_call = Call.objects.filter(pk=call.pk, status__in=NOT_ENDED_STATUSES)
    recorded = _hangup_record(call_id=call.pk, requested_at=requested_at)
    if recorded is None:  # ended
        call.refresh_from_db()
        return call
    if not recorded:
        requested_at = None  # another hang-up's request is this one's too
    try:
        livekit.room_delete(room_name=call.room_name)
    except livekit.LiveKitError:
        if requested_at is not None:
            open_call.filter(hangup_requested_at=requested_at).update(
                hangup_requested_at=None, end_reason=None
            )
        if open_call.exists():
            raise
        # Ended meanwhile (the user hung up): it is no longer as it was, and it is over.
    call_transition(
        call_id=call.pk, to_status=CallStatus.COMPLETED, end_reason=EndReason.API_REQUEST
    )
    call.refresh_from_db()
    return call


def _hangup_record(*, call_id: uuid.UUID, requested_at: datetime.datetime) -> bool | None:
    """Record the hang-up on the open call: True; False when another hang-up's request
    is on its way; None when the call has ended. CallTransferring while a transfer's
    record stays (its own failure withdraws it)."""
    open_call = Call.objects.filter(pk=call_id, status__in=NOT_ENDED_STATUSES)
    # A transfer's record older than any transfer takes was left half-way (its
    # process died): the hang-up takes its place.
    transfer_left = Q(
        end_reason=EndReason.TRANSFERRED,
        hangup_requested_at__lt=requested_at - TRANSFER_LEFT_AFTER,
    )
    for _ in range(3):
        recorded = open_call.filter(Q(hangup_requested_at__isnull=True) | transfer_left).update(
            hangup_requested_at=requested_at,
            end_reason=EndReason.API_REQUEST,
            transfer_destination=None,
        )
        if recorded:
            return True
        ending = open_call.values_list("hangup_requested_at", "end_reason").first()
        if ending is None:
            return None
        if ending[0] is not None:
            if ending[1] == EndReason.TRANSFERRED:
                raise CallTransferring()
            return False
        # Withdrawn since the update looked (the transfer, or that hang-up, failed):
        # the call is as it was, and this hang-up records its own.
    return False


def call_room_delete(*, call_id: uuid.UUID, unless_attended: bool = False) -> bool:
    """Delete an ended call's room, so nobody is left in it until LiveKit's departure
    timeout; True if it was deleted or already gone, False when LiveKit failed (logged;
    the task tries again). `unless_attended`: keep (True) a room that holds anyone but
    listeners."""
    room_name = Call.objects.filter(pk=call_id).values_list("room_name", flat=True).first()
    if room_name is None:
        return True
    try:
        if unless_attended:
            identities = livekit.room_participant_identities(room_name=room_name) or set()
            if any(not name.startswith(MONITOR_IDENTITY_PREFIX) for name in identities):
                return True
        livekit.room_delete(room_name=room_name)
    except livekit.LiveKitError as exc:
        logger.warning("could not delete the room of ended call %s: %s", call_id, exc)
        return False
    return True


def call_room_close_later(
    *, call_id: uuid.UUID, after_seconds: int = 0, unless_attended: bool = False
) -> None:
    """Delete the call's room once the current transaction commits (and `after_seconds`
    more), in the task queue: never a LiveKit request inside a transaction or on the
    request that ended the call. `unless_attended` as `call_room_delete`."""
    from calls.tasks import call_room_close

    task = call_room_close
    if after_seconds:
        task = task.using(run_after=timezone.now() + datetime.timedelta(seconds=after_seconds))
    # robust: a failed enqueue must not undo the end that already committed.
    options = {"unless_attended": True} if unless_attended else {}
    transaction.on_commit(lambda: task.enqueue(str(call_id), **options), robust=True)


# LiveKit stamps events in whole seconds, rounded down.
STAMP_ROUNDING = datetime.timedelta(seconds=1)


def call_start_refused(
    *, call_id: uuid.UUID, at: datetime.datetime, earliest: datetime.datetime | None = None
) -> bool:
    """The user joined (or the agent said the call started) at `at`, and the call did
    not start: already started or ended (nothing to do), or past its start delay. If
    the join may have come in time (`earliest`: LiveKit's whole-second stamp, or the
    agent's), the call starts then. Else a web call never starts: it timed out when its
    delay passed, and its room closes now, before the agent talks on (`expire_calls`
    waits a grace for joins delivered late; this ends a call a late join proves over).
    True if it moved."""
    row = (
        Call.objects.filter(pk=call_id, status__in=NOT_STARTED_STATUSES)
        .values_list("channel", "created_at", "connect_timeout_seconds")
        .first()
    )
    if row is None:
        return False
    channel, created_at, connect_timeout_seconds = row
    timed_out_at = start_bound(created_at, connect_timeout_seconds)
    if earliest is not None and earliest < created_at - STAMP_ROUNDING:
        earliest = None  # before the call was made: a skewed clock's, no evidence
    if earliest is not None and earliest <= timed_out_at:
        at = max(earliest, created_at)  # (LiveKit's whole seconds round down)
        return call_transition(call_id=call_id, to_status=CallStatus.ACTIVE, at=at)
    if channel != CallChannel.WEB or at <= timed_out_at:
        return False
    ended = call_transition(
        call_id=call_id,
        to_status=CallStatus.TIMEOUT,
        end_reason=EndReason.CONNECT_TIMEOUT,
        at=timed_out_at,
        only_from=NOT_STARTED_STATUSES,
    )
    if ended:
        call_room_close_later(call_id=call_id)
    return ended
