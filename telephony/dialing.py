"""Creating an outbound phone call (guarded, `pending`) and dialing it, in the `dial`
task queue (DESIGN.md "Phone calls").

A phone call moves `pending` → `connecting` (the dial job started) → `active` (the
callee answered: the dial returned) or `failed` with an end reason from the SIP status.
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Organization
from calls.lifecycle import EndReason, call_transition, requested_end
from calls.livekit_events import call_heard_while_dialing
from calls.models import (
    ENDED_STATUSES,
    Call,
    CallChannel,
    CallDirection,
    CallStatus,
    start_bound,
)
from calls.services import (
    CallJoinInfo,
    call_inserting,
    call_participant_token,
    call_room_close_later,
)
from telephony import guard
from voicecalls import livekit, livekit_sip
from workflows.models import WorkflowVersion
from workflows.selectors import CallTarget
from workflows.settings import phone_start_delay_seconds

logger = logging.getLogger(__name__)

# SIP status → end reason (DESIGN.md); any other status, or none, is `sip_error`.
SIP_END_REASONS: dict[int, str] = {
    486: EndReason.BUSY,
    600: EndReason.BUSY,
    408: EndReason.NO_ANSWER,
    480: EndReason.NO_ANSWER,
    487: EndReason.NO_ANSWER,
    603: EndReason.REJECTED,
    607: EndReason.REJECTED,
    608: EndReason.REJECTED,
    404: EndReason.INVALID_NUMBER,
    484: EndReason.INVALID_NUMBER,
    604: EndReason.INVALID_NUMBER,
}


def sip_end_reason(sip_status_code: int | None) -> str:
    return SIP_END_REASONS.get(sip_status_code or 0, EndReason.SIP_ERROR)


# A hang-up recorded while its call was pending is asked of LiveKit, then ends the call
# (calls.services.call_end): the dial waits this long to see which way it went.
HANGUP_RECHECK_SECONDS = 2
# ... and a hang-up recorded longer ago than this whose call is still pending was left
# half-way (its process died): the call ends as it asked, never dialed.
HANGUP_STALE_SECONDS = 60
# One recorded after the dial job claimed the call is waited for before dialing (it
# ends the call, or LiveKit fails it and it is withdrawn), this long at most.
HANGUP_SETTLE_SECONDS = 15.0
HANGUP_SETTLE_POLL_SECONDS = 0.2


def phone_call_create(
    *,
    organization: Organization,
    target: CallTarget,
    phone_number: str,
    from_number: str | None = None,
    user_id: str | None = None,
    user_data: dict | None = None,
    metadata: dict | None = None,
    # Taken with the rest of the request; always outbound (an inbound phone_number is 400).
    direction: str = CallDirection.OUTBOUND,
) -> CallJoinInfo:
    """Check the destination and caller id (400s), insert a `pending` outbound phone
    call within the concurrency limit (429), and have it dialed once this transaction
    commits. Nothing is dialed here; refusals happen before anything is."""
    destination = guard.destination_check(organization=organization, number=phone_number)
    caller = guard.caller_id_pick(organization=organization, from_number=from_number)
    guard.outbound_rate_take(organization=organization)
    call = phone_call_build(
        organization=organization,
        target=target,
        phone_number=destination,
        from_number=caller.number,
        sip_trunk_id=caller.trunk.livekit_trunk_id,
        user_id=user_id,
        user_data=user_data,
        metadata=metadata,
    )
    with call_inserting(call=call):
        # The daily cap is counted holding the organization's row, so concurrent
        # creations never overshoot it; a call whose token could not be made is not
        # left counted.
        guard.outbound_daily_cap_check(organization=organization)
        token = call_participant_token(call=call)
    transaction.on_commit(lambda: phone_call_dial_later(call.pk), robust=True)
    return CallJoinInfo(call=call, token=token)


def phone_call_build(
    *,
    organization: Organization,
    target: CallTarget,
    phone_number: str,
    from_number: str | None,
    sip_trunk_id: str | None,
    user_id: str | None = None,
    user_data: dict | None = None,
    metadata: dict | None = None,
) -> Call:
    """A new `pending` outbound phone call (not saved) to numbers already checked."""
    now = timezone.now()
    start_bound = phone_start_delay_seconds(
        dial_deadline=target.dial_deadline_seconds, ring_timeout=target.ring_timeout_seconds
    )
    return Call(
        organization=organization,
        workflow_id=target.workflow_id,
        workflow_version_id=target.version_id,
        workflow_slug=target.workflow_slug,
        user_id=user_id,
        user_data=user_data or {},
        metadata=metadata or {},
        direction=CallDirection.OUTBOUND,
        channel=CallChannel.PHONE,
        phone_number=phone_number,
        from_number=from_number,
        sip_trunk_id=sip_trunk_id,
        dial_deadline_at=now + datetime.timedelta(seconds=target.dial_deadline_seconds),
        status=CallStatus.PENDING,
        connect_timeout_seconds=max(target.connect_timeout_seconds, start_bound),
        max_duration_seconds=target.max_duration_seconds,
        created_at=now,
    )


def dial_claim(*, call_id: uuid.UUID, now: datetime.datetime) -> Call | None:
    """Record the dial attempt, before dialing, once: a retried or duplicated job finds
    it recorded and dials nothing. None when the call is not to be dialed (ended,
    already attempted, past its deadline: then it fails `dial_timeout`; its organization
    suspended: `organization_suspended`; hung up)."""
    call = Call.objects.filter(pk=call_id, channel=CallChannel.PHONE).first()
    if call is None or call.status != CallStatus.PENDING or call.dial_attempted_at:
        return None
    if call.hangup_requested_at is not None:
        _hangup_in_flight(call, now=now)
        return None
    if call.dial_deadline_at and now > call.dial_deadline_at:
        reason = EndReason.DIAL_TIMEOUT
    elif Organization.objects.filter(pk=call.organization_id, suspended_at__isnull=False).exists():
        # Suspended since the call was queued (toll fraud, non-payment): never dialed.
        reason = EndReason.ORGANIZATION_SUSPENDED
    else:
        reason = None
    if reason is not None:
        call_transition(
            call_id=call_id,
            to_status=CallStatus.FAILED,
            end_reason=reason,
            at=now,
            only_from={CallStatus.PENDING},
        )
        return None
    claimed = Call.objects.filter(
        pk=call_id,
        status=CallStatus.PENDING,
        dial_attempted_at__isnull=True,
        hangup_requested_at__isnull=True,
    ).update(dial_attempted_at=now)
    if not claimed:
        # Attempted by a duplicate job or ended: nothing to do. Still pending, it was hung
        # up since it was read (maybe withdrawn again already, LiveKit failing it): looked
        # at again, once that hang-up went one way or the other.
        pending = Call.objects.filter(
            pk=call_id, status=CallStatus.PENDING, dial_attempted_at__isnull=True
        )
        if pending.exists():
            phone_call_dial_later(call_id, after_seconds=HANGUP_RECHECK_SECONDS)
        return None
    # `connecting` once dialing starts; a hang-up that came first wins (no dial).
    if not call_transition(
        call_id=call_id, to_status=CallStatus.CONNECTING, at=now, only_from={CallStatus.PENDING}
    ):
        return None
    return call


def _hangup_in_flight(call: Call, *, now: datetime.datetime) -> None:
    """The customer hung up the pending call: never dial it. The hang-up ends the call
    unless LiveKit fails it, which withdraws it: then the call is dialed after all."""
    if now - call.hangup_requested_at < datetime.timedelta(seconds=HANGUP_STALE_SECONDS):
        phone_call_dial_later(call.pk, after_seconds=HANGUP_RECHECK_SECONDS)
        return
    call_transition(
        call_id=call.pk,
        to_status=CallStatus.COMPLETED,
        end_reason=EndReason.API_REQUEST,
        at=now,
        only_from={CallStatus.PENDING},
    )


def phone_call_dial_later(call_id: uuid.UUID, *, after_seconds: float = 0) -> None:
    """Enqueue the call's dial job in the `dial` queue, now or `after_seconds` later."""
    from telephony.tasks import phone_call_dial

    task = phone_call_dial
    if after_seconds:
        task = task.using(run_after=timezone.now() + datetime.timedelta(seconds=after_seconds))
    task.enqueue(str(call_id))


