"""Transfer to a human: hand a live phone call's caller to a destination listed in a
`transfer` tool of the call's workflow version, through the toll-fraud guard, as a
cold transfer (LiveKit `TransferSIPParticipant`, a SIP REFER). DESIGN.md "Phone
calls", Transfer to a human.

Like an API hang-up, the request is recorded on the call before LiveKit is asked (so
the caller's departure from the room is attributed to the transfer, whichever of the
webhook and LiveKit's answer comes first) and withdrawn when LiveKit fails.
"""

from __future__ import annotations

import datetime
import logging
import operator
from collections.abc import Callable

from django.db import transaction
from django.utils import timezone
from rest_framework import serializers

from accounts.models import Organization
from calls.agent_events import agent_statuses_held
from calls.lifecycle import EndReason, call_transition
from calls.livekit_events import heard_since
from calls.models import Call, CallChannel, CallStatus, TranscriptEntry, TranscriptRole
from calls.services import call_room_close_later
from calls.signals import call_events_recorded
from telephony import guard
from telephony.models import RefusedTransfer
from telephony.numbers import is_sip_uri, number_masked
from voicecalls import livekit, livekit_sip
from voicecalls.auth import OrganizationSuspended
from voicecalls.errors import Conflict
from workflows.tools import ToolType

logger = logging.getLogger(__name__)


def transfer_destinations(*, call: Call, tool: str | None = None) -> set[str]:
    """The destinations the call's workflow version lists in its transfer tools (in the
    tool named `tool` only, when given)."""
    found: set[str] = set()
    for agent in call.workflow_version.definition["agents"]:
        for spec in agent.get("tools", []):
            if spec.get("type") == ToolType.TRANSFER and tool in (None, spec["name"]):
                found.update(spec["destinations"])
    return found


def _transferable_check(call: Call) -> None:
    if call.organization.is_suspended:
        # The call goes on to its end; a transfer would dial a new leg (toll fraud).
        raise OrganizationSuspended()
    if call.channel != CallChannel.PHONE:
        raise Conflict("Only phone calls can be transferred.", code="not_phone_call")
    if call.is_ended:
        raise Conflict("The call has ended.", code="call_ended")
    if call.status != CallStatus.ACTIVE:
        raise Conflict("The call is not answered yet.", code="call_not_active")


def _destination_check(*, call: Call, destination: str, tool: str | None) -> str:
    """`destination` as it will be dialed, or a 400: not listed in the workflow's
    transfer tools (the model cannot make one up), or refused by the guard."""
    if destination not in transfer_destinations(call=call, tool=tool):
        logger.info(
            "transfer refused (destination_not_listed): call %s, %s",
            call.pk,
            number_masked(destination),
        )
        raise serializers.ValidationError(
            {"destination": ["Not a destination of this workflow's transfer tools."]},
            code="destination_not_listed",
        )
    if is_sip_uri(destination):
        return destination
    number = guard.destination_check(
        organization=call.organization, number=destination, attr="destination"
    )
    return f"tel:{number}"


