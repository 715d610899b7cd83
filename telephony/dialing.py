"""Outbound phone calls: create one (guarded, `pending`, answered at once) and dial it
in the `dial` task queue (DESIGN.md "Phone calls").

A phone call moves `pending` → `connecting` (the dial job started) → `active` (the
callee answered: the dial returned) or `failed` with an end reason from the SIP status.
"""

from __future__ import annotations

import datetime
import logging
import uuid

from django.db import transaction
from django.utils import timezone

from accounts.models import Organization
from calls.lifecycle import EndReason, call_transition
from calls.models import Call, CallChannel, CallDirection, CallStatus
from calls.services import CallJoinInfo, call_insert, call_participant_token, call_room_close_later
from telephony import guard
from voicecalls import livekit
from workflows.models import WorkflowVersion
from workflows.selectors import CallTarget

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

# After the dial deadline and the ringing, a little longer for LiveKit to answer: a
# phone call that has not started by then ends `timeout` (expire_calls), whatever
# happened to its dial job.
START_MARGIN_SECONDS = 15


def sip_end_reason(sip_status_code: int | None) -> str:
    return SIP_END_REASONS.get(sip_status_code or 0, EndReason.SIP_ERROR)


def phone_call_create(
    *,
    organization: Organization,
    target: CallTarget,
    phone_number: str,
    from_number: str | None = None,
    user_id: str | None = None,
    user_data: dict | None = None,
    metadata: dict | None = None,
    direction: str = CallDirection.OUTBOUND,
) -> CallJoinInfo:
    """Check the destination and caller id (400s), insert a `pending` outbound phone
    call within the concurrency limit (429), and have it dialed once this transaction
    commits. Nothing is dialed here; refusals happen before anything is."""
    destination = guard.destination_check(organization=organization, number=phone_number)
    caller = guard.caller_id_pick(organization=organization, from_number=from_number)
    guard.outbound_allowance_take(organization=organization)
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
    call_insert(call=call)
    transaction.on_commit(lambda: _dial_later(call.pk), robust=True)
    return CallJoinInfo(call=call, token=call_participant_token(call=call))


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
    start_bound = target.dial_deadline_seconds + target.ring_timeout_seconds + START_MARGIN_SECONDS
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


def _dial_later(call_id: uuid.UUID) -> None:
    from telephony.tasks import phone_call_dial

    phone_call_dial.enqueue(str(call_id))


def dial_claim(*, call_id: uuid.UUID, now: datetime.datetime) -> Call | None:
    """Record the dial attempt, before dialing, once: a retried or duplicated job finds
    it recorded and dials nothing. None when the call is not to be dialed (ended,
    already attempted, past its deadline: then it fails `dial_timeout`)."""
    call = Call.objects.filter(pk=call_id, channel=CallChannel.PHONE).first()
    if call is None or call.status != CallStatus.PENDING or call.dial_attempted_at:
        return None
    if call.dial_deadline_at and now > call.dial_deadline_at:
        call_transition(
            call_id=call_id,
            to_status=CallStatus.FAILED,
            end_reason=EndReason.DIAL_TIMEOUT,
            at=now,
            only_from={CallStatus.PENDING},
        )
        return None
    claimed = Call.objects.filter(
        pk=call_id, status=CallStatus.PENDING, dial_attempted_at__isnull=True
    ).update(dial_attempted_at=now)
    if not claimed:
        return None
    # `connecting` once dialing starts; a hang-up that came first wins (no dial).
    if not call_transition(
        call_id=call_id, to_status=CallStatus.CONNECTING, at=now, only_from={CallStatus.PENDING}
    ):
        return None
    return call


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
        livekit.sip_dial(
            trunk_id=call.sip_trunk_id or "",
            to_number=call.phone_number or "",
            from_number=call.from_number or "",
            room_name=call.room_name,
            identity=call.user_identity,
            ringing_timeout_seconds=version.ring_timeout_seconds,
            max_call_duration_seconds=call.max_duration_seconds,
        )
    except livekit.SipDialError as exc:
        return _dial_failed(call=call, code=exc.sip_status_code, text=exc.sip_status)
    except livekit.LiveKitError as exc:
        # LiveKit itself failed (down, refused): the call is not retried, which could
        # ring the phone twice; it fails `sip_error` and its room is closed.
        logger.warning("dialing phone call %s failed: %s", call.id, exc)
        return _dial_failed(call=call, code=None, text=None)
    phone_call_answered(call_id=call.pk)
    return "answered"


def phone_call_answered(*, call_id: uuid.UUID) -> bool:
    """The dial returned: the callee answered. A hang-up meanwhile has already ended
    the call: then this moves nothing."""
    return call_transition(
        call_id=call_id, to_status=CallStatus.ACTIVE, only_from={CallStatus.CONNECTING}
    )


@transaction.atomic
def _dial_failed(*, call: Call, code: int | None, text: str | None) -> str:
    """The dial's own result ends the call, with the SIP status kept on it."""
    reason = sip_end_reason(code)
    Call.objects.filter(pk=call.pk, status=CallStatus.CONNECTING).update(
        sip_status_code=code, sip_status=(text or "")[:200] or None
    )
    if call_transition(
        call_id=call.pk,
        to_status=CallStatus.FAILED,
        end_reason=reason,
        only_from={CallStatus.CONNECTING},
    ):
        call_room_close_later(call_id=call.pk)
    return reason