def phone_call_dial(*, call_id: uuid.UUID) -> str:
    """The dial job: dispatch the agent, dial, and apply the outcome. Returns what
    happened (for the task's result)."""
    now = timezone.now()
    call = dial_claim(call_id=call_id, now=now)
    if call is None:
        return "not dialed"
    version = WorkflowVersion.objects.only("definition").get(pk=call.workflow_version_id)
    try:
        livekit.agent_dispatch(room_name=call.room_name, call_id=str(call.id))
        if not _to_dial_after_hang_ups(call.pk) and _hung_up_before_dialing(call.pk):
            # Hung up since the claim: deleting the room found none (the dispatch made
            # it since), so nothing else closes it; the phone must not ring.
            return "not dialed"
        ringing = _ringing_seconds(call, version)
        if ringing is None:
            return _dial_failed(call=call, code=None, text=None, reason=EndReason.DIAL_TIMEOUT)
        livekit_sip.sip_dial(
            trunk_id=call.sip_trunk_id or "",
            to_number=call.phone_number or "",
            from_number=call.from_number or "",
            room_name=call.room_name,
            identity=call.user_identity,
            ringing_timeout_seconds=ringing,
            max_call_duration_seconds=_livekit_max_call_duration(call, version),
        )
    except livekit_sip.SipDialError as exc:
        reason = EndReason.NO_ANSWER if exc.rang_out else None
        return _dial_failed(call=call, code=exc.sip_status_code, text=exc.sip_status, reason=reason)
    except livekit.LiveKitError as exc:
        # LiveKit itself failed (down, refused): the call is not retried, which could
        # ring the phone twice; it fails `sip_error` and its room is closed.
        logger.warning("dialing phone call %s failed: %s", call.id, exc)
        return _dial_failed(call=call, code=None, text=None, detail=exc.summary)
    phone_call_answered(call_id=call.pk)
    return "answered"