def call_transfer(
    *,
    call: Call,
    destination: str,
    tool: str | None = None,
    sip_transfer: Callable[..., None] = livekit_sip.sip_transfer,
) -> Call:
    """Transfer the call's caller to `destination` and end the call `completed` /
    `transferred`, with the destination and a system line in the transcript. 409 for a
    web call, an ended call or one not answered yet; 400 for a destination the workflow
    does not list or the guard refuses; `LiveKitError` (the call unchanged, the caller
    still in the room) when LiveKit fails or the destination does not take the call.
    `sip_transfer` is LiveKit's transfer (`simulate_call` plays LiveKit's part)."""
    _transferable_check(call)
    transfer_to = _destination_check(call=call, destination=destination, tool=tool)
    requested_at = _transfer_recorded(call=call, destination=destination)
    try:
        sip_transfer(
            room_name=call.room_name,
            identity=call.user_identity,
            transfer_to=transfer_to,
            ringing_timeout_seconds=call.workflow_version.ring_timeout_seconds,
        )
    except livekit.LiveKitError as exc:
        with transaction.atomic():  # counted against the cap all along
            Call.objects.filter(
                pk=call.pk, status=CallStatus.ACTIVE, hangup_requested_at=requested_at
            ).update(hangup_requested_at=None, end_reason=None, transfer_destination=None)
            if isinstance(exc, livekit_sip.SipTransferError) and not is_sip_uri(destination):
                # The carrier dialed the number: it was dialed today, taken or not.
                RefusedTransfer.objects.create(organization_id=call.organization_id)
        # The caller's departure or the room's end heard while it was in flight (left
        # to its result) ends the call now, as what it was: not a transfer.
        # (Whole seconds: a departure LiveKit stamped in the second of the request.)
        # The first to arrive ends it, as it would have without the transfer.
        heard = heard_since(call_id=call.pk, since=requested_at.replace(microsecond=0))
        reported = agent_statuses_held(call_id=call.pk, since=requested_at)
        for _, apply in sorted(heard + reported, key=operator.itemgetter(0)):
            apply()
        raise
    _transferred(call=call, destination=destination)
    call.refresh_from_db()
    return call


def _transfer_recorded(*, call: Call, destination: str) -> datetime.datetime:
    """Record the transfer (see `_transfer_record`); when it was requested. 409 while
    the call is being ended, or once it has."""
    for _ in range(3):
        requested_at = timezone.now()
        if _transfer_record(call=call, destination=destination, requested_at=requested_at):
            return requested_at
        call.refresh_from_db()
        _transferable_check(call)
        if call.hangup_requested_at is not None:
            break
        # The end that kept it from recording was withdrawn since (LiveKit failed that
        # hang-up, or that transfer): the call goes on, and this transfer is recorded.
    raise Conflict("The call is already being ended.", code="call_ending")


@transaction.atomic
def _transfer_record(*, call: Call, destination: str, requested_at: datetime.datetime) -> bool:
    """Record the transfer on the call unless it is ending already; a transfer to a
    number counts against the organization's per-minute rate and daily cap (429,
    nothing recorded), the cap counted holding its row after the call's (the order in
    which ending a call locks them)."""
    recorded = Call.objects.filter(
        pk=call.pk, status=CallStatus.ACTIVE, hangup_requested_at__isnull=True
    ).update(
        hangup_requested_at=requested_at,
        end_reason=EndReason.TRANSFERRED,
        transfer_destination=destination,
    )
    if recorded and not is_sip_uri(destination):
        # The rate's row before the organization's, as a phone call created with an
        # Idempotency-Key takes them in its one transaction (the other order deadlocked
        # with it). Only once recorded: a 409 takes no call of the minute; a 429 (rate
        # or cap) undoes the recording and the rate's hit with this transaction.
        guard.outbound_rate_take(organization=call.organization)
        organization = Organization.objects.select_for_update().get(pk=call.organization_id)
        guard.outbound_daily_cap_check(organization=organization)
    return bool(recorded)


@transaction.atomic
def _transferred(*, call: Call, destination: str) -> None:
    now = timezone.now()
    # The caller's departure (its webhook) may have ended it already, as transferred.
    call_transition(
        call_id=call.pk, to_status=CallStatus.COMPLETED, end_reason=EndReason.TRANSFERRED, at=now
    )
    ended = Call.objects.select_for_update().filter(pk=call.pk).values_list("end_reason").get()
    if ended != (EndReason.TRANSFERRED,):
        return  # a hang-up overtook the transfer: the call ended as that says
    line = TranscriptEntry.objects.create(
        call_id=call.pk,
        role=TranscriptRole.SYSTEM,
        content=f"Call transferred to {destination}.",
        timestamp=now,
    )
    call_events_recorded.send(
        sender=Call, call_id=call.pk, lines=[(line.pk, now)], samples=[], handoffs=[]
    )
    # The agent may still be in the room.
    call_room_close_later(call_id=call.pk)