# LiveKit's own cap on the phone call is a backstop behind the agent's and expire_calls'
# (which end it `timeout`/`max_duration`): whether its clock starts at the dial or the
# answer, it must not hang up first, as if the callee had.
LIVEKIT_DURATION_GRACE_SECONDS = 60


def _livekit_max_call_duration(call: Call, version: WorkflowVersion) -> int:
    return call.max_duration_seconds + version.ring_timeout_seconds + LIVEKIT_DURATION_GRACE_SECONDS


# An answer must reach us within the call's start delay (calls.lifecycle refuses a later
# start and expire_calls ends the call `timeout`, cutting the callee off): a dial that
# starts late rings for what is left of it, less this for LiveKit's answer to arrive...
ANSWER_MARGIN_SECONDS = 5
# ...and is not started with less ringing than this left: it fails `dial_timeout`.
MIN_RINGING_SECONDS = 5


def _ringing_seconds(call: Call, version: WorkflowVersion) -> int | None:
    """The ringing timeout to dial with: the workflow's, cut to the start delay left."""
    start_by = start_bound(call.created_at, call.connect_timeout_seconds)
    left = int((start_by - timezone.now()).total_seconds()) - ANSWER_MARGIN_SECONDS
    ringing = min(version.ring_timeout_seconds, left)
    return ringing if ringing >= MIN_RINGING_SECONDS else None


def _to_dial_after_hang_ups(call_id: uuid.UUID) -> bool:
    """Whether to dial now: the call still connecting with no hang-up recorded, or with
    one LiveKit failed (withdrawn: the call is dialed after all). A hang-up in flight
    is waited for, HANGUP_SETTLE_SECONDS at most."""
    # (Longer than LiveKit's own timeout: the hang-up's room deletion settles first.)
    wait = max(HANGUP_SETTLE_SECONDS, settings.LIVEKIT_API_TIMEOUT_SECONDS + 5)
    deadline = time.monotonic() + wait
    while True:
        row = Call.objects.filter(pk=call_id).values_list("status", "hangup_requested_at").first()
        if row is None or row[0] != CallStatus.CONNECTING:
            return False
        if row[1] is None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(HANGUP_SETTLE_POLL_SECONDS)


def _hung_up_before_dialing(call_id: uuid.UUID) -> bool:
    """Not dialed: a hang-up ended the call, or is left half-way (then it ends as it
    asked, as a stale one of a pending call does); either way its room is closed.
    False (dial after all) when the hang-up was withdrawn since it was read."""
    with transaction.atomic():
        row = (
            Call.objects.select_for_update()
            .filter(pk=call_id)
            .values_list("status", "hangup_requested_at")
            .first()
        )
        if row is not None and row[0] == CallStatus.CONNECTING and row[1] is None:
            return False
        call_transition(
            call_id=call_id,
            to_status=CallStatus.COMPLETED,
            end_reason=EndReason.API_REQUEST,
            only_from={CallStatus.CONNECTING},
        )
        call_room_close_later(call_id=call_id)
    return True


def phone_call_answered(*, call_id: uuid.UUID) -> bool:
    """The dial returned: the callee answered. A departure or the room's end LiveKit
    told of while it rang, left to this answer, ends the call now, also when the
    callee's join or the agent started it first. A call ended meanwhile (a hang-up)
    has its room closed: the callee who answered is not left in it."""
    moved = call_transition(
        call_id=call_id, to_status=CallStatus.ACTIVE, only_from={CallStatus.CONNECTING}
    )
    status = Call.objects.filter(pk=call_id).values_list("status", flat=True).first()
    if status == CallStatus.ACTIVE:
        call_heard_while_dialing(call_id=call_id)
    elif status in ENDED_STATUSES:
        call_room_close_later(call_id=call_id)
    return moved


@transaction.atomic
def _dial_failed(
    *,
    call: Call,
    code: int | None,
    text: str | None,
    reason: str | None = None,
    detail: str | None = None,
) -> str:
    """The dial's own result ends the call, with the SIP status kept on it; but a dial
    our hang-up cancelled (LiveKit may answer the dial before the room's deletion) ends
    as that hang-up asked. `reason`: the end reason when no SIP status says it;
    `detail`: why LiveKit failed the dial, for the customer (short, nothing secret)."""
    row = Call.objects.filter(pk=call.pk).values_list("hangup_requested_at", "end_reason").first()
    requested = requested_end(*row) if row else None
    if requested is not None:
        call_transition(
            call_id=call.pk,
            to_status=CallStatus.COMPLETED,
            end_reason=requested,
            only_from={CallStatus.CONNECTING},
        )
        return requested
    reason = reason or sip_end_reason(code)
    Call.objects.filter(pk=call.pk, status=CallStatus.CONNECTING).update(
        sip_status_code=code,
        sip_status=(text or "")[:200] or None,
        end_reason_detail=(detail or "")[:200] or None,
    )
    if call_transition(
        call_id=call.pk,
        to_status=CallStatus.FAILED,
        end_reason=reason,
        only_from={CallStatus.CONNECTING},
    ):
        call_room_close_later(call_id=call.pk)
    return reason
